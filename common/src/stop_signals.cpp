#include "monsoon/common/stop_signals.hpp"

#include <pthread.h>
#include <signal.h>

#include <cerrno>
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
        while (sigwait(&set, &signal_number) == 0) {
          if (signal_number == SIGUSR2) {
            if (stop.stop_requested()) return;
            continue;
          }
          on_stop();
          return;
        }
      }) {}

StopSignalWatcher::~StopSignalWatcher() {
  if (thread_.joinable()) {
    thread_.request_stop();
    pthread_kill(thread_.native_handle(), SIGUSR2);
  }
}

}  // namespace monsoon
