// Named queues with per-queue concurrency (docs/protocol.md section 4,
// "Named queues and pools"): the dispatcher's routing table puts each task's
// jobs in a queue, and a worker serves queues from pools of their own slots,
// so that slow work cannot take the slots of fast work. Real processes, in
// both topologies.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "counters.hpp"
#include "each_topology.hpp"
#include "stack.hpp"

using monsoon::test::eventually;
using monsoon::test::HttpBatch;
using monsoon::test::HttpRequest;
using monsoon::test::HttpResponse;
using monsoon::test::Stack;
using monsoon::test::StackOptions;
using monsoon::test::Topology;
using Json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

std::vector<HttpRequest> echo_requests(int count) {
  std::vector<HttpRequest> requests;
  for (int i = 0; i < count; ++i) {
    requests.push_back({.method = "POST",
                        .target = "/jobs/echo?timeout_ms=60000",
                        .body = Json{{"request", i}}.dump(),
                        .headers = {{"Content-Type", "application/json"}}});
  }
  return requests;
}

// Every response is the 200 of its own echo request.
void check_echoes(const HttpBatch& batch) {
  for (std::size_t i = 0; i < batch.responses().size(); ++i) {
    const HttpResponse& response = batch.responses()[i];
    INFO("echo " << i << ": " << response.status << " " << response.error << " "
                 << response.body);
    REQUIRE(response.status == 200);
    CHECK(Json::parse(response.body) == Json{{"request", i}});
  }
}

}  // namespace

TEST_CASE("slow jobs queued on a worker do not hold up its fast queue",
          "[integration]") {
  MONSOON_EACH_TOPOLOGY(topology);
  StackOptions options = StackOptions::pool(1, 1, topology);
  // One worker, two pools: 1 slot for the queue "slow", 4 for "fast".
  options.worker_args = {
      "--queue", "slow=1", "--queue", "fast=4", "--drain-timeout-ms", "100"};
  options.broker_args = {"--route", "sleep=slow", "--route", "echo=fast"};
  Stack stack(options);

  // Four sleeps of a minute: one runs, three wait in "slow" for its only
  // slot, and none ends during the test.
  constexpr int kSleeps = 4;
  HttpBatch sleeps(stack.http_port(),
                   monsoon::test::sleep_requests(kSleeps, 60'000, 120s));
  REQUIRE(sleeps.send_all(10s));
  REQUIRE(eventually([&] { return stack.pending_jobs() >= kSleeps; }, 10s));

  // Fast jobs have slots of their own on the same worker: all of them are
  // answered while every sleep is still pending (in one pool of one slot
  // they would wait for all four sleeps to end).
  HttpBatch echoes(stack.http_port(), echo_requests(50));
  REQUIRE(echoes.receive_all(60s));
  check_echoes(echoes);
  CHECK(stack.pending_jobs() == kSleeps);

  if (topology == Topology::brokerless) {
    // The dispatcher in the front end reports each queue, sampled every
    // second.
    monsoon::test::Counters metrics;
    const bool reported = eventually(
        [&] {
          metrics = stack.frontend_metrics();
          return metrics[R"(queue_completed_total{queue="fast"})"] >= 50;
        },
        10s);
    INFO(monsoon::test::to_string(metrics));
    REQUIRE(reported);
    CHECK(metrics[R"(queue_workers{queue="slow"})"] == 1);
    CHECK(metrics[R"(queue_slots{queue="slow"})"] == 1);
    CHECK(metrics[R"(queue_slots{queue="fast"})"] == 4);
    CHECK(metrics[R"(queue_queued{queue="slow"})"] == kSleeps - 1);
    CHECK(metrics[R"(queue_in_flight{queue="slow"})"] == 1);
    CHECK(metrics["broker_queues"] == 2);
  }
}

TEST_CASE("a routed task runs only on the workers that serve its queue",
          "[integration]") {
  MONSOON_EACH_TOPOLOGY(topology);
  // worker-1 has the default pools (each task's own queue); worker-2 serves
  // only the queue "slow", into which a prefix rule routes every sleep.
  StackOptions options = StackOptions::pool(1, 2, topology);
  options.broker_args = {"--route", "sle*=slow"};
  Stack stack(options);
  stack.start_worker({"--queue", "slow=8"});

  HttpBatch sleeps(stack.http_port(),
                   monsoon::test::sleep_requests(20, 100, 60s));
  HttpBatch echoes(stack.http_port(), echo_requests(20));
  REQUIRE(sleeps.receive_all(60s));
  REQUIRE(echoes.receive_all(60s));
  check_echoes(echoes);
  std::set<std::string> echo_workers;
  for (const auto& response : echoes.responses()) {
    echo_workers.insert(response.header("x-monsoon-worker"));
  }
  CHECK(echo_workers == std::set<std::string>{"worker-1"});
  std::set<std::string> sleep_workers;
  for (int i = 0; i < 20; ++i) {
    const HttpResponse& response = sleeps.responses()[i];
    INFO("sleep " << i << ": " << response.status << " " << response.body);
    CHECK(monsoon::test::slept(response, 100 + i));
    sleep_workers.insert(response.header("x-monsoon-worker"));
  }
  CHECK(sleep_workers == std::set<std::string>{"worker-2"});
}
