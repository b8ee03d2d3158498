#include "monsoon/workers/worker.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <stop_token>
#include <thread>
#include <unordered_map>
#include <utility>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "monsoon/common/broker_session.hpp"
#include "monsoon/common/protocol.hpp"
#include "monsoon/common/wakeup.hpp"
#include "monsoon/workers/slot_ledger.hpp"

namespace monsoon::workers {

namespace {

using protocol::Command;
using protocol::Frames;
using std::chrono::milliseconds;

// Room for everything in a DONE besides the result.
constexpr std::size_t kEnvelopeBytes =
    protocol::kMaxMetaBytes + protocol::kMaxTaskNameBytes + 64;
// DONEs rejecting jobs (unknown task, overloaded) that may wait for the
// socket on top of one DONE per slot; more are dropped.
constexpr std::size_t kMaxQueuedRejections = 1024;
// How long the final close may take to deliver DISCONNECT and last DONEs.
constexpr milliseconds kFinalFlush{1000};
constexpr milliseconds kMaxHeartbeatInterval{3'600'000};

struct Job {
  std::size_t handle = 0;  // of the held job (Worker::Impl::held_)
  std::string task;
  protocol::JobMeta meta;
  Clock::time_point deadline;
  zmq::message_t args;
};

struct Completion {
  std::size_t handle = 0;
  std::string task;
  std::uint64_t id = 0;
  TaskOutcome outcome;
};

// What READY announces, with `free[i]` slots free in pool i.
protocol::WorkerInfo registration(const WorkerConfig& config,
                                  const TaskRegistry& registry,
                                  const std::vector<std::uint32_t>& free) {
  protocol::WorkerInfo info;
  info.tasks = config.tasks;
  for (const auto& task : config.tasks) {
    if (!registry.options(task).retry_if_worker_dies) {
      info.no_retry.push_back(task);
    }
  }
  info.free = 0;
  for (std::size_t i = 0; i < config.pools.size(); ++i) {
    info.pools.push_back(
        {config.pools[i].queues, config.pools[i].slots, free[i]});
    info.slots += config.pools[i].slots;
    *info.free += free[i];
  }
  // One pool serving the queues named as the tasks is what a READY without
  // `pools` stands for (protocol::effective_pools): said so, the names
  // would take their bytes twice.
  if (info.pools.size() == 1 && info.pools.front().queues == info.tasks) {
    info.pools.clear();
  }
  info.name = config.name;
  info.pid = static_cast<std::uint32_t>(getpid());
  info.heartbeat_ms =
      static_cast<std::uint32_t>(config.heartbeat.interval.count());
  info.max_message_bytes = config.max_message_bytes;
  return info;
}

// "pool 1 (slow, reports)", for messages.
std::string describe_pool(const std::vector<PoolConfig>& pools,
                          std::size_t index) {
  std::string text = "pool " + std::to_string(index) + " (";
  const auto& queues = pools[index].queues;
  for (std::size_t i = 0; i < queues.size() && i < 3; ++i) {
    text += (i > 0 ? ", " : "") + queues[i];
  }
  return text + (queues.size() > 3 ? ", ...)" : ")");
}

WorkerConfig resolve(WorkerConfig config, const TaskRegistry& registry) {
  if (registry.empty()) throw std::invalid_argument("no tasks registered");
  if (config.broker_endpoints.empty()) {
    throw std::invalid_argument("no broker endpoint");
  }
  std::set<std::string> endpoints;
  for (const auto& endpoint : config.broker_endpoints) {
    if (endpoint.empty()) throw std::invalid_argument("empty broker endpoint");
    if (!endpoints.insert(endpoint).second) {
      throw std::invalid_argument("broker endpoint '" + endpoint +
                                  "' listed twice");
    }
  }
  if (config.slots == 0) {
    config.slots = std::max(1u, std::thread::hardware_concurrency());
  }
  if (config.tasks.empty()) {
    config.tasks = registry.names();
  } else {
    std::set<std::string> unique;
    for (const auto& task : config.tasks) {
      if (!registry.contains(task)) {
        throw std::invalid_argument("unknown task '" + task + "'");
      }
      unique.insert(task);
    }
    config.tasks.assign(unique.begin(), unique.end());
  }
  if (config.tasks.size() > protocol::kMaxAnnouncedTasks) {
    throw std::invalid_argument("a worker serves at most " +
                                std::to_string(protocol::kMaxAnnouncedTasks) +
                                " tasks");
  }
  if (config.pools.empty()) {
    PoolConfig threads{{}, config.slots};
    PoolConfig async{{}, config.async_slots};
    for (const auto& task : config.tasks) {
      (registry.find_async(task) != nullptr ? async : threads)
          .queues.push_back(task);
    }
    for (auto* pool : {&threads, &async}) {
      if (!pool->queues.empty()) config.pools.push_back(std::move(*pool));
    }
  }
  check_pools(config.pools);
  if (config.name.empty()) config.name = default_worker_name();
  std::vector<std::uint32_t> free;  // every slot: the largest READY
  for (const auto& pool : config.pools) free.push_back(pool.slots);
  const auto ready_bytes =
      protocol::encode_ready(registration(config, registry, free))
          .back()
          .size();
  if (ready_bytes > protocol::kMaxMetaBytes) {
    // The broker would drop every READY: refuse now, with a reason.
    throw std::invalid_argument(
        "the registration of " + std::to_string(config.tasks.size()) +
        " tasks in " + std::to_string(config.pools.size()) + " pool(s) takes " +
        std::to_string(ready_bytes) + " bytes, more than the protocol's " +
        std::to_string(protocol::kMaxMetaBytes) +
        ": split the tasks over several workers (--tasks)");
  }
  if (config.heartbeat.interval < milliseconds{1} ||
      config.heartbeat.interval > kMaxHeartbeatInterval) {
    throw std::invalid_argument("heartbeat interval must be 1 ms to 1 hour");
  }
  if (config.heartbeat.liveness < 1) {
    throw std::invalid_argument("liveness must be at least 1");
  }
  if (config.drain_timeout < milliseconds{0} ||
      config.cancel_grace < milliseconds{0}) {
    throw std::invalid_argument("negative drain timeout or cancel grace");
  }
  if (config.max_message_bytes <= 2 * kEnvelopeBytes) {
    throw std::invalid_argument("max message bytes must exceed " +
                                std::to_string(2 * kEnvelopeBytes));
  }
  return config;
}

}  // namespace

void check_pools(const std::vector<PoolConfig>& pools) {
  if (pools.empty() || pools.size() > protocol::kMaxPools) {
    throw std::invalid_argument("a worker has 1 to " +
                                std::to_string(protocol::kMaxPools) +
                                " pools, not " + std::to_string(pools.size()));
  }
  std::set<std::string_view> queues;
  std::uint64_t slots = 0;
  for (std::size_t i = 0; i < pools.size(); ++i) {
    const PoolConfig& pool = pools[i];
    if (pool.queues.empty() || pool.queues.size() > protocol::kMaxPoolQueues) {
      throw std::invalid_argument(
          "pool " + std::to_string(i) + " serves " +
          std::to_string(pool.queues.size()) + " queues; 1 to " +
          std::to_string(protocol::kMaxPoolQueues) + " allowed");
    }
    for (const auto& queue : pool.queues) {
      if (!protocol::is_valid_task_name(queue)) {
        throw std::invalid_argument(
            "invalid queue name '" + queue +
            "': 1 to 128 characters of A-Z a-z 0-9 . _ : -");
      }
      if (!queues.insert(queue).second) {
        throw std::invalid_argument("queue '" + queue +
                                    "' is in more than one pool, or twice "
                                    "in one: each queue has one pool");
      }
    }
    if (pool.slots < 1 || pool.slots > protocol::kMaxSlots) {
      throw std::invalid_argument(
          describe_pool(pools, i) + " has " + std::to_string(pool.slots) +
          " slots; 1 to " + std::to_string(protocol::kMaxSlots) + " allowed");
    }
    slots += pool.slots;
  }
  if (slots > protocol::kMaxSlots) {
    throw std::invalid_argument(
        "the pools have " + std::to_string(slots) + " slots in all; at most " +
        std::to_string(protocol::kMaxSlots) + " allowed");
  }
}

std::string default_worker_name() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  return "worker-" + std::to_string(getpid()) + "@" +
         (host[0] != '\0' ? host : "localhost");
}

