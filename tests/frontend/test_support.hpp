// Synchronisation helpers for the front end's tests: wait for a condition
// (eventually) or for completions with a deadline, never for a fixed time.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

#include "eventually.hpp"
#include "monsoon/frontend/broker_link.hpp"

namespace monsoon::frontend::test {

using namespace std::chrono_literals;

using monsoon::test::eventually;

// Collects job outcomes from any thread. Completions share its state, so a
// completion running after the recorder is gone (e.g. when a link is torn
// down) is harmless.
class OutcomeRecorder {
 public:
  JobCompletion completion() {
    return [state = state_](JobOutcome outcome) {
      // Notifying under the lock: a waiter cannot return (and destroy the
      // recorder) while the notification is still in progress.
      std::lock_guard lock(state->mutex);
      state->outcomes.push_back(std::move(outcome));
      state->changed.notify_all();
    };
  }

  // Waits until at least `count` outcomes arrived.
  bool wait_for(std::size_t count, std::chrono::milliseconds timeout) {
    std::unique_lock lock(state_->mutex);
    return state_->changed.wait_for(
        lock, timeout, [&] { return state_->outcomes.size() >= count; });
  }

  std::vector<JobOutcome> outcomes() {
    std::lock_guard lock(state_->mutex);
    return state_->outcomes;
  }

 private:
  struct State {
    std::mutex mutex;
    std::condition_variable changed;
    std::vector<JobOutcome> outcomes;
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

}  // namespace monsoon::frontend::test
