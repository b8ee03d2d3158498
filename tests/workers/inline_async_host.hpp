// Runs an async task to completion on the calling thread, the way a worker's
// event thread would, for tests of async tasks without sockets.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>

#include "monsoon/workers/task_registry.hpp"

namespace monsoon::test {

class InlineAsyncHost final : public workers::AsyncJob::Host {
 public:
  // Starts `task` and runs the steps it schedules, each at its time (at once
  // after `cancellation` is requested), until the job is finished. Throws
  // std::logic_error if the job disappears unfinished.
  workers::TaskOutcome run(const workers::TaskRegistry& registry,
                           std::string_view task, std::string_view args,
                           Clock::time_point deadline,
                           std::stop_token cancellation = {}) {
    outcome_.reset();
    workers::start_async_task(registry,
                              workers::AsyncJob(*this, std::string(task), 1, 1,
                                                deadline, cancellation),
                              args);
    while (!outcome_) {
      if (timers_.empty()) throw std::logic_error("async job lost");
      auto timer = timers_.extract(timers_.begin());
      std::mutex mutex;
      std::condition_variable_any never_notified;
      std::unique_lock lock(mutex);
      never_notified.wait_until(lock, cancellation, timer.key(),
                                [] { return false; });
      workers::run_async_step(timer.mapped().first, timer.mapped().second);
    }
    return std::move(*outcome_);
  }

  void finish(std::size_t, std::string_view, std::uint64_t,
              workers::TaskOutcome outcome) noexcept override {
    outcome_ = std::move(outcome);
  }

  void schedule(Clock::time_point when,
                std::function<void(workers::AsyncJob&)> callback,
                workers::AsyncJob job) override {
    timers_.emplace(when, std::pair{std::move(callback), std::move(job)});
  }

 private:
  std::optional<workers::TaskOutcome> outcome_;
  std::multimap<
      Clock::time_point,
      std::pair<std::function<void(workers::AsyncJob&)>, workers::AsyncJob>>
      timers_;
};

}  // namespace monsoon::test
