#include "monsoon/frontend/responses.hpp"

#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <string_view>
#include <vector>

#include "monsoon/common/value.hpp"

namespace monsoon::frontend {

std::string error_body(std::string_view code, std::string_view message) {
  // Text for people, so invalid UTF-8 (from a worker) may be replaced; to_json
  // would refuse it.
  return Value{
      {"error",
       {{"code", std::string(code)}, {"message", std::string(message)}}}}
      .dump(-1, ' ', false, Value::error_handler_t::replace);
}

std::string now_body(std::chrono::system_clock::time_point now) {
  auto unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                     now.time_since_epoch())
                     .count();
  std::time_t seconds = static_cast<std::time_t>(unix_ms / 1000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[96];
  int length = std::snprintf(
      text, sizeof text,
      R"({"now_unix_ms":%lld,"now":"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ"})",
      static_cast<long long>(unix_ms), utc.tm_year + 1900, utc.tm_mon + 1,
      utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
      static_cast<int>(unix_ms % 1000));
  return std::string(text, static_cast<std::size_t>(length));
}

std::string healthz_body(
    bool broker_reachable, std::uint64_t pending,
    const std::optional<broker::DispatcherStats>& dispatcher) {
  Value body{{"status", broker_reachable ? "ok" : "unavailable"},
             {"broker", broker_reachable ? "reachable" : "unreachable"},
             {"pending", pending}};
  if (dispatcher) {
    body["workers"] = dispatcher->workers;
    body["queued"] = dispatcher->queued;
    body["in_flight"] = dispatcher->in_flight;
  }
  return to_json(body);
}

namespace {

// Prometheus text: each metric's HELP and TYPE lines, then its samples,
// named `prefix` + name.
class MetricsWriter {
 public:
  explicit MetricsWriter(std::string_view prefix) : prefix_(prefix) {}

  void metric(std::string_view name, std::string_view type,
              std::string_view help, std::uint64_t value) {
    header(name, type, help);
    sample(name, {}, value);
  }
  void header(std::string_view name, std::string_view type,
              std::string_view help) {
    text_ += "# HELP ";
    text_ += prefix_;
    text_ += name;
    text_ += ' ';
    text_ += help;
    text_ += "\n# TYPE ";
    text_ += prefix_;
    text_ += name;
    text_ += ' ';
    text_ += type;
    text_ += '\n';
  }
  void sample(std::string_view name, std::string_view labels,
              std::uint64_t value) {
    text_ += prefix_;
    text_ += name;
    text_ += labels;
    text_ += ' ';
    text_ += std::to_string(value);
    text_ += '\n';
  }
  std::string take() { return std::move(text_); }

