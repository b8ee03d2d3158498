#include "monsoon/common/process_options.hpp"

#include <CLI/CLI.hpp>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "temp_dir.hpp"

namespace {

using monsoon::test::TempDir;

// Sets an environment variable for the lifetime of the object.
class ScopedVariable {
 public:
  ScopedVariable(std::string name, const std::string& value)
      : name_(std::move(name)) {
    ::setenv(name_.c_str(), value.c_str(), 1);
  }
  ~ScopedVariable() { ::unsetenv(name_.c_str()); }
  ScopedVariable(const ScopedVariable&) = delete;
  ScopedVariable& operator=(const ScopedVariable&) = delete;

 private:
  std::string name_;
};

// What a stream printed while the object lived.
class Capture {
 public:
  explicit Capture(std::ostream& stream)
      : stream_(stream), saved_(stream.rdbuf(text_.rdbuf())) {}
  ~Capture() { stream_.rdbuf(saved_); }
  Capture(const Capture&) = delete;
  Capture& operator=(const Capture&) = delete;
  std::string text() const { return text_.str(); }

 private:
  std::ostringstream text_;
  std::ostream& stream_;
  std::streambuf* saved_;
};

// An app like a Monsoon main's: the shared options, a list option and one
// with a short name, with the config sources added.
struct TestApp {
  TestApp() {
    app.add_option("--endpoint", endpoint)->capture_default_str();
    app.add_option("-c,--concurrency", concurrency)->capture_default_str();
    app.add_option("--tasks", tasks)->delimiter(',');
    monsoon::add_process_options(app, process, "a peer");
    monsoon::add_config_sources(app);
  }

  // parse_options on "test" + `args`.
  std::optional<int> parse(std::vector<std::string> args) {
    args.insert(args.begin(), "test");
    std::vector<const char*> argv;
    for (const auto& arg : args) argv.push_back(arg.c_str());
    return monsoon::parse_options(app, static_cast<int>(argv.size()),
                                  argv.data());
  }

  CLI::App app{"test app"};
  std::string endpoint = "tcp://default";
  int concurrency = 1;
  std::vector<std::string> tasks;
  monsoon::ProcessOptions process;
};

using Tasks = std::vector<std::string>;

}  // namespace

TEST_CASE("an option's environment variable is derived from its long name") {
  using monsoon::environment_variable_name;
  CHECK(environment_variable_name("heartbeat-ms") == "MONSOON_HEARTBEAT_MS");
  CHECK(environment_variable_name("max-message-bytes") ==
        "MONSOON_MAX_MESSAGE_BYTES");
  CHECK(environment_variable_name("broker") == "MONSOON_BROKER");
  CHECK(environment_variable_name("ipv6-port2") == "MONSOON_IPV6_PORT2");
  CHECK(environment_variable_name("log.level_x") == "MONSOON_LOG_LEVEL_X");
}

TEST_CASE("every option gets its environment variable, help and actions none") {
  TestApp test;
  std::vector<std::string> variables;
  for (const CLI::Option* option : test.app.get_options()) {
    variables.push_back(option->get_envname());
  }
  CHECK(variables ==
        std::vector<std::string>{"",  // --help
                                 "MONSOON_ENDPOINT", "MONSOON_CONCURRENCY",
                                 "MONSOON_TASKS", "MONSOON_HEARTBEAT_MS",
                                 "MONSOON_LIVENESS", "MONSOON_LOG_LEVEL",
                                 "MONSOON_CONFIG", ""});  // --print-config
}

TEST_CASE("an option without a long name is refused") {
  CLI::App app;
  int value = 0;
  app.add_option("-v", value);
  CHECK_THROWS_AS(monsoon::add_config_sources(app), std::invalid_argument);
}

TEST_CASE("help describes the config file and the environment") {
  TestApp test;
  const Capture out(std::cout);
  CHECK(test.parse({"--help"}) == 0);
  const std::string help = out.text();
  CHECK(help.find("--config") != std::string::npos);
  CHECK(help.find("MONSOON_HEARTBEAT_MS") != std::string::npos);
  CHECK(help.find("MONSOON_CONFIG") != std::string::npos);
  CHECK(help.find("The command line wins over the environment, which wins "
                  "over the file") != std::string::npos);
}

TEST_CASE("options come from the command line, environment, file, default") {
  const TempDir dir;
  const std::string file = dir.write("config.toml",
                                     "# every source sets something\n"
                                     "endpoint = \"tcp://file\"\n"
                                     "concurrency = 3\n"
                                     "heartbeat-ms = 300\n"
                                     "tasks = [\"file.a\", \"file.b\"]\n");
  TestApp test;

  SECTION("the file over the defaults") {
    REQUIRE(test.parse({"--config", file}) == std::nullopt);
    CHECK(test.endpoint == "tcp://file");
    CHECK(test.concurrency == 3);
    CHECK(test.process.heartbeat_ms == 300);
    CHECK(test.tasks == Tasks{"file.a", "file.b"});
    CHECK(test.process.liveness == 3);  // set nowhere: the default
  }
  SECTION("the environment over the file") {
    const ScopedVariable endpoint("MONSOON_ENDPOINT", "tcp://env");
    const ScopedVariable tasks("MONSOON_TASKS", "env.a,env.b,env.c");
    const ScopedVariable liveness("MONSOON_LIVENESS", "7");
    REQUIRE(test.parse({"--config", file}) == std::nullopt);
    CHECK(test.endpoint == "tcp://env");
    CHECK(test.tasks == Tasks{"env.a", "env.b", "env.c"});
    CHECK(test.process.liveness == 7);  // over the default
    CHECK(test.concurrency == 3);       // still from the file
  }
  SECTION("the command line over the environment and the file") {
    const ScopedVariable endpoint("MONSOON_ENDPOINT", "tcp://env");
    const ScopedVariable tasks("MONSOON_TASKS", "env.a,env.b");
    REQUIRE(test.parse({"--config", file, "--endpoint", "tcp://flag", "--tasks",
                        "flag.a", "-c", "9"}) == std::nullopt);
    CHECK(test.endpoint == "tcp://flag");
    CHECK(test.tasks == Tasks{"flag.a"});  // replaced, not merged
    CHECK(test.concurrency == 9);
    CHECK(test.process.heartbeat_ms == 300);
  }
  SECTION("an empty variable counts as unset") {
    const ScopedVariable endpoint("MONSOON_ENDPOINT", "");
    REQUIRE(test.parse({"--config", file}) == std::nullopt);
    CHECK(test.endpoint == "tcp://file");
  }
}

