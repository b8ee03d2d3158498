// What clients see when parts of the stack are missing.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "each_topology.hpp"
#include "stack.hpp"

using monsoon::test::eventually;
using monsoon::test::HttpResponse;
using monsoon::test::Stack;
using Json = nlohmann::json;
using namespace std::chrono_literals;

TEST_CASE("an unreachable broker means 503 with Retry-After, then recovery",
          "[integration]") {
  Stack stack;
  stack.broker().signal(SIGKILL);
  REQUIRE(stack.broker().wait_exit(5s));

  REQUIRE(eventually([&] { return stack.get("/healthz").status == 503; }, 10s));
  HttpResponse job = stack.post_json("/jobs/echo", "1");
  CHECK(job.status == 503);
  CHECK_FALSE(job.header("retry-after").empty());
  CHECK(Json::parse(job.body)["error"]["code"].is_string());
  // The front end itself still answers.
  CHECK(stack.get("/now").status == 200);

  stack.start_broker();
  CHECK(eventually(
      [&] { return stack.post_json("/jobs/echo", "2").status == 200; }, 20s));
}

TEST_CASE("every process stops cleanly on SIGTERM", "[integration]") {
  MONSOON_EACH_TOPOLOGY(topology);
  Stack stack(monsoon::test::StackOptions::pool(1, 2, topology));
  std::vector<monsoon::test::ChildProcess*> processes = {
      &stack.frontend(), &stack.workers().at(0)};
  if (topology == monsoon::test::Topology::broker) {
    processes.push_back(&stack.broker());
  }
  for (auto* process : processes) process->signal(SIGTERM);
  for (auto* process : processes) {
    auto status = process->wait_exit(15s);
    INFO(stack.logs());
    REQUIRE(status);
    CHECK(WIFEXITED(*status));
    CHECK(WEXITSTATUS(*status) == 0);
  }
}

TEST_CASE("jobs outlasting the front end's drain get 503 shutting_down",
          "[integration]") {
  constexpr int kJobs = 20;
  MONSOON_EACH_TOPOLOGY(topology);
  monsoon::test::StackOptions options;
  options.topology = topology;
  options.frontend_args = {"--drain-timeout-ms", "300"};
  // The worker gives up on the sleeps at once when the test ends.
  options.worker_args = {"--drain-timeout-ms", "0"};
  Stack stack(options);
  std::vector<monsoon::test::HttpRequest> requests;
  for (int i = 0; i < kJobs; ++i) {
    requests.push_back({.method = "POST",
                        .target = "/jobs/sleep?timeout_ms=30000",
                        .body = R"({"ms": 10000})",
                        .headers = {}});
  }
  monsoon::test::HttpBatch batch(stack.http_port(), requests);
  REQUIRE(batch.send_all(5s));
  REQUIRE(eventually([&] { return stack.pending_jobs() == kJobs; }, 10s));

  const auto stopped = std::chrono::steady_clock::now();
  stack.frontend().signal(SIGTERM);
  REQUIRE(batch.receive_all(10s));
  const auto answered = std::chrono::steady_clock::now() - stopped;
  for (int i = 0; i < kJobs; ++i) {
    const HttpResponse& response = batch.responses()[i];
    INFO("request " << i << ": " << response.status << " " << response.error
                    << " " << response.body);
    CHECK(response.status == 503);
    CHECK(response.error_code() == "shutting_down");
    CHECK(response.header("retry-after") == "1");
    CHECK(response.header("connection") == "close");
  }
  CHECK(answered >= 300ms);  // not before the drain timeout
  auto status = stack.frontend().wait_exit(10s);
  INFO(stack.logs());
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
  // Exactly one response each, then the connection closed.
  CHECK(batch.connections_with_extra_data(200ms) == 0);
}

TEST_CASE("the front end refuses a body limit the broker could not carry",
          "[integration]") {
  auto log =
      std::filesystem::temp_directory_path() /
      ("monsoon-frontend-body-limit-" + std::to_string(::getpid()) + ".log");
  std::filesystem::remove(log);
  // 16 MiB of args would not fit a 16 MiB message with its envelope.
  monsoon::test::ChildProcess frontend(
      MONSOON_FRONTEND_BIN,
      {"--port", "0", "--max-body-bytes", std::to_string(16u << 20)},
      log.string());
  auto status = frontend.wait_exit(10s);
  std::string output = frontend.log();
  std::filesystem::remove(log);
  INFO(output);
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) != 0);
  CHECK(output.find("--max-body-bytes") != std::string::npos);
}