class Worker::Impl final : public AsyncJob::Host {
 public:
  Impl(WorkerConfig config, const TaskRegistry& registry)
      : config_(resolve(std::move(config), registry)),
        registry_(registry),
        served_(config_.tasks.begin(), config_.tasks.end()) {
    std::size_t slots = 0;
    for (std::size_t i = 0; i < config_.pools.size(); ++i) {
      pools_.push_back(std::make_unique<Pool>(config_.pools[i].slots,
                                              config_.broker_endpoints.size()));
      for (const auto& queue : config_.pools[i].queues) {
        pool_of_queue_.emplace(queue, i);
      }
      slots += config_.pools[i].slots;
    }
    total_slots_ = slots;
    // At most one completion per held job: finish() never allocates.
    completions_.reserve(slots);
    completions_batch_.reserve(slots);
  }

  void run();
  void stop() noexcept {
    stop_requested_.store(true);
    wakeup_.notify();
  }

  const WorkerConfig& config() const noexcept { return config_; }

  // AsyncJob::Host
  void finish(std::size_t handle, std::string_view task, std::uint64_t id,
              TaskOutcome outcome) noexcept override;
  void schedule(Clock::time_point when, std::function<void(AsyncJob&)> callback,
                AsyncJob job) override;

  WorkerCounters counters() const noexcept {
    WorkerCounters counters;
    counters.jobs_received = jobs_received_.load(std::memory_order_relaxed);
    counters.jobs_succeeded = jobs_succeeded_.load(std::memory_order_relaxed);
    counters.jobs_failed = jobs_failed_.load(std::memory_order_relaxed);
    counters.jobs_refused = jobs_refused_.load(std::memory_order_relaxed);
    counters.threads_started = threads_started_.load(std::memory_order_relaxed);
    std::lock_guard lock(sessions_mutex_);
    for (const auto& session : sessions_) {
      const BrokerSessionCounters session_counters = session->counters();
      counters.malformed_dropped += session_counters.malformed_dropped;
      counters.reconnects += session_counters.reconnects;
    }
    return counters;
  }

