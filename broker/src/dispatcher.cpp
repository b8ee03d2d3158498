#include "monsoon/broker/dispatcher.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <list>
#include <map>
#include <random>
#include <set>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "log_throttle.hpp"

namespace monsoon::broker {
namespace {

using protocol::Command;
using protocol::OutcomeMeta;
namespace error_code = protocol::error_code;
using JobId = std::uint64_t;
using std::chrono::milliseconds;

struct Worker;
struct Job;
struct PoolState;

// A pool's place in a queue's ready set. Least loaded first (busy slots
// relative to the pool's slots), so an idle pool always wins over a busy
// one; among equally loaded pools, the one whose credit changed longest ago
// (least recently used). Stamps are unique, so the order is total.
struct ReadyKey {
  std::uint64_t busy;
  std::uint64_t slots;
  std::uint64_t stamp;
  PoolState* pool;
};

struct ReadyOrder {
  bool operator()(const ReadyKey& a, const ReadyKey& b) const {
    // busy/slots compared by cross-multiplication: both are <= 65 536.
    std::uint64_t load_a = a.busy * b.slots;
    std::uint64_t load_b = b.busy * a.slots;
    if (load_a != load_b) return load_a < load_b;
    return a.stamp < b.stamp;
  }
};

using ReadySet = std::set<ReadyKey, ReadyOrder>;

// A named queue. It exists while it has jobs (waiting, delayed or in flight;
// their Job::queue points here) or pools listing it; State::erase_unused
// forgets it after the operation that left it without either.
struct QueueState {
  explicit QueueState(std::string queue_name) : name(std::move(queue_name)) {}

  std::string name;
  // Waiting jobs, oldest first; jobs requeued after a worker death go first.
  std::list<Job*> waiting;
  // Pools listing this queue that have credit (their workers not stopping).
  // Invariant: when `ready` is not empty, `waiting` holds only jobs that no
  // ready pool's worker takes (it does not serve their task, or their args
  // exceed its frame limit): they wait for a busy one.
  ReadySet ready;
  // The pools of live registrations, not stopping, that list this queue (a
  // registration lists a queue in one pool at most).
  std::unordered_set<PoolState*> pools;
  std::size_t delayed = 0;    // its jobs waiting out a retry back-off
  std::size_t in_flight = 0;  // its jobs held by a worker
  std::uint64_t submitted = 0;
  std::uint64_t completed = 0;

  bool unused() const {
    return waiting.empty() && delayed == 0 && in_flight == 0 && pools.empty();
  }
};

struct Job {
  JobId id = 0;  // also the arrival order
  std::string client;
  std::uint64_t client_id = 0;
  std::string task;
  QueueState* queue = nullptr;  // where it waits; never null
  zmq::message_t args;          // kept for re-dispatch; shared with JOB frames
  // The client's limit on the result frame; 0 = none announced.
  std::uint64_t max_result_bytes = 0;
  Clock::time_point submitted_at;
  Clock::time_point deadline;
  std::uint32_t attempt = 1;
  Worker* worker = nullptr;  // the holder while in flight, null otherwise
  bool delayed = false;      // waiting in `retries` for its next attempt
  std::list<Job*>::iterator queue_pos;  // valid while waiting
};

// A queue a pool lists, while the pool is attached (its worker registered
// and not stopping); the queue outlives it.
struct Membership {
  QueueState* queue;
  ReadySet::iterator pos;  // valid while the pool is listed
};

// One pool of a worker's registration (READY's `pools`): slots of its own
// for the queues it lists, and this broker's credit for them.
struct PoolState {
  Worker* worker = nullptr;
  std::uint32_t slots = 0;
  std::uint32_t credit = 0;
  std::uint32_t held = 0;  // jobs charged to it
  std::uint64_t stamp = 0;
  // In the ready sets of its queues (iff credit > 0 and attached).
  bool listed = false;
  std::vector<Membership> queues;  // empty once detached
};

struct Worker {
  Worker(std::string id, HeartbeatSettings heartbeat, Clock::time_point now)
      : identity(std::move(id)), liveness(heartbeat, now) {}

  std::string identity;
  std::string name;
  std::uint32_t pid = 0;
  std::unordered_set<std::string> tasks;  // READY's
  // READY's pools, by index (protocol::effective_pools). Built once per
  // registration: ReadyKey, QueueState::pools and pool_of point into it.
  std::vector<PoolState> pools;
  // The pool listing each queue; empty while the worker stops.
  std::unordered_map<const QueueState*, PoolState*> pool_of;
  std::uint32_t slots = 0;              // of all its pools
  std::uint64_t max_message_bytes = 0;  // READY's; 0 = none announced
  // It said DISCONNECT: it gets no new JOB and is forgotten once it holds
  // no job.
  bool draining = false;
  std::unordered_set<JobId> held;
  // Tasks whose jobs fail rather than move on if this worker dies (READY's
  // no_retry).
  std::set<std::string, std::less<>> no_retry;
  PeerLiveness liveness;
};

// How a reconnecting worker is recognised under its new routing identity.
using NameAndPid = std::pair<std::string, std::uint32_t>;

struct Deadline {
  Clock::time_point at;
  JobId id;
};

struct LaterFirst {  // std heap functions keep the max first; we want the min
  bool operator()(const Deadline& a, const Deadline& b) const {
    return a.at > b.at;
  }
};

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

template <typename T>
using StringMap =
    std::unordered_map<std::string, T, StringHash, std::equal_to<>>;

// Stale heap entries (finished jobs) tolerated beyond the live ones before
// the heap is rebuilt.
constexpr std::size_t kHeapSlack = 1024;

// The range of a worker's announced heartbeat interval (READY's
// heartbeat_ms) that the broker honours; beyond it, the nearest bound. The
// floor keeps one worker from making the broker scan all of them in a tight
// loop; the ceiling is the reference worker's own.
constexpr milliseconds kMinWorkerHeartbeat{10};
constexpr milliseconds kMaxWorkerHeartbeat{3'600'000};

std::uint32_t remaining_ms(Clock::time_point deadline, Clock::time_point now) {
  auto left = std::chrono::ceil<milliseconds>(deadline - now).count();
  return static_cast<std::uint32_t>(std::clamp<std::int64_t>(
      left, 1, static_cast<std::int64_t>(protocol::kMaxTimeoutMs)));
}

std::int64_t elapsed_ms(Clock::time_point since, Clock::time_point now) {
  return std::chrono::duration_cast<milliseconds>(now - since).count();
}

std::string display_name(const Worker& worker) {
  if (!worker.name.empty()) return worker.name;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex = "0x";
  for (unsigned char c : worker.identity) {
    hex += kHex[c >> 4];
    hex += kHex[c & 0xf];
  }
  return hex;
}

}  // namespace

std::uint64_t random_first_job_id() {
  std::random_device entropy;
  const std::uint64_t bits =
      (std::uint64_t{entropy()} << 32) | std::uint64_t{entropy()};
  return (bits >> 2) + 1;
}

struct Dispatcher::State {
  explicit State(DispatcherConfig cfg)
      : config(std::move(cfg)),
        scan_period(std::max<Clock::duration>(config.heartbeat.interval / 4,
                                              milliseconds(1))),
        next_job_id(std::max<JobId>(config.first_job_id, 1)),
        jitter(config.first_job_id) {}  // random in a broker, fixed in tests

