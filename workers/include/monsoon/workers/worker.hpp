// A worker process's engine: one session (common/broker_session.hpp) with
// each broker's worker endpoint (docs/protocol.md section 4), all sharing
// one pool's slots (SlotLedger: a JOB finding every slot held is refused and
// its broker later granted CREDIT), serving a pool of tasks from a
// TaskRegistry. A pool is of one kind: thread tasks, executed by `slots`
// threads, or async tasks (TaskRegistry::add_async), run on the socket
// thread, of which it holds up to `slots` jobs at once. run_worker_main runs
// one Worker per kind a process serves.
//
// Threads: the thread that calls run() owns the sockets and does all I/O,
// and runs async tasks; slot threads only execute thread tasks. stop() and
// counters() may be called from any thread. At most `slots` jobs are ever
// held: a JOB beyond that (several brokers' optimistic credit, or a broker
// bug) is answered `refused` to a broker of protocol 1.2, `overloaded` to an
// older one, never queued.
//
// Liveness, per broker: HEARTBEAT after `heartbeat.interval` of silence;
// when nothing is heard for liveness x interval the worker drops that socket
// and reconnects after a back-off (interval/4, at least 10 ms, doubling up to
// 32x, reset once the broker is heard again). A DISCONNECT from a broker
// makes it re-register there at once. Jobs running across a reconnect finish
// and their DONEs go out on the new socket of the broker that sent them,
// after a READY with the same name and pid (so the broker moves those jobs
// to the new connection) whose `free` leaves out every DONE still owed to
// that broker (its jobs still held, answers not yet handed over). DONEs that
// cannot be sent yet wait in a queue bounded by the slots, never dropped.
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
  // The brokers' worker endpoints: a session with each, one registration
  // each (same name and pid); at least one, each once.
  std::vector<std::string> broker_endpoints{"tcp://127.0.0.1:5556"};
  // Jobs held at once. 0 = std::thread::hardware_concurrency().
  std::uint32_t slots = 0;
  // Empty = every registered task. All thread tasks or all async tasks.
  std::vector<std::string> tasks;
  std::string name;  // empty = "worker-<pid>@<hostname>"
  HeartbeatSettings heartbeat;
  std::chrono::milliseconds drain_timeout{10'000};  // for a graceful stop
  // After drain_timeout, how long cancelled tasks get to return.
  std::chrono::milliseconds cancel_grace{5'000};
  // The largest frame accepted from the broker (ZMQ_MAXMSGSIZE), announced
  // in READY so that the broker sends no larger JOB.
  std::size_t max_message_bytes = 16 * 1024 * 1024;
};

struct WorkerCounters {
  std::uint64_t jobs_received = 0;
  std::uint64_t jobs_succeeded = 0;
  std::uint64_t jobs_failed = 0;  // every DONE with status error
  // JOBs answered refused (or overloaded to a broker older than 1.2): every
  // slot was held, by jobs of other brokers. Also counted in jobs_failed.
  std::uint64_t jobs_refused = 0;
  std::uint64_t malformed_dropped = 0;
  std::uint64_t reconnects = 0;

  // For a process's total over its pools.
  WorkerCounters& operator+=(const WorkerCounters& other) noexcept {
    jobs_received += other.jobs_received;
    jobs_succeeded += other.jobs_succeeded;
    jobs_failed += other.jobs_failed;
    jobs_refused += other.jobs_refused;
    malformed_dropped += other.malformed_dropped;
    reconnects += other.reconnects;
    return *this;
  }
};

// "worker-<pid>@<hostname>": unique per live process, as re-registration
// needs (docs/protocol.md section 4).
std::string default_worker_name();

class Worker {
 public:
  // Resolves the defaults in `config` and validates it. Throws
  // std::invalid_argument on a bad value, an empty registry, a task name
  // in config.tasks that `registry` lacks, or tasks of both kinds. `registry`
  // must outlive the Worker and not change while it runs.
  Worker(WorkerConfig config, const TaskRegistry& registry);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Connects, registers and serves jobs until stop(); then sends DISCONNECT
  // (the broker sends no new job), lets running jobs finish while still
  // heartbeating (up to drain_timeout; after that it cancels them through
  // TaskContext::cancellation and waits up to cancel_grace), sends their
  // DONEs and returns. A task that ignores cancellation past cancel_grace
  // ends the process: std::_Exit(EXIT_FAILURE) after a critical log line.
  // Call once (std::logic_error otherwise). Throws std::invalid_argument for
  // an unusable endpoint and zmq::error_t for other ZeroMQ failures; nothing
  // a peer sends or a task does makes it throw.
  void run();

  // Asks run() to stop. Any thread, any time, also before run().
  void stop() noexcept;

  // The configuration with defaults resolved.
  const WorkerConfig& config() const noexcept;
  bool serves_async() const noexcept;  // a pool of async tasks
  WorkerCounters counters() const noexcept;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace monsoon::workers
