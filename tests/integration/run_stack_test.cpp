// `make run` under the signals that stop it: from its terminal (Ctrl-C once
// and twice, the terminal closing), from a supervisor (SIGTERM to make, or to
// make's whole process group, once and twice), and when something dies (make,
// the script, one of the stack's processes). Each test starts the stack as a
// user does: real make in a terminal of its own (SKIP_BUILD=1, on this build
// tree), ports chosen at run time. Every process started carries an
// environment variable unique to the test, which is how the test finds
// (by PID) whatever is left: nothing may be, once make has exited.
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "child_process.hpp"
#include "counters.hpp"
#include "eventually.hpp"
#include "http_batch.hpp"
#include "stack.hpp"
#include "terminal.hpp"

using monsoon::test::ChildProcess;
using monsoon::test::eventually;
using monsoon::test::free_port;
using monsoon::test::http_request;
using monsoon::test::HttpBatch;
using monsoon::test::HttpRequest;
using monsoon::test::HttpResponse;
using monsoon::test::parse_metrics;
using monsoon::test::Terminal;
using namespace std::chrono_literals;

namespace {

constexpr std::string_view kCtrlC = "\x03";
constexpr auto kStartTimeout = 30s;
// Far more than any stop here takes: the pending job (at most 4 s), then the
// other processes, which hold nothing. Under ASan too.
constexpr auto kStopTimeout = 30s;
// make waits for the script and then exits: it has nothing else to do.
constexpr auto kMakeExitTimeout = 5s;

struct Process {
  pid_t pid = 0;
  pid_t parent = 0;
  std::string command_line;  // arguments separated by spaces
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// The live processes (zombies are dead) whose environment holds `entry`
// (NAME=value), found through /proc.
std::vector<Process> processes_with(const std::string& entry) {
  std::vector<Process> found;
  std::error_code error;
  for (const auto& dir : std::filesystem::directory_iterator("/proc", error)) {
    const std::string name = dir.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string environment = read_file(dir.path() / "environ");
    if (('\0' + environment).find('\0' + entry + '\0') == std::string::npos)
      continue;
    // /proc/<pid>/stat: "pid (comm) state ppid ...", comm may hold spaces.
    std::string stat = read_file(dir.path() / "stat");
    auto fields = stat.rfind(')');
    if (fields == std::string::npos) continue;
    char state = 0;
    pid_t parent = 0;
    std::istringstream(stat.substr(fields + 1)) >> state >> parent;
    if (state == 'Z' || state == 'X') continue;
    std::string command_line = read_file(dir.path() / "cmdline");
    for (char& c : command_line) c = c == '\0' ? ' ' : c;
    found.push_back({std::stoi(name), parent, command_line});
  }
  return found;
}

// False once `pid` exited (a zombie has exited). Cheaper than a scan of
// /proc, for polling.
bool running(pid_t pid) {
  std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  auto fields = stat.rfind(')');
  return fields != std::string::npos && stat.size() > fields + 2 &&
         stat[fields + 2] != 'Z' && stat[fields + 2] != 'X';
}

// Polls until none of `processes` runs.
bool all_exit(const std::vector<Process>& processes,
              std::chrono::milliseconds timeout) {
  return eventually(
      [&] {
        for (const auto& process : processes) {
          if (running(process.pid)) return false;
        }
        return true;
      },
      timeout);
}

std::string describe(const std::vector<Process>& processes) {
  std::string out;
  for (const auto& process : processes)
    out += std::to_string(process.pid) + ": " + process.command_line + "\n";
  return out;
}

bool ended_by(const std::optional<int>& status, int signal_number) {
  return status && WIFSIGNALED(*status) && WTERMSIG(*status) == signal_number;
}

// `make run` as a user starts it in a terminal: make leads a new session and
// its process group is the terminal's foreground group. Or, `in_terminal`
// false, as a supervisor starts it: in the test's process group, its output
// in a file (nothing then sends SIGHUP when make dies, as the kernel does to
// the foreground group when a session leader dies).
class MakeRun {
 public:
  // `variables` are more make variables (e.g. TOPOLOGY=brokerless).
  explicit MakeRun(bool in_terminal = true,
                   std::vector<std::string> variables = {})
      : variables_(std::move(variables)),
        port_(free_port()),
        directory_(make_directory()),
        marker_("MONSOON_RUN_STACK_TEST=" + std::to_string(::getpid()) + "-" +
                std::to_string(port_)),
        terminal_(directory_ + "/terminal.log"),
        make_(in_terminal ? ChildProcess("/usr/bin/env", arguments(), terminal_)
                          : ChildProcess("/usr/bin/env", arguments(),
                                         directory_ + "/make.log")) {}