  DispatcherConfig config;
  // How often workers' liveness is checked, at most: a quarter of the
  // broker's heartbeat interval or of the shortest a worker announced.
  Clock::duration scan_period;
  JobId next_job_id;
  StringMap<Worker> workers;
  std::map<NameAndPid, Worker*> workers_by_name;  // named workers only
  StringMap<QueueState> queues;
  // Queues that may have become unused during the current operation.
  std::vector<QueueState*> maybe_unused;
  std::unordered_map<JobId, Job> jobs;  // waiting, delayed and in flight
  std::vector<Deadline> heap;           // lazy: may hold finished jobs
  std::vector<Deadline> retries;        // delayed jobs by retry time (heap)
  std::mt19937_64 jitter;               // for retry back-offs
  std::size_t queued = 0;
  std::size_t free_credit = 0;
  std::uint64_t next_stamp = 1;
  Clock::time_point next_scan = Clock::time_point::max();
  DispatcherStats counters;  // gauges are filled in by stats()
  LogThrottle rejected_log{std::chrono::seconds(1)};

  // --- outputs ---

  void send_to_worker(Worker& worker, Command command, protocol::Frames frames,
                      Clock::time_point now, Outbox& out) {
    worker.liveness.sent(now);
    out.push_back(
        {Outgoing::Peer::worker, command, worker.identity, std::move(frames)});
  }

  static void send_control(Outgoing::Peer peer, std::string identity,
                           Command command, Outbox& out) {
    out.push_back({peer, command, std::move(identity),
                   protocol::encode_control(command)});
  }

  static void send_result(std::string client, std::string_view task,
                          const OutcomeMeta& meta, zmq::message_t result,
                          Outbox& out) {
    out.push_back({Outgoing::Peer::client, Command::Result, std::move(client),
                   protocol::encode_outcome(Command::Result, task, meta,
                                            std::move(result))});
  }

  // Answers the job's client with an error and forgets the job, which must
  // be neither waiting, delayed nor held any more.
  void fail_job(Job& job, std::string_view code, std::string message,
                Outbox& out) {
    OutcomeMeta meta =
        OutcomeMeta::failure(job.client_id, code, std::move(message));
    if (job.worker != nullptr) meta.worker = job.worker->name;
    send_result(std::move(job.client), job.task, meta, protocol::nil_payload(),
                out);
    JobId id = job.id;  // not a reference into the element being erased
    jobs.erase(id);
  }

  // --- queues ---

  QueueState& queue_state(std::string_view name) {
    auto it = queues.find(name);
    if (it != queues.end()) return it->second;
    std::string key(name);
    return queues.try_emplace(key, key).first->second;
  }

  void note_maybe_unused(QueueState& queue) {
    if (queue.unused()) maybe_unused.push_back(&queue);
  }

  // Forgets the queues left without jobs and pools. Called at the end of
  // every operation, so that no Job::queue or reference held meanwhile
  // dangles.
  void erase_unused() {
    if (maybe_unused.empty()) return;
    std::sort(maybe_unused.begin(), maybe_unused.end());
    maybe_unused.erase(std::unique(maybe_unused.begin(), maybe_unused.end()),
                       maybe_unused.end());
    for (QueueState* queue : maybe_unused) {
      if (queue->unused()) queues.erase(queues.find(queue->name));
    }
    maybe_unused.clear();
  }

  // --- pools, ready sets and credit ---

  void unlist(PoolState& pool) {
    if (!pool.listed) return;
    for (Membership& m : pool.queues) m.queue->ready.erase(m.pos);
    pool.listed = false;
  }

  void list(PoolState& pool) {
    if (pool.credit == 0 || pool.worker->draining || pool.queues.empty()) {
      return;
    }
    ReadyKey key{pool.slots - pool.credit, pool.slots, pool.stamp, &pool};
    for (Membership& m : pool.queues) {
      m.pos = m.queue->ready.insert(key).first;
    }
    pool.listed = true;
  }

  // Applies a credit change, moving the pool to the back among equals.
  void change_credit(PoolState& pool, std::uint32_t credit) {
    unlist(pool);
    free_credit = free_credit - pool.credit + credit;
    pool.credit = credit;
    pool.stamp = next_stamp++;
    list(pool);
  }

  // The credit of a pool that says `free` of its slots are free: jobs it
  // holds answer with DONEs that each return a credit, so they must not be
  // counted as free twice.
  static std::uint32_t credit_for(const PoolState& pool, std::uint32_t free) {
    return std::min(free, pool.slots - std::min(pool.held, pool.slots));
  }

  static PoolState* pool_for(const Worker& worker, const QueueState* queue) {
    auto it = worker.pool_of.find(queue);
    return it == worker.pool_of.end() ? nullptr : it->second;
  }

