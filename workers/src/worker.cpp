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
  std::size_t broker = 0;  // whose session sent it
  std::string task;
  protocol::JobMeta meta;
  Clock::time_point deadline;
  zmq::message_t args;
};

struct Completion {
  std::size_t broker = 0;
  std::string task;
  std::uint64_t id = 0;
  TaskOutcome outcome;
};

// What READY announces, besides `free`.
protocol::WorkerInfo registration(const WorkerConfig& config,
                                  const TaskRegistry& registry) {
  protocol::WorkerInfo info;
  info.tasks = config.tasks;
  for (const auto& task : config.tasks) {
    if (!registry.options(task).retry_if_worker_dies) {
      info.no_retry.push_back(task);
    }
  }
  info.slots = config.slots;
  info.name = config.name;
  info.pid = static_cast<std::uint32_t>(getpid());
  info.heartbeat_ms =
      static_cast<std::uint32_t>(config.heartbeat.interval.count());
  info.max_message_bytes = config.max_message_bytes;
  return info;
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
  if (config.slots > protocol::kMaxSlots) {
    throw std::invalid_argument("at most " +
                                std::to_string(protocol::kMaxSlots) + " slots");
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
  const auto async_tasks = std::count_if(
      config.tasks.begin(), config.tasks.end(), [&](const std::string& task) {
        return registry.find_async(task) != nullptr;
      });
  if (async_tasks != 0 &&
      static_cast<std::size_t>(async_tasks) != config.tasks.size()) {
    throw std::invalid_argument(
        "a Worker serves either thread tasks or async tasks, not both");
  }
  if (config.tasks.size() > protocol::kMaxAnnouncedTasks) {
    throw std::invalid_argument("a worker serves at most " +
                                std::to_string(protocol::kMaxAnnouncedTasks) +
                                " tasks");
  }
  if (config.name.empty()) config.name = default_worker_name();
  protocol::WorkerInfo announced = registration(config, registry);
  announced.free = config.slots;  // the largest it gets
  const auto ready_bytes = protocol::encode_ready(announced).back().size();
  if (ready_bytes > protocol::kMaxMetaBytes) {
    // The broker would drop every READY: refuse now, with a reason.
    throw std::invalid_argument(
        "the registration of " + std::to_string(config.tasks.size()) +
        " tasks takes " + std::to_string(ready_bytes) +
        " bytes, more than the protocol's " +
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
        async_(registry.find_async(config_.tasks.front()) != nullptr),
        served_(config_.tasks.begin(), config_.tasks.end()),
        ledger_(config_.slots, config_.broker_endpoints.size()) {
    // At most one completion per held job: finish() never allocates.
    completions_.reserve(config_.slots);
    completions_batch_.reserve(config_.slots);
  }

  void run();
  void stop() noexcept {
    stop_requested_.store(true);
    wakeup_.notify();
  }

  const WorkerConfig& config() const noexcept { return config_; }
  bool serves_async() const noexcept { return async_; }

  // AsyncJob::Host
  void finish(std::size_t broker, std::string_view task, std::uint64_t id,
              TaskOutcome outcome) noexcept override;
  void schedule(Clock::time_point when, std::function<void(AsyncJob&)> callback,
                AsyncJob job) override;

  WorkerCounters counters() const noexcept {
    WorkerCounters counters{jobs_received_.load(std::memory_order_relaxed),
                            jobs_succeeded_.load(std::memory_order_relaxed),
                            jobs_failed_.load(std::memory_order_relaxed),
                            jobs_refused_.load(std::memory_order_relaxed),
                            0,
                            0};
    std::lock_guard lock(sessions_mutex_);
    for (const auto& session : sessions_) {
      const BrokerSessionCounters session_counters = session->counters();
      counters.malformed_dropped += session_counters.malformed_dropped;
      counters.reconnects += session_counters.reconnects;
    }
    return counters;
  }

 private:
  // Slot threads.
  void slot_loop(std::stop_token stop);

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
  void reject(std::size_t broker, const std::string& task, std::uint64_t id,
              std::string_view code, std::string message);
  void queue_done(std::size_t broker, const std::string& task,
                  const protocol::OutcomeMeta& meta, zmq::message_t result);
  void collect_completions();
  void grant_credit();
  bool speaks_credit(std::size_t broker) const;
  void run_due_timers(Clock::time_point now);
  void wake_socket_thread() noexcept;

  const WorkerConfig config_;
  const TaskRegistry& registry_;
  const bool async_;  // serves async tasks on the socket thread, no slots
  const std::set<std::string, std::less<>> served_;
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

  // Socket thread -> slot threads. Holds at most `slots` jobs (the ledger).
  std::mutex jobs_mutex_;
  std::condition_variable_any jobs_ready_;
  std::deque<Job> jobs_;

  // Slot threads -> socket thread, followed by wakeup_.notify().
  std::mutex completions_mutex_;
  std::vector<Completion> completions_;
  std::vector<Completion> completions_batch_;  // socket thread's spare

  // Socket thread only, but for counters(), which reads the sessions'
  // atomic counters under sessions_mutex_ (sessions are only added, by
  // open_sessions, before jobs flow).
  zmq::context_t context_;
  mutable std::mutex sessions_mutex_;
  std::vector<std::unique_ptr<BrokerSession>> sessions_;
  // Which slots are held, and which brokers must hear of a freed one.
  SlotLedger ledger_;
  // Held jobs per broker and id, for their DONE's broker and result limit
  // (JOB's max_result_bytes, 0 when it carried none); a multimap, since a
  // re-sent JOB may hold an id twice (protocol section 4).
  std::multimap<std::pair<std::size_t, std::uint64_t>, std::uint64_t>
      result_limits_;
  bool stopping_ = false;
  Clock::time_point drain_deadline_{};
  std::size_t turn_ = 0;  // which session serve() handles first

  std::atomic<std::uint64_t> jobs_received_{0};
  std::atomic<std::uint64_t> jobs_succeeded_{0};
  std::atomic<std::uint64_t> jobs_failed_{0};
  std::atomic<std::uint64_t> jobs_refused_{0};
};

void Worker::Impl::slot_loop(std::stop_token stop) {
  for (;;) {
    Job job;
    {
      std::unique_lock lock(jobs_mutex_);
      if (!jobs_ready_.wait(lock, stop, [this] { return !jobs_.empty(); })) {
        return;
      }
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    const TaskContext context{job.task, job.meta.id, job.meta.attempt,
                              job.deadline, stop};
    TaskOutcome outcome =
        execute_task(registry_, context,
                     std::string_view(static_cast<const char*>(job.args.data()),
                                      job.args.size()));
    finish(job.broker, job.task, job.meta.id, std::move(outcome));
  }
}

void Worker::Impl::run() {
  if (ran_.exchange(true)) throw std::logic_error("Worker::run called twice");
  socket_thread_ = std::this_thread::get_id();
  std::vector<std::jthread> slots;
  if (!async_) {
    slots.reserve(config_.slots);
    for (std::uint32_t i = 0; i < config_.slots; ++i) {
      slots.emplace_back([this](std::stop_token stop) { slot_loop(stop); });
    }
  }
  serve();
  if (ledger_.held() > 0) {
    spdlog::warn("drain timeout: cancelling {} running job(s)", ledger_.held());
  }
  // TaskContext::cancelled(); waiting async jobs resume at once.
  for (auto& slot : slots) slot.request_stop();
  async_cancellation_.request_stop();
  if (!await_cancelled_tasks()) {
    // Joining would hang: a task ignores cancellation.
    spdlog::critical(
        "{} job(s) still running {} ms after cancellation; exiting without "
        "waiting for them",
        ledger_.held(), config_.cancel_grace.count());
    spdlog::default_logger()->flush();
    std::_Exit(EXIT_FAILURE);
  }
  slots.clear();  // joins: every slot thread is idle
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

// READY for a new socket of `broker`: `free` leaves out every DONE owed to
// that broker (jobs of it still held, answers not yet handed over), each of
// which returns it a credit when it arrives. Jobs held for other brokers are
// not left out (docs/protocol.md section 4, "Several brokers"): a JOB that
// finds no slot is refused, and the CREDIT that follows a freed slot reaches
// only a broker that was refused, so a broker told less than the slots free
// for it would never learn that they are. Same name and pid: the broker
// hands the jobs it knows we hold to this connection.
Frames Worker::Impl::greeting(std::size_t broker) {
  const auto held = result_limits_.lower_bound({broker + 1, 0});
  const std::uint64_t owed =
      static_cast<std::uint64_t>(
          std::distance(result_limits_.lower_bound({broker, 0}), held)) +
      (broker < sessions_.size() ? sessions_[broker]->posted(Command::Done)
                                 : 0);
  protocol::WorkerInfo info = registration(config_, registry_);
  info.free = static_cast<std::uint32_t>(
      config_.slots - std::min<std::uint64_t>(owed, config_.slots));
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
  spdlog::info("stopping: {} job(s) running, waiting up to {} ms",
               ledger_.held(), config_.drain_timeout.count());
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
  if (ledger_.held() > 0) return false;
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
    if (ledger_.held() == 0) return true;
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
  if (!served_.contains(job.task)) {
    reject(broker, job.task, job.meta.id, protocol::error_code::kUnknownTask,
           "this worker does not serve task '" + job.task + "'");
    return;
  }
  if (!ledger_.try_take(broker)) {
    // Every slot is held by jobs of other brokers (several brokers' credit
    // is optimistic), or a broker sent more than its credit (a bug).
    jobs_refused_.fetch_add(1, std::memory_order_relaxed);
    reject(broker, job.task, job.meta.id,
           speaks_credit(broker) ? protocol::error_code::kRefused
                                 : protocol::error_code::kOverloaded,
           "all " + std::to_string(config_.slots) + " slots are busy");
    return;
  }
  result_limits_.emplace(std::pair{broker, job.meta.id},
                         job.meta.max_result_bytes);
  const milliseconds budget{job.meta.timeout_ms};
  if (async_) {
    start_async_task(
        registry_,
        AsyncJob(*this, std::move(job.task), job.meta.id, job.meta.attempt,
                 now + budget, async_cancellation_.get_token(), broker),
        std::string_view(static_cast<const char*>(job.args.data()),
                         job.args.size()));
    return;
  }
  {
    std::lock_guard lock(jobs_mutex_);
    jobs_.push_back({broker, std::move(job.task), job.meta, now + budget,
                     std::move(job.args)});
  }
  jobs_ready_.notify_one();
}

// A broker of 1.2 or later: it takes `refused` and CREDIT (protocol section
// 4, "Several brokers"); an older one would relay `refused` to the client.
bool Worker::Impl::speaks_credit(std::size_t broker) const {
  const auto& welcome = sessions_[broker]->welcome();
  return welcome && welcome->minor >= 2;
}

void Worker::Impl::reject(std::size_t broker, const std::string& task,
                          std::uint64_t id, std::string_view code,
                          std::string message) {
  BrokerSession& session = *sessions_[broker];
  if (session.posted(Command::Done) >= config_.slots + kMaxQueuedRejections) {
    spdlog::warn("dropping the answer to job {} ({}): send queue full", id,
                 code);
    jobs_failed_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (code != protocol::error_code::kRefused) {
    spdlog::warn("rejecting job {}: {}", id, message);
  }
  queue_done(broker, task,
             protocol::OutcomeMeta::failure(id, code, std::move(message)),
             protocol::nil_payload());
}

void Worker::Impl::queue_done(std::size_t broker, const std::string& task,
                              const protocol::OutcomeMeta& meta,
                              zmq::message_t result) {
  auto& counter = meta.ok ? jobs_succeeded_ : jobs_failed_;
  counter.fetch_add(1, std::memory_order_relaxed);
  sessions_[broker]->post(
      Command::Done,
      protocol::encode_outcome(Command::Done, task, meta, std::move(result)));
}

void Worker::Impl::collect_completions() {
  {
    std::lock_guard lock(completions_mutex_);
    completions_batch_.swap(completions_);
  }
  if (completions_batch_.empty()) return;
  for (auto& [broker, task, id, outcome] : completions_batch_) {
    ledger_.release(broker);
    // The JOB's limit (the client's and the broker's); from a broker that
    // sent none, our own, which a broker configured like us accepts.
    std::uint64_t max_result_bytes = config_.max_message_bytes - kEnvelopeBytes;
    if (auto limit = result_limits_.find({broker, id});
        limit != result_limits_.end()) {
      if (limit->second > 0) max_result_bytes = limit->second;
      result_limits_.erase(limit);
    }
    if (outcome.result.size() > max_result_bytes) {
      // Sent, it would cost the connection (and every job on it).
      queue_done(broker, task,
                 protocol::OutcomeMeta::failure(
                     id, protocol::error_code::kTooLarge,
                     "result of " + std::to_string(outcome.result.size()) +
                         " bytes exceeds the limit of " +
                         std::to_string(max_result_bytes) +
                         " bytes on its way to the client"),
                 protocol::nil_payload());
    } else if (outcome.ok) {
      queue_done(broker, task, protocol::OutcomeMeta::success(id),
                 zmq::message_t(outcome.result.data(), outcome.result.size()));
    } else {
      queue_done(broker, task,
                 protocol::OutcomeMeta::failure(id, outcome.code,
                                                std::move(outcome.message),
                                                outcome.retry_after_ms),
                 zmq::message_t(outcome.result.data(), outcome.result.size()));
    }
  }
  completions_batch_.clear();
  grant_credit();
}

// After the DONEs: CREDIT to each broker that was refused since it last had
// some (SlotLedger says which), so that the freed slots are not stranded.
void Worker::Impl::grant_credit() {
  for (const auto& [broker, free] : ledger_.take_credit_grants()) {
    if (!speaks_credit(broker) || stopping_) continue;
    // The latest grant supersedes one still waiting for the socket.
    sessions_[broker]->discard_posted(Command::Credit);
    sessions_[broker]->post(Command::Credit,
                            protocol::encode_credit(protocol::Credit{free}));
  }
}

void Worker::Impl::finish(std::size_t broker, std::string_view task,
                          std::uint64_t id, TaskOutcome outcome) noexcept {
  {
    std::lock_guard lock(completions_mutex_);
    completions_.push_back({broker, std::string(task), id, std::move(outcome)});
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
bool Worker::serves_async() const noexcept { return impl_->serves_async(); }
WorkerCounters Worker::counters() const noexcept { return impl_->counters(); }

}  // namespace monsoon::workers
