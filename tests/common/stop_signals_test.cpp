#include "monsoon/common/stop_signals.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "child_process.hpp"
#include "eventually.hpp"

using namespace std::chrono_literals;

// Run by the next test in a child process (hidden from normal runs): a stop
// that never finishes, interrupted by a second signal.
TEST_CASE("hung stop helper", "[.]") {
  monsoon::block_stop_signals();
  std::atomic<int> stops{0};
  monsoon::StopSignalWatcher watcher([&stops] { ++stops; });
  REQUIRE(kill(getpid(), SIGTERM) == 0);
  REQUIRE(monsoon::test::eventually([&stops] { return stops == 1; }));
  REQUIRE(kill(getpid(), SIGINT) == 0);
  std::this_thread::sleep_for(20s);  // the watcher ends the process first
}

TEST_CASE("a second stop signal ends the process at once") {
  const auto self = std::filesystem::read_symlink("/proc/self/exe");
  const auto log = std::filesystem::temp_directory_path() /
                   ("monsoon-hung-stop-" + std::to_string(getpid()) + ".log");
  std::filesystem::remove(log);
  monsoon::test::ChildProcess child(self.string(), {"hung stop helper"},
                                    log.string());
  const auto status = child.wait_exit(15s);
  const std::string output = child.log();
  std::filesystem::remove(log);
  INFO(output);
  REQUIRE(status);
  REQUIRE(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 128 + SIGINT);  // the second signal's code
  CHECK(output.find("second stop signal") != std::string::npos);
}