 private:
  // One pool's slots (config_.pools, same index) and the threads that run
  // its thread tasks.
  struct Pool {
    Pool(std::uint32_t slots, std::size_t brokers) : ledger(slots, brokers) {}

    // Socket thread only: which slots are held, and which brokers must
    // hear of a freed one; the threads, started on demand (never more than
    // the slots), joined by run().
    SlotLedger ledger;
    std::vector<std::jthread> threads;

    // Socket thread -> the pool's threads. Holds at most the slots' jobs
    // (the ledger).
    std::mutex mutex;
    std::condition_variable_any jobs_ready;
    std::deque<Job> jobs;
    std::size_t idle = 0;  // threads waiting for a job
  };

  // A job between its JOB and its DONE: whose broker sent it, the pool that
  // holds it, its result limit (JOB's max_result_bytes, 0 when it carried
  // none).
  struct Held {
    std::size_t broker = 0;
    std::size_t pool = 0;
    std::uint64_t max_result_bytes = 0;
  };

  // A pool's threads.
  void thread_loop(Pool& pool, std::stop_token stop);

  // The socket thread: everything below.
  void serve();
  void open_sessions();
  BrokerSessionCallbacks callbacks(std::size_t broker);
  protocol::Frames greeting(std::size_t broker);
  void begin_stop(Clock::time_point now);
  bool drained(Clock::time_point now) const;
  bool await_cancelled_tasks();
  milliseconds poll_timeout(Clock::time_point now) const;
  void handle_job(std::size_t broker, protocol::Frames& frames,
                  Clock::time_point now);
  std::size_t pool_of(const protocol::JobMessage& job) const;
  void run_on_thread(Pool& pool, Job job);
  void reject(std::size_t broker, std::size_t pool, const std::string& task,
              std::uint64_t id, std::string_view code, std::string message);
  void queue_done(std::size_t broker, std::size_t pool, const std::string& task,
                  protocol::OutcomeMeta meta, zmq::message_t result);
  void collect_completions();
  void grant_credit();
  void post_credit(std::size_t broker, protocol::Credit credit);
  bool speaks_credit(std::size_t broker) const;
  void run_due_timers(Clock::time_point now);
  void wake_socket_thread() noexcept;

