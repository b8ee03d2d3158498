// Per-hop size limits (docs/protocol.md section 7): a message too large for
// the peer it goes to fails its own job with 413 too_large and touches
// nothing else: no connection dropped, no worker counted dead, no other job
// re-run or failed. Each hop in each direction: args to the broker and to a
// worker, a result to the broker and to the front end.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "each_topology.hpp"
#include "stack.hpp"

using monsoon::test::Counters;
using monsoon::test::eventually;
using monsoon::test::HttpBatch;
using monsoon::test::HttpRequest;
using monsoon::test::HttpResponse;
using monsoon::test::sleep_requests;
using monsoon::test::slept;
using monsoon::test::Stack;
using monsoon::test::StackOptions;
using monsoon::test::Topology;
using Json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

StackOptions blob_stack(Topology topology = Topology::broker) {
  StackOptions options = StackOptions::pool(1, 8, topology);
  options.worker_executable = MONSOON_TEST_WORKER_BIN;
  options.worker_args = {"--tasks", "echo,sleep,test.blob"};
  return options;
}

// Three 1 s sleep jobs, in flight on the same worker while a large message
// fails: each must still get its own result.
std::vector<HttpRequest> bystanders() { return sleep_requests(3, 1000, 30s); }

void require_bystanders_answered(HttpBatch& batch) {
  REQUIRE(batch.receive_all(30s));
  for (std::size_t i = 0; i < 3; ++i) {
    const HttpResponse& response = batch.responses()[i];
    INFO(response.status << " " << response.body);
    CHECK(response.status == 200);
    CHECK(slept(response, 1000 + static_cast<int>(i)));
  }
}

void check_too_large(const HttpResponse& response, const std::string& code,
                     const std::string& limit) {
  INFO(response.status << " " << response.body);
  CHECK(response.status == 413);
  CHECK(response.error_code() == code);
  CHECK_THAT(response.body, Catch::Contains(limit));
}

// Nothing but the large message failed: no reconnection of the front end,
// and the broker lost no worker and re-ran nothing.
void check_nothing_else_touched(Stack& stack, std::uint64_t too_large) {
  CHECK(stack.frontend_metrics()["broker_reconnects_total"] == 0);
  CHECK(stack.post_json("/jobs/echo", "\"after\"").status == 200);
  Counters worker = stack.stop_worker(0);
  Counters broker = stack.stop_broker();
  INFO("worker: " << monsoon::test::to_string(worker));
  INFO("broker: " << monsoon::test::to_string(broker));
  CHECK(worker["reconnects"] == 0);
  CHECK(broker["workers_lost"] == 0);
  CHECK(broker["requeued"] == 0);
  CHECK(broker["rejected_too_large"] == too_large);
}

}  // namespace

TEST_CASE("args over a worker's frame limit fail alone with 413",
          "[integration][limits]") {
  MONSOON_EACH_TOPOLOGY(topology);
  StackOptions options = blob_stack(topology);
  options.worker_args.insert(options.worker_args.end(),
                             {"--max-message-bytes", "65536"});
  Stack stack(options);
  HttpBatch sleeping(stack.http_port(), bystanders());
  REQUIRE(sleeping.send_all(10s));
  REQUIRE(eventually([&] { return stack.pending_jobs() == 3; }, 10s));

  // 100 KB of args for a worker that takes 64 KiB frames.
  const HttpResponse big =
      stack.post_json("/jobs/echo", Json(std::string(100 * 1024, 'x')).dump());
  check_too_large(big, "too_large", "65536");
  require_bystanders_answered(sleeping);
  check_nothing_else_touched(stack, 1);
}

TEST_CASE("a result over the front end's frame limit fails alone with 413",
          "[integration][limits]") {
  MONSOON_EACH_TOPOLOGY(topology);
  StackOptions options = blob_stack(topology);
  options.frontend_args = {"--max-message-bytes", "300000", "--max-body-bytes",
                           "100000"};
  Stack stack(options);
  HttpBatch sleeping(stack.http_port(), bystanders());
  REQUIRE(sleeping.send_all(10s));
  REQUIRE(eventually([&] { return stack.pending_jobs() == 3; }, 10s));

  const HttpResponse big =
      stack.post_json("/jobs/test.blob", Json{{"bytes", 400'000}}.dump());
  check_too_large(big, "too_large", "300000");
  const HttpResponse fits =
      stack.post_json("/jobs/test.blob", Json{{"bytes", 250'000}}.dump());
  CHECK(fits.status == 200);
  CHECK(fits.body.size() == 250'002);  // the string, quoted
  require_bystanders_answered(sleeping);
  // Refused by the worker, which the JOB told the front end's limit.
  check_nothing_else_touched(stack, 0);
}

TEST_CASE("args and results over the broker's frame limit fail alone with 413",
          "[integration][limits]") {
  StackOptions options = blob_stack();
  options.broker_args = {"--max-message-bytes", "300000"};
  Stack stack(options);
  HttpBatch sleeping(stack.http_port(), bystanders());
  REQUIRE(sleeping.send_all(10s));
  REQUIRE(eventually([&] { return stack.pending_jobs() == 3; }, 10s));

  // Args: the front end knows the broker's limit from its WELCOME.
  const HttpResponse big_args =
      stack.post_json("/jobs/echo", Json(std::string(500'000, 'x')).dump());
  check_too_large(big_args, "payload_too_large", "300000");
  // A result: the worker knows it from the JOB.
  const HttpResponse big_result =
      stack.post_json("/jobs/test.blob", Json{{"bytes", 400'000}}.dump());
  check_too_large(big_result, "too_large", "300000");
  require_bystanders_answered(sleeping);
  check_nothing_else_touched(stack, 0);
}

TEST_CASE("a job too large for one worker goes to one that takes it",
          "[integration][limits]") {
  MONSOON_EACH_TOPOLOGY(topology);
  // worker-1: the default 16 MiB frame limit
  Stack stack(blob_stack(topology));
  stack.start_worker({"--max-message-bytes", "65536"});
  REQUIRE(stack.all_workers_serving(20s));

  const std::string big = Json(std::string(100 * 1024, 'x')).dump();
  for (int i = 0; i < 4; ++i) {
    const HttpResponse response = stack.post_json("/jobs/echo", big);
    INFO(response.status << " " << response.body.substr(0, 200));
    CHECK(response.status == 200);
    CHECK(response.body == big);
    CHECK(response.header("x-monsoon-worker") == "worker-1");
  }
  // Small jobs still go to both.
  std::set<std::string> served_by;
  for (int i = 0; i < 20 && served_by.size() < 2; ++i) {
    served_by.insert(
        stack.post_json("/jobs/echo", "\"small\"").header("x-monsoon-worker"));
  }
  CHECK(served_by.size() == 2);
  check_nothing_else_touched(stack, 0);
}