  // Whatever a failed test left running is killed, by PID.
  ~MakeRun() {
    for (const auto& process : processes_with(marker_)) {
      if (process.pid != make_.pid()) ::kill(process.pid, SIGKILL);
    }
    std::error_code ignored;
    std::filesystem::remove_all(directory_, ignored);
  }

  std::uint16_t port() const { return port_; }
  ChildProcess& make() { return make_; }
  Terminal& terminal() { return terminal_; }
  std::string log() const { return make_.log(); }
  // Every process this run started that is still there (make included,
  // until it is reaped).
  std::vector<Process> left() const { return processes_with(marker_); }

  // Until /healthz answers 200 and the script printed that it runs.
  void wait_until_serving() {
    bool serving = eventually(
        [&] {
          return http_request(port_,
                              {.method = "GET",
                               .target = "/healthz",
                               .body = {},
                               .headers = {}},
                              2s)
                         .status == 200 &&
                 log().find("Monsoon is running at") != std::string::npos;
        },
        kStartTimeout);
    INFO(log());
    REQUIRE(serving);
  }

  // Until the script says it began stopping the stack.
  void wait_until_stopping() {
    bool stopping = eventually(
        [&] { return log().find("Stopping Monsoon") != std::string::npos; },
        kStopTimeout);
    INFO(log());
    REQUIRE(stopping);
  }

  // The script make runs (scripts/run-stack.sh), or 0 once it is gone.
  pid_t script() const {
    return find([&](const Process& process) {
      return process.parent == make_.pid() &&
             process.command_line.find("run-stack.sh") != std::string::npos;
    });
  }

  // One of the stack's processes, by program name ("monsoon-broker").
  pid_t program(const std::string& name) const {
    return find([&](const Process& process) {
      return process.command_line.find("/" + name + " ") != std::string::npos;
    });
  }

 private:
  static std::string make_directory() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "monsoon-run-stack-XXXXXX")
            .string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    return pattern;
  }

  // For env(1), which sets the environment and runs make. MAKEFLAGS and the
  // like go: this make is not part of the `make test` that may run us.
  std::vector<std::string> arguments() const {
    auto endpoint = [] {
      return "tcp://127.0.0.1:" + std::to_string(free_port());
    };
    std::vector<std::string> arguments = {
        "-u",
        "MAKEFLAGS",
        "-u",
        "MFLAGS",
        "-u",
        "MAKELEVEL",
        marker_,
        "MONSOON_CLIENT_ENDPOINT=" + endpoint(),
        "MONSOON_WORKER_ENDPOINT=" + endpoint(),
        "MONSOON_STATE_DIR=" + directory_,
        "make",
        "-s",
        "-C",
        MONSOON_SOURCE_DIR,
        "run",
        "SKIP_BUILD=1",
        "BUILD_DIR=" MONSOON_BUILD_DIR,
        "PORT=" + std::to_string(port_),
        "WORKERS=1",
        "CONCURRENCY=1"};
    arguments.insert(arguments.end(), variables_.begin(), variables_.end());
    return arguments;
  }

  template <typename Predicate>
  pid_t find(Predicate predicate) const {
    for (const auto& process : left()) {
      if (predicate(process)) return process.pid;
    }
    return 0;
  }

  std::vector<std::string> variables_;
  std::uint16_t port_;
  std::string directory_;
  std::string marker_;
  Terminal terminal_;
  ChildProcess make_;
};

