#include "monsoon/frontend/responses.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

using namespace monsoon::frontend;
using Json = nlohmann::json;

TEST_CASE("the error body names the code and the message") {
  Json body = Json::parse(error_body("no_worker", "nobody serves \"x\""));
  CHECK(body ==
        Json{{"error",
              {{"code", "no_worker"}, {"message", "nobody serves \"x\""}}}});
}

TEST_CASE("an error message with invalid UTF-8 still gives valid JSON") {
  Json body = Json::parse(error_body("task_failed", "bad \xff byte"));
  CHECK(body["error"]["message"] == "bad \xef\xbf\xbd byte");
}

TEST_CASE("/now gives Unix milliseconds and ISO-8601 UTC") {
  using namespace std::chrono;
  system_clock::time_point at{milliseconds{1'700'000'000'123}};
  Json body = Json::parse(now_body(at));
  CHECK(body["now_unix_ms"] == 1'700'000'000'123);
  CHECK(body["now"] == "2023-11-14T22:13:20.123Z");
  CHECK(Json::parse(now_body(system_clock::time_point{}))["now"] ==
        "1970-01-01T00:00:00.000Z");
}

TEST_CASE("/healthz reports the broker and the pending jobs") {
  CHECK(Json::parse(healthz_body(true, 3)) ==
        Json{{"status", "ok"}, {"broker", "reachable"}, {"pending", 3}});
  CHECK(Json::parse(healthz_body(false, 0)) == Json{{"status", "unavailable"},
                                                    {"broker", "unreachable"},
                                                    {"pending", 0}});
}

TEST_CASE("/healthz of a front end hosting the dispatcher shows its workers") {
  monsoon::broker::DispatcherStats dispatcher;
  dispatcher.workers = 2;
  dispatcher.queued = 5;
  dispatcher.in_flight = 7;
  CHECK(Json::parse(healthz_body(true, 12, dispatcher)) ==
        Json{{"status", "ok"},
             {"broker", "reachable"},
             {"pending", 12},
             {"workers", 2},
             {"queued", 5},
             {"in_flight", 7}});
}

TEST_CASE("/metrics is Prometheus text with every counter") {
  ServerStats server;
  server.responses_by_class[2] = 17;
  server.responses_by_class[5] = 4;
  server.open_connections = 64;
  server.connections_rejected = 2;
  BrokerLinkStats link;
  link.reachable = true;
  link.pending = 9;
  link.late_results_dropped = 5;
  link.failed_broker_lost = 3;
  link.max_pending = 100;
  ServerLimits limits;
  limits.max_body_bytes = 1024;
  std::string text = metrics_text(server, link, limits);

  for (std::string_view line :
       {"monsoon_frontend_http_responses_total{class=\"2xx\"} 17\n",
        "monsoon_frontend_http_responses_total{class=\"5xx\"} 4\n",
        "monsoon_frontend_connections_open 64\n",
        "monsoon_frontend_connections_rejected_total 2\n",
        "monsoon_frontend_broker_reachable 1\n",
        "monsoon_frontend_jobs_pending 9\n",
        "monsoon_frontend_late_results_dropped_total 5\n",
        "monsoon_frontend_jobs_failed_broker_lost_total 3\n",
        "monsoon_frontend_limit_max_pending 100\n",
        "monsoon_frontend_limit_max_body_bytes 1024\n",
        "# TYPE monsoon_frontend_jobs_pending gauge\n",
        "# TYPE monsoon_frontend_jobs_timed_out_total counter\n"}) {
    INFO(line);
    CHECK(text.find(line) != std::string::npos);
  }
  CHECK(text.back() == '\n');
  // No dispatcher in this process: none of its metrics.
  CHECK(text.find("monsoon_frontend_broker_workers") == std::string::npos);

  monsoon::broker::DispatcherStats dispatcher;
  dispatcher.workers = 3;
  dispatcher.queued = 4;
  dispatcher.in_flight = 6;
  dispatcher.workers_lost = 1;
  dispatcher.requeued = 2;
  std::string hosting = metrics_text(server, link, limits, dispatcher);
  for (std::string_view line :
       {"monsoon_frontend_broker_workers 3\n",
        "monsoon_frontend_broker_jobs_queued 4\n",
        "monsoon_frontend_broker_jobs_in_flight 6\n",
        "monsoon_frontend_broker_workers_lost_total 1\n",
        "monsoon_frontend_broker_jobs_requeued_total 2\n",
        "# TYPE monsoon_frontend_broker_workers gauge\n",
        "monsoon_frontend_jobs_pending 9\n"}) {
    INFO(line);
    CHECK(hosting.find(line) != std::string::npos);
  }
}

TEST_CASE("/metrics shows a hosted dispatcher's queues, one series each") {
  const ServerStats server;
  const BrokerLinkStats link;
  const ServerLimits limits;
  CHECK(metrics_text(server, link, limits).find("monsoon_queue_") ==
        std::string::npos);

  monsoon::broker::DispatcherStats dispatcher;
  dispatcher.queues = {{"fast", 3, 4, 2, 16, 12, 100, 90},
                       {"images.slow", 7, 2, 1, 2, 0, 9, 0}};
  const std::string text = metrics_text(server, link, limits, dispatcher);
  for (std::string_view line : {
           "# TYPE monsoon_queue_queued gauge\n",
           "monsoon_queue_queued{queue=\"fast\"} 3\n",
           "monsoon_queue_queued{queue=\"images.slow\"} 7\n",
           "# TYPE monsoon_queue_in_flight gauge\n",
           "monsoon_queue_in_flight{queue=\"fast\"} 4\n",
           "monsoon_queue_workers{queue=\"fast\"} 2\n",
           "monsoon_queue_workers{queue=\"images.slow\"} 1\n",
           "monsoon_queue_slots{queue=\"fast\"} 16\n",
           "monsoon_queue_credit{queue=\"fast\"} 12\n",
           "monsoon_queue_credit{queue=\"images.slow\"} 0\n",
           "# TYPE monsoon_queue_submitted_total counter\n",
           "monsoon_queue_submitted_total{queue=\"fast\"} 100\n",
           "# TYPE monsoon_queue_completed_total counter\n",
           "monsoon_queue_completed_total{queue=\"fast\"} 90\n",
           "monsoon_queue_completed_total{queue=\"images.slow\"} 0\n",
       }) {
    INFO(line);
    CHECK(text.find(line) != std::string::npos);
  }
  // Each metric's HELP and TYPE come once, before its samples.
  const auto type = text.find("# TYPE monsoon_queue_slots gauge\n");
  REQUIRE(type != std::string::npos);
  CHECK(text.find("# TYPE monsoon_queue_slots", type + 1) == std::string::npos);
  CHECK(text.find("# HELP monsoon_queue_slots ") < type);
  CHECK(text.find("monsoon_queue_slots{") > type);
  CHECK(text.back() == '\n');
}
