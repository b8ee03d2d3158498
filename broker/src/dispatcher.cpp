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

// A ready worker's place in a task's ready set. Least loaded first (busy
// slots relative to its slots), so an idle worker always wins over a busy
// one; among equally loaded workers, the one whose credit changed longest ago
// (least recently used). Stamps are unique, so the order is total.
struct ReadyKey {
  std::uint64_t busy;
  std::uint64_t slots;
  std::uint64_t stamp;
  Worker* worker;
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

struct TaskState {
  explicit TaskState(std::string task_name) : name(std::move(task_name)) {}

  std::string name;
  // Waiting jobs, oldest first; jobs requeued after a worker death go first.
  std::list<Job*> queue;
  // Workers that serve this task and have credit. Invariant: when `ready` is
  // not empty, `queue` holds only jobs whose args exceed the frame limit of
  // every ready worker (they wait for a busy one that can take them).
  ReadySet ready;
  std::size_t workers = 0;  // live workers serving this task
};

struct Job {
  JobId id = 0;  // also the arrival order
  std::string client;
  std::uint64_t client_id = 0;
  std::string task;
  zmq::message_t args;  // kept for re-dispatch; shared with JOB frames
  // The client's limit on the result frame; 0 = none announced.
  std::uint64_t max_result_bytes = 0;
  Clock::time_point submitted_at;
  Clock::time_point deadline;
  std::uint32_t attempt = 1;
  Worker* worker = nullptr;  // the holder while in flight, null otherwise
  bool delayed = false;      // waiting in `retries` for its next attempt
  std::list<Job*>::iterator queue_pos;  // valid while queued
};

// A task a worker serves. TaskState outlives it: a served task is never
// erased.
struct Membership {
  TaskState* task;
  ReadySet::iterator pos;  // valid while the worker is listed
};

struct Worker {
  Worker(std::string id, HeartbeatSettings heartbeat, Clock::time_point now)
      : identity(std::move(id)), liveness(heartbeat, now) {}

  std::string identity;
  std::string name;
  std::uint32_t pid = 0;
  std::vector<Membership> tasks;
  std::uint32_t slots = 0;
  std::uint32_t credit = 0;
  std::uint64_t max_message_bytes = 0;  // READY's; 0 = none announced
  std::uint64_t stamp = 0;
  // In the ready sets of its tasks (iff credit > 0 and not draining).
  bool listed = false;
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
      : config(cfg),
        scan_period(std::max<Clock::duration>(cfg.heartbeat.interval / 4,
                                              milliseconds(1))),
        next_job_id(std::max<JobId>(cfg.first_job_id, 1)),
        jitter(cfg.first_job_id) {}  // random in a broker, fixed in tests

  DispatcherConfig config;
  // How often workers' liveness is checked, at most: a quarter of the
  // broker's heartbeat interval or of the shortest a worker announced.
  Clock::duration scan_period;
  JobId next_job_id;
  StringMap<Worker> workers;
  std::map<NameAndPid, Worker*> workers_by_name;  // named workers only
  StringMap<TaskState> tasks;
  std::unordered_map<JobId, Job> jobs;  // queued and in flight
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

  // Answers the job's client with an error and forgets the job.
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

  // --- ready sets and credit ---

  void unlist(Worker& worker) {
    if (!worker.listed) return;
    for (Membership& m : worker.tasks) m.task->ready.erase(m.pos);
    worker.listed = false;
  }

  void list(Worker& worker) {
    if (worker.credit == 0 || worker.draining) return;
    ReadyKey key{worker.slots - worker.credit, worker.slots, worker.stamp,
                 &worker};
    for (Membership& m : worker.tasks) m.pos = m.task->ready.insert(key).first;
    worker.listed = true;
  }

  // Applies a credit change, moving the worker to the back among equals.
  void change_credit(Worker& worker, std::uint32_t credit) {
    unlist(worker);
    free_credit = free_credit - worker.credit + credit;
    worker.credit = credit;
    worker.stamp = next_stamp++;
    list(worker);
  }

