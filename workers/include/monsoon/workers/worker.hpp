// A worker process's engine: one DEALER connection to the broker's worker
// endpoint (docs/protocol.md section 4) and `slots` threads that execute
// jobs from a TaskRegistry.
//
// Threads: the thread that calls run() owns the socket and does all I/O;
// slot threads only execute tasks. stop() and counters() may be called from
// any thread. Credit-based dispatch means at most `slots` jobs are ever held;
// a JOB beyond that (a broker bug) is answered `overloaded`, never queued.
//
// Liveness: HEARTBEAT after `heartbeat.interval` of silence; when nothing is
// heard for liveness x interval the worker drops its socket and reconnects
// after a back-off (interval/4 doubling up to 32x, reset once the broker is
// heard again). A DISCONNECT from the broker makes it re-register at once.
// Jobs running across a reconnect finish and their DONEs go out on the new
// socket; since each of those DONEs returns a credit, the new READY announces
// only the slots free at that moment (at least 1).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "monsoon/common/liveness.hpp"
#include "monsoon/workers/task_registry.hpp"

namespace monsoon::workers {

struct WorkerConfig {
  std::string broker_endpoint = "tcp://127.0.0.1:5556";
  std::uint32_t slots = 0;         // 0 = std::thread::hardware_concurrency()
  std::vector<std::string> tasks;  // empty = every registered task
  std::string name;                // empty = "worker-<pid>@<hostname>"
  HeartbeatSettings heartbeat;
  std::chrono::milliseconds drain_timeout{10'000};   // for a graceful stop
  std::size_t max_message_bytes = 16 * 1024 * 1024;  // in and out
};

struct WorkerCounters {
  std::uint64_t jobs_received = 0;
  std::uint64_t jobs_succeeded = 0;
  std::uint64_t jobs_failed = 0;  // every DONE with status error
  std::uint64_t malformed_dropped = 0;
  std::uint64_t reconnects = 0;
};

class Worker {
 public:
  // Resolves the defaults in `config` and validates it. Throws
  // std::invalid_argument on a bad value, an empty registry or a task name
  // in config.tasks that `registry` lacks. `registry` must outlive the
  // Worker and not change while it runs.
  Worker(WorkerConfig config, const TaskRegistry& registry);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Connects, registers and serves jobs until stop(); then sends DISCONNECT,
  // lets running jobs finish (up to drain_timeout; after that it cancels
  // them through TaskContext::cancellation and waits for them), sends their
  // DONEs and returns. Call once (std::logic_error otherwise). Throws
  // std::invalid_argument for an unusable endpoint and zmq::error_t for other
  // ZeroMQ failures; nothing a peer sends or a task does makes it throw.
  void run();

  // Asks run() to stop. Any thread, any time, also before run().
  void stop() noexcept;

  // The configuration with defaults resolved.
  const WorkerConfig& config() const noexcept;
  WorkerCounters counters() const noexcept;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace monsoon::workers
