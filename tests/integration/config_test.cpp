// Configuration files and MONSOON_* variables, with the real binaries: a file
// alone configures a working stack, the environment overrides the file and
// the command line the environment, a bad file stops a process at start,
// --print-config's output reads back, and the example files of config/ and
// the config files and systemd units the docs show (README.md,
// docs/deployment.md) are what the binaries and systemd accept.
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
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

std::string source_file(const std::string& relative) {
  return (std::filesystem::path(MONSOON_SOURCE_DIR) / relative).string();
}

// A TOML line as a setting: without its comment (from a '#' outside a
// string) and trailing blanks; empty for a comment or blank line.
std::string setting_of(const std::string& line) {
  bool in_string = false;
  std::size_t end = line.size();
  for (std::size_t i = 0; i < line.size(); ++i) {
    if (line[i] == '"') in_string = !in_string;
    if (line[i] == '#' && !in_string) {
      end = i;
      break;
    }
  }
  while (end > 0 && (line[end - 1] == ' ' || line[end - 1] == '\t')) --end;
  return line.substr(0, end);
}

// Runs `program --config file --print-config`, its output to the new file
// `log`: it must exit 0, and each setting of the file come back unchanged
// (--print-config writes `key = value` as the files do). Returns how many
// settings the file has.
int check_settings_take_effect(const std::string& program,
                               const std::string& file,
                               const std::string& log) {
  const Exit exit = run_to_exit(
      ChildProcess(program, {"--config", file, "--print-config"}, log));
  INFO(program << " --config " << file << ":\n" << exit.output);
  REQUIRE(exit.code == 0);
  std::ifstream input(file);
  int settings = 0;
  for (std::string line; std::getline(input, line);) {
    const std::string setting = setting_of(line);
    if (setting.empty()) continue;
    ++settings;
    INFO(line);
    CHECK(exit.output.find('\n' + setting + '\n') != std::string::npos);
  }
  return settings;
}

// A fenced code block of a Markdown file: its tag (what follows the
// language in the opening fence: "```toml monsoon-worker" has the tag
// "monsoon-worker"), its text, and the line of its opening fence.
struct FencedBlock {
  std::string tag;
  std::string text;
  int line = 0;
};

// The fenced blocks of the Markdown file `path` written in `language`, in
// order; a fence may be indented (in a list item), and so is its text.
std::vector<FencedBlock> fenced_blocks(const std::string& path,
                                       const std::string& language) {
  std::ifstream input(path);
  std::vector<FencedBlock> blocks;
  std::optional<FencedBlock> open;
  std::size_t indent = 0;
  int number = 0;
  for (std::string line; std::getline(input, line);) {
    ++number;
    const std::size_t start = line.find_first_not_of(' ');
    const std::string content =
        start == std::string::npos ? "" : line.substr(start);
    if (open) {
      if (content == "```") {
        blocks.push_back(std::move(*open));
        open.reset();
      } else {
        // A blank line may lack the indentation.
        open->text += (start == std::string::npos
                           ? ""
                           : line.substr(std::min(indent, start))) +
                      '\n';
      }
      continue;
    }
    const std::string fence = "```" + language;
    if (content.rfind(fence, 0) != 0) continue;
    const std::string rest = content.substr(fence.size());
    if (!rest.empty() && rest.front() != ' ') continue;  // ```tomlx
    open = FencedBlock{
        .tag = rest.empty() ? "" : rest.substr(1), .text = {}, .line = number};
    indent = start;
  }
  return blocks;
}

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
  CHECK(echo.header("x-monsoon-worker") == "configured");
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
    INFO(name);
    CHECK(check_settings_take_effect(program, source_file("config/" + name),
                                     dir.file(name + ".log")) >= 10);
  }
}

TEST_CASE("the config files the docs show parse, every key taking effect",
          "[integration][config]") {
  // Every ```toml block of these documents is a config file; the fence
  // names the program that reads it: ```toml monsoon-worker.
  const std::map<std::string, std::string> programs = {
      {"monsoon-broker", MONSOON_BROKER_BIN},
      {"monsoon-frontend", MONSOON_FRONTEND_BIN},
      {"monsoon-worker", MONSOON_WORKER_BIN}};
  // At least: README's worker.toml; the deployment's two broker files, a
  // front end and a worker file for each topology.
  const std::vector<std::pair<std::string, std::size_t>> documents = {
      {"README.md", 1}, {"docs/deployment.md", 6}};
  const TempDir dir;
  for (const auto& [document, least] : documents) {
    const std::vector<FencedBlock> blocks =
        fenced_blocks(source_file(document), "toml");
    CHECK(blocks.size() >= least);
    for (const FencedBlock& block : blocks) {
      INFO(document << ":" << block.line << ": ```toml " << block.tag);
      const auto program = programs.find(block.tag);
      REQUIRE(program != programs.end());
      // Named for its place, so that each block has files of its own.
      const std::string name = std::filesystem::path(document).stem().string() +
                               "-" + std::to_string(block.line);
      const std::string file = dir.write(name + ".toml", block.text);
      CHECK(check_settings_take_effect(program->second, file,
                                       dir.file(name + ".log")) >= 2);
    }
  }
}