  // The credit of a worker that says `free` of its slots are free: jobs it
  // holds answer with DONEs that each return a credit, so they must not be
  // counted as free twice.
  static std::uint32_t credit_for(const Worker& worker, std::uint32_t free) {
    const auto holding = static_cast<std::uint32_t>(
        std::min<std::size_t>(worker.held.size(), worker.slots));
    return std::min(free, worker.slots - holding);
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

  Job& create_job(std::string_view client, protocol::JobMessage& submit,
                  Clock::time_point now) {
    JobId id = next_job_id++;
    Job& job = jobs[id];
    job.id = id;
    job.client = client;
    job.client_id = submit.meta.id;
    job.task = std::move(submit.task);
    job.args = std::move(submit.args);
    job.max_result_bytes = submit.meta.max_result_bytes;
    job.submitted_at = now;
    job.deadline = now + milliseconds(submit.meta.timeout_ms);
    push_deadline(job.deadline, id, now);
    return job;
  }

  void enqueue(TaskState& task, Job& job, bool at_front) {
    job.queue_pos = task.queue.insert(
        at_front ? task.queue.begin() : task.queue.end(), &job);
    ++queued;
  }

  void dequeue(TaskState& task, Job& job) {
    task.queue.erase(job.queue_pos);
    --queued;
  }

  TaskState& task_state(const std::string& name) {
    return tasks.try_emplace(name, name).first->second;
  }

  // Forgets a task nobody waits for and nobody serves.
  void maybe_erase_task(TaskState& task) {
    if (!task.queue.empty() || task.workers > 0) return;
    tasks.erase(tasks.find(task.name));
  }

  // --- frame limits (protocol section 7) ---

  static bool fits(const Worker& worker, std::size_t args_bytes) {
    return worker.max_message_bytes == 0 ||
           args_bytes <= worker.max_message_bytes;
  }

  // The best ready worker of `task` (ready sets are ordered best first)
  // whose frame limit takes args of `args_bytes`; null if none.
  static Worker* ready_worker_for(const TaskState& task,
                                  std::size_t args_bytes) {
    for (const ReadyKey& key : task.ready) {
      if (fits(*key.worker, args_bytes)) return key.worker;
    }
    return nullptr;
  }

  // Whether a live, not draining worker serving `task`, busy or not, takes
  // args of `args_bytes`. Only asked when a job fits no ready worker.
  bool some_worker_fits(const TaskState& task, std::size_t args_bytes) const {
    for (const auto& [identity, worker] : workers) {
      if (worker.draining || !fits(worker, args_bytes)) continue;
      for (const Membership& m : worker.tasks) {
        if (m.task == &task) return true;
      }
    }
    return false;
  }

  // REQUIRES: !some_worker_fits(task, args_bytes).
  std::string too_large_message(const TaskState& task,
                                std::size_t args_bytes) const {
    std::uint64_t largest = 0;
    for (const auto& [identity, worker] : workers) {
      for (const Membership& m : worker.tasks) {
        if (m.task == &task) {
          largest = std::max(largest, worker.max_message_bytes);
        }
      }
    }
    return "args of " + std::to_string(args_bytes) +
           " bytes exceed the frame limit of every worker serving task '" +
           task.name + "' (the largest takes " + std::to_string(largest) +
           " bytes)";
  }

  // REQUIRES: fits(worker, job.args.size()).
  void dispatch(Job& job, Worker& worker, Clock::time_point now, Outbox& out) {
    change_credit(worker, worker.credit - 1);
    job.worker = &worker;
    worker.held.insert(job.id);
    zmq::message_t args;
    args.copy(job.args);  // shares the buffer (reference count), no copy
    // The result must fit both the client's limit and ours.
    const std::uint64_t max_result_bytes =
        job.max_result_bytes > 0
            ? std::min(job.max_result_bytes, config.max_message_bytes)
            : config.max_message_bytes;
    send_to_worker(
        worker, Command::Job,
        protocol::encode_job(Command::Job, job.task,
                             {job.id, remaining_ms(job.deadline, now),
                              job.attempt, max_result_bytes},
                             std::move(args)),
        now, out);
    ++counters.dispatched;
  }

  void fail_queued(Job& job, const TaskState& task, Clock::time_point now,
                   Outbox& out) {
    ++counters.expired_in_queue;
    if (task.workers == 0) {
      fail_job(job, error_code::kNoWorker,
               "no worker serves task '" + task.name + "'", out);
      return;
    }
    if (!some_worker_fits(task, job.args.size())) {
      ++counters.rejected_too_large;
      fail_job(job, error_code::kTooLarge,
               too_large_message(task, job.args.size()), out);
      return;
    }
    fail_job(job, error_code::kDeadlineExceeded,
             "job waited " + std::to_string(elapsed_ms(job.submitted_at, now)) +
                 " ms in queue '" + task.name + "' (" +
                 std::to_string(task.workers) + " workers serve it, all busy)",
             out);
  }

  // Gives the worker, while it has credit, the oldest waiting jobs (global
  // arrival order) among the queues of the tasks it serves that its frame
  // limit takes (only workers with a smaller limit than others skip any).
  void feed(Worker& worker, Clock::time_point now, Outbox& out) {
    while (worker.credit > 0) {
      Job* oldest = nullptr;
      TaskState* from = nullptr;
      for (Membership& m : worker.tasks) {
        for (Job* job : m.task->queue) {
          if (oldest != nullptr && job->id > oldest->id) break;
          if (!fits(worker, job->args.size())) continue;
          oldest = job;
          from = m.task;
          break;
        }
      }
      if (oldest == nullptr) return;
      dequeue(*from, *oldest);
      if (now >= oldest->deadline) {
        fail_queued(*oldest, *from, now, out);
      } else {
        dispatch(*oldest, worker, now, out);
      }
    }
  }

  // Hands a task's waiting jobs to its ready workers (after a requeue), each
  // to the best one whose frame limit takes it.
  void drain_task(TaskState& task, Clock::time_point now, Outbox& out) {
    for (auto next = task.queue.begin();
         next != task.queue.end() && !task.ready.empty();) {
      Job& job = **next++;  // dequeue() invalidates only this position
      if (now >= job.deadline) {
        dequeue(task, job);
        fail_queued(job, task, now, out);
        continue;
      }
      Worker* worker = ready_worker_for(task, job.args.size());
      if (worker == nullptr) continue;  // waits for a busy one that fits
      dequeue(task, job);
      dispatch(job, *worker, now, out);
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
  // attempts or time. Its holder has been cleared already.
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
    retries.push_back({at, job.id});
    std::push_heap(retries.begin(), retries.end(), LaterFirst{});
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
      job.delayed = false;
      TaskState& task = task_state(job.task);
      enqueue(task, job, /*at_front=*/false);
      drain_task(task, now, out);
    }
  }

  // --- refusals (several brokers) ---

  // A DONE `refused` (section 4, "Several brokers"): every slot of the worker
  // was held, by jobs from any broker. Its credit drops to 0 until a DONE or
  // a CREDIT from it; the job, which never ran, goes back to the front of its
  // queue with its attempt unchanged, and to another worker with credit.
  void take_refusal(Worker& worker, JobId id, Clock::time_point now,
                    Outbox& out) {
    change_credit(worker, 0);
    auto it = jobs.find(id);
    if (it == jobs.end() || it->second.worker == nullptr) {
      ++counters.late_done_dropped;
    } else if (it->second.worker != &worker) {
      ++counters.misrouted_done_dropped;
    } else {
      Job& job = it->second;
      worker.held.erase(id);
      job.worker = nullptr;
      ++counters.refused;
      TaskState& task = task_state(job.task);
      enqueue(task, job, /*at_front=*/true);
      drain_task(task, now, out);
      maybe_erase_task(task);
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

  // Points the worker at exactly `names`, keeping task counts right.
  void set_tasks(Worker& worker, std::vector<std::string> names) {
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    std::vector<Membership> old = std::move(worker.tasks);
    worker.tasks.clear();
    for (const std::string& name : names) {
      TaskState& task = task_state(name);
      ++task.workers;
      worker.tasks.push_back({&task, {}});
    }
    for (Membership& m : old) {
      --m.task->workers;
      maybe_erase_task(*m.task);
    }
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
    unlist(worker);
    free_credit -= worker.credit;
    unindex_by_name(worker);
    set_tasks(worker, {});
    workers.erase(workers.find(worker.identity));
  }

  // Moves the jobs of `old` (the same worker process under its previous
  // routing identity) to `worker` and forgets `old`; nothing is requeued.
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
    change_credit(worker, 0);
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
    for (Worker* worker : dead) change_credit(*worker, 0);
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
    std::vector<TaskState*> requeued_to;
    for (Job* job : held) {
      Tally& tally = tallies[job->worker];
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
        TaskState& task = task_state(job->task);
        enqueue(task, *job, /*at_front=*/true);
        requeued_to.push_back(&task);
      }
    }
    for (Worker* worker : dead) {
      const Tally& tally = tallies[worker];
      counters.requeued += tally.requeued;
      counters.failed_worker_lost += tally.failed;
      ++counters.workers_lost;
      spdlog::warn("worker {} lost ({}): {} jobs requeued, {} failed",
                   display_name(*worker), reason, tally.requeued, tally.failed);
      worker->held.clear();
      forget_worker(*worker);
    }
    std::sort(requeued_to.begin(), requeued_to.end());
    requeued_to.erase(std::unique(requeued_to.begin(), requeued_to.end()),
                      requeued_to.end());
    for (TaskState* task : requeued_to) {
      drain_task(*task, now, out);
      maybe_erase_task(*task);
    }
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
  state_ = std::make_unique<State>(config);
}

Dispatcher::~Dispatcher() = default;

void Dispatcher::on_submit(std::string_view client, protocol::JobMessage submit,
                           Clock::time_point now, Outbox& out) {
  State& s = *state_;
  ++s.counters.submitted;
  auto it = s.tasks.find(submit.task);
  TaskState* task = it == s.tasks.end() ? nullptr : &it->second;
  const std::size_t args_bytes = submit.args.size();
  if (task != nullptr) {
    if (Worker* worker = State::ready_worker_for(*task, args_bytes)) {
      s.dispatch(s.create_job(client, submit, now), *worker, now, out);
      return;
    }
    // Waiting would not help when no worker serving the task takes it; with
    // none at all, one may still come.
    if (task->workers > 0 && !s.some_worker_fits(*task, args_bytes)) {
      ++s.counters.rejected_too_large;
      State::send_result(
          std::string(client), submit.task,
          OutcomeMeta::failure(submit.meta.id, error_code::kTooLarge,
                               s.too_large_message(*task, args_bytes)),
          protocol::nil_payload(), out);
      return;
    }
  }
  std::size_t waiting = task == nullptr ? 0 : task->queue.size();
  if (waiting >= s.config.max_queue_per_task ||
      s.queued >= s.config.max_queued_total) {
    ++s.counters.rejected_overloaded;
    std::string why = waiting >= s.config.max_queue_per_task
                          ? "queue '" + submit.task + "' is full (" +
                                std::to_string(waiting) + " jobs waiting)"
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
  if (task == nullptr) task = &s.task_state(submit.task);
  s.enqueue(*task, s.create_job(client, submit, now), /*at_front=*/false);
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
  s.unlist(*worker);
  // Absent: the worker is taken to use the broker's interval.
  worker->liveness.set_peer_interval(
      info.heartbeat_ms == 0
          ? s.config.heartbeat.interval
          : std::clamp(milliseconds(info.heartbeat_ms), kMinWorkerHeartbeat,
                       kMaxWorkerHeartbeat));
  s.next_scan = std::min(s.next_scan, now + s.scan_period_for(*worker));
  s.index_by_name(*worker, info.name, info.pid);
  worker->slots = info.slots;
  worker->max_message_bytes = info.max_message_bytes;
  worker->draining = false;
  worker->liveness.heard(now);
  s.set_tasks(*worker, info.tasks);
  worker->no_retry = {info.no_retry.begin(), info.no_retry.end()};
  if (previous != nullptr) s.take_over(*worker, *previous);
  s.change_credit(*worker,
                  State::credit_for(*worker, info.free.value_or(info.slots)));
  // Re-registrations are routine (and peer-controlled): keep them quiet.
  spdlog::log(known ? spdlog::level::debug : spdlog::level::info,
              "worker {} ready: {} slots ({} free), {} tasks",
              display_name(*worker), worker->slots, worker->credit,
              worker->tasks.size());
  s.send_to_worker(*worker, Command::Welcome,
                   protocol::encode_welcome(welcome()), now, out);
  s.feed(*worker, now, out);
}

void Dispatcher::on_done(std::string_view identity,
                         protocol::OutcomeMessage done, Clock::time_point now,
                         Outbox& out) {
  State& s = *state_;
  Worker* worker = s.heard_from(identity, now, out);
  if (worker == nullptr) return;
  if (!done.meta.ok && done.meta.code == error_code::kRefused) {
    s.take_refusal(*worker, done.meta.id, now, out);
    return;
  }
  auto it = s.jobs.find(done.meta.id);
  if (it == s.jobs.end() || it->second.worker == nullptr) {
    ++s.counters.late_done_dropped;
  } else if (it->second.worker != worker) {
    ++s.counters.misrouted_done_dropped;
  } else {
    Job& job = it->second;
    worker->held.erase(job.id);
    job.worker = nullptr;
    if (!done.meta.ok && done.meta.code == error_code::kRetry) {
      s.retry_later(job, done.meta, now, out);
    } else if (job.max_result_bytes > 0 &&
               done.result.size() > job.max_result_bytes) {
      // A worker that ignored the JOB's max_result_bytes: the client's
      // socket would drop the connection over this frame.
      ++s.counters.rejected_too_large;
      job.worker = worker;  // named in the RESULT
      s.fail_job(job, error_code::kTooLarge,
                 "result of " + std::to_string(done.result.size()) +
                     " bytes exceeds the client's limit of " +
                     std::to_string(job.max_result_bytes),
                 out);
    } else {
      done.meta.id = job.client_id;
      done.meta.worker = worker->name;
      State::send_result(std::move(job.client), job.task, done.meta,
                         std::move(done.result), out);
      s.jobs.erase(it);
      ++s.counters.completed;
    }
  }
  if (worker->draining) {
    s.forget_if_drained(*worker);
    return;
  }
  if (worker->credit < worker->slots) {
    s.change_credit(*worker, worker->credit + 1);
  }
  s.feed(*worker, now, out);
}

void Dispatcher::on_credit(std::string_view identity,
                           const protocol::Credit& credit,
                           Clock::time_point now, Outbox& out) {
  State& s = *state_;
  Worker* worker = s.heard_from(identity, now, out);
  if (worker == nullptr) return;
  // It gets no new JOB; its DONEs say when it is done.
  if (worker->draining) return;
  ++s.counters.credit_updates;
  s.change_credit(*worker, State::credit_for(*worker, credit.free));
  s.feed(*worker, now, out);
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
}

void Dispatcher::on_worker_unreachable(std::string_view identity,
                                       Clock::time_point now, Outbox& out) {
  if (Worker* worker = state_->find_worker(identity)) {
    state_->lose_workers({worker}, "unreachable", now, out);
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
      s.fail_job(job, error_code::kDeadlineExceeded,
                 "deadline passed while waiting to be retried", out);
    } else if (job.worker == nullptr) {
      TaskState& task = s.tasks.find(job.task)->second;
      s.dequeue(task, job);
      s.fail_queued(job, task, now, out);
      s.maybe_erase_task(task);
    } else if (now >= job.deadline + s.config.in_flight_grace) {
      // The worker keeps its slot busy until it answers; its late DONE
      // returns the credit.
      ++s.counters.expired_in_flight;
      Worker& holder = *job.worker;
      holder.held.erase(id);
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

  if (now < s.next_scan) return;
  std::vector<Worker*> dead;
  Clock::duration period = s.scan_period;
  for (auto& [identity, worker] : s.workers) {
    if (worker.liveness.peer_dead(now)) {
      dead.push_back(&worker);
      continue;
    }
    if (worker.liveness.heartbeat_due(now)) {
      s.send_to_worker(worker, Command::Heartbeat,
                       protocol::encode_control(Command::Heartbeat), now, out);
    }
    period = std::min(period, s.scan_period_for(worker));
  }
  if (!dead.empty()) s.lose_workers(dead, "silent for too long", now, out);
  s.next_scan = s.workers.empty() ? Clock::time_point::max() : now + period;
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
  return stats;
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

}  // namespace monsoon::broker
