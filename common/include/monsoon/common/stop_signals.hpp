// Turns SIGINT/SIGTERM into an orderly stop request. Call block_stop_signals()
// first thing in main, before any thread exists, so that every thread
// inherits the blocked mask (SIGINT, SIGTERM and SIGUSR2, which the watcher
// uses internally) and no signal interrupts a worker thread; then
// start a StopSignalWatcher, whose own thread waits for the signal and calls
// `on_stop` once (from that thread). A second SIGINT/SIGTERM ends the process
// at once (std::_Exit with 128 + the signal number), so a stop that hangs can
// always be interrupted.
#pragma once

#include <functional>
#include <thread>

namespace monsoon {

void block_stop_signals();

class StopSignalWatcher {
 public:
  explicit StopSignalWatcher(std::function<void()> on_stop);
  // Unblocks the watcher thread if no signal came, and joins it.
  ~StopSignalWatcher();
  StopSignalWatcher(const StopSignalWatcher&) = delete;
  StopSignalWatcher& operator=(const StopSignalWatcher&) = delete;

 private:
  std::jthread thread_;
};

}  // namespace monsoon