TEST_CASE("the systemd units of docs/deployment.md pass systemd-analyze verify",
          "[integration][config]") {
  // systemd-analyze comes with the systemd package (scripts/install-deps.sh).
  const std::string analyze = "/usr/bin/systemd-analyze";
  REQUIRE(std::filesystem::exists(analyze));
  const std::vector<FencedBlock> blocks =
      fenced_blocks(source_file("docs/deployment.md"), "ini");
  // The broker, worker and front end units, and the front end's template.
  CHECK(blocks.size() >= 4);

  // A root directory for systemd-analyze: the system's own units (for the
  // targets the doc's units name), the doc's units where an administrator
  // puts them, and the three programs where the doc installs them (verify
  // checks that ExecStart names an executable file; any other program is an
  // error).
  const TempDir root;
  const std::filesystem::path units = root.path() / "etc/systemd/system";
  const std::filesystem::path bin = root.path() / "usr/local/bin";
  std::filesystem::create_directories(units);
  std::filesystem::create_directories(bin);
  std::filesystem::create_directories(root.path() / "usr/lib/systemd");
  std::filesystem::copy("/usr/lib/systemd/system",
                        root.path() / "usr/lib/systemd/system",
                        std::filesystem::copy_options::recursive |
                            std::filesystem::copy_options::copy_symlinks);
  for (const char* program :
       {"monsoon-broker", "monsoon-frontend", "monsoon-worker"}) {
    std::ofstream(bin / program).put('\n');
    std::filesystem::permissions(bin / program,
                                 std::filesystem::perms::owner_all |
                                     std::filesystem::perms::group_exec |
                                     std::filesystem::perms::others_exec);
  }

  const TempDir dir;
  for (const FencedBlock& block : blocks) {
    INFO("docs/deployment.md:" << block.line << ": ```ini " << block.tag);
    const std::string suffix = ".service";
    REQUIRE(block.tag.size() > suffix.size());
    REQUIRE(block.tag.ends_with(suffix));
    std::ofstream(units / block.tag) << block.text;
    // A template is verified through an instance of it.
    std::string unit = block.tag;
    if (unit.ends_with("@" + suffix)) {
      unit.insert(unit.size() - suffix.size(), "1");
    }
    // verify exits 0 even for unknown keys and values it ignores: it only
    // prints them. A unit passes when nothing is printed.
    const Exit exit = run_to_exit(ChildProcess(
        analyze, {"--root=" + root.path().string(), "verify", unit},
        dir.file(unit + ".log")));
    INFO(exit.output);
    CHECK(exit.code == 0);
    CHECK(exit.output.empty());
  }
}

TEST_CASE("every program's print-config reads back, in both topologies",
          "[integration][config]") {
  // Each program, with its defaults and with lists set; the front end in
  // both topologies, whose options exclude each other's (broker,
  // worker-endpoint) or need them (the dispatcher's limits).
  const std::vector<std::pair<std::string, std::vector<std::string>>> runs = {
      {MONSOON_BROKER_BIN, {}},
      {MONSOON_WORKER_BIN, {}},
      {MONSOON_WORKER_BIN,
       {"--broker", "tcp://10.0.0.1:5556,tcp://10.0.0.2:5556", "--tasks",
        "echo,sleep"}},
      {MONSOON_TEST_WORKER_BIN, {}},
      {MONSOON_FRONTEND_BIN, {}},
      {MONSOON_FRONTEND_BIN,
       {"--broker", "tcp://10.0.0.1:5555,tcp://10.0.0.2:5555", "--reuse-port"}},
      {MONSOON_FRONTEND_BIN,
       {"--worker-endpoint", "tcp://10.0.0.1:5556", "--max-queue", "500"}}};
  const TempDir dir;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const auto& [program, args] = runs[i];
    const std::string run = "run-" + std::to_string(i);
    std::vector<std::string> first_args = args;
    first_args.push_back("--print-config");
    const Exit first = run_to_exit(
        ChildProcess(program, first_args, dir.file(run + "-first.log")));
    const std::string file = dir.write(run + ".toml", first.output);
    const Exit second =
        run_to_exit(ChildProcess(program, {"--config", file, "--print-config"},
                                 dir.file(run + "-second.log")));
    std::string command = program;
    for (const std::string& arg : args) command += " " + arg;
    INFO(command << " --print-config:\n"
                 << first.output << "\nread back:\n"
                 << second.output);
    REQUIRE(first.code == 0);
    CHECK(second.code == 0);
    CHECK(second.output == first.output);
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
