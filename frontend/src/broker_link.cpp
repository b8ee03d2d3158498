#include "monsoon/frontend/broker_link.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <exception>
#include <iterator>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>
#include <zmq_addon.hpp>

#include "monsoon/common/monitored_socket.hpp"
#include "monsoon/common/routing_id.hpp"
#include "monsoon/common/wakeup.hpp"
#include "monsoon/common/zmq_context.hpp"
#include "monsoon/common/zmq_send.hpp"

namespace monsoon::frontend {
namespace {

using std::chrono::milliseconds;

// Receiving in batches keeps wake-ups (the expensive part) rare under load.
constexpr std::size_t kMaxMessagesPerWakeup = 64;
constexpr milliseconds kMaxBudgetMargin{100};
constexpr std::uint32_t kRetryAfterMs = 1000;
// The deadline heap is rebuilt when stale entries outnumber live ones.
constexpr std::size_t kMinHeapSizeToCompact = 1024;
// docs/protocol.md section 5: the back-off starts at interval / 4 (at least
// 1 ms, so that a short interval cannot mean reconnecting in a tight loop)
// and doubles up to 32 times that.
constexpr milliseconds kMinBackoff{1};
constexpr int kMaxBackoffFactor = 32;

struct Submission {
  std::string task;
  std::string args;
  milliseconds timeout;
  Clock::time_point deadline;
  JobCompletion completion;
};

// Kept with its task and args: the job is sent again if the broker is lost.
struct PendingJob {
  std::string task;
  std::string args;
  milliseconds timeout;
  Clock::time_point deadline;
  JobCompletion completion;
};

struct DeadlineEntry {
  Clock::time_point deadline;
  std::uint64_t id;
};

// Orders std::*_heap as a min-heap on the deadline.
bool later(const DeadlineEntry& a, const DeadlineEntry& b) {
  return a.deadline > b.deadline;
}

JobOutcome local_failure(std::string_view code, std::string message,
                         std::uint32_t retry_after_ms = 0) {
  return {protocol::OutcomeMeta::failure(0, code, std::move(message),
                                         retry_after_ms),
          {}};
}

// The broker gets slightly less time than we wait, so that its own, more
// specific error (no_worker, deadline_exceeded) arrives before our backstop.
std::uint32_t broker_budget_ms(milliseconds timeout,
                               Clock::duration remaining) {
  auto margin = std::min(timeout / 10, kMaxBudgetMargin);
  auto budget =
      std::chrono::duration_cast<milliseconds>(remaining - margin).count();
  return static_cast<std::uint32_t>(std::clamp<std::int64_t>(
      budget, 1, static_cast<std::int64_t>(protocol::kMaxTimeoutMs)));
}

milliseconds initial_backoff(const HeartbeatSettings& heartbeat) {
  return std::max(heartbeat.interval / 4, kMinBackoff);
}

BrokerLinkConfig validated(BrokerLinkConfig config) {
  if (config.heartbeat.interval < milliseconds{1}) {
    throw std::invalid_argument("heartbeat interval must be at least 1 ms");
  }
  if (config.heartbeat.liveness < 1) {
    throw std::invalid_argument("liveness must be at least 1");
  }
  if (max_args_bytes(config) == 0) {
    throw std::invalid_argument("max message bytes must exceed " +
                                std::to_string(kSubmitEnvelopeBytes));
  }
  return config;
}

int socket_hwm(std::size_t max_pending) {
  return static_cast<int>(std::clamp<std::size_t>(max_pending, 1000, INT_MAX));
}

struct Counters {
  std::atomic<std::uint64_t> submitted{0};
  std::atomic<std::uint64_t> completed{0};
  std::atomic<std::uint64_t> timed_out{0};
  std::atomic<std::uint64_t> rejected_full{0};
  std::atomic<std::uint64_t> rejected_unreachable{0};
  std::atomic<std::uint64_t> send_failed{0};
  std::atomic<std::uint64_t> late_results_dropped{0};
  std::atomic<std::uint64_t> malformed_dropped{0};
  std::atomic<std::uint64_t> reconnects{0};
  std::atomic<std::uint64_t> failed_broker_lost{0};
  std::atomic<std::uint64_t> resent{0};
};

void bump(std::atomic<std::uint64_t>& counter) {
  counter.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

class BrokerLink::Impl {
 public:
  explicit Impl(BrokerLinkConfig config)
      : config_(validated(std::move(config))),
        liveness_(config_.heartbeat, Clock::now()),
        backoff_(initial_backoff(config_.heartbeat),
                 initial_backoff(config_.heartbeat) * kMaxBackoffFactor) {
    open_socket(Clock::now());
    thread_ = std::thread([this] { run(); });
  }

  ~Impl() { stop(); }

  void submit(std::string task, std::string args, milliseconds timeout,
              JobCompletion completion) {
    if (!protocol::is_valid_task_name(task)) {
      completion(local_failure(protocol::error_code::kBadRequest,
                               "invalid task name"));
      return;
    }
    if (const std::size_t limit = max_args_bytes(); args.size() > limit) {
      // The broker would drop the whole connection over it.
      completion(local_failure(protocol::error_code::kTooLarge,
                               "args of " + std::to_string(args.size()) +
                                   " bytes exceed the limit of " +
                                   std::to_string(limit)));
      return;
    }
    if (stop_requested_.load()) {
      completion(shutdown_failure());
      return;
    }
    if (in_flight_.fetch_add(1) >= config_.max_pending) {
      in_flight_.fetch_sub(1);
      bump(counters_.rejected_full);
      completion(local_failure(protocol::error_code::kOverloaded,
                               "too many pending jobs (limit " +
                                   std::to_string(config_.max_pending) + ")",
                               kRetryAfterMs));
      return;
    }
    if (!reachable_.load(std::memory_order_relaxed)) {
      in_flight_.fetch_sub(1);
      bump(counters_.rejected_unreachable);
      completion(unreachable_failure());
      return;
    }
    bool was_empty = false;
    {
      std::unique_lock lock(submissions_mutex_);
      if (closed_) {
        lock.unlock();
        in_flight_.fetch_sub(1);
        completion(shutdown_failure());
        return;
      }
      bump(counters_.submitted);
      was_empty = submissions_.empty();
      submissions_.push_back({std::move(task), std::move(args), timeout,
                              Clock::now() + timeout, std::move(completion)});
    }
    // The link thread empties the vector on each wake-up, so only the first
    // submission after that needs to wake it.
    if (was_empty) wakeup_.notify();
  }

  bool reachable() const noexcept {
    return reachable_.load(std::memory_order_relaxed);
  }

  // Our own bound, lowered to the broker's frame limit once its WELCOME
  // told it.
  std::size_t max_args_bytes() const noexcept {
    return std::min<std::size_t>(
        frontend::max_args_bytes(config_),
        broker_max_message_bytes_.load(std::memory_order_relaxed));
  }

  BrokerLinkStats stats() const noexcept {
    auto get = [](const std::atomic<std::uint64_t>& counter) {
      return counter.load(std::memory_order_relaxed);
    };
    BrokerLinkStats stats;
    stats.submitted = get(counters_.submitted);
    stats.completed = get(counters_.completed);
    stats.timed_out = get(counters_.timed_out);
    stats.rejected_full = get(counters_.rejected_full);
    stats.rejected_unreachable = get(counters_.rejected_unreachable);
    stats.send_failed = get(counters_.send_failed);
    stats.late_results_dropped = get(counters_.late_results_dropped);
    stats.malformed_dropped = get(counters_.malformed_dropped);
    stats.reconnects = get(counters_.reconnects);
    stats.failed_broker_lost = get(counters_.failed_broker_lost);
    stats.resent = get(counters_.resent);
    stats.pending = in_flight_.load(std::memory_order_relaxed);
    stats.max_pending = config_.max_pending;
    stats.reachable = reachable();
    return stats;
  }

  void stop() {
    std::lock_guard lock(stop_mutex_);
    if (!thread_.joinable()) return;
    stop_requested_.store(true);
    wakeup_.notify();
    thread_.join();
  }

 private:
  static JobOutcome unreachable_failure() {
    return local_failure(link_error_code::kBrokerUnavailable,
                         "the broker is unreachable", kRetryAfterMs);
  }
  static JobOutcome broker_lost_failure() {
    return local_failure(link_error_code::kBrokerUnavailable,
                         "the broker was lost and not back before the job's "
                         "deadline",
                         kRetryAfterMs);
  }
  static JobOutcome shutdown_failure() {
    return local_failure(link_error_code::kShuttingDown,
                         "the front end is shutting down", kRetryAfterMs);
  }

  // Socket errors are handled as a lost broker. Anything else (bad_alloc, a
  // bug, a completion throwing what it must not) may have left the pending
  // table inconsistent, with completions that will never run: requests would
  // hang until their deadlines, or forever once the link stops polling. A
  // crash that a supervisor restarts beats a front end that hangs, so log
  // why (std::terminate would not) and abort.
  void run() noexcept {
    try {
      std::vector<zmq::pollitem_t> items;
      while (!stop_requested_.load()) {
        try {
          poll_once(items);
        } catch (const zmq::error_t& e) {
          if (e.num() == EINTR) continue;
          spdlog::error("broker link: {}; reconnecting", e.what());
          lose_broker(Clock::now());
        }
      }
      shut_down();
    } catch (const std::exception& e) {
      die(e.what());
    } catch (...) {
      die("an exception not derived from std::exception");
    }
  }

  [[noreturn]] static void die(const char* reason) noexcept {
    try {
      spdlog::critical("broker link thread failed: {}; aborting", reason);
      spdlog::default_logger()->flush();
    } catch (...) {  // aborting anyway
    }
    std::abort();
  }

  void poll_once(std::vector<zmq::pollitem_t>& items) {
    auto now = Clock::now();
    auto wait = std::chrono::ceil<milliseconds>(next_wake() - now);
    items.clear();
    items.push_back({nullptr, wakeup_.fd(), ZMQ_POLLIN, 0});
    if (socket_) {
      items.push_back({socket_->socket().handle(), 0, ZMQ_POLLIN, 0});
      items.push_back({socket_->events().handle(), 0, ZMQ_POLLIN, 0});
    }
    zmq::poll(items, std::max(wait, milliseconds{0}));

    now = Clock::now();
    if (items[0].revents & ZMQ_POLLIN) {
      wakeup_.drain();
      take_submissions(now);
    }
    if (items.size() > 1 && (items[1].revents & ZMQ_POLLIN)) {
      receive_batch(now);
    }
    if (items.size() > 2 && (items[2].revents & ZMQ_POLLIN) && socket_ &&
        (socket_->take_events().seen & ZMQ_EVENT_DISCONNECTED) != 0) {
      spdlog::warn("connection to the broker at {} dropped", config_.endpoint);
      lose_broker(now);
    }
    expire(now);
    keep_alive(now);
  }

  Clock::time_point next_wake() const {
    auto wake = socket_ ? liveness_.next_check() : reconnect_at_;
    if (!deadlines_.empty()) wake = std::min(wake, deadlines_.front().deadline);
    return wake;
  }

  void open_socket(Clock::time_point now) {
    // The monitor tells a dropped connection at once: a broker restarted
    // faster than heartbeats notice would otherwise take the reconnected
    // socket without knowing the jobs sent before.
    socket_.emplace(context_, zmq::socket_type::dealer, ZMQ_EVENT_DISCONNECTED);
    zmq::socket_t& socket = socket_->socket();
    socket.set(zmq::sockopt::routing_id, make_routing_id());
    socket.set(zmq::sockopt::linger, 0);
    socket.set(zmq::sockopt::maxmsgsize,
               static_cast<std::int64_t>(config_.max_message_bytes));
    socket.set(zmq::sockopt::sndhwm, socket_hwm(config_.max_pending));
    socket.set(zmq::sockopt::rcvhwm, socket_hwm(config_.max_pending));
    socket.connect(config_.endpoint);
    // A broker of protocol 1.1 answers with WELCOME and its frame limit;
    // an older one drops it. What an earlier broker told holds no more.
    broker_max_message_bytes_.store(UINT64_MAX, std::memory_order_relaxed);
    protocol::Hello hello;
    hello.max_message_bytes = config_.max_message_bytes;
    auto frames = protocol::encode_hello(hello);
    send_frames(socket, frames);
    liveness_ = PeerLiveness(config_.heartbeat, now);
    send_heartbeat(now);  // its answer proves the broker reachable
  }

  // Drops the socket (and with it whatever it still queues) and schedules a
  // new one. Pending jobs wait for the broker to be heard on it, then are
  // sent again (their RESULTs would have gone to the old socket's routing
  // identity, which no longer exists); those whose deadline comes first get
  // 503 broker_unavailable.
  void lose_broker(Clock::time_point now) {
    socket_.reset();
    reachable_.store(false);
    reconnect_at_ = now + backoff_.next();
    if (!pending_.empty()) {
      spdlog::warn("the broker was lost; {} pending job(s) will be sent again",
                   pending_.size());
    }
  }

  // After a reconnection: every pending job still in time, with what is
  // left of its budget. At-least-once: the lost broker may have run some.
  void resend_pending(Clock::time_point now) {
    std::vector<std::uint64_t> refused;
    std::uint64_t resent = 0;
    for (auto& [id, job] : pending_) {
      if (job.deadline <= now) continue;  // expire() answers it
      if (send_job(id, job, now)) {
        ++resent;
      } else {
        refused.push_back(id);
      }
    }
    counters_.resent.fetch_add(resent, std::memory_order_relaxed);
    if (resent > 0) spdlog::info("sent {} pending job(s) again", resent);
    for (std::uint64_t id : refused) {
      auto it = pending_.find(id);
      PendingJob job = std::move(it->second);
      pending_.erase(it);
      bump(counters_.send_failed);
      finish(job.completion, queue_full_failure());
    }
  }

  static JobOutcome queue_full_failure() {
    return local_failure(protocol::error_code::kOverloaded,
                         "the queue to the broker is full", kRetryAfterMs);
  }

  // SUBMIT for `job` under `id`; false if it would block.
  bool send_job(std::uint64_t id, const PendingJob& job,
                Clock::time_point now) {
    protocol::JobMeta meta{id,
                           broker_budget_ms(job.timeout, job.deadline - now), 1,
                           config_.max_message_bytes};
    auto frames =
        protocol::encode_job(protocol::Command::Submit, job.task, meta,
                             zmq::message_t(job.args.data(), job.args.size()));
    return send_frames(socket_->socket(), frames) == SendResult::sent;
  }

  void fail_pending(const JobOutcome& outcome) {
    // Moved out first: a completion must not see the table mid-iteration.
    auto jobs = std::exchange(pending_, {});
    deadlines_.clear();
    for (auto& [id, job] : jobs) finish(job.completion, outcome);
  }

  void heard(Clock::time_point now) {
    liveness_.heard(now);
    if (!reachable_.exchange(true)) {
      spdlog::info("broker at {} is reachable", config_.endpoint);
      backoff_.reset();
      resend_pending(now);
    }
  }

  void send_heartbeat(Clock::time_point now) {
    auto frames = protocol::encode_control(protocol::Command::Heartbeat);
    send_frames(socket_->socket(), frames);  // if full, the next one will do
    liveness_.sent(now);
  }

  void keep_alive(Clock::time_point now) {
    if (!socket_) {
      if (now >= reconnect_at_) {
        bump(counters_.reconnects);
        open_socket(now);
      }
      return;
    }
    // RESULTs that arrived while this thread was not scheduled count.
    if (liveness_.peer_dead(now)) receive_batch(now);
    if (socket_ && liveness_.peer_dead(now)) {
      if (reachable_.load()) {
        spdlog::warn(
            "broker at {} is unreachable (silent for {} ms)", config_.endpoint,
            (config_.heartbeat.interval * config_.heartbeat.liveness).count());
      }
      lose_broker(now);
      return;
    }
    if (socket_ && liveness_.heartbeat_due(now)) send_heartbeat(now);
  }

  void take_submissions(Clock::time_point now) {
    {
      std::lock_guard lock(submissions_mutex_);
      taken_.swap(submissions_);
    }
    for (auto& submission : taken_) {
      try {
        send_submission(submission, now);
      } catch (const zmq::error_t& e) {
        // Thrown before the job was recorded: it is still ours to complete.
        bump(counters_.send_failed);
        finish(submission.completion,
               local_failure(
                   protocol::error_code::kInternal,
                   std::string("cannot send to the broker: ") + e.what()));
      }
    }
    taken_.clear();
  }

  void send_submission(Submission& submission, Clock::time_point now) {
    if (!socket_ || !reachable_.load()) {
      bump(counters_.rejected_unreachable);
      finish(submission.completion, unreachable_failure());
      return;
    }
    auto remaining = submission.deadline - now;
    if (remaining <= Clock::duration::zero()) {
      bump(counters_.timed_out);
      finish(submission.completion, deadline_failure(submission.timeout));
      return;
    }
    std::uint64_t id = next_id_++;
    PendingJob job{std::move(submission.task), std::move(submission.args),
                   submission.timeout, submission.deadline,
                   std::move(submission.completion)};
    if (!send_job(id, job, now)) {
      bump(counters_.send_failed);
      finish(job.completion, queue_full_failure());
      return;
    }
    deadlines_.push_back({job.deadline, id});
    std::push_heap(deadlines_.begin(), deadlines_.end(), later);
    pending_.emplace(id, std::move(job));
  }

  void receive_batch(Clock::time_point now) {
    for (std::size_t i = 0; i < kMaxMessagesPerWakeup && socket_; ++i) {
      frames_.clear();
      if (!zmq::recv_multipart(socket_->socket(), std::back_inserter(frames_),
                               zmq::recv_flags::dontwait)) {
        return;
      }
      handle_message(now);
    }
  }

  void handle_message(Clock::time_point now) {
    try {
      switch (protocol::decode_command(frames_)) {
        case protocol::Command::Heartbeat:
          heard(now);
          return;
        case protocol::Command::Result:
          handle_result(
              protocol::decode_outcome(protocol::Command::Result, frames_),
              now);
          return;
        case protocol::Command::Welcome:
          handle_welcome(protocol::decode_welcome(frames_), now);
          return;
        case protocol::Command::Disconnect:
          spdlog::warn("broker at {} is shutting down", config_.endpoint);
          lose_broker(now);
          return;
        default:
          throw protocol::ProtocolError("command not valid from a broker");
      }
    } catch (const protocol::ProtocolError& e) {
      bump(counters_.malformed_dropped);
      spdlog::debug("dropped a malformed message from the broker: {}",
                    e.what());
    }
  }

  void handle_welcome(const protocol::Welcome& welcome, Clock::time_point now) {
    heard(now);
    if (!welcome.ok || welcome.max_message_bytes == 0) return;
    if (broker_max_message_bytes_.exchange(welcome.max_message_bytes) !=
        welcome.max_message_bytes) {
      spdlog::info("broker at {} accepts frames of up to {} bytes",
                   config_.endpoint, welcome.max_message_bytes);
    }
  }

  void handle_result(protocol::OutcomeMessage message, Clock::time_point now) {
    heard(now);
    auto it = pending_.find(message.meta.id);
    if (it == pending_.end()) {
      bump(counters_.late_results_dropped);
      return;
    }
    JobCompletion completion = std::move(it->second.completion);
    pending_.erase(it);
    bump(counters_.completed);
    finish(completion,
           JobOutcome{std::move(message.meta), message.result.to_string()});
  }

  static JobOutcome deadline_failure(milliseconds timeout) {
    return local_failure(
        protocol::error_code::kDeadlineExceeded,
        "no result within " + std::to_string(timeout.count()) + " ms");
  }

  // Deadline entries of completed jobs stay in the heap until they surface
  // (lazy deletion) or the heap is compacted.
  void expire(Clock::time_point now) {
    while (!deadlines_.empty() && deadlines_.front().deadline <= now) {
      std::pop_heap(deadlines_.begin(), deadlines_.end(), later);
      std::uint64_t id = deadlines_.back().id;
      deadlines_.pop_back();
      auto it = pending_.find(id);
      if (it == pending_.end()) continue;
      PendingJob job = std::move(it->second);
      pending_.erase(it);
      if (reachable_.load()) {
        bump(counters_.timed_out);
        finish(job.completion, deadline_failure(job.timeout));
      } else {
        bump(counters_.failed_broker_lost);
        finish(job.completion, broker_lost_failure());
      }
    }
    if (deadlines_.size() > kMinHeapSizeToCompact &&
        deadlines_.size() > 2 * pending_.size()) {
      std::erase_if(deadlines_, [this](const DeadlineEntry& entry) {
        return !pending_.contains(entry.id);
      });
      std::make_heap(deadlines_.begin(), deadlines_.end(), later);
    }
  }

  void finish(JobCompletion& completion, JobOutcome outcome) {
    // Counted out before the completion runs, so whoever it wakes sees a
    // pending count that no longer includes this job.
    in_flight_.fetch_sub(1);
    try {
      completion(std::move(outcome));
    } catch (const std::exception& e) {
      spdlog::error("a job completion threw: {}", e.what());
    }
  }

  void shut_down() {
    std::vector<Submission> left;
    {
      std::lock_guard lock(submissions_mutex_);
      closed_ = true;
      left.swap(submissions_);
    }
    for (auto& submission : left) {
      finish(submission.completion, shutdown_failure());
    }
    fail_pending(shutdown_failure());
    socket_.reset();
    reachable_.store(false);
  }

  const BrokerLinkConfig config_;
  Counters counters_;
  std::atomic<std::size_t> in_flight_{0};
  std::atomic<bool> reachable_{false};
  std::atomic<bool> stop_requested_{false};
  // From the broker's WELCOME; unknown (no bound) until then.
  std::atomic<std::uint64_t> broker_max_message_bytes_{UINT64_MAX};
  Wakeup wakeup_;

  std::mutex submissions_mutex_;
  std::vector<Submission> submissions_;  // guarded by submissions_mutex_
  bool closed_ = false;                  // guarded by submissions_mutex_

  // Owned by the link thread (and by the constructor before it starts).
  std::shared_ptr<zmq::context_t> shared_context_ = shared_zmq_context();
  zmq::context_t& context_ = *shared_context_;
  std::optional<MonitoredSocket> socket_;  // empty while backing off
  PeerLiveness liveness_;
  Backoff backoff_;
  Clock::time_point reconnect_at_;
  std::uint64_t next_id_ = 1;
  std::unordered_map<std::uint64_t, PendingJob> pending_;
  std::vector<DeadlineEntry> deadlines_;  // min-heap, see expire()
  std::vector<Submission> taken_;
  protocol::Frames frames_;

  std::mutex stop_mutex_;
  std::thread thread_;
};

BrokerLink::BrokerLink(BrokerLinkConfig config)
    : impl_(std::make_unique<Impl>(std::move(config))) {}

BrokerLink::~BrokerLink() = default;

void BrokerLink::submit(std::string task, std::string args,
                        std::chrono::milliseconds timeout,
                        JobCompletion completion) {
  impl_->submit(std::move(task), std::move(args), timeout,
                std::move(completion));
}

bool BrokerLink::reachable() const noexcept { return impl_->reachable(); }

std::size_t BrokerLink::max_args_bytes() const noexcept {
  return impl_->max_args_bytes();
}

BrokerLinkStats BrokerLink::stats() const noexcept { return impl_->stats(); }

void BrokerLink::stop() { impl_->stop(); }

}  // namespace monsoon::frontend
