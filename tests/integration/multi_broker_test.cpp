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
#include "temp_dir.hpp"

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
// Enough async slots for every job to be running at once (the broker is
// killed while all 1,000 are in flight), twice: the jobs of the dead broker
// keep running on the workers while the front end sends them again
// (at-least-once), and the echo probes must not wait behind them for a
// slot; plus some to spare.
constexpr int kSlots = 2 * kJobs / kWorkers + 16;
// Request i sleeps kFirstMs + i ms: its result tells it from the others.
// Long enough that none completes before all 1,000 are sent, also under
// ASan (Debug), where sending them took over a second.
constexpr int kFirstMs = 4000;
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
  // The front end spreads jobs over the brokers it hears: both, so that
  // broker 0 holds some when it dies.
  REQUIRE(eventually(
      [&] { return stack.frontend_metrics()["brokers_up"] == 2; }, 20s));

  Prober prober(stack.http_port());
  HttpBatch batch(stack.http_port(), sleep_requests(kJobs, kFirstMs, 30s));
  REQUIRE(batch.send_all(20s));
  // Every job reached a broker, and through both of them.
  REQUIRE(eventually([&] { return stack.pending_jobs() >= kJobs; }, 30s));

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
  // From the kill on: the gap from the kill (or the answer before it) to
  // each next answer. Before the kill the front end is busy taking the
  // 1,000 jobs, which is not what this measures.
  REQUIRE(probes.size() >= 2);
  Clock::duration longest_gap{0};
  Clock::time_point previous = killed_at;
  std::string timeline;
  for (const Prober::Probe& probe : probes) {
    CHECK(probe.status == 200);
    CHECK(probe.body == probe.sent);
    const auto since_kill =
        std::chrono::duration_cast<std::chrono::milliseconds>(probe.answered -
                                                              killed_at);
    timeline += std::to_string(since_kill.count()) + " ";
    if (probe.answered <= killed_at) continue;
    longest_gap = std::max(longest_gap, probe.answered - previous);
    previous = probe.answered;
  }
  CHECK(probes.back().answered > killed_at);
  INFO("probe answers, ms from the kill: " << timeline);
  INFO("longest gap after the kill: "
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

// The brokerless topology scaled out: two front ends, each hosting its own
// dispatcher, and workers registered with both. Killing one front end -9
// costs only the requests it held: the other's jobs all complete and new
// ones keep flowing.
TEST_CASE("brokerless: two front ends share the workers; one killed -9") {
  monsoon::test::TempDir directory;
  const std::uint16_t http[2] = {monsoon::test::free_port(),
                                 monsoon::test::free_port()};
  const std::string endpoint[2] = {
      "tcp://127.0.0.1:" + std::to_string(monsoon::test::free_port()),
      "tcp://127.0.0.1:" + std::to_string(monsoon::test::free_port())};
  std::vector<ChildProcess> frontends;
  for (int i = 0; i < 2; ++i) {
    frontends.emplace_back(
        MONSOON_FRONTEND_BIN,
        std::vector<std::string>{"--host", "127.0.0.1", "--port",
                                 std::to_string(http[i]), "--worker-endpoint",
                                 endpoint[i], "--heartbeat-ms", "200"},
        directory.file("frontend-" + std::to_string(i) + ".log"));
  }
  std::vector<ChildProcess> workers;
  for (int i = 0; i < 2; ++i) {
    const std::string name = "worker-" + std::to_string(i);
    workers.emplace_back(
        MONSOON_WORKER_BIN,
        std::vector<std::string>{
            "--broker", endpoint[0] + "," + endpoint[1], "--concurrency", "1",
            "--async-concurrency", "100", "--name", name, "--db-path",
            directory.file("demo.sqlite3"), "--heartbeat-ms", "200"},
        directory.file(name + ".log"));
  }
  auto logs = [&] {
    std::string out;
    for (auto* group : {&frontends, &workers}) {
      for (const auto& process : *group) {
        out += "---- " + process.log_path() + "\n" + process.log();
      }
    }
    return out;
  };
  // Both workers serve both front ends.
  for (const std::uint16_t port : http) {
    REQUIRE(eventually(
        [&] {
          std::set<std::string> names;
          HttpBatch probe(port, sleep_requests(8, 100, 5s));
          probe.receive_all(10s);
          for (const auto& response : probe.responses()) {
            if (response.status == 200) {
              names.insert(response.header("x-monsoon-worker"));
            }
          }
          return names.size() == 2;
        },
        20s));
  }

  HttpBatch doomed(http[0], sleep_requests(100, 1000, 20s));
  HttpBatch kept(http[1], sleep_requests(100, 1000, 20s));
  REQUIRE(doomed.send_all(10s));
  REQUIRE(kept.send_all(10s));
  frontends[0].signal(SIGKILL);
  REQUIRE(frontends[0].wait_exit(5s));

  REQUIRE(kept.receive_all(30s));
  INFO(logs());
  int own = 0;
  for (int i = 0; i < 100; ++i) own += slept(kept.responses()[i], 1000 + i);
  CHECK(own == 100);
  const HttpResponse echo =
      http_request(http[1],
                   {.method = "POST",
                    .target = "/jobs/echo",
                    .body = "\"after\"",
                    .headers = {{"Content-Type", "application/json"}}},
                   10s);
  CHECK(echo.status == 200);
  CHECK(echo.body == "\"after\"");
  for (auto& worker : workers) CHECK(worker.running());
}
