#include "monsoon/common/stop_signals.hpp"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <system_error>

namespace monsoon {
namespace {

sigset_t stop_signal_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  // SIGUSR2 only serves to wake the watcher thread when it must quit.
  sigaddset(&set, SIGUSR2);
  return set;
}

// A second stop signal means the orderly stop is taking too long (a hung
// drain): end the process at once, with the shell's code for death by that
// signal (130 for SIGINT, 143 for SIGTERM).
[[noreturn]] void exit_now(int signal_number) {
  static constexpr char kMessage[] =
      "second stop signal: exiting without finishing the stop\n";
  (void)!write(STDERR_FILENO, kMessage, sizeof kMessage - 1);
  std::_Exit(128 + signal_number);
}

}  // namespace

void block_stop_signals() {
  sigset_t set = stop_signal_set();
  if (int rc = pthread_sigmask(SIG_BLOCK, &set, nullptr); rc != 0) {
    throw std::system_error(rc, std::generic_category(), "pthread_sigmask");
  }
  // A peer vanishing mid-write must surface as an error code, not kill us.
  signal(SIGPIPE, SIG_IGN);
}

StopSignalWatcher::StopSignalWatcher(std::function<void()> on_stop)
    : thread_([on_stop = std::move(on_stop)](std::stop_token stop) {
        sigset_t set = stop_signal_set();
        int signal_number = 0;
        bool stopping = false;
        while (sigwait(&set, &signal_number) == 0) {
          if (signal_number == SIGUSR2) {
            if (stop.stop_requested()) return;
            continue;
          }
          if (stopping) exit_now(signal_number);
          stopping = true;
          on_stop();
        }
      }) {}

StopSignalWatcher::~StopSignalWatcher() {
  if (thread_.joinable()) {
    thread_.request_stop();
    pthread_kill(thread_.native_handle(), SIGUSR2);
  }
}

}  // namespace monsoon
