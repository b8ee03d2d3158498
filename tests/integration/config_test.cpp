// Configuration files and MONSOON_* variables, with the real binaries: a file
// alone configures a working stack, the environment overrides the file and
// the command line the environment, a bad file stops a process at start,
// and the example files of config/ parse.
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "child_process.hpp"
#include "eventually.hpp"
#include "http_batch.hpp"
#include "stack.hpp"
#include "temp_dir.hpp"

using monsoon::test::ChildProcess;
using monsoon::test::eventually;
using monsoon::test::free_port;
using monsoon::test::http_request;
using monsoon::test::HttpRequest;
using monsoon::test::HttpResponse;
using monsoon::test::TempDir;
using namespace std::chrono_literals;

namespace {

// `executable` with `args`, started through env(1) with `variables`
// (NAME=value) added to the inherited environment.
ChildProcess start_with_environment(const std::vector<std::string>& variables,
                                    const std::string& executable,
                                    const std::vector<std::string>& args,
                                    const std::string& log) {
  std::vector<std::string> env_args = variables;
  env_args.push_back(executable);
  env_args.insert(env_args.end(), args.begin(), args.end());
  return ChildProcess("/usr/bin/env", env_args, log);
}

struct Exit {
  int code = -1;  // the exit code; -1 when it did not exit on its own
  std::string output;
};

// Runs a process that is expected to exit by itself, and what it printed.
Exit run_to_exit(ChildProcess process) {
  const auto status = process.wait_exit(10s);
  Exit exit;
  exit.output = process.log();
  if (status && WIFEXITED(*status)) exit.code = WEXITSTATUS(*status);
  return exit;
}

HttpResponse get(std::uint16_t port, const std::string& target) {
  return http_request(
      port,
      HttpRequest{.method = "GET", .target = target, .body = {}, .headers = {}},
      2s);
}

bool serves(std::uint16_t port) {
  return eventually([&] { return get(port, "/now").status == 200; }, 10s);
}

const std::vector<std::string> kEveryProgram = {
    MONSOON_BROKER_BIN, MONSOON_FRONTEND_BIN, MONSOON_WORKER_BIN,
    MONSOON_TEST_WORKER_BIN};

}  // namespace

TEST_CASE("a stack configured by config files alone serves where they say",
          "[integration][config]") {
  const TempDir dir;
  const std::uint16_t http_port = free_port();
  const std::string client_endpoint =
      "tcp://127.0.0.1:" + std::to_string(free_port());
  const std::string worker_endpoint =
      "tcp://127.0.0.1:" + std::to_string(free_port());
  const std::string broker_file = dir.write(
      "broker.toml", "client-endpoint = \"" + client_endpoint +
                         "\"\nworker-endpoint = \"" + worker_endpoint +
                         "\"\nheartbeat-ms = 200\n");
  const std::string worker_file = dir.write(
      "worker.toml", "# a comment\nbroker = \"" + worker_endpoint +
                         "\"\ntasks = [\"echo\", \"sleep\"]\n"
                         "name = \"configured\"\nconcurrency = 2\n"
                         "db-path = \"" +
                         dir.file("demo.sqlite3") + "\"\nheartbeat-ms = 200\n");
  const std::string frontend_file = dir.write(
      "frontend.toml",
      "host = \"127.0.0.1\"\nport = " + std::to_string(http_port) +
          "\nbroker = \"" + client_endpoint + "\"\nheartbeat-ms = 200\n");

  ChildProcess broker(MONSOON_BROKER_BIN, {"--config", broker_file},
                      dir.file("broker.log"));
  ChildProcess worker(MONSOON_WORKER_BIN, {"--config", worker_file},
                      dir.file("worker.log"));
  ChildProcess frontend(MONSOON_FRONTEND_BIN, {"--config", frontend_file},
                        dir.file("frontend.log"));

  HttpResponse echo;
  const bool answered = eventually(
      [&] {
        echo = http_request(http_port,
                            HttpRequest{.method = "POST",
                                        .target = "/jobs/echo?timeout_ms=1000",
                                        .body = "\"configured\"",
                                        .headers = {}},
                            2s);
        return echo.status == 200;
      },
      20s);
  INFO(broker.log() + worker.log() + frontend.log());
  REQUIRE(answered);
  CHECK(echo.body == "\"configured\"");
  // The worker's name and its task list (an array) came from its file.
  CHECK(echo.header("x-monsoon-worker") == "configured/async");
  CHECK(worker.log().find("serving [echo, sleep]") != std::string::npos);
}

