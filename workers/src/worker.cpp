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

#include "monsoon/common/monitored_socket.hpp"
#include "monsoon/common/protocol.hpp"
#include "monsoon/common/routing_id.hpp"
#include "monsoon/common/wakeup.hpp"
#include "monsoon/common/zmq_send.hpp"

namespace monsoon::workers {

namespace {

using protocol::Command;
using protocol::Frames;
using std::chrono::milliseconds;

// Messages taken from the socket per wake-up: draining a batch is much
// cheaper than one poll per message.
constexpr int kReceiveBatch = 64;
// Room for everything in a DONE besides the result.
constexpr std::size_t kEnvelopeBytes =
    protocol::kMaxMetaBytes + protocol::kMaxTaskNameBytes + 64;
// DONEs rejecting jobs (unknown task, overloaded) that may wait for the
// socket on top of one DONE per slot; more are dropped.
constexpr std::size_t kMaxQueuedRejections = 1024;
// How long the final close may take to deliver DISCONNECT and last DONEs.
constexpr milliseconds kFinalFlush{1000};
constexpr milliseconds kMaxHeartbeatInterval{3'600'000};
// Floor of the reconnect back-off, so that a tiny heartbeat interval cannot
// turn reconnecting into a busy loop.
constexpr milliseconds kMinReconnectDelay{10};

struct Job {
  std::string task;
  protocol::JobMeta meta;
  Clock::time_point deadline;
  zmq::message_t args;
};

struct Completion {
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
  if (config.broker_endpoint.empty()) {
    throw std::invalid_argument("empty broker endpoint");
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

namespace {

milliseconds first_reconnect_delay(const HeartbeatSettings& heartbeat) {
  return std::max(kMinReconnectDelay, heartbeat.interval / 4);
}

}  // namespace

class Worker::Impl final : public AsyncJob::Host {
 public:
  Impl(WorkerConfig config, const TaskRegistry& registry)
      : config_(resolve(std::move(config), registry)),
        registry_(registry),
        async_(registry.find_async(config_.tasks.front()) != nullptr),
        served_(config_.tasks.begin(), config_.tasks.end()),
        liveness_(config_.heartbeat, Clock::now()),
        backoff_(first_reconnect_delay(config_.heartbeat),
                 first_reconnect_delay(config_.heartbeat) * 32) {
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
  void finish(std::string_view task, std::uint64_t id,
              TaskOutcome outcome) noexcept override;
  void schedule(Clock::time_point when, std::function<void(AsyncJob&)> callback,
                AsyncJob job) override;

  WorkerCounters counters() const noexcept {
    return {jobs_received_.load(std::memory_order_relaxed),
            jobs_succeeded_.load(std::memory_order_relaxed),
            jobs_failed_.load(std::memory_order_relaxed),
            malformed_dropped_.load(std::memory_order_relaxed),
            reconnects_.load(std::memory_order_relaxed)};
  }

 private:
  // Slot threads.
  void slot_loop(std::stop_token stop);

  // The socket thread: everything below.
  void serve();
  void begin_stop(Clock::time_point now);
  bool drained(Clock::time_point now) const;
  std::size_t unsent_dones() const;
  bool await_cancelled_tasks();
  void open_socket(Clock::time_point now);
  void lose_broker(Clock::time_point now);
  milliseconds poll_timeout(Clock::time_point now) const;
  void receive_batch(Clock::time_point now);
  void handle_message(Frames& frames, Clock::time_point now);
  void handle_job(Frames& frames, Clock::time_point now);
  void handle_welcome(const Frames& frames, Clock::time_point now);
  void reject(const std::string& task, std::uint64_t id, std::string_view code,
              std::string message);
  void queue_done(const std::string& task, const protocol::OutcomeMeta& meta,
                  zmq::message_t result);
  void queue_first(Command command);
  void collect_completions();
  void run_due_timers(Clock::time_point now);
  void wake_socket_thread() noexcept;
  void flush_unsent(Clock::time_point now);
  void count_malformed(const std::exception& error);

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

  // Socket thread -> slot threads. Holds at most `slots` jobs (see held_).
  std::mutex jobs_mutex_;
  std::condition_variable_any jobs_ready_;
  std::deque<Job> jobs_;

  // Slot threads -> socket thread, followed by wakeup_.notify().
  std::mutex completions_mutex_;
  std::vector<Completion> completions_;
  std::vector<Completion> completions_batch_;  // socket thread's spare

  // Socket thread only.
  zmq::context_t context_;
  // Empty while backing off. Its monitor tells whether it is connected:
  // unsent_ waits for a connection rather than for a pipe that a socket
  // reset would throw away (see open_socket).
  std::optional<MonitoredSocket> socket_;
  bool connected_ = false;
  // Messages waiting for the socket, in sending order: a READY for a new
  // connection first, then a DISCONNECT when stopping, then DONEs. Holds at
  // most one DONE per slot plus kMaxQueuedRejections rejections.
  struct Unsent {
    Command command;
    Frames frames;
  };
  std::deque<Unsent> unsent_;
  std::uint32_t held_ = 0;  // jobs handed to slots and not yet completed
  // JOB's max_result_bytes of held jobs that carried one (at most `slots`);
  // a multimap, since a re-sent JOB may hold an id twice (protocol section
  // 4).
  std::unordered_multimap<std::uint64_t, std::uint64_t> result_limits_;
  PeerLiveness liveness_;
  Backoff backoff_;
  Clock::time_point reconnect_at_{};
  bool stopping_ = false;
  Clock::time_point drain_deadline_{};

  std::atomic<std::uint64_t> jobs_received_{0};
  std::atomic<std::uint64_t> jobs_succeeded_{0};
  std::atomic<std::uint64_t> jobs_failed_{0};
  std::atomic<std::uint64_t> malformed_dropped_{0};
  std::atomic<std::uint64_t> reconnects_{0};
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
    finish(job.task, job.meta.id, std::move(outcome));
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
  if (held_ > 0) {
    spdlog::warn("drain timeout: cancelling {} running job(s)", held_);
  }
  // TaskContext::cancelled(); waiting async jobs resume at once.
  for (auto& slot : slots) slot.request_stop();
  async_cancellation_.request_stop();
  if (!await_cancelled_tasks()) {
    // Joining would hang: a task ignores cancellation.
    spdlog::critical(
        "{} job(s) still running {} ms after cancellation; exiting without "
        "waiting for them",
        held_, config_.cancel_grace.count());
    spdlog::default_logger()->flush();
    std::_Exit(EXIT_FAILURE);
  }
  slots.clear();  // joins: every slot thread is idle
  flush_unsent(Clock::now());
  if (socket_) {
    socket_->socket().set(zmq::sockopt::linger,
                          static_cast<int>(kFinalFlush.count()));
    socket_.reset();
  }
  context_.close();  // waits up to kFinalFlush for queued messages
}

void Worker::Impl::serve() {
  if (!stop_requested_.load()) open_socket(Clock::now());
  std::vector<zmq_pollitem_t> items;
  for (;;) {
    auto now = Clock::now();
    if (stop_requested_.load() && !stopping_) begin_stop(now);
    if (stopping_ && drained(now)) return;
    // No reconnect while stopping: a new registration would get new jobs.
    if (!socket_ && !stopping_ && now >= reconnect_at_) open_socket(now);
    // What already arrived counts: after this process was paused (SIGSTOP,
    // a long GC-like stall) JOBs may wait in the socket, and dropping it
    // would lose them while the broker thinks we hold them.
    if (socket_ && liveness_.peer_dead(now)) receive_batch(now);
    if (socket_ && liveness_.peer_dead(now)) {
      lose_broker(now);
      continue;
    }
    // Also while draining: the broker keeps our jobs only while it hears us.
    // Only behind the READY on a connection: a HEARTBEAT parked in the pipe
    // of a socket not yet connected would reach a restarted broker first,
    // be answered DISCONNECT, and cost the registration and the JOBs sent to
    // it meanwhile.
    if (socket_ && liveness_.heartbeat_due(now)) {
      const bool ready_sent =
          unsent_.empty() || unsent_.front().command != Command::Ready;
      if (connected_ && ready_sent) {
        Frames heartbeat = protocol::encode_control(Command::Heartbeat);
        send_frames(socket_->socket(), heartbeat);
      }
      liveness_.sent(now);  // even if not sent: no busy loop
    }

    items.clear();
    items.push_back({nullptr, wakeup_.fd(), ZMQ_POLLIN, 0});
    if (socket_) {
      short events = ZMQ_POLLIN;
      if (connected_ && !unsent_.empty()) events |= ZMQ_POLLOUT;
      items.push_back({socket_->socket().handle(), 0, events, 0});
      items.push_back({socket_->events().handle(), 0, ZMQ_POLLIN, 0});
    }
    try {
      zmq::poll(items, poll_timeout(now));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
      continue;
    }
    now = Clock::now();
    if (items[0].revents & ZMQ_POLLIN) wakeup_.drain();
    // Before receiving, which may replace the socket these items poll.
    if (items.size() > 2 && (items[2].revents & ZMQ_POLLIN)) {
      const MonitoredSocket::Events events = socket_->take_events();
      if (events.last != 0) connected_ = events.last == ZMQ_EVENT_CONNECTED;
    }
    if (items.size() > 1 && (items[1].revents & ZMQ_POLLIN)) {
      receive_batch(now);
    }
    run_due_timers(now);
    collect_completions();  // also what async jobs just finished
    flush_unsent(now);
  }
}

void Worker::Impl::begin_stop(Clock::time_point now) {
  stopping_ = true;
  drain_deadline_ = now + config_.drain_timeout;
  spdlog::info("stopping: {} job(s) running, waiting up to {} ms", held_,
               config_.drain_timeout.count());
  // The broker then sends no new job but still takes our DONEs.
  if (socket_) queue_first(Command::Disconnect);
  flush_unsent(now);
}

// Every job answered and every DONE handed to ZeroMQ (or no socket left to
// hand them to), or out of time. A DISCONNECT still waiting is not worth
// waiting for: the final flush tries it once more.
bool Worker::Impl::drained(Clock::time_point now) const {
  if (now >= drain_deadline_) return true;
  if (held_ > 0) return false;
  return !socket_ || unsent_dones() == 0;
}

std::size_t Worker::Impl::unsent_dones() const {
  return static_cast<std::size_t>(std::count_if(
      unsent_.begin(), unsent_.end(),
      [](const Unsent& message) { return message.command == Command::Done; }));
}

// Waits up to cancel_grace for the cancelled jobs to return, collecting
// their DONEs. False if some still run.
bool Worker::Impl::await_cancelled_tasks() {
  const auto deadline = Clock::now() + config_.cancel_grace;
  for (;;) {
    run_due_timers(Clock::now());  // all of them: jobs are cancelled
    collect_completions();
    const auto now = Clock::now();
    if (held_ == 0) return true;
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

void Worker::Impl::open_socket(Clock::time_point now) {
  socket_.emplace(context_, zmq::socket_type::dealer,
                  ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED);
  connected_ = false;
  zmq::socket_t& socket = socket_->socket();
  socket.set(zmq::sockopt::routing_id, make_routing_id());
  socket.set(zmq::sockopt::linger, 0);
  // Not ZMQ_IMMEDIATE, although it would keep messages out of the pipe while
  // disconnected: with it, libzmq 4.3 ends the socket's pipe at once when
  // the connection drops, also between two frames of a message being read,
  // and then aborts on an assertion (fq.cpp: !_more) in the next recv.
  // unsent_ waits for the monitor's CONNECTED instead (flush_unsent).
  socket.set(zmq::sockopt::maxmsgsize,
             static_cast<std::int64_t>(config_.max_message_bytes));
  try {
    socket.connect(config_.broker_endpoint);
  } catch (const zmq::error_t& e) {
    throw std::invalid_argument("cannot connect to broker endpoint '" +
                                config_.broker_endpoint + "': " + e.what());
  }
  liveness_ = PeerLiveness(config_.heartbeat, now);

  std::erase_if(unsent_, [](const Unsent& message) {
    return message.command == Command::Ready;  // for a socket now gone
  });
  // DONEs still owed (running jobs, unsent answers) each return a credit
  // when they arrive, so only the other slots are free now. Same name and
  // pid: the broker hands the jobs it knows we hold to this connection.
  const std::uint64_t owed = held_ + unsent_dones();
  protocol::WorkerInfo info = registration(config_, registry_);
  info.free = static_cast<std::uint32_t>(
      config_.slots - std::min<std::uint64_t>(owed, config_.slots));
  unsent_.push_front({Command::Ready, protocol::encode_ready(info)});
  flush_unsent(now);
  spdlog::info("connecting to {} as {} with {} of {} slot(s) free",
               config_.broker_endpoint, config_.name, *info.free, info.slots);
}

void Worker::Impl::lose_broker(Clock::time_point now) {
  socket_.reset();
  const auto silence =
      (config_.heartbeat.interval * config_.heartbeat.liveness).count();
  if (stopping_) {
    spdlog::warn("broker silent for {} ms while stopping; not reconnecting",
                 silence);
    return;
  }
  reconnects_.fetch_add(1, std::memory_order_relaxed);
  const milliseconds delay = backoff_.next();
  reconnect_at_ = now + delay;
  spdlog::warn("broker silent for {} ms; reconnecting in {} ms", silence,
               delay.count());
}

milliseconds Worker::Impl::poll_timeout(Clock::time_point now) const {
  Clock::time_point until;
  if (socket_) {
    until = liveness_.next_check();
  } else {
    until = stopping_ ? Clock::time_point::max() : reconnect_at_;
  }
  if (stopping_) until = std::min(until, drain_deadline_);
  {
    std::lock_guard lock(timers_mutex_);
    if (!timers_.empty()) until = std::min(until, timers_.begin()->first);
  }
  return std::max(milliseconds{0},
                  std::chrono::ceil<milliseconds>(until - now));
}

void Worker::Impl::receive_batch(Clock::time_point now) {
  for (int i = 0; i < kReceiveBatch && socket_; ++i) {
    Frames frames;
    if (!zmq::recv_multipart(socket_->socket(), std::back_inserter(frames),
                             zmq::recv_flags::dontwait)) {
      return;
    }
    handle_message(frames, now);
  }
}

void Worker::Impl::handle_message(Frames& frames, Clock::time_point now) {
  try {
    const Command command = protocol::decode_command(frames);
    liveness_.heard(now);
    // The back-off restarts on the first well-formed message (section 5),
    // not on a refusal: repeated ones wait longer each time.
    switch (command) {
      case Command::Job:
        handle_job(frames, now);
        backoff_.reset();
        return;
      case Command::Heartbeat:
        backoff_.reset();
        return;
      case Command::Welcome:
        handle_welcome(frames, now);
        return;
      case Command::Disconnect:
        backoff_.reset();
        if (stopping_) return;
        spdlog::warn("broker does not know this worker; registering again");
        reconnects_.fetch_add(1, std::memory_order_relaxed);
        socket_.reset();
        open_socket(now);
        return;
      default:
        throw protocol::ProtocolError(
            std::string("unexpected command from the broker: ") +
            std::string(protocol::command_name(command)));
    }
  } catch (const protocol::ProtocolError& e) {
    count_malformed(e);
  }
}

void Worker::Impl::handle_job(Frames& frames, Clock::time_point now) {
  // A JOB received while stopping crossed our DISCONNECT: the broker holds
  // it for us, so it runs like any other (and is cancelled at the deadline).
  protocol::JobMessage job = protocol::decode_job(Command::Job, frames);
  jobs_received_.fetch_add(1, std::memory_order_relaxed);
  if (!served_.contains(job.task)) {
    reject(job.task, job.meta.id, protocol::error_code::kUnknownTask,
           "this worker does not serve task '" + job.task + "'");
    return;
  }
  if (held_ >= config_.slots) {
    reject(job.task, job.meta.id, protocol::error_code::kOverloaded,
           "all " + std::to_string(config_.slots) + " slots are busy");
    return;
  }
  ++held_;
  if (job.meta.max_result_bytes > 0) {
    result_limits_.emplace(job.meta.id, job.meta.max_result_bytes);
  }
  const milliseconds budget{job.meta.timeout_ms};
  if (async_) {
    start_async_task(
        registry_,
        AsyncJob(*this, std::move(job.task), job.meta.id, job.meta.attempt,
                 now + budget, async_cancellation_.get_token()),
        std::string_view(static_cast<const char*>(job.args.data()),
                         job.args.size()));
    return;
  }
  {
    std::lock_guard lock(jobs_mutex_);
    jobs_.push_back(
        {std::move(job.task), job.meta, now + budget, std::move(job.args)});
  }
  jobs_ready_.notify_one();
}

// A refused READY (the broker's worker limit) is tried again on a new
// socket after the broker's retry_after_ms, not at once: heartbeats on this
// one would only be answered DISCONNECT.
void Worker::Impl::handle_welcome(const Frames& frames, Clock::time_point now) {
  const protocol::Welcome welcome = protocol::decode_welcome(frames);
  if (welcome.ok) {
    backoff_.reset();
    spdlog::debug("registered with the broker (frame limit {} bytes)",
                  welcome.max_message_bytes);
    return;
  }
  const milliseconds delay =
      std::max(milliseconds{welcome.retry_after_ms}, backoff_.next());
  spdlog::error(
      "the broker refused this worker ({}: {}); trying again in {} ms",
      welcome.code, welcome.message, delay.count());
  socket_.reset();
  if (stopping_) return;
  reconnects_.fetch_add(1, std::memory_order_relaxed);
  reconnect_at_ = now + delay;
}

void Worker::Impl::reject(const std::string& task, std::uint64_t id,
                          std::string_view code, std::string message) {
  if (unsent_.size() >= config_.slots + kMaxQueuedRejections) {
    spdlog::warn("dropping the answer to job {} ({}): send queue full", id,
                 code);
    jobs_failed_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  spdlog::warn("rejecting job {}: {}", id, message);
  queue_done(task, protocol::OutcomeMeta::failure(id, code, std::move(message)),
             protocol::nil_payload());
}

void Worker::Impl::queue_done(const std::string& task,
                              const protocol::OutcomeMeta& meta,
                              zmq::message_t result) {
  auto& counter = meta.ok ? jobs_succeeded_ : jobs_failed_;
  counter.fetch_add(1, std::memory_order_relaxed);
  unsent_.push_back(
      {Command::Done,
       protocol::encode_outcome(Command::Done, task, meta, std::move(result))});
}

// Queues a control message before every DONE (after a READY, which must
// open the connection).
void Worker::Impl::queue_first(Command command) {
  auto position = unsent_.begin();
  if (position != unsent_.end() && position->command == Command::Ready) {
    ++position;
  }
  unsent_.insert(position, {command, protocol::encode_control(command)});
}

void Worker::Impl::collect_completions() {
  {
    std::lock_guard lock(completions_mutex_);
    completions_batch_.swap(completions_);
  }
  for (auto& [task, id, outcome] : completions_batch_) {
    --held_;
    // The JOB's limit (the client's and the broker's); from a broker that
    // sent none, our own, which a broker configured like us accepts.
    std::uint64_t max_result_bytes = config_.max_message_bytes - kEnvelopeBytes;
    if (auto limit = result_limits_.find(id); limit != result_limits_.end()) {
      max_result_bytes = limit->second;
      result_limits_.erase(limit);
    }
    if (outcome.result.size() > max_result_bytes) {
      // Sent, it would cost the connection (and every job on it).
      queue_done(task,
                 protocol::OutcomeMeta::failure(
                     id, protocol::error_code::kTooLarge,
                     "result of " + std::to_string(outcome.result.size()) +
                         " bytes exceeds the limit of " +
                         std::to_string(max_result_bytes) +
                         " bytes on its way to the client"),
                 protocol::nil_payload());
    } else if (outcome.ok) {
      queue_done(task, protocol::OutcomeMeta::success(id),
                 zmq::message_t(outcome.result.data(), outcome.result.size()));
    } else {
      queue_done(task,
                 protocol::OutcomeMeta::failure(id, outcome.code,
                                                std::move(outcome.message),
                                                outcome.retry_after_ms),
                 zmq::message_t(outcome.result.data(), outcome.result.size()));
    }
  }
  completions_batch_.clear();
}

void Worker::Impl::finish(std::string_view task, std::uint64_t id,
                          TaskOutcome outcome) noexcept {
  {
    std::lock_guard lock(completions_mutex_);
    completions_.push_back({std::string(task), id, std::move(outcome)});
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

void Worker::Impl::flush_unsent(Clock::time_point now) {
  // What would block stays queued and is retried on the next wake-up
  // (ZMQ_POLLOUT is polled for while anything waits).
  while (socket_ && connected_ && !unsent_.empty()) {
    if (send_frames(socket_->socket(), unsent_.front().frames) !=
        SendResult::sent) {
      return;
    }
    unsent_.pop_front();
    liveness_.sent(now);
  }
}

void Worker::Impl::count_malformed(const std::exception& error) {
  const auto count =
      malformed_dropped_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (std::has_single_bit(count)) {  // rate-limited: 1st, 2nd, 4th, 8th...
    spdlog::warn("dropped a malformed message ({} so far): {}", count,
                 error.what());
  }
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
