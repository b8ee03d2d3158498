// The broker's scheduling state machine (docs/protocol.md sections 3-5):
// registered workers and the credit of their pools, named queues of waiting
// jobs, the in-flight table, deadlines and worker liveness.
//
// Pure: no sockets, no clock reads. Every input carries the current time and
// appends to an Outbox the messages the caller must send, in order. Payloads
// (args, results) are moved or reference-shared (zmq_msg_copy), never copied
// byte by byte or decoded.
//
// Policy (docs/protocol.md, "Named queues"): each SUBMIT waits in the queue
// the routing table (DispatcherConfig::routes) names for its task, by
// default the queue named as the task. A worker's READY registers pools
// (protocol::effective_pools: a READY without `pools` is one pool serving the
// queue named as each of its tasks), and credit is kept per pool. A job of
// task T in queue Q goes only to a worker that serves T, has a pool listing Q
// with credit (a free slot; no prefetch), is not stopping and whose announced
// frame limit takes its args: a job no worker serving it can take fails at
// once with too_large, and so does a result over the limit its client
// announced; nothing else is affected. Among those, the least loaded pool
// (busy slots relative to the pool's slots, so an idle pool always wins over
// a busy one), then the least recently used. A pool whose credit returns
// takes the oldest waiting job, by arrival, among its queues that its worker
// serves and whose args fit, so one queue's backlog never holds up another
// pool. The JOB names its queue (JobMeta::queue). A dead worker's jobs go
// back to the front of their queues until max_attempts (jobs of tasks its
// READY listed in no_retry fail instead); RESULTs name the worker that ran
// the job (meta.worker). A job whose DONE says `retry` waits out a back-off,
// then joins the back of its queue, until max_attempts.
//
// A DONE returns one credit to the pool the job was charged to: the pool of
// its holder's current registration that lists the job's queue (none after
// a re-registration without it: the DONE returns nothing). A DONE for a
// job this broker no longer knows (it expired in flight, or it is from
// before a restart) returns one to the pool the DONE names (its `pool`,
// since 1.3), else to the worker's only pool (to none when it has several
// and the DONE names none). Credit never exceeds a pool's slots.
//
// Several brokers may share a worker's slots (docs/protocol.md, "Several
// brokers: shared slots"): the credit kept here is optimistic, counting only
// this broker's jobs. A DONE `refused` (the pool's slots were all held, by
// jobs from any broker) is never relayed: the job, which did not run, goes
// back to the front of its queue with its attempt and deadline unchanged and
// at once to another pool with credit, and the credit of the refused job's
// pool drops to 0 (the worker's other pools keep theirs) until a DONE or a
// CREDIT for it. CREDIT {free, pool} sets pool `pool`'s credit to
// min(free, its slots - jobs held in it).
//
// Owned and used by one thread (the broker's loop). Methods do not throw
// except std::bad_alloc.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "monsoon/broker/routing_table.hpp"
#include "monsoon/common/liveness.hpp"
#include "monsoon/common/protocol.hpp"