  // Registers the worker's pools (its registration has none attached):
  // each joins the queues it lists, jobs the worker holds are charged to the
  // pool listing their queue, and each pool's credit is set from its `free`.
  void attach_pools(Worker& worker, const std::vector<protocol::Pool>& pools) {
    worker.pools.clear();
    worker.pools.resize(pools.size());
    worker.slots = 0;
    for (std::size_t i = 0; i < pools.size(); ++i) {
      PoolState& pool = worker.pools[i];
      pool.worker = &worker;
      pool.slots = pools[i].slots;
      worker.slots += pool.slots;
      for (const std::string& name : pools[i].queues) {
        QueueState& queue = queue_state(name);
        // A queue named again (READY's tasks may repeat) stays in its first
        // pool.
        if (!worker.pool_of.emplace(&queue, &pool).second) continue;
        pool.queues.push_back({&queue, {}});
        queue.pools.insert(&pool);
      }
    }
    for (JobId id : worker.held) {
      if (PoolState* pool = pool_for(worker, jobs.at(id).queue)) ++pool->held;
    }
    for (std::size_t i = 0; i < pools.size(); ++i) {
      PoolState& pool = worker.pools[i];
      change_credit(pool,
                    credit_for(pool, pools[i].free.value_or(pools[i].slots)));
    }
  }

  // Takes the worker's pools out of their queues, with no credit. They keep
  // their slots (CREDIT's pool index is checked against them).
  void detach_pools(Worker& worker) {
    for (PoolState& pool : worker.pools) {
      change_credit(pool, 0);
      for (Membership& m : pool.queues) {
        m.queue->pools.erase(&pool);
        note_maybe_unused(*m.queue);
      }
      pool.queues.clear();
      pool.held = 0;
    }
    worker.pool_of.clear();
  }

  // The pool whose credit a DONE returns: the pool of the worker's current
  // registration listing the job's queue when the job is known (`job`);
  // else the pool the DONE names (`pool`, since 1.3: a job that expired in
  // flight, or from before a restart); else the worker's only pool. Null
  // when none.
  PoolState* pool_answered(Worker& worker, const Job* job,
                           std::optional<std::uint32_t> pool) {
    if (job != nullptr) return pool_for(worker, job->queue);
    if (pool) {
      return *pool < worker.pools.size() ? &worker.pools[*pool] : nullptr;
    }
    return worker.pools.size() == 1 ? &worker.pools.front() : nullptr;
  }

  // --- jobs and queues ---

  void push_deadline(Clock::time_point at, JobId id, Clock::time_point now) {
    heap.push_back({at, id});
    std::push_heap(heap.begin(), heap.end(), LaterFirst{});
    if (heap.size() > 2 * jobs.size() + kHeapSlack) rebuild_heap(now);
  }

  void rebuild_heap(Clock::time_point now) {
    heap.clear();
    for (const auto& [id, job] : jobs) {
      bool overdue_in_flight = job.worker != nullptr && now >= job.deadline;
      heap.push_back({overdue_in_flight ? job.deadline + config.in_flight_grace
                                        : job.deadline,
                      id});
    }
    std::make_heap(heap.begin(), heap.end(), LaterFirst{});
  }

  // REQUIRES: the job is then queued, delayed or dispatched at once.
  Job& create_job(std::string_view client, protocol::JobMessage& submit,
                  QueueState& queue, Clock::time_point now) {
    JobId id = next_job_id++;
    Job& job = jobs[id];
    job.id = id;
    job.client = client;
    job.client_id = submit.meta.id;
    job.task = std::move(submit.task);
    job.queue = &queue;
    job.args = std::move(submit.args);
    job.max_result_bytes = submit.meta.max_result_bytes;
    job.submitted_at = now;
    job.deadline = now + milliseconds(submit.meta.timeout_ms);
    push_deadline(job.deadline, id, now);
    ++queue.submitted;
    return job;
  }

  void enqueue(Job& job, bool at_front) {
    std::list<Job*>& waiting = job.queue->waiting;
    job.queue_pos =
        waiting.insert(at_front ? waiting.begin() : waiting.end(), &job);
    ++queued;
  }

  void dequeue(Job& job) {
    job.queue->waiting.erase(job.queue_pos);
    --queued;
    note_maybe_unused(*job.queue);
  }

  // Takes an in-flight job back from its holder (its DONE came, it was
  // refused or it expired, or the holder died). job.worker still names the
  // holder; the caller clears it or forgets the job.
  void release(Job& job) {
    Worker& holder = *job.worker;
    holder.held.erase(job.id);
    if (PoolState* pool = pool_for(holder, job.queue)) --pool->held;
    --job.queue->in_flight;
    note_maybe_unused(*job.queue);
  }

  // --- frame limits (protocol section 7) ---

  static bool fits(const Worker& worker, std::size_t args_bytes) {
    return worker.max_message_bytes == 0 ||
           args_bytes <= worker.max_message_bytes;
  }

  static bool takes(const Worker& worker, const std::string& task,
                    std::size_t args_bytes) {
    return worker.tasks.contains(task) && fits(worker, args_bytes);
  }

  // The best ready pool of `queue` (ready sets are ordered best first) whose
  // worker serves `task` and whose frame limit takes args of `args_bytes`;
  // null if none.
  static PoolState* ready_pool_for(const QueueState& queue,
                                   const std::string& task,
                                   std::size_t args_bytes) {
    for (const ReadyKey& key : queue.ready) {
      if (takes(*key.pool->worker, task, args_bytes)) return key.pool;
    }
    return nullptr;
  }

  // The workers, busy or not, that could run a job of `task` waiting in
  // `queue`: how many serve it, whether one takes args of `args_bytes`, and
  // the largest frame limit among them.
  struct Reach {
    std::size_t serving = 0;
    bool fits = false;
    std::uint64_t largest = 0;
  };

  static Reach reach(const QueueState& queue, const std::string& task,
                     std::size_t args_bytes) {
    Reach reach;
    for (const PoolState* pool : queue.pools) {
      const Worker& worker = *pool->worker;
      if (!worker.tasks.contains(task)) continue;
      ++reach.serving;
      reach.fits = reach.fits || fits(worker, args_bytes);
      reach.largest = std::max(reach.largest, worker.max_message_bytes);
    }
    return reach;
  }

  static std::string too_large_message(const std::string& task,
                                       std::size_t args_bytes,
                                       const Reach& reach) {
    return "args of " + std::to_string(args_bytes) +
           " bytes exceed the frame limit of every worker serving task '" +
           task + "' (the largest takes " + std::to_string(reach.largest) +
           " bytes)";
  }