// A sleep job the front end holds while the stack is asked to stop: a stop
// that drains answers it (200); one that kills does not.
class PendingJob {
 public:
  PendingJob(MakeRun& run, int sleep_ms)
      : batch_(
            run.port(),
            {HttpRequest{.method = "POST",
                         .target = "/jobs/sleep?timeout_ms=30000",
                         .body = "{\"ms\": " + std::to_string(sleep_ms) + "}",
                         .headers = {}}}) {
    REQUIRE(batch_.send_all(5s));
    bool pending = eventually([&] {
      HttpResponse metrics = http_request(
          run.port(),
          {.method = "GET", .target = "/metrics", .body = {}, .headers = {}},
          2s);
      return metrics.status == 200 &&
             parse_metrics(metrics.body)["jobs_pending"] == 1;
    });
    INFO(run.log());
    REQUIRE(pending);
  }

  const HttpResponse& answer() {
    batch_.receive_all(kStopTimeout);
    return batch_.responses().at(0);
  }

 private:
  HttpBatch batch_;
};

// Make's wait status once it exited: after the script, promptly, and with
// nothing left behind. nullopt (and a failed check) when it did not.
std::optional<int> wait_for_make(MakeRun& run) {
  const pid_t script = run.script();
  bool script_gone =
      script == 0 || eventually([&] { return !running(script); }, kStopTimeout);
  INFO(run.log());
  INFO("left:\n" << describe(run.left()));
  CHECK(script_gone);
  auto status = run.make().wait_exit(kMakeExitTimeout);
  CHECK(status);
  std::vector<Process> left = run.left();
  INFO("left when make exited:\n" << describe(left));
  CHECK(left.empty());
  return status;
}

// Starts make run (in a terminal, with more make `variables`), holds a 1.5 s
// job pending, calls `stop`, and checks what every drained stop shows: the
// job answered, make ended by `signal_number` (it re-raises the signal it
// got), nothing left.
void check_stop_drains(const std::function<void(MakeRun&)>& stop,
                       int signal_number,
                       std::vector<std::string> variables = {}) {
  MakeRun run(/*in_terminal=*/true, std::move(variables));
  run.wait_until_serving();
  PendingJob job(run, 1500);
  stop(run);
  std::optional<int> status = wait_for_make(run);
  INFO(run.log());
  CHECK(ended_by(status, signal_number));
  const HttpResponse& answer = job.answer();
  INFO(answer.error);
  CHECK(answer.status == 200);
  CHECK(answer.body == "{\"slept_ms\":1500}");
}

// After make or the script was killed, each process stops on its own: polls
// until none of `started` runs, then checks that nothing at all is left.
void check_all_stop(MakeRun& run, const std::vector<Process>& started) {
  bool all_gone = all_exit(started, kStopTimeout);
  INFO(run.log());
  INFO("left:\n" << describe(run.left()));
  CHECK(all_gone);
  CHECK(run.left().empty());
}

}  // namespace

TEST_CASE("make run: Ctrl-C drains the stack", "[integration][run-stack]") {
  check_stop_drains([](MakeRun& run) { run.terminal().type(kCtrlC); }, SIGINT);
}

TEST_CASE("make run: a second Ctrl-C kills what is left at once",
          "[integration][run-stack]") {
  MakeRun run;
  run.wait_until_serving();
  // Draining would answer it within the front end's 5 s drain timeout.
  PendingJob job(run, 4000);
  run.terminal().type(kCtrlC);
  run.wait_until_stopping();
  run.terminal().type(kCtrlC);
  std::optional<int> status = wait_for_make(run);
  INFO(run.log());
  CHECK(ended_by(status, SIGINT));
  CHECK(run.log().find("Second Ctrl-C: killing Monsoon") != std::string::npos);
  const HttpResponse& answer = job.answer();
  CHECK(answer.status == 0);  // the front end died with it pending
  CHECK_FALSE(answer.error.empty());
}

TEST_CASE("make run: SIGTERM to make drains the stack",
          "[integration][run-stack]") {
  check_stop_drains([](MakeRun& run) { run.make().signal(SIGTERM); }, SIGTERM);
}

TEST_CASE("make run: SIGTERM to make twice drains the stack",
          "[integration][run-stack]") {
  check_stop_drains(
      [](MakeRun& run) {
        run.make().signal(SIGTERM);
        run.wait_until_stopping();
        run.make().signal(SIGTERM);
      },
      SIGTERM);
}