namespace monsoon::broker {

struct DispatcherConfig {
  // The broker's own. For a worker whose READY announces another interval
  // (heartbeat_ms), heartbeats go out after the shorter of the two and the
  // worker is dead after liveness x the longer one.
  HeartbeatSettings heartbeat;
  // Which queue each task's jobs wait in; empty: the queue named as the task.
  RoutingTable routes;
  // Jobs waiting in one queue, and in all of them (retries waiting out their
  // back-off not counted): a SUBMIT beyond either is rejected `overloaded`.
  std::size_t max_queued_per_queue = 10'000;
  std::size_t max_queued_total = 100'000;
  // READY from more distinct workers than this is ignored (and counted).
  std::size_t max_workers = 10'000;
  // Dispatches of one job, counting the first, before a worker death or a
  // `retry` DONE fails it.
  std::uint32_t max_attempts = 3;
  // Delay before retrying after a `retry` DONE: exponential from this base,
  // doubling per attempt up to retry_backoff_max, with jitter (a random
  // value between half and all of it); never less than the DONE's
  // retry_after_ms. No retry that could not start before the deadline.
  std::chrono::milliseconds retry_backoff_base{100};
  std::chrono::milliseconds retry_backoff_max{10'000};
  // Sent with `overloaded` rejections.
  std::chrono::milliseconds retry_after{1000};
  // How long past its deadline an in-flight job may run before the client is
  // told `deadline_exceeded`; the worker normally answers first.
  std::chrono::milliseconds in_flight_grace{1000};
  // The first job id; ids count up from it. A broker starts from a random
  // value (random_first_job_id) so that a DONE for a job of its previous
  // incarnation, from a worker that kept running, cannot match a new job.
  std::uint64_t first_job_id = 1;
  // The largest frame the broker accepts from a peer (its ZMQ_MAXMSGSIZE):
  // announced in WELCOME, and the bound on every JOB's max_result_bytes.
  std::uint64_t max_message_bytes = 16u << 20;

  bool operator==(const DispatcherConfig&) const = default;
};

// A random job id in [1, 2^62]: room for 2^62 jobs after it.
std::uint64_t random_first_job_id();

// One message for the caller to send through the client or worker socket.
struct Outgoing {
  enum class Peer : std::uint8_t { client, worker };
  Peer peer;
  protocol::Command command;  // what `frames` encodes
  std::string identity;       // the peer's routing identity
  protocol::Frames frames;    // without the identity frame
};
using Outbox = std::vector<Outgoing>;

// One queue's figures (DispatcherStats::queues). An entry exists while its
// queue has jobs (waiting, delayed or in flight) or a worker serving it; its
// counters start again from 0 when it comes back.
// The most queues a report lists (DispatcherStats::queues); the others are
// counted in queues_total only.
inline constexpr std::size_t kMaxQueueStats = 1000;

struct QueueStats {
  std::string name;
  std::size_t queued = 0;  // waiting, retries waiting out their back-off too
  std::size_t in_flight = 0;
  // Live registrations, not stopping, with a pool listing the queue; the
  // slots and the credit of those pools.
  std::size_t workers = 0;
  std::uint64_t slots = 0;
  std::uint64_t credit = 0;
  std::uint64_t submitted = 0;  // jobs that entered the queue
  std::uint64_t completed = 0;  // their DONEs relayed to clients

  bool operator==(const QueueStats&) const = default;
};

struct DispatcherStats {
  // Counters, monotonic since construction.
  std::uint64_t submitted = 0;
  std::uint64_t dispatched = 0;  // JOBs sent, re-dispatches included
  std::uint64_t completed = 0;   // DONEs relayed to clients
  std::uint64_t rejected_overloaded = 0;
  std::uint64_t expired_in_queue = 0;
  std::uint64_t expired_in_flight = 0;
  std::uint64_t late_done_dropped = 0;       // DONE for an id not in flight
  std::uint64_t misrouted_done_dropped = 0;  // DONE from a non-holder
  std::uint64_t requeued = 0;                // after a worker death
  std::uint64_t retries = 0;                 // `retry` DONEs delayed
  std::uint64_t retries_given_up = 0;  // `retry` DONEs answered task_failed
  std::uint64_t refused = 0;         // jobs queued again after a `refused` DONE
  std::uint64_t credit_updates = 0;  // CREDITs applied
  std::uint64_t failed_worker_lost = 0;   // not requeued after a death
  std::uint64_t workers_lost = 0;         // dead: their jobs requeued
  std::uint64_t workers_reconnected = 0;  // READY under a new identity
  std::uint64_t workers_stopped = 0;      // forgotten after draining
  std::uint64_t workers_rejected = 0;     // READY beyond max_workers
  // Jobs answered too_large: args over their worker's max_message_bytes, or
  // a result over the client's max_result_bytes (protocol section 7).
  std::uint64_t rejected_too_large = 0;
  std::uint64_t unknown_worker_messages = 0;  // answered with DISCONNECT
  // Reported by the transport, plus CREDITs naming a pool their worker's
  // registration does not have.
  std::uint64_t malformed_dropped = 0;
  std::uint64_t results_unroutable = 0;  // reported by the transport
  // Gauges, current values.
  std::size_t queued = 0;
  std::size_t delayed = 0;  // waiting for their retry time
  std::size_t in_flight = 0;
  std::size_t workers = 0;
  std::size_t free_credit = 0;
  std::size_t queues_total = 0;  // queues that exist (see QueueStats)
  // By name, at most kMaxQueueStats: Dispatcher::stats() leaves it empty
  // (queue_stats() gives it); Broker::stats() fills it as of its latest
  // sample of the queues (at most Broker's queue_stats_interval old).
  std::vector<QueueStats> queues;
};

// One line, key=value pairs, for logs (without the per-queue entries).
std::string to_string(const DispatcherStats& stats);

// Log lines for the queues whose entries differ between two samples
// (DispatcherStats::queues, `seconds` apart), one per queue in name order
// with its figures and its completion rate per second over the interval;
// beyond `max_lines`, one more line counts the rest. Empty when nothing
// changed. REQUIRES: seconds > 0.
std::vector<std::string> queue_report(const std::vector<QueueStats>& before,
                                      const std::vector<QueueStats>& after,
                                      double seconds, std::size_t max_lines);

class Dispatcher {
 public:
  // Throws std::invalid_argument for a non-positive heartbeat interval or
  // liveness, or max_attempts < 1.
  explicit Dispatcher(DispatcherConfig config);
  ~Dispatcher();
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  // Client messages. `client` is the client's routing identity.
  void on_submit(std::string_view client, protocol::JobMessage submit,
                 Clock::time_point now, Outbox& out);