  const WorkerConfig config_;
  const TaskRegistry& registry_;
  const std::set<std::string, std::less<>> served_;
  std::size_t total_slots_ = 0;  // over all pools
  Wakeup wakeup_;
  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> ran_{false};
  std::thread::id socket_thread_;  // set by run() before any job exists

  // Async jobs waiting for their resume_at time, in time order. Any thread
  // adds; the socket thread runs them.
  struct Timer {
    std::function<void(AsyncJob&)> callback;
    AsyncJob job;
  };
  mutable std::mutex timers_mutex_;
  std::multimap<Clock::time_point, Timer> timers_;
  std::stop_source async_cancellation_;

  // Pools' threads -> socket thread, followed by wakeup_.notify().
  std::mutex completions_mutex_;
  std::vector<Completion> completions_;
  std::vector<Completion> completions_batch_;  // socket thread's spare

  // Socket thread only, but for counters(), which reads the sessions'
  // atomic counters under sessions_mutex_ (sessions are only added, by
  // open_sessions, before jobs flow).
  zmq::context_t context_;
  mutable std::mutex sessions_mutex_;
  std::vector<std::unique_ptr<BrokerSession>> sessions_;
  std::vector<std::unique_ptr<Pool>> pools_;
  std::map<std::string, std::size_t, std::less<>> pool_of_queue_;
  // Held jobs by handle (a number of their own: a re-sent JOB may hold an
  // id twice, protocol section 4).
  std::unordered_map<std::size_t, Held> held_;
  std::size_t next_handle_ = 0;
  bool stopping_ = false;
  Clock::time_point drain_deadline_{};
  std::size_t turn_ = 0;  // which session serve() handles first

  std::atomic<std::uint64_t> jobs_received_{0};
  std::atomic<std::uint64_t> jobs_succeeded_{0};
  std::atomic<std::uint64_t> jobs_failed_{0};
  std::atomic<std::uint64_t> jobs_refused_{0};
  std::atomic<std::uint64_t> threads_started_{0};
};

void Worker::Impl::thread_loop(Pool& pool, std::stop_token stop) {
  for (;;) {
    Job job;
    {
      std::unique_lock lock(pool.mutex);
      ++pool.idle;
      const bool got = pool.jobs_ready.wait(
          lock, stop, [&pool] { return !pool.jobs.empty(); });
      --pool.idle;
      if (!got) return;
      job = std::move(pool.jobs.front());
      pool.jobs.pop_front();
    }
    const TaskContext context{job.task, job.meta.id, job.meta.attempt,
                              job.deadline, stop};
    TaskOutcome outcome =
        execute_task(registry_, context,
                     std::string_view(static_cast<const char*>(job.args.data()),
                                      job.args.size()));
    finish(job.handle, job.task, job.meta.id, std::move(outcome));
  }
}

void Worker::Impl::run() {
  if (ran_.exchange(true)) throw std::logic_error("Worker::run called twice");
  socket_thread_ = std::this_thread::get_id();
  serve();
  if (!held_.empty()) {
    spdlog::warn("drain timeout: cancelling {} running job(s)", held_.size());
  }
  // TaskContext::cancelled(); waiting async jobs resume at once.
  for (auto& pool : pools_) {
    for (auto& thread : pool->threads) thread.request_stop();
  }
  async_cancellation_.request_stop();
  if (!await_cancelled_tasks()) {
    // Joining would hang: a task ignores cancellation.
    spdlog::critical(
        "{} job(s) still running {} ms after cancellation; exiting without "
        "waiting for them",
        held_.size(), config_.cancel_grace.count());
    spdlog::default_logger()->flush();
    std::_Exit(EXIT_FAILURE);
  }
  // Joins: every thread is idle.
  for (auto& pool : pools_) pool->threads.clear();
  const auto now = Clock::now();
  for (auto& session : sessions_) {
    // Hands over what it can; receives nothing (no slot is left to run a
    // JOB, and the brokers re-dispatch what they sent after our DISCONNECT
    // once they miss us).
    session->send_posted(now);
    session->close(kFinalFlush);
  }
  context_.close();  // waits up to kFinalFlush for queued messages
}

