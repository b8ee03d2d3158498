// The seed's whole point: slow work never blocks fast routes, many jobs are
// in flight at once without mixing up their answers, and workers share load;
// with a broker process and without one.
#include <catch2/catch.hpp>
#include <map>
#include <nlohmann/json.hpp>

#include "each_topology.hpp"
#include "stack.hpp"

using monsoon::test::eventually;
using monsoon::test::HttpBatch;
using monsoon::test::HttpRequest;
using monsoon::test::HttpResponse;
using monsoon::test::Stack;
using monsoon::test::StackOptions;
using Json = nlohmann::json;
using namespace std::chrono_literals;

TEST_CASE("/now answers at once while 500 slow jobs are pending",
          "[integration]") {
  MONSOON_EACH_TOPOLOGY(topology);
  monsoon::test::raise_open_files_limit();
  Stack stack(StackOptions::pool(1, 2, topology));

  std::vector<HttpRequest> slow(
      500, HttpRequest{.method = "POST",
                       .target = "/jobs/sleep?timeout_ms=60000",
                       .body = R"({"ms": 2000})",
                       .headers = {}});
  HttpBatch batch(stack.http_port(), slow);
  REQUIRE(batch.send_all(10s));
  REQUIRE(eventually([&] { return stack.pending_jobs() >= 500; }, 10s));

  for (int i = 0; i < 20; ++i) {
    auto started = std::chrono::steady_clock::now();
    HttpResponse now = stack.request(
        {.method = "GET", .target = "/now", .body = {}, .headers = {}}, 1s);
    INFO("request " << i << ": " << now.error);
    REQUIRE(now.status == 200);
    CHECK(std::chrono::steady_clock::now() - started < 1s);
  }
  // The slow jobs are still pending: /now did not wait for them.
  CHECK(stack.pending_jobs() >= 490);
}

TEST_CASE("1000 concurrent jobs each get their own result", "[integration]") {
  MONSOON_EACH_TOPOLOGY(topology);
  monsoon::test::raise_open_files_limit();
  Stack stack(StackOptions::pool(2, 2, topology));

  std::vector<HttpRequest> requests;
  for (int i = 0; i < 1000; ++i) {
    requests.push_back(
        {.method = "POST",
         .target = "/jobs/echo?timeout_ms=60000",
         .body = Json{{"request", i}, {"tag", "r" + std::to_string(i)}}.dump(),
         .headers = {{"Content-Type", "application/json"}}});
  }
  HttpBatch batch(stack.http_port(), requests);
  REQUIRE(batch.receive_all(60s));
  int mismatched = 0;
  for (int i = 0; i < 1000; ++i) {
    const HttpResponse& response = batch.responses()[i];
    INFO("request " << i << ": " << response.status << " " << response.error
                    << " " << response.body);
    REQUIRE(response.status == 200);
    Json body = Json::parse(response.body);
    if (body != Json{{"request", i}, {"tag", "r" + std::to_string(i)}})
      ++mismatched;
  }
  CHECK(mismatched == 0);
}

TEST_CASE("workers share the load", "[integration]") {
  MONSOON_EACH_TOPOLOGY(topology);
  Stack stack(StackOptions::pool(3, 1, topology));
  // Every worker must have registered before we count.
  REQUIRE(stack.all_workers_serving(20s));
  std::map<std::string, int> jobs_per_worker;
  std::vector<HttpRequest> requests(
      200, HttpRequest{.method = "POST",
                       .target = "/jobs/sleep?timeout_ms=60000",
                       .body = R"({"ms": 5})",
                       .headers = {}});
  HttpBatch batch(stack.http_port(), requests);
  REQUIRE(batch.receive_all(60s));
  for (const auto& response : batch.responses()) {
    REQUIRE(response.status == 200);
    ++jobs_per_worker[response.header("x-monsoon-worker")];
  }
  INFO(Json(jobs_per_worker).dump());
  REQUIRE(jobs_per_worker.size() == 3);
  for (const auto& [worker, count] : jobs_per_worker) {
    CHECK_FALSE(worker.empty());
    CHECK(count > 0);
  }
}
