// The real `monsoon` binary: `monsoon keygen` and the command's exit codes.
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "child_process.hpp"
#include "monsoon/common/curve_keys.hpp"
#include "temp_dir.hpp"

using monsoon::test::ChildProcess;
using monsoon::test::TempDir;
using namespace std::chrono_literals;
using Catch::Matchers::Contains;

namespace {

struct Exit {
  int code = -1;       // the exit code; -1 when it did not exit on its own
  std::string output;  // stdout and stderr
};

// Runs `monsoon args...` to its end; its output is logged in `dir`.
Exit run_monsoon(const TempDir& dir, const std::vector<std::string>& args) {
  const std::string log = dir.file("monsoon.log");
  std::filesystem::remove(log);
  ChildProcess process(MONSOON_CLI_BIN, args, log);
  const auto status = process.wait_exit(10s);
  Exit exit;
  exit.output = process.log();
  if (status && WIFEXITED(*status)) exit.code = WEXITSTATUS(*status);
  return exit;
}

mode_t file_mode(const std::filesystem::path& path) {
  struct stat status {};
  REQUIRE(::stat(path.c_str(), &status) == 0);
  return status.st_mode & 07777;
}

std::size_t line_count(const std::string& text) {
  return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
}

}  // namespace

TEST_CASE("monsoon keygen writes a key pair and prints its public key") {
  TempDir dir;
  const std::filesystem::path keys = dir.path() / "keys";
  std::filesystem::create_directory(keys);
  const Exit exit = run_monsoon(dir, {"keygen", "broker", "--dir", keys});
  REQUIRE(exit.code == 0);

  const monsoon::CurveKeyPair pair =
      monsoon::load_curve_secret_key(keys / "broker.key");
  CHECK(monsoon::load_curve_public_key(keys / "broker.pub") == pair.public_key);
  CHECK(file_mode(keys / "broker.key") == 0600);
  CHECK(file_mode(keys / "broker.pub") == 0644);
  CHECK_THAT(exit.output, Contains((keys / "broker.key").string()) &&
                              Contains((keys / "broker.pub").string()) &&
                              Contains("public key: " + pair.public_key));
  CHECK_THAT(exit.output, !Contains(pair.secret_key));

  SECTION("a second run refuses to overwrite it: exit 1, one line") {
    const Exit again = run_monsoon(dir, {"keygen", "broker", "--dir", keys});
    CHECK(again.code == 1);
    CHECK_THAT(again.output,
               Contains("broker.key") && Contains("already exists"));
    CHECK(line_count(again.output) == 1);
    CHECK(monsoon::load_curve_secret_key(keys / "broker.key").secret_key ==
          pair.secret_key);
  }
}

TEST_CASE("monsoon keygen writes in the current directory by default") {
  TempDir dir;
  ChildProcess process("/bin/sh",
                       {"-c", "cd \"$0\" && exec \"$1\" keygen node",
                        dir.path(), MONSOON_CLI_BIN},
                       dir.file("monsoon.log"));
  const auto status = process.wait_exit(10s);
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
  CHECK(file_mode(dir.path() / "node.key") == 0600);
  CHECK(file_mode(dir.path() / "node.pub") == 0644);
}

TEST_CASE(
    "monsoon keygen fails with exit 1 and one line for a directory it "
    "cannot write") {
  TempDir dir;
  const Exit missing =
      run_monsoon(dir, {"keygen", "node", "--dir", dir.file("missing")});
  CHECK(missing.code == 1);
  CHECK_THAT(missing.output, Contains("monsoon keygen: cannot create"));
  CHECK(line_count(missing.output) == 1);

  // A file, not a directory (root may write anywhere, so no mode is used).
  const std::string file = dir.write("file", "x");
  const Exit not_directory =
      run_monsoon(dir, {"keygen", "node", "--dir", file});
  CHECK(not_directory.code == 1);
  CHECK(line_count(not_directory.output) == 1);
}

TEST_CASE("monsoon's usage errors exit 2, --help exits 0 and lists keygen") {
  TempDir dir;
  const Exit help = run_monsoon(dir, {"--help"});
  CHECK(help.code == 0);
  CHECK_THAT(help.output, Contains("keygen"));

  CHECK(run_monsoon(dir, {}).code == 2);
  CHECK(run_monsoon(dir, {"nonsense"}).code == 2);
  CHECK(run_monsoon(dir, {"keygen"}).code == 2);
  CHECK(run_monsoon(dir, {"keygen", "a/b", "--dir", dir.path()}).code == 2);
  CHECK(run_monsoon(dir, {"keygen", "a", "b", "--dir", dir.path()}).code == 2);
  CHECK(run_monsoon(dir, {"keygen", "a", "--bogus"}).code == 2);
  // None of them wrote a key.
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    CHECK(entry.path().filename() == "monsoon.log");
  }
}