void Worker::Impl::open_sessions() {
  for (std::size_t broker = 0; broker < config_.broker_endpoints.size();
       ++broker) {
    BrokerSessionConfig session;
    session.role = BrokerSessionConfig::Role::worker;
    session.endpoint = config_.broker_endpoints[broker];
    session.heartbeat = config_.heartbeat;
    session.max_message_bytes = config_.max_message_bytes;
    auto opened = std::make_unique<BrokerSession>(context_, std::move(session),
                                                  callbacks(broker));
    std::lock_guard lock(sessions_mutex_);
    sessions_.push_back(std::move(opened));
  }
}

BrokerSessionCallbacks Worker::Impl::callbacks(std::size_t broker) {
  BrokerSessionCallbacks callbacks;
  callbacks.greeting = [this, broker] { return greeting(broker); };
  callbacks.on_message = [this, broker](Command command, Frames& frames,
                                        Clock::time_point now) {
    (void)command;  // the session passes JOBs only
    handle_job(broker, frames, now);
  };
  return callbacks;
}

// READY for a new socket of `broker`: each pool's `free` leaves out every
// DONE owed to that broker for that pool (jobs of it still held, answers not
// yet handed over), each of which returns it a credit when it arrives. Jobs
// held for other brokers are not left out (docs/protocol.md section 4,
// "Several brokers"): a JOB that finds no slot is refused, and the CREDIT
// that follows a freed slot reaches only a broker that was refused, so a
// broker told less than the slots free for it would never learn that they
// are. Same name and pid: the broker hands the jobs it knows we hold to this
// connection.
Frames Worker::Impl::greeting(std::size_t broker) {
  std::vector<std::uint64_t> owed(pools_.size(), 0);
  for (const auto& [handle, held] : held_) {
    if (held.broker == broker) ++owed[held.pool];
  }
  if (broker < sessions_.size()) {  // not the first READY
    for (std::size_t pool = 0; pool < pools_.size(); ++pool) {
      owed[pool] += sessions_[broker]->posted(Command::Done, pool);
    }
  }
  std::vector<std::uint32_t> free;
  for (std::size_t pool = 0; pool < pools_.size(); ++pool) {
    const std::uint32_t slots = config_.pools[pool].slots;
    free.push_back(static_cast<std::uint32_t>(
        slots - std::min<std::uint64_t>(owed[pool], slots)));
  }
  const protocol::WorkerInfo info = registration(config_, registry_, free);
  spdlog::info("connecting to {} as {} with {} of {} slot(s) free",
               config_.broker_endpoints[broker], config_.name, *info.free,
               info.slots);
  return protocol::encode_ready(info);
}

void Worker::Impl::serve() {
  if (stop_requested_.load()) return;
  open_sessions();
  std::vector<zmq::pollitem_t> items;
  for (;;) {
    auto now = Clock::now();
    if (stop_requested_.load() && !stopping_) begin_stop(now);
    if (stopping_ && drained(now)) return;
    for (auto& session : sessions_) session->tick(now);

    items.clear();
    items.push_back({nullptr, wakeup_.fd(), ZMQ_POLLIN, 0});
    for (auto& session : sessions_) (void)session->poll_items(items);
    try {
      zmq::poll(items, poll_timeout(now));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
      continue;
    }
    now = Clock::now();
    if (items[0].revents & ZMQ_POLLIN) wakeup_.drain();
    // Each turn starts with the next broker: JOBs that arrived together
    // from several brokers compete for the free slots, and the first one
    // read wins (the others are refused), so a fixed order would give the
    // first broker in the list more than its share.
    const std::size_t count = sessions_.size();
    ++turn_;
    for (std::size_t k = 0; k < count; ++k) {
      BrokerSession& session = *sessions_[(turn_ + k) % count];
      if (session.polled_ready(items)) session.process(now);
    }
    run_due_timers(now);
    collect_completions();  // also what async jobs just finished
    for (std::size_t k = 0; k < count; ++k) {
      sessions_[(turn_ + k) % count]->process(now);  // hand them over
    }
  }
}

