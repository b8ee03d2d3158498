// BrokerLink: the front end's connections to its brokers. HTTP threads hand
// jobs to submit(); a dedicated link thread, the only thread that touches
// ZeroMQ, keeps one BrokerSession (common/broker_session.hpp) per broker,
// sends each job as SUBMIT through a live one (in turn), matches RESULTs to
// jobs and enforces their deadlines. When a broker is lost, the jobs pending
// through it are sent again through another live one at once, or through
// the first to come back, within their deadlines (docs/protocol.md section
// 5, at-least-once). An unexpected exception on the link thread is logged at
// critical level and aborts the process (see run() in broker_link.cpp).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "monsoon/common/liveness.hpp"
#include "monsoon/common/protocol.hpp"

namespace monsoon::frontend {

// Error codes of outcomes that BrokerLink produces itself; the others
// (deadline_exceeded for its backstop timer, overloaded for a full pending
// table or send queue) are the protocol's.
namespace link_error_code {
inline constexpr std::string_view kBrokerUnavailable = "broker_unavailable";
inline constexpr std::string_view kShuttingDown = "shutting_down";
}  // namespace link_error_code

struct BrokerLinkConfig {
  // The brokers' client endpoints, each a session of its own; at least one,
  // each once.
  std::vector<std::string> endpoints{"tcp://127.0.0.1:5555"};
  HeartbeatSettings heartbeat;        // interval >= 1 ms, liveness >= 1
  std::size_t max_pending = 100'000;  // jobs awaiting a result
  // The largest frame accepted from the broker (ZMQ_MAXMSGSIZE), told to it
  // as every SUBMIT's max_result_bytes (docs/protocol.md section 7), so that
  // a larger result fails its job (too_large) instead of the connection. It
  // also bounds the args of a SUBMIT (see max_args_bytes).
  std::size_t max_message_bytes = 16u << 20;
};

// Room left in a message for everything besides the args (task name, meta),
// with a wide margin so that no hop ever refuses a SUBMIT for its size.
inline constexpr std::size_t kSubmitEnvelopeBytes = 64u << 10;

// The largest args a SUBMIT may carry with `config`: max_message_bytes minus
// kSubmitEnvelopeBytes (0 when the limit leaves no room).
constexpr std::size_t max_args_bytes(const BrokerLinkConfig& config) noexcept {
  return config.max_message_bytes > kSubmitEnvelopeBytes
             ? config.max_message_bytes - kSubmitEnvelopeBytes
             : 0;
}

// How a job ended: the RESULT's meta and payload, or a local failure (then
// meta.ok is false, meta.code says why and result is empty).
struct JobOutcome {
  protocol::OutcomeMeta meta;
  std::string result;  // MessagePack bytes
};

// Invoked exactly once per submitted job. It must return quickly and must not
// call back into the BrokerLink (hand the outcome to another thread instead).
using JobCompletion = std::function<void(JobOutcome)>;

struct BrokerLinkStats {
  std::uint64_t submitted = 0;  // accepted by submit()
  std::uint64_t completed = 0;  // answered by a RESULT
  std::uint64_t timed_out = 0;  // completed by the local deadline
  std::uint64_t rejected_full = 0;
  std::uint64_t rejected_unreachable = 0;
  std::uint64_t send_failed = 0;  // SUBMIT would have blocked
  std::uint64_t late_results_dropped = 0;
  std::uint64_t malformed_dropped = 0;
  std::uint64_t reconnects = 0;
  // Pending when the broker was lost, and not back before their deadline.
  std::uint64_t failed_broker_lost = 0;
  std::uint64_t resent = 0;       // sent again after their broker was lost
  std::uint64_t pending = 0;      // gauge: accepted and not yet completed
  std::uint64_t max_pending = 0;  // the configured limit
  std::uint64_t brokers = 0;      // configured
  std::uint64_t brokers_up = 0;   // gauge: heard and not lost since
  bool reachable = false;         // brokers_up > 0
};

// What the HTTP server needs from its link to the broker. BrokerLink is the
// real one; tests substitute their own. All members may be called from any
// thread.
class JobLink {
 public:
  virtual ~JobLink() = default;

  // Runs `task` with MessagePack `args`, giving up `timeout` after this call;
  // `completion` runs exactly once, possibly inside submit() (see
  // BrokerLink::submit). May throw std::bad_alloc, and then only before it
  // took the completion, which is then never invoked; exceptions thrown by
  // a completion run inside submit() propagate.
  virtual void submit(std::string task, std::string args,
                      std::chrono::milliseconds timeout,
                      JobCompletion completion) = 0;
  // Whether jobs can be expected to reach a broker now.
  virtual bool reachable() const noexcept = 0;
  virtual BrokerLinkStats stats() const noexcept = 0;
  // The largest `args` that submit() accepts now; it may fall once the
  // broker has told its own limit.
  virtual std::size_t max_args_bytes() const noexcept = 0;
};

class BrokerLink final : public JobLink {
 public:
  // Starts the link thread, which connects at once. Throws
  // std::invalid_argument for an unusable config (heartbeat, message size),
  // zmq::error_t or std::system_error if the socket or thread cannot be
  // created.
  explicit BrokerLink(BrokerLinkConfig config);
  // Calls stop().
  ~BrokerLink() override;
  BrokerLink(const BrokerLink&) = delete;
  BrokerLink& operator=(const BrokerLink&) = delete;

  // The completion runs on the link thread, except when the job is refused
  // at once (invalid task name, args over max_args_bytes() (too_large),
  // pending table
  // full, no broker reachable, link stopped): then it runs inside submit(),
  // on the caller's thread. Jobs pending through a broker when it is lost
  // (silence, DISCONNECT or a dropped connection) are sent again, with what
  // is left of their budget, through another live broker, or through the
  // first that is heard again (their RESULTs could never reach a new
  // socket); those whose deadline comes first complete with
  // broker_unavailable. A RESULT answers only the job whose id it carries:
  // ids are never reused, and the first RESULT wins. The budget sent to the
  // broker is slightly shorter than `timeout`, so the broker's own error
  // normally arrives first.
  void submit(std::string task, std::string args,
              std::chrono::milliseconds timeout,
              JobCompletion completion) override;

  // Whether some broker has been heard from within liveness x interval.
  bool reachable() const noexcept override;
  BrokerLinkStats stats() const noexcept override;
  std::size_t max_args_bytes() const noexcept override;

  // Any thread, idempotent. Completes every pending job with shutting_down
  // and joins the link thread; later submits are refused with shutting_down.
  void stop();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace monsoon::frontend
