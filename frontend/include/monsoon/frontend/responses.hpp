// Bodies of the responses the front end composes itself: JSON error bodies,
// GET /now, GET /healthz and the Prometheus text of GET /metrics. Pure
// functions, callable from any thread.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "monsoon/broker/dispatcher.hpp"
#include "monsoon/frontend/broker_link.hpp"

namespace monsoon::frontend {

// {"error":{"code":"...","message":"..."}}; invalid UTF-8 in either string
// is replaced, so any message (e.g. relayed from a worker) can be passed.
std::string error_body(std::string_view code, std::string_view message);

// {"now_unix_ms":<int>,"now":"<ISO-8601 UTC, millisecond precision>"}
std::string now_body(std::chrono::system_clock::time_point now);

// {"status":"ok"|"unavailable","broker":"reachable"|"unreachable",
//  "pending":N}; for a front end that hosts the dispatcher (`dispatcher`
// set), also "workers", "queued" and "in_flight" (its registered workers and
// its jobs waiting and running).
std::string healthz_body(
    bool broker_reachable, std::uint64_t pending,
    const std::optional<broker::DispatcherStats>& dispatcher = std::nullopt);

// Counters of the HTTP side, as sampled for /metrics.
struct ServerStats {
  std::array<std::uint64_t, 6> responses_by_class{};  // [n] = nxx, n in 1..5
  std::uint64_t connections_accepted = 0;
  std::uint64_t connections_rejected = 0;  // over max_connections
  std::uint64_t open_connections = 0;
  std::uint64_t requests_in_progress = 0;
};

struct ServerLimits {
  std::uint64_t max_connections = 0;
  std::uint64_t max_body_bytes = 0;
  std::uint64_t max_header_bytes = 0;
  std::uint64_t default_timeout_ms = 0;
  std::uint64_t max_timeout_ms = 0;
};

// Prometheus text exposition format, version 0.0.4. With `dispatcher` (a
// front end that hosts it) also its workers, queue and main counters, as
// monsoon_frontend_broker_*, and each of its named queues' figures
// (DispatcherStats::queues) as monsoon_queue_*{queue="NAME"}: gauges
// queued, in_flight, workers, slots, credit; counters submitted_total,
// completed_total.
std::string metrics_text(
    const ServerStats& server, const BrokerLinkStats& link,
    const ServerLimits& limits,
    const std::optional<broker::DispatcherStats>& dispatcher = std::nullopt);

}  // namespace monsoon::frontend
