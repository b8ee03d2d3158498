// A worker process's engine: one session (common/broker_session.hpp) with
// each broker's worker endpoint (docs/protocol.md section 4), one
// registration each, serving tasks from a TaskRegistry with the slots of its
// pools (docs/protocol.md, "Named queues"). A pool serves some queues: it
// bounds the jobs held for them, whichever brokers sent them (one SlotLedger
// per pool: a JOB finding its pool full is refused and its broker later
// granted CREDIT for that pool), so one queue's jobs cannot take another
// pool's slots. A JOB belongs to the pool listing its `queue`; without one
// (a broker older than 1.3), or naming a queue no pool lists, to the pool
// listing the queue named as its task, else to pool 0.
//
// Threads: the thread that calls run() owns the sockets, does all I/O and
// runs async tasks (TaskRegistry::add_async), whatever their pool. Each pool
// runs thread tasks on threads of its own, started on demand when a job
// finds none idle, never more than the pool's slots (a pool that only runs
// async tasks starts none), and joined when run() returns. stop() and
// counters() may be called from any thread. At most a pool's slots jobs are
// ever held in it: a JOB beyond that (several brokers' optimistic credit,
// or a broker bug) is answered `refused` to a broker of protocol 1.2 or
// later, `overloaded` to an older one, never queued.
//
// Liveness, per broker: HEARTBEAT after `heartbeat.interval` of silence;
// when nothing is heard for liveness x interval the worker drops that socket
// and reconnects after a back-off (interval/4, at least 10 ms, doubling up to
// 32x, reset once the broker is heard again). A DISCONNECT from a broker
// makes it re-register there at once. Jobs running across a reconnect finish
// and their DONEs go out on the new socket of the broker that sent them,
// after a READY with the same name and pid (so the broker moves those jobs
// to the new connection) whose `free`, per pool, leaves out every DONE still
// owed to that broker for that pool (its jobs still held, answers not yet
// handed over). DONEs that cannot be sent yet wait in a queue bounded by the
// slots, never dropped; CREDITs waiting for the socket, one per pool.
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

// A pool: slots of their own for the jobs of some queues.
struct PoolConfig {
  std::vector<std::string> queues;  // 1..kMaxPoolQueues queue names
  std::uint32_t slots = 0;          // 1..kMaxSlots

  bool operator==(const PoolConfig&) const = default;
};

struct WorkerConfig {
  // The brokers' worker endpoints: a session with each, one registration
  // each (same name and pid); at least one, each once.
  std::vector<std::string> broker_endpoints{"tcp://127.0.0.1:5556"};
  // The pools, in READY's order (a CREDIT names a pool by its index):
  // 1..kMaxPools, each queue a valid name (the task-name syntax) in one pool
  // only, their slots kMaxSlots at most in all. Empty = the default pools:
  // the queues named as the thread tasks served, with `slots`, then those
  // named as the async tasks served, with `async_slots` (a default pool
  // without tasks is left out).
  std::vector<PoolConfig> pools;
  // The default pools' slots (unused with `pools` given). 0 =
  // std::thread::hardware_concurrency().
  std::uint32_t slots = 0;
  std::uint32_t async_slots = 1000;
  // Empty = every registered task.
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
  // slot of their pool was held, by jobs of other brokers. Also counted in
  // jobs_failed.
  std::uint64_t jobs_refused = 0;
  std::uint64_t malformed_dropped = 0;
  std::uint64_t reconnects = 0;
  // Threads started to run thread tasks, over all pools (each pool starts
  // them on demand, up to its slots).
  std::uint64_t threads_started = 0;
};

// Throws std::invalid_argument, saying why, unless `pools` are 1..kMaxPools
// pools of 1..kMaxPoolQueues valid queue names each (the task-name syntax),
// each queue in one pool only, with 1..kMaxSlots slots each and in all.
void check_pools(const std::vector<PoolConfig>& pools);

// "worker-<pid>@<hostname>": unique per live process, as re-registration
// needs (docs/protocol.md section 4).
std::string default_worker_name();

class Worker {
 public:
  // Resolves the defaults in `config` (the default pools too) and validates
  // it. Throws std::invalid_argument on a bad value (check_pools for the
  // pools), an empty registry, a task name in config.tasks that `registry`
  // lacks, or a READY larger than the protocol allows. `registry` must
  // outlive the Worker and not change while it runs.
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

  // The configuration with defaults resolved: `pools` as announced.
  const WorkerConfig& config() const noexcept;
  WorkerCounters counters() const noexcept;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace monsoon::workers