  // REQUIRES: takes(*pool.worker, job.task, job.args.size()), credit > 0.
  void dispatch(Job& job, PoolState& pool, Clock::time_point now, Outbox& out) {
    change_credit(pool, pool.credit - 1);
    ++pool.held;
    Worker& worker = *pool.worker;
    job.worker = &worker;
    worker.held.insert(job.id);
    ++job.queue->in_flight;
    zmq::message_t args;
    args.copy(job.args);  // shares the buffer (reference count), no copy
    protocol::JobMeta meta;
    meta.id = job.id;
    meta.timeout_ms = remaining_ms(job.deadline, now);
    meta.attempt = job.attempt;
    // The result must fit both the client's limit and ours.
    meta.max_result_bytes =
        job.max_result_bytes > 0
            ? std::min(job.max_result_bytes, config.max_message_bytes)
            : config.max_message_bytes;
    meta.queue = job.queue->name;
    send_to_worker(
        worker, Command::Job,
        protocol::encode_job(Command::Job, job.task, meta, std::move(args)),
        now, out);
    ++counters.dispatched;
  }

  // A job that waited past its deadline (no longer waiting).
  void fail_queued(Job& job, Clock::time_point now, Outbox& out) {
    ++counters.expired_in_queue;
    const QueueState& queue = *job.queue;
    const Reach reach = State::reach(queue, job.task, job.args.size());
    if (reach.serving == 0) {
      fail_job(job, error_code::kNoWorker,
               "no worker serves task '" + job.task + "'" +
                   (queue.name == job.task ? std::string()
                                           : " in queue '" + queue.name + "'"),
               out);
      return;
    }
    if (!reach.fits) {
      ++counters.rejected_too_large;
      fail_job(job, error_code::kTooLarge,
               too_large_message(job.task, job.args.size(), reach), out);
      return;
    }
    fail_job(job, error_code::kDeadlineExceeded,
             "job waited " + std::to_string(elapsed_ms(job.submitted_at, now)) +
                 " ms in queue '" + queue.name + "' (" +
                 std::to_string(reach.serving) + " workers serve it, all busy)",
             out);
  }

  // Gives the pool, while it has credit, the oldest waiting jobs (global
  // arrival order) among its queues that its worker serves and whose args
  // its frame limit takes.
  void feed(PoolState& pool, Clock::time_point now, Outbox& out) {
    const Worker& worker = *pool.worker;
    while (pool.credit > 0) {
      Job* oldest = nullptr;
      for (Membership& m : pool.queues) {
        for (Job* job : m.queue->waiting) {
          if (oldest != nullptr && job->id > oldest->id) break;
          if (!takes(worker, job->task, job->args.size())) continue;
          oldest = job;
          break;
        }
      }
      if (oldest == nullptr) return;
      dequeue(*oldest);
      if (now >= oldest->deadline) {
        fail_queued(*oldest, now, out);
      } else {
        dispatch(*oldest, pool, now, out);
      }
    }
  }

  // Hands a queue's waiting jobs to its ready pools (after a requeue), each
  // to the best one whose worker takes it.
  void drain_queue(QueueState& queue, Clock::time_point now, Outbox& out) {
    for (auto next = queue.waiting.begin();
         next != queue.waiting.end() && !queue.ready.empty();) {
      Job& job = **next++;  // dequeue() invalidates only this position
      if (now >= job.deadline) {
        dequeue(job);
        fail_queued(job, now, out);
        continue;
      }
      PoolState* pool = ready_pool_for(queue, job.task, job.args.size());
      if (pool == nullptr) continue;  // waits for a busy one that takes it
      dequeue(job);
      dispatch(job, *pool, now, out);
    }
  }

  // --- retries ---

  milliseconds retry_delay(std::uint32_t attempt, std::uint32_t hint_ms) {
    const auto doublings = std::min<std::uint32_t>(attempt - 1, 30);
    const auto full = std::min<milliseconds>(
        config.retry_backoff_base * (std::int64_t{1} << doublings),
        config.retry_backoff_max);
    std::uniform_int_distribution<std::int64_t> pick(full.count() / 2,
                                                     full.count());
    return std::max(milliseconds(pick(jitter)), milliseconds(hint_ms));
  }

  // A DONE said `retry`: the job waits out a back-off, or fails when out of
  // attempts or time. It has been released already.
  void retry_later(Job& job, const OutcomeMeta& done, Clock::time_point now,
                   Outbox& out) {
    const std::string why = done.message.empty() ? "the task asked to be "
                                                   "retried"
                                                 : done.message;
    if (job.attempt >= config.max_attempts) {
      ++counters.retries_given_up;
      fail_job(
          job, error_code::kTaskFailed,
          why + " (gave up after " + std::to_string(job.attempt) + " attempts)",
          out);
      return;
    }
    const auto at = now + retry_delay(job.attempt, done.retry_after_ms);
    if (at >= job.deadline) {
      ++counters.retries_given_up;
      fail_job(job, error_code::kTaskFailed,
               why + " (attempt " + std::to_string(job.attempt) +
                   "; no time left for another before the deadline)",
               out);
      return;
    }
    ++counters.retries;
    ++job.attempt;
    job.delayed = true;
    ++job.queue->delayed;
    retries.push_back({at, job.id});
    std::push_heap(retries.begin(), retries.end(), LaterFirst{});
  }

  // Ends a job's wait for its retry time.
  void undelay(Job& job) {
    job.delayed = false;
    --job.queue->delayed;
    note_maybe_unused(*job.queue);
  }

  // Queues the delayed jobs whose time has come, behind the waiting ones.
  void queue_due_retries(Clock::time_point now, Outbox& out) {
    while (!retries.empty() && retries.front().at <= now) {
      std::pop_heap(retries.begin(), retries.end(), LaterFirst{});
      const JobId id = retries.back().id;
      retries.pop_back();
      auto it = jobs.find(id);
      if (it == jobs.end() || !it->second.delayed) continue;
      Job& job = it->second;
      undelay(job);
      enqueue(job, /*at_front=*/false);
      drain_queue(*job.queue, now, out);
    }
  }

  // --- refusals (several brokers) ---