namespace {

struct Exit {
  int code = -1;  // -1: killed, or still running after 10 s
  std::string output;
};

// Runs the front end with `args` until it exits (it must not start).
Exit frontend_exit(const std::vector<std::string>& args) {
  auto log =
      std::filesystem::temp_directory_path() /
      ("monsoon-frontend-options-" + std::to_string(::getpid()) + ".log");
  std::filesystem::remove(log);
  monsoon::test::ChildProcess frontend(MONSOON_FRONTEND_BIN, args,
                                       log.string());
  auto status = frontend.wait_exit(10s);
  Exit exit{.code = status && WIFEXITED(*status) ? WEXITSTATUS(*status) : -1,
            .output = frontend.log()};
  std::filesystem::remove(log);
  return exit;
}

}  // namespace

TEST_CASE("the front end takes --broker or --worker-endpoint, not both",
          "[integration]") {
  const Exit both = frontend_exit(
      {"--port", "0", "--broker", "tcp://127.0.0.1:5555", "--worker-endpoint",
       "tcp://127.0.0.1:*", "--broker", "tcp://127.0.0.1:6555"});
  INFO(both.output);
  CHECK(both.code == 2);
  CHECK(both.output.find("--broker: not with --worker-endpoint") !=
        std::string::npos);

  // The dispatcher's options mean nothing without it.
  const Exit alone = frontend_exit({"--port", "0", "--max-queue", "5"});
  INFO(alone.output);
  CHECK(alone.code == 2);
  CHECK(alone.output.find("only with --worker-endpoint") != std::string::npos);

  // What --print-config writes for a brokerless front end (every default,
  // --broker's included) starts that same front end.
  const Exit printed = frontend_exit({"--worker-endpoint", "tcp://127.0.0.1:*",
                                      "--max-queue", "5", "--print-config"});
  REQUIRE(printed.code == 0);
  const auto config =
      std::filesystem::temp_directory_path() /
      ("monsoon-frontend-brokerless-" + std::to_string(::getpid()) + ".toml");
  std::ofstream(config) << printed.output;
  const Exit reread =
      frontend_exit({"--config", config.string(), "--print-config"});
  std::filesystem::remove(config);
  INFO(reread.output);
  CHECK(reread.code == 0);
  CHECK(reread.output.find("\nmax-queue = 5\n") != std::string::npos);
  CHECK(reread.output.find("\nworker-endpoint = \"tcp://127.0.0.1:*\"\n") !=
        std::string::npos);
}

TEST_CASE("jobs pending across a broker restart are sent again and answered",
          "[integration]") {
  constexpr int kJobs = 200;
  Stack stack(monsoon::test::StackOptions::pool(2, kJobs));
  std::vector<monsoon::test::HttpRequest> requests;
  for (int i = 0; i < kJobs; ++i) {
    // A distinct duration per job makes every result tell its request.
    requests.push_back(
        {"POST",
         "/jobs/sleep",
         Json{{"ms", 1000 + i}}.dump(),
         {{"Content-Type", "application/json"}, {"X-Timeout-Ms", "30000"}}});
  }
  monsoon::test::HttpBatch batch(stack.http_port(), requests);
  REQUIRE(batch.send_all(10s));
  REQUIRE(eventually(
      [&] {
        auto health = stack.get("/healthz");
        return health.status == 200 &&
               Json::parse(health.body).value("pending", 0) == kJobs;
      },
      10s));

  stack.broker().signal(SIGKILL);
  REQUIRE(stack.broker().wait_exit(5s));
  stack.start_broker();

  REQUIRE(batch.receive_all(30s));
  INFO(stack.logs());
  for (int i = 0; i < kJobs; ++i) {
    const auto& response = batch.responses()[i];
    INFO(i << ": " << response.status << " " << response.body
           << response.error);
    REQUIRE(response.status == 200);
    CHECK(Json::parse(response.body) == Json{{"slept_ms", 1000 + i}});
  }
  const std::string metrics = stack.get("/metrics").body;
  const std::string counter = "\nmonsoon_frontend_jobs_resent_total ";
  const auto at = metrics.find(counter);
  REQUIRE(at != std::string::npos);
  CHECK(std::stoi(metrics.substr(at + counter.size())) >= kJobs);
}