  // Worker messages. Any of them proves the worker alive; anything but READY
  // from an unknown worker is answered with DISCONNECT (except DISCONNECT).
  // A READY is answered with WELCOME before any JOB: ok, or refused with
  // `overloaded` when max_workers are registered. It replaces the worker's
  // pools; the jobs it holds keep their queues and are charged to the new
  // pool listing theirs. A DONE `refused` queues its job again (see above);
  // one for a job the worker does not hold is dropped and counted like any
  // late DONE, and still zeroes the credit of the pool it names (that of the
  // job's queue, else the worker's only pool). A READY whose name and pid
  // match a registration under another identity takes over that
  // registration's jobs. DISCONNECT makes the worker drain: no new JOB, its
  // DONEs still relayed, forgotten once it holds no job.
  void on_ready(std::string_view worker, const protocol::WorkerInfo& info,
                Clock::time_point now, Outbox& out);
  void on_done(std::string_view worker, protocol::OutcomeMessage done,
               Clock::time_point now, Outbox& out);
  // CREDIT (since 1.2; `pool` since 1.3): that pool's credit = min(free,
  // its slots - jobs held in it), then jobs for it if it has credit.
  // Ignored from a draining worker; dropped and counted as malformed when
  // the worker's registration has no pool of that index.
  void on_credit(std::string_view worker, const protocol::Credit& credit,
                 Clock::time_point now, Outbox& out);
  void on_heartbeat(std::string_view worker, Clock::time_point now,
                    Outbox& out);
  void on_disconnect(std::string_view worker, Clock::time_point now,
                     Outbox& out);

  // The transport could not deliver to `worker` (unroutable or at its
  // high-water mark): it is treated as dead. No-op for an unknown worker.
  void on_worker_unreachable(std::string_view worker, Clock::time_point now,
                             Outbox& out);

  // Expires due deadlines, declares silent workers dead and heartbeats idle
  // ones. Cheap when nothing is due; call it on every loop iteration.
  void on_tick(Clock::time_point now, Outbox& out);

  // DISCONNECT to every worker and to every client with unanswered jobs.
  void on_shutdown(Outbox& out);

  // The earliest time on_tick may have work to do (time_point::max() if
  // none). May be early, never late.
  Clock::time_point next_deadline() const;

  // False once a worker has been forgotten: a JOB already queued for it in
  // an Outbox must then not be sent (the job was requeued).
  bool knows_worker(std::string_view worker) const;

  // The WELCOME that accepts a peer (a READY, or a client's HELLO): the
  // broker's frame limit, heartbeat interval and protocol minor version.
  protocol::Welcome welcome() const;

  void note_malformed();
  void note_result_unroutable();
  // Cheap (no per-queue figures): callable on every loop pass.
  DispatcherStats stats() const;
  // The first kMaxQueueStats queues by name; O(queues), for reports.
  std::vector<QueueStats> queue_stats() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace monsoon::broker