void Worker::Impl::begin_stop(Clock::time_point now) {
  stopping_ = true;
  drain_deadline_ = now + config_.drain_timeout;
  spdlog::info("stopping: {} job(s) running, waiting up to {} ms", held_.size(),
               config_.drain_timeout.count());
  // The brokers then send no new job but still take our DONEs.
  for (auto& session : sessions_) {
    if (session->has_socket()) {
      session->post(Command::Disconnect,
                    protocol::encode_control(Command::Disconnect), true);
    }
    session->set_stopping();
    session->process(now);
  }
}

// Every job answered and every DONE handed to ZeroMQ (or no socket left to
// hand them to), or out of time. A DISCONNECT still waiting is not worth
// waiting for: the final flush tries it once more.
bool Worker::Impl::drained(Clock::time_point now) const {
  if (now >= drain_deadline_) return true;
  if (!held_.empty()) return false;
  return std::all_of(sessions_.begin(), sessions_.end(),
                     [](const std::unique_ptr<BrokerSession>& session) {
                       return !session->has_socket() ||
                              session->posted(Command::Done) == 0;
                     });
}

// Waits up to cancel_grace for the cancelled jobs to return, collecting
// their DONEs. False if some still run.
bool Worker::Impl::await_cancelled_tasks() {
  const auto deadline = Clock::now() + config_.cancel_grace;
  for (;;) {
    run_due_timers(Clock::now());  // all of them: jobs are cancelled
    collect_completions();
    const auto now = Clock::now();
    if (held_.empty()) return true;
    if (now >= deadline) return false;
    zmq_pollitem_t wakeup{nullptr, wakeup_.fd(), ZMQ_POLLIN, 0};
    try {
      zmq::poll(&wakeup, 1, std::chrono::ceil<milliseconds>(deadline - now));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
    wakeup_.drain();
  }
}

milliseconds Worker::Impl::poll_timeout(Clock::time_point now) const {
  Clock::time_point until = Clock::time_point::max();
  for (const auto& session : sessions_) {
    until = std::min(until, session->next_wake());
  }
  if (stopping_) until = std::min(until, drain_deadline_);
  {
    std::lock_guard lock(timers_mutex_);
    if (!timers_.empty()) until = std::min(until, timers_.begin()->first);
  }
  if (until == Clock::time_point::max()) return milliseconds{-1};
  return std::max(milliseconds{0},
                  std::chrono::ceil<milliseconds>(until - now));
}

void Worker::Impl::handle_job(std::size_t broker, Frames& frames,
                              Clock::time_point now) {
  // A JOB received while stopping crossed our DISCONNECT: the broker holds
  // it for us, so it runs like any other (and is cancelled at the deadline).
  protocol::JobMessage job = protocol::decode_job(Command::Job, frames);
  jobs_received_.fetch_add(1, std::memory_order_relaxed);
  const std::size_t pool = pool_of(job);
  if (!served_.contains(job.task)) {
    reject(broker, pool, job.task, job.meta.id,
           protocol::error_code::kUnknownTask,
           "this worker does not serve task '" + job.task + "'");
    return;
  }
  if (!pools_[pool]->ledger.try_take(broker)) {
    // Every slot of the pool is held by jobs of other brokers (several
    // brokers' credit is optimistic), or a broker sent more than its credit
    // (a bug).
    jobs_refused_.fetch_add(1, std::memory_order_relaxed);
    reject(broker, pool, job.task, job.meta.id,
           speaks_credit(broker) ? protocol::error_code::kRefused
                                 : protocol::error_code::kOverloaded,
           "all " + std::to_string(config_.pools[pool].slots) +
               " slots of pool " + std::to_string(pool) + " are busy");
    return;
  }
  const std::size_t handle = next_handle_++;
  held_.emplace(handle, Held{broker, pool, job.meta.max_result_bytes});
  const milliseconds budget{job.meta.timeout_ms};
  if (registry_.find_async(job.task) != nullptr) {
    start_async_task(
        registry_,
        AsyncJob(*this, std::move(job.task), job.meta.id, job.meta.attempt,
                 now + budget, async_cancellation_.get_token(), handle),
        std::string_view(static_cast<const char*>(job.args.data()),
                         job.args.size()));
    return;
  }
  run_on_thread(*pools_[pool], {handle, std::move(job.task), job.meta,
                                now + budget, std::move(job.args)});
}

// The pool listing the JOB's queue; without one (a broker older than 1.3),
// or naming a queue no pool lists, the pool listing the queue named as its
// task, else pool 0.
std::size_t Worker::Impl::pool_of(const protocol::JobMessage& job) const {
  for (const std::string_view queue :
       {std::string_view(job.meta.queue), std::string_view(job.task)}) {
    if (const auto found = pool_of_queue_.find(queue);
        found != pool_of_queue_.end()) {
      return found->second;
    }
  }
  return 0;
}

// Hands a held thread-task job to the pool's threads, starting one when
// fewer are idle than jobs wait. The pool's held jobs (its ledger) bound the
// jobs waiting or running, so its threads need never outnumber its slots;
// a thread that is busy or just back from a job takes the next one.
void Worker::Impl::run_on_thread(Pool& pool, Job job) {
  bool start = false;
  {
    std::lock_guard lock(pool.mutex);
    pool.jobs.push_back(std::move(job));
    start = pool.jobs.size() > pool.idle &&
            pool.threads.size() < pool.ledger.slots();
  }
  if (start) {
    pool.threads.emplace_back(
        [this, &pool](std::stop_token stop) { thread_loop(pool, stop); });
    threads_started_.fetch_add(1, std::memory_order_relaxed);
  }
  pool.jobs_ready.notify_one();
}

// A broker of 1.2 or later: it takes `refused` and CREDIT (protocol section
// 4, "Several brokers"); an older one would relay `refused` to the client.
bool Worker::Impl::speaks_credit(std::size_t broker) const {
  const auto& welcome = sessions_[broker]->welcome();
  return welcome && welcome->minor >= 2;
}

void Worker::Impl::reject(std::size_t broker, std::size_t pool,
                          const std::string& task, std::uint64_t id,
                          std::string_view code, std::string message) {
  BrokerSession& session = *sessions_[broker];
  if (session.posted(Command::Done) >= total_slots_ + kMaxQueuedRejections) {
    spdlog::warn("dropping the answer to job {} ({}): send queue full", id,
                 code);
    jobs_failed_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (code != protocol::error_code::kRefused) {
    spdlog::warn("rejecting job {}: {}", id, message);
  }
  queue_done(broker, pool, task,
             protocol::OutcomeMeta::failure(id, code, std::move(message)),
             protocol::nil_payload());
}

// `pool`: the pool the job belongs to, whose credit its DONE returns.
void Worker::Impl::queue_done(std::size_t broker, std::size_t pool,
                              const std::string& task,
                              protocol::OutcomeMeta meta,
                              zmq::message_t result) {
  auto& counter = meta.ok ? jobs_succeeded_ : jobs_failed_;
  counter.fetch_add(1, std::memory_order_relaxed);
  // Names the pool for a broker that no longer knows the job; with one pool
  // there is nothing to tell apart.
  if (pools_.size() > 1) meta.pool = static_cast<std::uint32_t>(pool);
  sessions_[broker]->post(
      Command::Done,
      protocol::encode_outcome(Command::Done, task, meta, std::move(result)),
      false, pool);
}

void Worker::Impl::collect_completions() {
  {
    std::lock_guard lock(completions_mutex_);
    completions_batch_.swap(completions_);
  }
  if (completions_batch_.empty()) return;
  for (auto& [handle, task, id, outcome] : completions_batch_) {
    // Each held job is finished once (AsyncJob, thread_loop).
    const Held held = held_.at(handle);
    held_.erase(handle);
    const std::size_t broker = held.broker;
    pools_[held.pool]->ledger.release(broker);
    // The JOB's limit (the client's and the broker's); from a broker that
    // sent none, our own, which a broker configured like us accepts.
    const std::uint64_t max_result_bytes =
        held.max_result_bytes > 0 ? held.max_result_bytes
                                  : config_.max_message_bytes - kEnvelopeBytes;
    if (outcome.result.size() > max_result_bytes) {
      // Sent, it would cost the connection (and every job on it).
      queue_done(broker, held.pool, task,
                 protocol::OutcomeMeta::failure(
                     id, protocol::error_code::kTooLarge,
                     "result of " + std::to_string(outcome.result.size()) +
                         " bytes exceeds the limit of " +
                         std::to_string(max_result_bytes) +
                         " bytes on its way to the client"),
                 protocol::nil_payload());
    } else if (outcome.ok) {
      queue_done(broker, held.pool, task, protocol::OutcomeMeta::success(id),
                 zmq::message_t(outcome.result.data(), outcome.result.size()));
    } else {
      queue_done(broker, held.pool, task,
                 protocol::OutcomeMeta::failure(id, outcome.code,
                                                std::move(outcome.message),
                                                outcome.retry_after_ms),
                 zmq::message_t(outcome.result.data(), outcome.result.size()));
    }
  }
  completions_batch_.clear();
  grant_credit();
}

// After the DONEs: CREDIT to each broker that was refused by a pool since
// it last had some for that pool (that pool's SlotLedger says which), so
// that the freed slots are not stranded: with the pool's index to a broker
// of 1.3 or later; never to one older than 1.2. A broker of 1.2 keeps one
// credit for all pools (docs/protocol.md, "Named queues"): it is told the
// slots free in all of them, so that a refusal by one pool does not leave
// the others idle for it; the pools' own refusals still bound each pool.
void Worker::Impl::grant_credit() {
  std::uint32_t all_free = 0;
  for (const auto& pool : pools_) all_free += pool->ledger.free();
  for (std::size_t pool = 0; pool < pools_.size(); ++pool) {
    for (const auto& [broker, free] :
         pools_[pool]->ledger.take_credit_grants()) {
      if (!speaks_credit(broker) || stopping_) continue;
      if (sessions_[broker]->welcome()->minor >= 3) {
        post_credit(broker,
                    protocol::Credit{free, static_cast<std::uint32_t>(pool)});
      } else {
        post_credit(broker, protocol::Credit{all_free, 0});
      }
    }
  }
}

// The latest grant for a pool supersedes one still waiting for the socket,
// so that at most one CREDIT per pool waits.
void Worker::Impl::post_credit(std::size_t broker, protocol::Credit credit) {
  // The latest grant for a pool supersedes one still waiting for the socket.
  BrokerSession& session = *sessions_[broker];
  session.discard_posted(Command::Credit, credit.pool);
  session.post(Command::Credit, protocol::encode_credit(credit), false,
               credit.pool);
}

void Worker::Impl::finish(std::size_t handle, std::string_view task,
                          std::uint64_t id, TaskOutcome outcome) noexcept {
  {
    std::lock_guard lock(completions_mutex_);
    completions_.push_back({handle, std::string(task), id, std::move(outcome)});
  }
  wake_socket_thread();
}

// From another thread only: the socket thread looks at completions and
// timers after every step it runs itself.
void Worker::Impl::wake_socket_thread() noexcept {
  if (std::this_thread::get_id() != socket_thread_) wakeup_.notify();
}

void Worker::Impl::schedule(Clock::time_point when,
                            std::function<void(AsyncJob&)> callback,
                            AsyncJob job) {
  {
    std::lock_guard lock(timers_mutex_);
    timers_.emplace(when, Timer{std::move(callback), std::move(job)});
  }
  wake_socket_thread();
}

// Runs the async steps that are due: all of them once jobs are cancelled.
// A step may schedule again; what it schedules runs on a later pass.
void Worker::Impl::run_due_timers(Clock::time_point now) {
  const bool all = async_cancellation_.stop_requested();
  std::vector<Timer> due;
  {
    std::lock_guard lock(timers_mutex_);
    auto end = all ? timers_.end() : timers_.upper_bound(now);
    for (auto it = timers_.begin(); it != end;) {
      due.push_back(std::move(it->second));
      it = timers_.erase(it);
    }
  }
  for (auto& [callback, job] : due) run_async_step(callback, job);
}

Worker::Worker(WorkerConfig config, const TaskRegistry& registry)
    : impl_(std::make_unique<Impl>(std::move(config), registry)) {}
Worker::~Worker() = default;
void Worker::run() { impl_->run(); }
void Worker::stop() noexcept { impl_->stop(); }
const WorkerConfig& Worker::config() const noexcept { return impl_->config(); }
WorkerCounters Worker::counters() const noexcept { return impl_->counters(); }

}  // namespace monsoon::workers