TEST_CASE("MONSOON_CONFIG names the file unless --config does") {
  const TempDir dir;
  const std::string from_variable =
      dir.write("variable.toml", "concurrency = 4\n");
  const std::string from_flag = dir.write("flag.toml", "concurrency = 5\n");
  const ScopedVariable config("MONSOON_CONFIG", from_variable);
  TestApp test;
  SECTION("the variable") {
    REQUIRE(test.parse({}) == std::nullopt);
    CHECK(test.concurrency == 4);
  }
  SECTION("the flag over the variable") {
    REQUIRE(test.parse({"--config", from_flag}) == std::nullopt);
    CHECK(test.concurrency == 5);
  }
}

TEST_CASE("a bad config file is an error that names the file") {
  const TempDir dir;
  TestApp test;
  const Capture err(std::cerr);
  SECTION("an unknown key") {
    const std::string file =
        dir.write("config.toml", "concurrency = 2\nheartbeat_ms = 10\n");
    CHECK(test.parse({"--config", file}) == 2);
    CHECK(err.text().find(file) != std::string::npos);
    CHECK(err.text().find("unknown key 'heartbeat_ms'") != std::string::npos);
  }
  SECTION("a section") {
    const std::string file =
        dir.write("config.toml", "[worker]\nconcurrency = 2\n");
    CHECK(test.parse({"--config", file}) == 2);
    CHECK(err.text().find("unknown section [worker]") != std::string::npos);
  }
  SECTION("a dotted key") {
    const std::string file =
        dir.write("config.toml", "worker.concurrency = 2\n");
    CHECK(test.parse({"--config", file}) == 2);
    CHECK(err.text().find("unknown key 'worker.concurrency'") !=
          std::string::npos);
  }
  SECTION("a key of an option that is not configurable") {
    const std::string file = dir.write("config.toml", "help = true\n");
    CHECK(test.parse({"--config", file}) == 2);
    CHECK(err.text().find(file) != std::string::npos);
  }
  SECTION("a missing file") {
    const std::string missing = "/nonexistent/monsoon.toml";
    CHECK(test.parse({"--config", missing}) == 2);
    CHECK(err.text().find("cannot read config file '" + missing + "'") !=
          std::string::npos);
  }
  SECTION("a missing file named by MONSOON_CONFIG") {
    const ScopedVariable config("MONSOON_CONFIG", "/nonexistent/env.toml");
    CHECK(test.parse({}) == 2);
    CHECK(err.text().find("/nonexistent/env.toml") != std::string::npos);
  }
  SECTION("a value out of range") {
    const std::string file = dir.write("config.toml", "heartbeat-ms = 1\n");
    CHECK(test.parse({"--config", file}) == 2);
    CHECK(err.text().find("--heartbeat-ms") != std::string::npos);
    CHECK(err.text().find(file) != std::string::npos);
  }
}

TEST_CASE("a bad value in the environment is an error") {
  const ScopedVariable liveness("MONSOON_LIVENESS", "many");
  TestApp test;
  const Capture err(std::cerr);
  CHECK(test.parse({}) == 2);
  CHECK(err.text().find("--liveness") != std::string::npos);
}

TEST_CASE("print-config writes a file that reads back the same") {
  const ScopedVariable liveness("MONSOON_LIVENESS", "6");
  std::string printed;
  {
    TestApp test;
    const Capture out(std::cout);
    REQUIRE(test.parse({"--print-config", "--tasks", "a,b", "-c", "8"}) == 0);
    printed = out.text();
  }
  INFO(printed);
  CHECK(printed.find("tasks = ['a', 'b']") != std::string::npos);
  CHECK(printed.find("liveness = 6") != std::string::npos);
  CHECK(printed.find("# Heartbeat interval") != std::string::npos);
  CHECK(printed.find("print-config") == std::string::npos);

  ::unsetenv("MONSOON_LIVENESS");
  const TempDir dir;
  const std::string file = dir.write("config.toml", printed);
  TestApp test;
  REQUIRE(test.parse({"--config", file}) == std::nullopt);
  CHECK(test.tasks == Tasks{"a", "b"});
  CHECK(test.concurrency == 8);
  CHECK(test.process.liveness == 6);
  CHECK(test.endpoint == "tcp://default");
}

TEST_CASE("print-config writes a list option's default as an array") {
  CLI::App app{"list app"};
  std::vector<std::string> brokers = {"tcp://a:1", "tcp://b:2"};
  app.add_option("--broker", brokers)->delimiter(',')->capture_default_str();
  monsoon::add_config_sources(app);
  const Capture out(std::cout);
  const char* argv[] = {"test", "--print-config"};
  REQUIRE(monsoon::parse_options(app, 2, argv) == 0);
  CHECK(out.text().find("\nbroker = [\"tcp://a:1\", \"tcp://b:2\"]\n") !=
        std::string::npos);
}
