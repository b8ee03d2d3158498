// BrokerLink: the front end's one connection to the broker. HTTP threads hand
// jobs to submit(); a dedicated link thread, the only thread that touches
// ZeroMQ, sends them as SUBMIT on a DEALER socket, matches RESULTs to them,
// enforces their deadlines and keeps the broker's liveness (heartbeats and
// reconnects, docs/protocol.md section 5).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

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
  std::string endpoint = "tcp://127.0.0.1:5555";
  HeartbeatSettings heartbeat;
  std::size_t max_pending = 100'000;          // jobs awaiting a result
  std::size_t max_message_bytes = 16u << 20;  // largest RESULT frame accepted
};

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
  std::uint64_t pending = 0;      // gauge: accepted and not yet completed
  std::uint64_t max_pending = 0;  // the configured limit
  bool reachable = false;
};

class BrokerLink {
 public:
  // Starts the link thread, which connects at once. Throws zmq::error_t or
  // std::system_error if the socket or thread cannot be created.
  explicit BrokerLink(BrokerLinkConfig config);
  // Calls stop().
  ~BrokerLink();
  BrokerLink(const BrokerLink&) = delete;
  BrokerLink& operator=(const BrokerLink&) = delete;

  // Any thread. Runs `task` with MessagePack `args`,
  // giving up `timeout` after this call. The completion runs on the link
  // thread, except when the job is refused at once (invalid task name,
  // pending table full, broker unreachable, link stopped): then it runs
  // inside submit(), on the caller's thread. The budget sent to the broker is
  // slightly shorter than `timeout`, so the broker's own error normally arrives
  // first.
  void submit(std::string task, std::string args,
              std::chrono::milliseconds timeout, JobCompletion completion);

  // Whether the broker has been heard from within liveness x interval.
  bool reachable() const noexcept;
  BrokerLinkStats stats() const noexcept;

  // Any thread, idempotent. Completes every pending job with shutting_down
  // and joins the link thread; later submits are refused with shutting_down.
  void stop();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace monsoon::frontend