TEST_CASE("the environment overrides the config file, a flag both",
          "[integration][config]") {
  const TempDir dir;
  const std::uint16_t file_port = free_port();
  const std::uint16_t env_port = free_port();
  const std::string file = dir.write(
      "frontend.toml",
      "host = \"127.0.0.1\"\nport = " + std::to_string(file_port) + "\n");

  SECTION("the environment over the file") {
    ChildProcess frontend = start_with_environment(
        {"MONSOON_PORT=" + std::to_string(env_port)}, MONSOON_FRONTEND_BIN,
        {"--config", file}, dir.file("frontend.log"));
    INFO(frontend.log());
    REQUIRE(serves(env_port));
    CHECK(frontend.log().find("listening on http://127.0.0.1:" +
                              std::to_string(env_port)) != std::string::npos);
  }
  SECTION("a flag over the environment, with the file from MONSOON_CONFIG") {
    const std::uint16_t flag_port = free_port();
    ChildProcess frontend = start_with_environment(
        {"MONSOON_CONFIG=" + file, "MONSOON_PORT=" + std::to_string(env_port)},
        MONSOON_FRONTEND_BIN, {"--port", std::to_string(flag_port)},
        dir.file("frontend.log"));
    INFO(frontend.log());
    REQUIRE(serves(flag_port));
    CHECK(frontend.log().find("listening on http://127.0.0.1:" +
                              std::to_string(flag_port)) != std::string::npos);
  }
}

TEST_CASE("a config file with an unknown key stops every process with exit 2",
          "[integration][config]") {
  const TempDir dir;
  const std::string file =
      dir.write("typo.toml", "heartbeat-ms = 500\nheartbeat-msec = 500\n");
  for (const std::string& program : kEveryProgram) {
    const Exit exit = run_to_exit(
        ChildProcess(program, {"--config", file}, dir.file("out.log")));
    INFO(program << ":\n" << exit.output);
    CHECK(exit.code == 2);
    CHECK(exit.output.find("config file '" + file +
                           "': unknown key 'heartbeat-msec'") !=
          std::string::npos);
  }
}

TEST_CASE("a missing config file stops every process with exit 2",
          "[integration][config]") {
  const TempDir dir;
  const std::string missing = dir.file("missing.toml");
  for (const std::string& program : kEveryProgram) {
    const Exit exit = run_to_exit(
        ChildProcess(program, {"--config", missing}, dir.file("out.log")));
    INFO(program << ":\n" << exit.output);
    CHECK(exit.code == 2);
    CHECK(exit.output.find("cannot read config file '" + missing + "'") !=
          std::string::npos);
  }
  // The same for a file named by MONSOON_CONFIG.
  const Exit exit = run_to_exit(
      start_with_environment({"MONSOON_CONFIG=" + missing}, MONSOON_BROKER_BIN,
                             {}, dir.file("out.log")));
  INFO(exit.output);
  CHECK(exit.code == 2);
  CHECK(exit.output.find(missing) != std::string::npos);
}

TEST_CASE("the example config files of config/ parse, every key taking effect",
          "[integration][config]") {
  const TempDir dir;
  const std::vector<std::pair<std::string, std::string>> examples = {
      {"broker.toml", MONSOON_BROKER_BIN},
      {"frontend.toml", MONSOON_FRONTEND_BIN},
      {"worker.toml", MONSOON_WORKER_BIN}};
  for (const auto& [name, program] : examples) {
    const std::string example =
        (std::filesystem::path(MONSOON_SOURCE_DIR) / "config" / name).string();
    const Exit exit = run_to_exit(ChildProcess(
        program, {"--config", example, "--print-config"}, dir.file("out.log")));
    INFO(name << ":\n" << exit.output);
    REQUIRE(exit.code == 0);
    // --print-config writes `key = value` as the examples do: each of their
    // settings must come back unchanged.
    std::ifstream input(example);
    int settings = 0;
    for (std::string line; std::getline(input, line);) {
      if (line.empty() || line.front() == '#') continue;
      ++settings;
      INFO(line);
      CHECK(exit.output.find('\n' + line + '\n') != std::string::npos);
    }
    CHECK(settings >= 10);
  }
}

TEST_CASE("print-config checks the options as a start would",
          "[integration][config]") {
  const TempDir dir;
  // A body limit the front end's own frame limit could not carry.
  const Exit exit = run_to_exit(ChildProcess(
      MONSOON_FRONTEND_BIN,
      {"--max-body-bytes", std::to_string(16u << 20), "--print-config"},
      dir.file("out.log")));
  INFO(exit.output);
  CHECK(exit.code == 2);
  CHECK(exit.output.find("--max-body-bytes: must not exceed") !=
        std::string::npos);
  CHECK(exit.output.find("max-body-bytes =") == std::string::npos);
}