  // A DONE `refused` (section 4, "Several brokers"): every slot of the pool
  // was held, by jobs from any broker. The pool's credit drops to 0 until a
  // DONE or a CREDIT for it; the job, which never ran, goes back to the
  // front of its queue with its attempt unchanged, and to another pool with
  // credit.
  void take_refusal(Worker& worker, JobId id,
                    std::optional<std::uint32_t> named_pool,
                    Clock::time_point now, Outbox& out) {
    auto it = jobs.find(id);
    Job* job = it == jobs.end() ? nullptr : &it->second;
    if (PoolState* pool = pool_answered(worker, job, named_pool)) {
      change_credit(*pool, 0);
    }
    if (job == nullptr || job->worker == nullptr) {
      ++counters.late_done_dropped;
    } else if (job->worker != &worker) {
      ++counters.misrouted_done_dropped;
    } else {
      release(*job);
      job->worker = nullptr;
      ++counters.refused;
      enqueue(*job, /*at_front=*/true);
      drain_queue(*job->queue, now, out);
    }
    forget_if_drained(worker);
  }

  // --- workers ---

  // How often this worker's liveness needs checking.
  Clock::duration scan_period_for(const Worker& worker) const {
    return std::min(scan_period,
                    std::max<Clock::duration>(
                        worker.liveness.send_interval() / 4, milliseconds(1)));
  }

  Worker* find_worker(std::string_view identity) {
    auto it = workers.find(identity);
    return it == workers.end() ? nullptr : &it->second;
  }

  void answer_unknown(std::string_view identity, Outbox& out) {
    ++counters.unknown_worker_messages;
    send_control(Outgoing::Peer::worker, std::string(identity),
                 Command::Disconnect, out);
  }

  // The registered worker a message (not READY or DISCONNECT) came from,
  // now known to be alive; null, answered with DISCONNECT, if unknown.
  Worker* heard_from(std::string_view identity, Clock::time_point now,
                     Outbox& out) {
    Worker* worker = find_worker(identity);
    if (worker == nullptr) {
      answer_unknown(identity, out);
      return nullptr;
    }
    worker->liveness.heard(now);
    return worker;
  }

  // Records the worker's name and pid, under which a reconnect finds it.
  void index_by_name(Worker& worker, const std::string& name,
                     std::uint32_t pid) {
    unindex_by_name(worker);
    worker.name = name;
    worker.pid = pid;
    if (!name.empty()) workers_by_name[{name, pid}] = &worker;
  }

  void unindex_by_name(Worker& worker) {
    auto it = workers_by_name.find({worker.name, worker.pid});
    if (it != workers_by_name.end() && it->second == &worker) {
      workers_by_name.erase(it);
    }
  }

  // The registration a READY with this name and pid continues, if any.
  Worker* find_by_name(const std::string& name, std::uint32_t pid) {
    if (name.empty()) return nullptr;
    auto it = workers_by_name.find({name, pid});
    return it == workers_by_name.end() ? nullptr : it->second;
  }

  // Drops the worker's registration. Its jobs must have been moved,
  // requeued or failed already.
  void forget_worker(Worker& worker) {
    detach_pools(worker);
    unindex_by_name(worker);
    workers.erase(workers.find(worker.identity));
  }

  // Moves the jobs of `old` (the same worker process under its previous
  // routing identity) to `worker` and forgets `old`; nothing is requeued.
  // The caller charges them to `worker`'s pools.
  void take_over(Worker& worker, Worker& old) {
    for (JobId id : old.held) {
      jobs.at(id).worker = &worker;
      worker.held.insert(id);
    }
    spdlog::info("worker {} reconnected: it still holds {} job(s)",
                 display_name(worker), old.held.size());
    old.held.clear();
    forget_worker(old);
    ++counters.workers_reconnected;
  }

  // Stops dispatching to the worker; it keeps its jobs until it answers
  // them (section 5: DISCONNECT from a worker).
  void start_draining(Worker& worker) {
    worker.draining = true;
    detach_pools(worker);
    spdlog::info("worker {} stopping: waiting for its {} job(s)",
                 display_name(worker), worker.held.size());
  }

  // Forgets a draining worker once it holds no job.
  void forget_if_drained(Worker& worker) {
    if (!worker.draining || !worker.held.empty()) return;
    spdlog::info("worker {} stopped", display_name(worker));
    forget_worker(worker);
    ++counters.workers_stopped;
  }

