// Scaling out (issue 9). Several brokers, all active: the front end spreads
// jobs over the live ones and, when one dies, sends the jobs pending through
// it again through another; every worker serves both, its slots shared by
// them (docs/protocol.md section 4, "Several brokers: shared slots"). And
// several front ends on one port.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "stack.hpp"

using Clock = std::chrono::steady_clock;
using monsoon::test::ChildProcess;
using monsoon::test::eventually;
using monsoon::test::http_request;
using monsoon::test::HttpBatch;
using monsoon::test::HttpRequest;
using monsoon::test::HttpResponse;
using monsoon::test::sleep_requests;
using monsoon::test::slept;
using monsoon::test::Stack;
using monsoon::test::StackOptions;
using namespace std::chrono_literals;

namespace {

constexpr int kJobs = 1000;
constexpr int kWorkers = 4;
// Enough async slots for every job to be running at once: the broker is
// killed while all 1,000 are in flight.
constexpr int kSlots = kJobs / kWorkers;
// Request i sleeps kFirstMs + i ms: its result tells it from the others.
constexpr int kFirstMs = 1000;
// The front end's heartbeat is 200 ms (the Stack's); with this liveness a
// broker is declared lost after 2 s of silence at the latest. Jobs must keep
// flowing with no gap longer than that window.
constexpr int kFrontendLiveness = 10;
constexpr auto kLivenessWindow = 200ms * kFrontendLiveness;

// Echo jobs one after another, from a thread, until stopped: when each was
// answered, and how.
class Prober {
 public:
  explicit Prober(std::uint16_t port)
      : thread_([this, port](std::stop_token stop) { run(port, stop); }) {}

  struct Probe {
    Clock::time_point answered;
    int status;
    std::string body;
    std::string sent;
  };

  std::vector<Probe> stop() {
    thread_.request_stop();
    thread_.join();
    std::lock_guard lock(mutex_);
    return probes_;
  }

 private:
  void run(std::uint16_t port, std::stop_token stop) {
    for (int i = 0; !stop.stop_requested(); ++i) {
      const std::string sent = "\"probe-" + std::to_string(i) + "\"";
      HttpResponse response =
          http_request(port,
                       {.method = "POST",
                        .target = "/jobs/echo?timeout_ms=10000",
                        .body = sent,
                        .headers = {{"Content-Type", "application/json"}}},
                       15s);
      std::lock_guard lock(mutex_);
      probes_.push_back({Clock::now(), response.status, response.body, sent});
    }
  }

  std::mutex mutex_;
  std::vector<Probe> probes_;
  std::jthread thread_;
};

}  // namespace

TEST_CASE("two brokers: one killed -9 with 1,000 jobs in flight loses none") {
  monsoon::test::raise_open_files_limit();
  StackOptions options = StackOptions::pool(kWorkers, 2);
  options.brokers = 2;
  options.worker_async_concurrency = kSlots;
  options.frontend_args = {"--liveness", std::to_string(kFrontendLiveness)};
  Stack stack(options);
  REQUIRE(stack.all_workers_serving(20s));

  Prober prober(stack.http_port());
  HttpBatch batch(stack.http_port(), sleep_requests(kJobs, kFirstMs, 30s));
  REQUIRE(batch.send_all(20s));
  // Every job reached a broker, and through both of them.
  REQUIRE(eventually([&] { return stack.pending_jobs() >= kJobs; }, 20s));

  const Clock::time_point killed_at = Clock::now();
  stack.broker(0).signal(SIGKILL);
  REQUIRE(stack.broker(0).wait_exit(5s));

  REQUIRE(batch.receive_all(60s));
  // Probes after the last job: new jobs flow through the survivor.
  const auto probes_until = Clock::now() + 1s;
  while (Clock::now() < probes_until) std::this_thread::yield();
  const std::vector<Prober::Probe> probes = prober.stop();
  INFO(stack.logs().substr(0, 20000));

  // Every job answered 200 with its own result. HTTP gives each request one
  // response; a second answer on a connection would be extra data.
  int own = 0;
  for (int i = 0; i < kJobs; ++i) {
    const HttpResponse& response = batch.responses()[i];
    if (slept(response, kFirstMs + i)) {
      ++own;
    } else {
      UNSCOPED_INFO("job " << i << ": " << response.status << " "
                           << response.body << response.error);
    }
  }
  CHECK(own == kJobs);
  CHECK(batch.connections_with_extra_data(200ms) == 0);

  // Jobs pending through the dead broker went again through the survivor.
  CHECK(stack.frontend_metrics()["jobs_resent_total"] > 0);

  // The probes: each answered with its own value, and no gap between two
  // answers longer than the liveness window, across the kill.
  REQUIRE(probes.size() >= 2);
  Clock::duration longest_gap{0};
  for (std::size_t i = 0; i < probes.size(); ++i) {
    CHECK(probes[i].status == 200);
    CHECK(probes[i].body == probes[i].sent);
    if (i > 0) {
      longest_gap =
          std::max(longest_gap, probes[i].answered - probes[i - 1].answered);
    }
  }
  CHECK(probes.back().answered > killed_at);
  INFO("longest gap between probe answers: "
       << std::chrono::duration_cast<std::chrono::milliseconds>(longest_gap)
              .count()
       << " ms");
  CHECK(longest_gap < kLivenessWindow);
}

TEST_CASE("two front ends share one port (SO_REUSEPORT) through one broker") {
  StackOptions options = StackOptions::pool(1, 2);
  options.frontend_args = {"--reuse-port"};
  Stack stack(options);
  ChildProcess second(
      MONSOON_FRONTEND_BIN,
      {"--host", "127.0.0.1", "--port", std::to_string(stack.http_port()),
       "--broker", stack.client_endpoint(), "--reuse-port", "--heartbeat-ms",
       "200"},
      stack.directory() + "/frontend-2.log");
  // It listens on the same port rather than failing with "Address in use".
  REQUIRE(eventually(
      [&] { return second.log().find("listening on") != std::string::npos; },
      10s));
  REQUIRE(eventually(
      [&] { return second.log().find("is reachable") != std::string::npos; },
      10s));
  CHECK(second.running());

  auto echo_batch = [&](int count) {
    std::vector<HttpRequest> requests;
    for (int i = 0; i < count; ++i) {
      requests.push_back({.method = "POST",
                          .target = "/jobs/echo",
                          .body = std::to_string(i),
                          .headers = {{"Content-Type", "application/json"}}});
    }
    HttpBatch batch(stack.http_port(), requests);
    REQUIRE(batch.receive_all(20s));
    int own = 0;
    for (int i = 0; i < count; ++i) {
      own += batch.responses()[i].status == 200 &&
             batch.responses()[i].body == std::to_string(i);
    }
    return own;
  };
  CHECK(echo_batch(200) == 200);

  // With the first one stopped, the second serves every new connection.
  stack.frontend().signal(SIGTERM);
  REQUIRE(stack.frontend().wait_exit(15s));
  CHECK(echo_batch(100) == 100);
}