TEST_CASE("make run: SIGTERM to its process group drains the stack",
          "[integration][run-stack]") {
  // make forwards its SIGTERM to the script, which gets two.
  check_stop_drains([](MakeRun& run) { ::kill(-run.make().pid(), SIGTERM); },
                    SIGTERM);
}

TEST_CASE("make run: SIGTERM to its process group twice drains the stack",
          "[integration][run-stack]") {
  check_stop_drains(
      [](MakeRun& run) {
        ::kill(-run.make().pid(), SIGTERM);
        run.wait_until_stopping();
        ::kill(-run.make().pid(), SIGTERM);
      },
      SIGTERM);
}

// What a SIGTERM to the group does when make runs its handler later than the
// script (the race issue 8 hit): the forwarded SIGTERM lands mid-stop.
TEST_CASE("make run: make's forwarded SIGTERM during the stop changes nothing",
          "[integration][run-stack]") {
  check_stop_drains(
      [](MakeRun& run) {
        pid_t script = run.script();
        REQUIRE(script != 0);
        ::kill(script, SIGTERM);
        run.wait_until_stopping();
        run.make().signal(SIGTERM);
      },
      SIGTERM);
}

TEST_CASE("make run: closing its terminal drains the stack",
          "[integration][run-stack]") {
  check_stop_drains(
      [](MakeRun& run) {
        // The kernel sends SIGHUP to make, the session leader; an interactive
        // shell sends it to the whole job, as here. Writes to the terminal
        // fail from now on.
        run.terminal().hang_up();
        ::kill(-run.make().pid(), SIGHUP);
      },
      SIGHUP);
}

// `ssh -t host make run`, `tmux new make run`: make leads the session, and
// the kernel's SIGHUP goes to make alone, which does not pass it on.
TEST_CASE(
    "make run: closing its terminal drains the stack when no shell "
    "relays the hang-up",
    "[integration][run-stack]") {
  check_stop_drains([](MakeRun& run) { run.terminal().hang_up(); }, SIGHUP);
}

TEST_CASE("make run: make killed, the script drains the stack",
          "[integration][run-stack]") {
  MakeRun run(/*in_terminal=*/false);
  run.wait_until_serving();
  PendingJob job(run, 1500);
  std::vector<Process> started = run.left();
  run.make().signal(SIGKILL);
  REQUIRE(run.make().wait_exit(kMakeExitTimeout));
  // The script got SIGTERM when make died (setpriv --pdeathsig).
  check_all_stop(run, started);
  const HttpResponse& answer = job.answer();
  CHECK(answer.status == 200);
}

TEST_CASE("make run: the script killed, every process stops on its own",
          "[integration][run-stack]") {
  MakeRun run;
  run.wait_until_serving();
  pid_t script = run.script();
  REQUIRE(script != 0);
  std::vector<Process> started = run.left();
  ::kill(script, SIGKILL);
  auto status = run.make().wait_exit(kMakeExitTimeout);
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 2);  // make: a recipe failed
  // Each got SIGTERM when the script died (setpriv --pdeathsig).
  check_all_stop(run, started);
}

TEST_CASE("make run: a process that exits on its own stops the rest",
          "[integration][run-stack]") {
  MakeRun run;
  run.wait_until_serving();
  pid_t broker = run.program("monsoon-broker");
  REQUIRE(broker != 0);
  ::kill(broker, SIGKILL);
  std::optional<int> status = wait_for_make(run);
  INFO(run.log());
  CHECK(run.log().find("monsoon-broker (pid " + std::to_string(broker) +
                       ") exited with status 137 on its own") !=
        std::string::npos);
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 2);  // make: the script exited 1
}

// The brokerless stack: no broker process; the front end hosts the
// dispatcher, the worker connects to it, and Ctrl-C drains it all the same.
TEST_CASE("make run TOPOLOGY=brokerless: no broker, Ctrl-C drains the stack",
          "[integration][run-stack]") {
  check_stop_drains(
      [](MakeRun& run) {
        INFO(run.log());
        CHECK(run.log().find("brokerless") != std::string::npos);
        CHECK(run.program("monsoon-broker") == 0);
        CHECK(run.program("monsoon-frontend") != 0);
        CHECK(run.program("monsoon-worker") != 0);
        run.terminal().type(kCtrlC);
      },
      SIGINT, {"TOPOLOGY=brokerless"});
}