  // Forgets dead workers and requeues their jobs. All of them leave the
  // ready sets first, so no requeued job goes to another dead worker (which
  // would burn one more attempt).
  void lose_workers(const std::vector<Worker*>& dead, std::string_view reason,
                    Clock::time_point now, Outbox& out) {
    for (Worker* worker : dead) {
      for (PoolState& pool : worker->pools) change_credit(pool, 0);
    }
    struct Tally {
      std::size_t requeued = 0;
      std::size_t failed = 0;
    };
    std::unordered_map<Worker*, Tally> tallies;
    std::vector<Job*> held;
    for (Worker* worker : dead) {
      for (JobId id : worker->held) held.push_back(&jobs.at(id));
    }
    // Requeue newest first so that the oldest ends up at the very front.
    std::sort(held.begin(), held.end(),
              [](const Job* a, const Job* b) { return a->id > b->id; });
    std::vector<QueueState*> requeued_to;
    for (Job* job : held) {
      Tally& tally = tallies[job->worker];
      release(*job);
      if (now >= job->deadline) {
        ++tally.failed;
        fail_job(*job, error_code::kDeadlineExceeded,
                 "deadline passed while the job ran on a worker that died",
                 out);
      } else if (job->worker->no_retry.contains(job->task)) {
        ++tally.failed;
        fail_job(*job, error_code::kInternal,
                 "worker died while running the job; task '" + job->task +
                     "' is not retried (at most once)",
                 out);
      } else if (job->attempt >= config.max_attempts) {
        ++tally.failed;
        fail_job(*job, error_code::kInternal,
                 "worker died while running the job (attempt " +
                     std::to_string(job->attempt) + " of " +
                     std::to_string(config.max_attempts) + ")",
                 out);
      } else {
        ++tally.requeued;
        job->worker = nullptr;
        ++job->attempt;
        enqueue(*job, /*at_front=*/true);
        requeued_to.push_back(job->queue);
      }
    }
    for (Worker* worker : dead) {
      const Tally& tally = tallies[worker];
      counters.requeued += tally.requeued;
      counters.failed_worker_lost += tally.failed;
      ++counters.workers_lost;
      spdlog::warn("worker {} lost ({}): {} jobs requeued, {} failed",
                   display_name(*worker), reason, tally.requeued, tally.failed);
      forget_worker(*worker);
    }
    std::sort(requeued_to.begin(), requeued_to.end());
    requeued_to.erase(std::unique(requeued_to.begin(), requeued_to.end()),
                      requeued_to.end());
    for (QueueState* queue : requeued_to) drain_queue(*queue, now, out);
  }
};

Dispatcher::Dispatcher(DispatcherConfig config) {
  if (config.heartbeat.interval <= milliseconds(0) ||
      config.heartbeat.liveness < 1) {
    throw std::invalid_argument(
        "heartbeat interval and liveness must be positive");
  }
  if (config.max_attempts < 1) {
    throw std::invalid_argument("max_attempts must be at least 1");
  }
  state_ = std::make_unique<State>(std::move(config));
}

Dispatcher::~Dispatcher() = default;

void Dispatcher::on_submit(std::string_view client, protocol::JobMessage submit,
                           Clock::time_point now, Outbox& out) {
  State& s = *state_;
  ++s.counters.submitted;
  // A view of the routing table's or of submit.task: used before the task
  // moves into the job.
  const std::string_view queue_name = s.config.routes.queue_for(submit.task);
  auto it = s.queues.find(queue_name);
  QueueState* queue = it == s.queues.end() ? nullptr : &it->second;
  const std::size_t args_bytes = submit.args.size();
  if (queue != nullptr) {
    if (PoolState* pool =
            State::ready_pool_for(*queue, submit.task, args_bytes)) {
      s.dispatch(s.create_job(client, submit, *queue, now), *pool, now, out);
      return;
    }
    // Waiting would not help when no worker serving the job takes it; with
    // none at all, one may still come.
    const State::Reach reach = State::reach(*queue, submit.task, args_bytes);
    if (reach.serving > 0 && !reach.fits) {
      ++s.counters.rejected_too_large;
      State::send_result(
          std::string(client), submit.task,
          OutcomeMeta::failure(
              submit.meta.id, error_code::kTooLarge,
              State::too_large_message(submit.task, args_bytes, reach)),
          protocol::nil_payload(), out);
      return;
    }
  }
  std::size_t waiting = queue == nullptr ? 0 : queue->waiting.size();
  if (waiting >= s.config.max_queued_per_queue ||
      s.queued >= s.config.max_queued_total) {
    ++s.counters.rejected_overloaded;
    std::string why = waiting >= s.config.max_queued_per_queue
                          ? "queue '" + std::string(queue_name) +
                                "' is full (" + std::to_string(waiting) +
                                " jobs waiting)"
                          : "broker is full (" + std::to_string(s.queued) +
                                " jobs waiting in all queues)";
    auto retry = static_cast<std::uint32_t>(s.config.retry_after.count());
    State::send_result(
        std::string(client), submit.task,
        OutcomeMeta::failure(submit.meta.id, error_code::kOverloaded,
                             std::move(why), retry),
        protocol::nil_payload(), out);
    return;
  }
  if (queue == nullptr) queue = &s.queue_state(queue_name);
  s.enqueue(s.create_job(client, submit, *queue, now), /*at_front=*/false);
}

void Dispatcher::on_ready(std::string_view identity,
                          const protocol::WorkerInfo& info,
                          Clock::time_point now, Outbox& out) {
  State& s = *state_;
  Worker* worker = s.find_worker(identity);
  // The same process under a previous identity: it reconnected on a new
  // socket (section 4).
  Worker* previous = s.find_by_name(info.name, info.pid);
  if (previous == worker) previous = nullptr;
  bool known = worker != nullptr;
  if (!known) {
    if (previous == nullptr && s.workers.size() >= s.config.max_workers) {
      ++s.counters.workers_rejected;
      std::uint64_t suppressed = 0;
      if (s.rejected_log.allow(now, suppressed)) {
        spdlog::warn(
            "refusing READY from '{}': {} workers registered already "
            "({} more refused since last report)",
            info.name, s.workers.size(), suppressed);
      }
      protocol::Welcome refusal = protocol::Welcome::refusal(
          error_code::kOverloaded,
          "the broker's limit of " + std::to_string(s.config.max_workers) +
              " workers is reached",
          static_cast<std::uint32_t>(s.config.retry_after.count()));
      refusal.minor = protocol::kProtocolMinor;
      out.push_back({Outgoing::Peer::worker, Command::Welcome,
                     std::string(identity), protocol::encode_welcome(refusal)});
      return;
    }
    worker = &s.workers
                  .try_emplace(std::string(identity), std::string(identity),
                               s.config.heartbeat, now)
                  .first->second;
  }
  s.detach_pools(*worker);
  // Absent: the worker is taken to use the broker's interval.
  worker->liveness.set_peer_interval(
      info.heartbeat_ms == 0
          ? s.config.heartbeat.interval
          : std::clamp(milliseconds(info.heartbeat_ms), kMinWorkerHeartbeat,
                       kMaxWorkerHeartbeat));
  s.next_scan = std::min(s.next_scan, now + s.scan_period_for(*worker));
  s.index_by_name(*worker, info.name, info.pid);
  worker->max_message_bytes = info.max_message_bytes;
  worker->draining = false;
  worker->liveness.heard(now);
  worker->tasks = {info.tasks.begin(), info.tasks.end()};
  worker->no_retry = {info.no_retry.begin(), info.no_retry.end()};
  if (previous != nullptr) s.take_over(*worker, *previous);
  s.attach_pools(*worker, protocol::effective_pools(info));
  std::uint64_t credit = 0;
  for (const PoolState& pool : worker->pools) credit += pool.credit;
  // Re-registrations are routine (and peer-controlled): keep them quiet.
  spdlog::log(known ? spdlog::level::debug : spdlog::level::info,
              "worker {} ready: {} slots ({} free) in {} pool(s), {} tasks",
              display_name(*worker), worker->slots, credit,
              worker->pools.size(), worker->tasks.size());
  s.send_to_worker(*worker, Command::Welcome,
                   protocol::encode_welcome(welcome()), now, out);
  for (PoolState& pool : worker->pools) s.feed(pool, now, out);
  s.erase_unused();
}

void Dispatcher::on_done(std::string_view identity,
                         protocol::OutcomeMessage done, Clock::time_point now,
                         Outbox& out) {
  State& s = *state_;
  Worker* worker = s.heard_from(identity, now, out);
  if (worker == nullptr) return;
  if (!done.meta.ok && done.meta.code == error_code::kRefused) {
    s.take_refusal(*worker, done.meta.id, done.meta.pool, now, out);
    s.erase_unused();
    return;
  }
  auto it = s.jobs.find(done.meta.id);
  Job* job = it == s.jobs.end() ? nullptr : &it->second;
  PoolState* pool = s.pool_answered(*worker, job, done.meta.pool);
  if (job == nullptr || job->worker == nullptr) {
    ++s.counters.late_done_dropped;
  } else if (job->worker != worker) {
    ++s.counters.misrouted_done_dropped;
  } else {
    s.release(*job);
    job->worker = nullptr;
    if (!done.meta.ok && done.meta.code == error_code::kRetry) {
      s.retry_later(*job, done.meta, now, out);
    } else if (job->max_result_bytes > 0 &&
               done.result.size() > job->max_result_bytes) {
      // A worker that ignored the JOB's max_result_bytes: the client's
      // socket would drop the connection over this frame.
      ++s.counters.rejected_too_large;
      job->worker = worker;  // named in the RESULT
      s.fail_job(*job, error_code::kTooLarge,
                 "result of " + std::to_string(done.result.size()) +
                     " bytes exceeds the client's limit of " +
                     std::to_string(job->max_result_bytes),
                 out);
    } else {
      done.meta.id = job->client_id;
      done.meta.worker = worker->name;
      State::send_result(std::move(job->client), job->task, done.meta,
                         std::move(done.result), out);
      ++job->queue->completed;
      s.jobs.erase(it);
      ++s.counters.completed;
    }
  }
  if (worker->draining) {
    s.forget_if_drained(*worker);
  } else if (pool != nullptr) {
    if (pool->credit < pool->slots) s.change_credit(*pool, pool->credit + 1);
    s.feed(*pool, now, out);
  }
  s.erase_unused();
}

void Dispatcher::on_credit(std::string_view identity,
                           const protocol::Credit& credit,
                           Clock::time_point now, Outbox& out) {
  State& s = *state_;
  Worker* worker = s.heard_from(identity, now, out);
  if (worker == nullptr) return;
  // It gets no new JOB; its DONEs say when it is done.
  if (worker->draining) return;
  if (credit.pool >= worker->pools.size()) {
    ++s.counters.malformed_dropped;
    return;
  }
  ++s.counters.credit_updates;
  PoolState& pool = worker->pools[credit.pool];
  s.change_credit(pool, State::credit_for(pool, credit.free));
  s.feed(pool, now, out);
  s.erase_unused();
}

void Dispatcher::on_heartbeat(std::string_view identity, Clock::time_point now,
                              Outbox& out) {
  (void)state_->heard_from(identity, now, out);
}

void Dispatcher::on_disconnect(std::string_view identity, Clock::time_point now,
                               Outbox&) {
  // An unknown worker saying goodbye needs no answer.
  Worker* worker = state_->find_worker(identity);
  if (worker == nullptr) return;
  worker->liveness.heard(now);
  if (!worker->draining) state_->start_draining(*worker);
  state_->forget_if_drained(*worker);
  state_->erase_unused();
}

void Dispatcher::on_worker_unreachable(std::string_view identity,
                                       Clock::time_point now, Outbox& out) {
  if (Worker* worker = state_->find_worker(identity)) {
    state_->lose_workers({worker}, "unreachable", now, out);
    state_->erase_unused();
  }
}

void Dispatcher::on_tick(Clock::time_point now, Outbox& out) {
  State& s = *state_;
  // First: a delayed job's retry time is before its deadline.
  s.queue_due_retries(now, out);
  while (!s.heap.empty() && s.heap.front().at <= now) {
    std::pop_heap(s.heap.begin(), s.heap.end(), LaterFirst{});
    JobId id = s.heap.back().id;
    s.heap.pop_back();
    auto it = s.jobs.find(id);
    if (it == s.jobs.end()) continue;  // finished: a stale entry
    Job& job = it->second;
    if (job.delayed) {  // defensive: retries are queued before deadlines
      s.undelay(job);
      s.fail_job(job, error_code::kDeadlineExceeded,
                 "deadline passed while waiting to be retried", out);
    } else if (job.worker == nullptr) {
      s.dequeue(job);
      s.fail_queued(job, now, out);
    } else if (now >= job.deadline + s.config.in_flight_grace) {
      // The worker keeps its slot busy until it answers; its late DONE
      // returns the credit.
      ++s.counters.expired_in_flight;
      Worker& holder = *job.worker;
      s.release(job);
      std::string message = "job ran on worker " + display_name(holder) +
                            " for " +
                            std::to_string(elapsed_ms(job.submitted_at, now)) +
                            " ms since it was submitted, past its deadline";
      s.fail_job(job, error_code::kDeadlineExceeded, std::move(message), out);
      s.forget_if_drained(holder);
    } else {
      s.push_deadline(job.deadline + s.config.in_flight_grace, id, now);
    }
  }

  if (now >= s.next_scan) {
    std::vector<Worker*> dead;
    Clock::duration period = s.scan_period;
    for (auto& [identity, worker] : s.workers) {
      if (worker.liveness.peer_dead(now)) {
        dead.push_back(&worker);
        continue;
      }
      if (worker.liveness.heartbeat_due(now)) {
        s.send_to_worker(worker, Command::Heartbeat,
                         protocol::encode_control(Command::Heartbeat), now,
                         out);
      }
      period = std::min(period, s.scan_period_for(worker));
    }
    if (!dead.empty()) s.lose_workers(dead, "silent for too long", now, out);
    s.next_scan = s.workers.empty() ? Clock::time_point::max() : now + period;
  }
  s.erase_unused();
}

void Dispatcher::on_shutdown(Outbox& out) {
  State& s = *state_;
  for (const auto& [identity, worker] : s.workers) {
    State::send_control(Outgoing::Peer::worker, identity, Command::Disconnect,
                        out);
  }
  std::unordered_set<std::string_view> clients;
  for (const auto& [id, job] : s.jobs) {
    if (clients.insert(job.client).second) {
      State::send_control(Outgoing::Peer::client, job.client,
                          Command::Disconnect, out);
    }
  }
}

Clock::time_point Dispatcher::next_deadline() const {
  const State& s = *state_;
  auto next = s.next_scan;
  if (!s.heap.empty()) next = std::min(next, s.heap.front().at);
  if (!s.retries.empty()) next = std::min(next, s.retries.front().at);
  return next;
}

bool Dispatcher::knows_worker(std::string_view identity) const {
  return state_->workers.contains(identity);
}

protocol::Welcome Dispatcher::welcome() const {
  protocol::Welcome welcome;
  welcome.max_message_bytes = state_->config.max_message_bytes;
  welcome.heartbeat_ms =
      static_cast<std::uint32_t>(state_->config.heartbeat.interval.count());
  welcome.minor = protocol::kProtocolMinor;
  return welcome;
}

void Dispatcher::note_malformed() { ++state_->counters.malformed_dropped; }

void Dispatcher::note_result_unroutable() {
  ++state_->counters.results_unroutable;
}

DispatcherStats Dispatcher::stats() const {
  const State& s = *state_;
  DispatcherStats stats = s.counters;
  stats.queued = s.queued;
  stats.delayed = s.retries.size();
  stats.in_flight = s.jobs.size() - s.queued - s.retries.size();
  stats.workers = s.workers.size();
  stats.free_credit = s.free_credit;
  stats.queues_total = s.queues.size();
  return stats;
}

std::vector<QueueStats> Dispatcher::queue_stats() const {
  const State& s = *state_;
  // The first kMaxQueueStats names, without sorting the whole map.
  std::vector<const std::string*> names;
  names.reserve(s.queues.size());
  for (const auto& entry : s.queues) names.push_back(&entry.first);
  const auto by_name = [](const std::string* a, const std::string* b) {
    return *a < *b;
  };
  const auto listed = names.begin() + static_cast<std::ptrdiff_t>(std::min(
                                          names.size(), kMaxQueueStats));
  std::partial_sort(names.begin(), listed, names.end(), by_name);
  std::vector<QueueStats> queues;
  queues.reserve(static_cast<std::size_t>(listed - names.begin()));
  for (auto name = names.begin(); name != listed; ++name) {
    const auto& queue = s.queues.find(**name)->second;
    std::uint64_t slots = 0;
    std::uint64_t credit = 0;
    for (const PoolState* pool : queue.pools) {
      slots += pool->slots;
      credit += pool->credit;
    }
    queues.push_back({**name, queue.waiting.size() + queue.delayed,
                      queue.in_flight, queue.pools.size(), slots, credit,
                      queue.submitted, queue.completed});
  }
  return queues;
}

std::string to_string(const DispatcherStats& s) {
  return "submitted=" + std::to_string(s.submitted) +
         " dispatched=" + std::to_string(s.dispatched) +
         " completed=" + std::to_string(s.completed) +
         " rejected_overloaded=" + std::to_string(s.rejected_overloaded) +
         " expired_in_queue=" + std::to_string(s.expired_in_queue) +
         " expired_in_flight=" + std::to_string(s.expired_in_flight) +
         " late_done_dropped=" + std::to_string(s.late_done_dropped) +
         " misrouted_done_dropped=" + std::to_string(s.misrouted_done_dropped) +
         " requeued=" + std::to_string(s.requeued) +
         " retries=" + std::to_string(s.retries) +
         " retries_given_up=" + std::to_string(s.retries_given_up) +
         " refused=" + std::to_string(s.refused) +
         " credit_updates=" + std::to_string(s.credit_updates) +
         " failed_worker_lost=" + std::to_string(s.failed_worker_lost) +
         " workers_lost=" + std::to_string(s.workers_lost) +
         " workers_reconnected=" + std::to_string(s.workers_reconnected) +
         " workers_stopped=" + std::to_string(s.workers_stopped) +
         " workers_rejected=" + std::to_string(s.workers_rejected) +
         " rejected_too_large=" + std::to_string(s.rejected_too_large) +
         " unknown_worker_messages=" +
         std::to_string(s.unknown_worker_messages) +
         " malformed_dropped=" + std::to_string(s.malformed_dropped) +
         " results_unroutable=" + std::to_string(s.results_unroutable) +
         " queued=" + std::to_string(s.queued) +
         " in_flight=" + std::to_string(s.in_flight) +
         " workers=" + std::to_string(s.workers) +
         " free_credit=" + std::to_string(s.free_credit);
}

std::vector<std::string> queue_report(const std::vector<QueueStats>& before,
                                      const std::vector<QueueStats>& after,
                                      double seconds, std::size_t max_lines) {
  std::vector<std::string> lines;
  std::size_t unreported = 0;
  auto previous = before.begin();
  for (const QueueStats& queue : after) {
    while (previous != before.end() && previous->name < queue.name) {
      ++previous;
    }
    const bool known = previous != before.end() && previous->name == queue.name;
    if (known && *previous == queue) continue;
    if (lines.size() == max_lines) {
      ++unreported;
      continue;
    }
    // A queue new since `before`, or back with fresh counters, counts
    // from 0.
    const std::uint64_t completed_before =
        known && previous->completed <= queue.completed ? previous->completed
                                                        : 0;
    const double rate =
        static_cast<double>(queue.completed - completed_before) / seconds;
    lines.push_back(fmt::format(
        "queue {}: {} queued, {} in flight, {} workers, {} slots, {} credit, "
        "{} submitted, {} completed ({:.1f}/s)",
        queue.name, queue.queued, queue.in_flight, queue.workers, queue.slots,
        queue.credit, queue.submitted, queue.completed, rate));
  }
  // Queues gone since `before` (no jobs, no workers left).
  for (const QueueStats& old : before) {
    const bool present =
        std::binary_search(after.begin(), after.end(), old,
                           [](const QueueStats& a, const QueueStats& b) {
                             return a.name < b.name;
                           });
    if (present) continue;
    if (lines.size() == max_lines) {
      ++unreported;
      continue;
    }
    lines.push_back("queue " + old.name + ": gone (no jobs, no workers)");
  }
  if (unreported > 0) {
    lines.push_back(std::to_string(unreported) +
                    " more queue(s) changed, not shown");
  }
  return lines;
}

}  // namespace monsoon::broker
