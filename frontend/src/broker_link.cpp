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

#include "monsoon/common/broker_session.hpp"
#include "monsoon/common/wakeup.hpp"
#include "monsoon/common/zmq_context.hpp"

namespace monsoon::frontend {
namespace {

using std::chrono::milliseconds;

constexpr milliseconds kMaxBudgetMargin{100};
constexpr std::uint32_t kRetryAfterMs = 1000;
// The deadline heap is rebuilt when stale entries outnumber live ones.
constexpr std::size_t kMinHeapSizeToCompact = 1024;
// PendingJob::session of a job whose broker was lost and that waits for one.
constexpr std::size_t kNoSession = SIZE_MAX;

enum class SendOutcome : std::uint8_t {
  sent,
  full,       // no live broker could take it now (queues full, or none)
  too_large,  // its args exceed every live broker's frame limit
};

struct Submission {
  std::string task;
  std::string args;
  milliseconds timeout;
  Clock::time_point deadline;
  JobCompletion completion;
};

// Kept with its task and args: the job is sent again if its broker is lost.
struct PendingJob {
  std::string task;
  std::string args;
  milliseconds timeout;
  Clock::time_point deadline;
  JobCompletion completion;
  std::size_t session = kNoSession;  // through which it went
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

BrokerLinkConfig validated(BrokerLinkConfig config) {
  if (config.heartbeat.interval < milliseconds{1}) {
    throw std::invalid_argument("heartbeat interval must be at least 1 ms");
  }
  if (config.heartbeat.liveness < 1) {
    throw std::invalid_argument("liveness must be at least 1");
  }
  if (config.endpoints.empty()) {
    throw std::invalid_argument("no broker endpoint");
  }
  std::vector<std::string> sorted = config.endpoints;
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
    throw std::invalid_argument("a broker endpoint is listed twice");
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
      : config_(validated(std::move(config))) {
    for (std::size_t i = 0; i < config_.endpoints.size(); ++i) {
      sessions_.push_back(std::make_unique<BrokerSession>(
          *context_, session_config(config_.endpoints[i]), callbacks(i)));
    }
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
    if (!reachable()) {
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
    return brokers_up_.load(std::memory_order_relaxed) > 0;
  }

  // Our own bound, lowered to the smallest frame limit among the live
  // brokers' WELCOMEs: a job may go through any of them.
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
    stats.failed_broker_lost = get(counters_.failed_broker_lost);
    stats.resent = get(counters_.resent);
    for (const auto& session : sessions_) {
      const BrokerSessionCounters counters = session->counters();
      stats.reconnects += counters.reconnects;
      stats.malformed_dropped += counters.malformed_dropped;
    }
    stats.pending = in_flight_.load(std::memory_order_relaxed);
    stats.max_pending = config_.max_pending;
    stats.brokers = sessions_.size();
    stats.brokers_up = brokers_up_.load(std::memory_order_relaxed);
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
  BrokerSessionConfig session_config(const std::string& endpoint) const {
    BrokerSessionConfig session;
    session.role = BrokerSessionConfig::Role::client;
    session.endpoint = endpoint;
    session.heartbeat = config_.heartbeat;
    session.max_message_bytes = config_.max_message_bytes;
    session.high_water_mark = socket_hwm(config_.max_pending);
    return session;
  }

  BrokerSessionCallbacks callbacks(std::size_t session) {
    BrokerSessionCallbacks callbacks;
    callbacks.greeting = [this] {
      protocol::Hello hello;
      hello.max_message_bytes = config_.max_message_bytes;
      return protocol::encode_hello(hello);
    };
    callbacks.on_message = [this](protocol::Command command,
                                  protocol::Frames& frames,
                                  Clock::time_point now) {
      (void)now;
      handle_result(protocol::decode_outcome(command, frames));
    };
    callbacks.on_welcome = [this](Clock::time_point) {
      update_broker_limits();
    };
    callbacks.on_up = [this](Clock::time_point now) { broker_up(now); };
    callbacks.on_down = [this, session](Clock::time_point now) {
      broker_lost(session, now);
    };
    return callbacks;
  }

  static JobOutcome unreachable_failure() {
    return local_failure(link_error_code::kBrokerUnavailable,
                         "no broker is reachable", kRetryAfterMs);
  }
  static JobOutcome broker_lost_failure() {
    return local_failure(link_error_code::kBrokerUnavailable,
                         "the job's broker was lost and no broker took the "
                         "job again before its deadline",
                         kRetryAfterMs);
  }
  static JobOutcome shutdown_failure() {
    return local_failure(link_error_code::kShuttingDown,
                         "the front end is shutting down", kRetryAfterMs);
  }

  // Socket errors are the sessions' business (a lost broker, a socket that
  // cannot be opened yet). Anything else (bad_alloc, a
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
          // A socket error that the session did not handle: fatal, since
          // the pending table may no longer match what the brokers hold.
          throw;
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
    for (auto& session : sessions_) (void)session->poll_items(items);
    zmq::poll(items, std::max(wait, milliseconds{0}));

    now = Clock::now();
    if (items[0].revents & ZMQ_POLLIN) {
      wakeup_.drain();
      take_submissions(now);
    }
    for (auto& session : sessions_) {
      if (session->polled_ready(items)) session->process(now);
    }
    expire(now);
    for (auto& session : sessions_) session->tick(now);
  }

  Clock::time_point next_wake() const {
    auto wake = Clock::time_point::max();
    for (const auto& session : sessions_) {
      wake = std::min(wake, session->next_wake());
    }
    if (!deadlines_.empty()) wake = std::min(wake, deadlines_.front().deadline);
    return wake;
  }

  // The smallest frame limit among the brokers that told one on their
  // current socket (live, or about to be: a WELCOME precedes on_up);
  // unknown (no bound) when none did.
  void update_broker_limits() {
    std::uint64_t limit = UINT64_MAX;
    std::size_t up = 0;
    for (const auto& session : sessions_) {
      if (session->up()) ++up;
      const auto& welcome = session->welcome();
      if (welcome && welcome->max_message_bytes > 0) {
        limit = std::min(limit, welcome->max_message_bytes);
      }
    }
    broker_max_message_bytes_.store(limit, std::memory_order_relaxed);
    brokers_up_.store(up, std::memory_order_relaxed);
  }

  void broker_up(Clock::time_point now) {
    update_broker_limits();
    // Jobs whose broker was lost while no other one was up.
    resend_orphans(now);
  }

  // The jobs pending through `session` cannot be answered any more (their
  // RESULTs would go to the old socket's routing identity): they go through
  // another live broker now, or wait for one.
  void broker_lost(std::size_t session, Clock::time_point now) {
    update_broker_limits();
    std::size_t orphans = 0;
    for (auto& [id, job] : pending_) {
      if (job.session == session) {
        job.session = kNoSession;
        ++orphans;
      }
    }
    if (orphans == 0) return;
    spdlog::warn("broker at {} was lost; {} pending job(s) will be sent again",
                 config_.endpoints[session], orphans);
    if (reachable()) resend_orphans(now);
  }

  // At-least-once: the lost broker may have run some of them. Each goes
  // with what is left of its budget through the live brokers in turn; one
  // that none can take now (their queues full, or its args over every live
  // broker's frame limit) fails at once, as a new job would.
  void resend_orphans(Clock::time_point now) {
    std::vector<std::pair<std::uint64_t, SendOutcome>> refused;
    std::uint64_t resent = 0;
    for (auto& [id, job] : pending_) {
      if (job.session != kNoSession || job.deadline <= now) continue;
      const SendOutcome outcome = send_job(id, job, now);
      if (outcome == SendOutcome::sent) {
        ++resent;
      } else {
        refused.emplace_back(id, outcome);
      }
    }
    counters_.resent.fetch_add(resent, std::memory_order_relaxed);
    if (resent > 0) spdlog::info("sent {} pending job(s) again", resent);
    for (const auto& [id, outcome] : refused) {
      auto it = pending_.find(id);
      PendingJob job = std::move(it->second);
      pending_.erase(it);
      fail_unsent(job, outcome);
    }
  }

  static JobOutcome queue_full_failure() {
    return local_failure(protocol::error_code::kOverloaded,
                         "the queue to the broker is full", kRetryAfterMs);
  }

  void fail_unsent(PendingJob& job, SendOutcome outcome) {
    bump(counters_.send_failed);
    if (outcome == SendOutcome::too_large) {
      finish(job.completion,
             local_failure(protocol::error_code::kTooLarge,
                           "args of " + std::to_string(job.args.size()) +
                               " bytes exceed the frame limit of every live "
                               "broker"));
    } else {
      finish(job.completion, queue_full_failure());
    }
  }

  // The next live session in turn (round robin), SIZE_MAX if none.
  std::size_t next_up_session() {
    for (std::size_t tried = 0; tried < sessions_.size(); ++tried) {
      const std::size_t candidate = next_session_++ % sessions_.size();
      if (sessions_[candidate]->up()) return candidate;
    }
    return kNoSession;
  }

  // SUBMIT for `job` under `id` through the live sessions in turn, skipping
  // a broker whose announced frame limit its args exceed (it would drop the
  // connection, and every job on it: protocol section 7); records the
  // session in the job.
  SendOutcome send_job(std::uint64_t id, PendingJob& job,
                       Clock::time_point now) {
    protocol::JobMeta meta{id,
                           broker_budget_ms(job.timeout, job.deadline - now), 1,
                           config_.max_message_bytes};
    SendOutcome outcome = SendOutcome::full;
    bool fits_somewhere = false;
    for (std::size_t tried = 0; tried < sessions_.size(); ++tried) {
      const std::size_t candidate = next_up_session();
      if (candidate == kNoSession) break;
      BrokerSession& session = *sessions_[candidate];
      const auto& welcome = session.welcome();
      if (welcome && welcome->max_message_bytes > 0 &&
          job.args.size() > welcome->max_message_bytes) {
        continue;
      }
      fits_somewhere = true;
      auto frames = protocol::encode_job(
          protocol::Command::Submit, job.task, meta,
          zmq::message_t(job.args.data(), job.args.size()));
      if (session.try_send(frames) == SendResult::sent) {
        job.session = candidate;
        return SendOutcome::sent;
      }
    }
    if (!fits_somewhere && reachable()) outcome = SendOutcome::too_large;
    return outcome;
  }

  void fail_pending(const JobOutcome& outcome) {
    // Moved out first: a completion must not see the table mid-iteration.
    auto jobs = std::exchange(pending_, {});
    deadlines_.clear();
    for (auto& [id, job] : jobs) finish(job.completion, outcome);
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
    if (!reachable()) {
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
    if (const SendOutcome outcome = send_job(id, job, now);
        outcome != SendOutcome::sent) {
      fail_unsent(job, outcome);
      return;
    }
    deadlines_.push_back({job.deadline, id});
    std::push_heap(deadlines_.begin(), deadlines_.end(), later);
    pending_.emplace(id, std::move(job));
  }

  void handle_result(protocol::OutcomeMessage message) {
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
      if (job.session != kNoSession) {
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
    for (auto& session : sessions_) session->close(milliseconds{0});
    brokers_up_.store(0);
  }

  const BrokerLinkConfig config_;
  Counters counters_;
  std::atomic<std::size_t> in_flight_{0};
  std::atomic<std::size_t> brokers_up_{0};
  std::atomic<bool> stop_requested_{false};
  // From the live brokers' WELCOMEs; unknown (no bound) until then.
  std::atomic<std::uint64_t> broker_max_message_bytes_{UINT64_MAX};
  Wakeup wakeup_;

  std::mutex submissions_mutex_;
  std::vector<Submission> submissions_;  // guarded by submissions_mutex_
  bool closed_ = false;                  // guarded by submissions_mutex_

  // Owned by the link thread (and by the constructor before it starts);
  // stats() reads only the sessions' atomic counters.
  std::shared_ptr<zmq::context_t> context_ = shared_zmq_context();
  std::vector<std::unique_ptr<BrokerSession>> sessions_;
  std::size_t next_session_ = 0;  // round robin over live sessions
  std::uint64_t next_id_ = 1;
  std::unordered_map<std::uint64_t, PendingJob> pending_;
  std::vector<DeadlineEntry> deadlines_;  // min-heap, see expire()
  std::vector<Submission> taken_;

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