 private:
  std::string_view prefix_;
  std::string text_;
};

// The per-queue series of a hosted dispatcher, monsoon_queue_*{queue="..."}
// (queue names need no escaping: [A-Za-z0-9._:-] only).
std::string queue_metrics(const std::vector<broker::QueueStats>& queues) {
  using broker::QueueStats;
  struct Series {
    std::string_view name;
    std::string_view type;
    std::string_view help;
    std::uint64_t (*value)(const QueueStats&);
  };
  static constexpr Series kSeries[] = {
      {"queued", "gauge",
       "Jobs waiting in the queue, retries waiting out their back-off "
       "included.",
       [](const QueueStats& q) -> std::uint64_t { return q.queued; }},
      {"in_flight", "gauge", "Jobs of the queue given to a worker, not done.",
       [](const QueueStats& q) -> std::uint64_t { return q.in_flight; }},
      {"workers", "gauge",
       "Registered workers, not stopping, with a pool serving the queue.",
       [](const QueueStats& q) -> std::uint64_t { return q.workers; }},
      {"slots", "gauge", "Slots of the pools serving the queue.",
       [](const QueueStats& q) { return q.slots; }},
      {"credit", "gauge",
       "Free slots the dispatcher counts in the pools serving the queue.",
       [](const QueueStats& q) { return q.credit; }},
      {"submitted_total", "counter",
       "Jobs that entered the queue (from 0 again when the queue comes "
       "back after it had neither jobs nor workers).",
       [](const QueueStats& q) { return q.submitted; }},
      {"completed_total", "counter",
       "Jobs of the queue whose worker's answer was relayed to the client.",
       [](const QueueStats& q) { return q.completed; }},
  };
  MetricsWriter out("monsoon_queue_");
  for (const Series& series : kSeries) {
    out.header(series.name, series.type, series.help);
    for (const QueueStats& queue : queues) {
      out.sample(series.name, "{queue=\"" + queue.name + "\"}",
                 series.value(queue));
    }
  }
  return out.take();
}

}  // namespace

std::string metrics_text(
    const ServerStats& server, const BrokerLinkStats& link,
    const ServerLimits& limits,
    const std::optional<broker::DispatcherStats>& dispatcher) {
  MetricsWriter out("monsoon_frontend_");
  out.header("http_responses_total", "counter",
             "HTTP responses sent, by status class.");
  for (int status_class = 1; status_class <= 5; ++status_class) {
    out.sample(
        "http_responses_total",
        "{class=\"" + std::to_string(status_class) + "xx\"}",
        server.responses_by_class[static_cast<std::size_t>(status_class)]);
  }
  out.metric("http_requests_in_progress", "gauge",
             "Requests read and not yet answered.",
             server.requests_in_progress);
  out.metric("connections_open", "gauge", "Open client connections.",
             server.open_connections);
  out.metric("connections_accepted_total", "counter",
             "Client connections accepted.", server.connections_accepted);
  out.metric("connections_rejected_total", "counter",
             "Connections closed at once because max_connections was reached.",
             server.connections_rejected);

  out.metric("broker_reachable", "gauge",
             "1 while some broker answers heartbeats.", link.reachable ? 1 : 0);
  out.metric("brokers_configured", "gauge", "Brokers this front end uses.",
             link.brokers);
  out.metric("brokers_up", "gauge",
             "Brokers heard from within the liveness window.", link.brokers_up);
  out.metric("jobs_pending", "gauge", "Jobs submitted and not yet completed.",
             link.pending);
  out.metric("jobs_submitted_total", "counter",
             "Jobs accepted for submission to the broker.", link.submitted);
  out.metric("jobs_completed_total", "counter",
             "Jobs answered by a RESULT from the broker.", link.completed);
  out.metric("jobs_timed_out_total", "counter",
             "Jobs that reached their deadline without a RESULT.",
             link.timed_out);
  out.metric("jobs_rejected_full_total", "counter",
             "Jobs refused because the pending table was full.",
             link.rejected_full);
  out.metric("jobs_rejected_unreachable_total", "counter",
             "Jobs refused because the broker was unreachable.",
             link.rejected_unreachable);
  out.metric("jobs_send_failed_total", "counter",
             "Jobs refused because the queue to the broker was full.",
             link.send_failed);
  out.metric("late_results_dropped_total", "counter",
             "RESULTs for jobs no longer pending.", link.late_results_dropped);
  out.metric("malformed_messages_dropped_total", "counter",
             "Invalid messages from the broker.", link.malformed_dropped);
  out.metric("broker_reconnects_total", "counter",
             "New sockets opened after losing a broker.", link.reconnects);
  out.metric("jobs_failed_broker_lost_total", "counter",
             "Pending jobs failed because the broker was lost and not back "
             "before their deadline.",
             link.failed_broker_lost);
  out.metric("jobs_resent_total", "counter",
             "Pending jobs sent again after their broker was lost.",
             link.resent);

  if (dispatcher) {
    out.metric("broker_workers", "gauge",
               "Workers registered with the dispatcher this process hosts.",
               dispatcher->workers);
    out.metric("broker_jobs_queued", "gauge",
               "Jobs waiting for a worker (retries waiting out their "
               "back-off not included).",
               dispatcher->queued);
    out.metric("broker_jobs_in_flight", "gauge",
               "Jobs given to a worker and not yet done.",
               dispatcher->in_flight);
    out.metric("broker_jobs_dispatched_total", "counter",
               "JOBs sent to workers, re-dispatches included.",
               dispatcher->dispatched);
    out.metric("broker_jobs_rejected_overloaded_total", "counter",
               "Jobs refused because the dispatcher's queues were full.",
               dispatcher->rejected_overloaded);
    out.metric("broker_jobs_requeued_total", "counter",
               "Jobs queued again after their worker died.",
               dispatcher->requeued);
    out.metric("broker_workers_lost_total", "counter",
               "Workers declared dead (silent, unreachable or gone).",
               dispatcher->workers_lost);
    static_assert(broker::kMaxQueueStats == 1000, "the help text says 1000");
    out.metric("broker_queues", "gauge",
               "Queues with jobs or workers; the monsoon_queue_* series list "
               "the first 1000 by name.",
               dispatcher->queues_total);
  }

  out.metric("limit_max_connections", "gauge",
             "Configured maximum of open connections.", limits.max_connections);
  out.metric("limit_max_body_bytes", "gauge",
             "Configured maximum request body size.", limits.max_body_bytes);
  out.metric("limit_max_header_bytes", "gauge",
             "Configured maximum request header size.",
             limits.max_header_bytes);
  out.metric("limit_max_pending", "gauge", "Configured maximum pending jobs.",
             link.max_pending);
  out.metric("limit_default_timeout_ms", "gauge",
             "Job timeout when the request sets none.",
             limits.default_timeout_ms);
  out.metric("limit_max_timeout_ms", "gauge",
             "Largest job timeout a request may set.", limits.max_timeout_ms);
  if (dispatcher) return out.take() + queue_metrics(dispatcher->queues);
  return out.take();
}

}  // namespace monsoon::frontend
