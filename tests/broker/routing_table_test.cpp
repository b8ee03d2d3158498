#include "monsoon/broker/routing_table.hpp"

#include <CLI/CLI.hpp>
#include <catch2/catch.hpp>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "monsoon/broker/broker_options.hpp"
#include "monsoon/common/process_options.hpp"
#include "temp_dir.hpp"

using monsoon::broker::DispatcherConfig;
using monsoon::broker::RoutingTable;

TEST_CASE("routing: exact, prefix, '*', first match, default") {
  const RoutingTable table({"images.thumbnail=fast", "images.*=slow",
                            "echo=fast", "report*=reports", "echo*=never"});
  CHECK(table.queue_for("images.thumbnail") == "fast");  // before images.*
  CHECK(table.queue_for("images.resize") == "slow");
  CHECK(table.queue_for("images.") == "slow");   // the prefix itself matches
  CHECK(table.queue_for("images") == "images");  // shorter than the prefix
  CHECK(table.queue_for("echo") == "fast");      // the first of two rules
  CHECK(table.queue_for("echo2") == "never");    // exact means exact
  CHECK(table.queue_for("reports.daily") == "reports");
  CHECK(table.queue_for("sleep") == "sleep");  // no match: its own name
  CHECK(table.rules().size() == 5);

  const RoutingTable all({"echo=fast", "*=bulk"});
  CHECK(all.queue_for("echo") == "fast");
  CHECK(all.queue_for("anything") == "bulk");

  CHECK(RoutingTable().queue_for("echo") == "echo");
  CHECK(RoutingTable().rules().empty());
}

TEST_CASE("routing: an invalid rule is rejected with its text") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"echo", "expected PATTERN=QUEUE"},
      {"=fast", "the pattern is not a task name"},
      {"echo=", "the queue name is not valid"},
      {"echo=a b", "the queue name is not valid"},
      {"echo=fa*st", "the queue name is not valid"},
      {"ima*ges=slow", "'*' may only end the pattern"},
      {"*images=slow", "'*' may only end the pattern"},
      {"images.**=slow", "'*' may only end the pattern"},
      {"im/ages*=slow", "the pattern is not a task name"},
      {std::string(129, 'x') + "=slow", "the pattern is not a task name"},
      {"ok=other", "an earlier rule has the same pattern"},
  };
  for (const auto& [rule, why] : cases) {
    INFO(rule);
    try {
      RoutingTable table({"ok=fine", rule});
      FAIL("accepted");
    } catch (const std::invalid_argument& e) {
      CHECK_THAT(e.what(), Catch::Contains("route '" + rule + "'") &&
                               Catch::Contains(why));
    }
  }
}

TEST_CASE("routing: at most kMaxRules rules") {
  std::vector<std::string> rules;
  for (std::size_t i = 0; i < RoutingTable::kMaxRules; ++i) {
    rules.push_back("task" + std::to_string(i) + "=b");
  }
  CHECK_NOTHROW(RoutingTable(rules));
  rules.push_back("another=b");
  CHECK_THROWS_WITH(RoutingTable(rules),
                    Catch::Contains("at most 1024 are allowed"));
}

namespace {

// Parses `args` with the broker's options, as a main would; returns the exit
// code parse_options asks for, if any, and what went to stderr.
struct Parsed {
  std::optional<int> exit;
  std::string errors;
};

Parsed parse(std::vector<std::string> args, DispatcherConfig& config) {
  CLI::App app{"test"};
  monsoon::broker::add_broker_options(app, config);
  monsoon::add_config_sources(app);
  args.insert(args.begin(), "monsoon-broker");
  std::vector<const char*> argv;
  for (const std::string& arg : args) argv.push_back(arg.c_str());
  std::ostringstream errors;
  std::streambuf* saved = std::cerr.rdbuf(errors.rdbuf());
  std::optional<int> exit =
      monsoon::parse_options(app, static_cast<int>(argv.size()), argv.data());
  std::cerr.rdbuf(saved);
  return {exit, errors.str()};
}

}  // namespace

TEST_CASE("routing: --route takes rules from the command line and files") {
  DispatcherConfig config;
  Parsed parsed =
      parse({"--route", "images.*=slow", "--route", "echo=fast"}, config);
  REQUIRE_FALSE(parsed.exit);
  CHECK(config.routes.rules() ==
        std::vector<std::string>{"images.*=slow", "echo=fast"});
  CHECK(config.routes.queue_for("images.resize") == "slow");
  CHECK(config.routes.queue_for("echo") == "fast");
  CHECK(config != DispatcherConfig{});  // operator== sees the routes

  // A comma list, as MONSOON_ROUTE holds it.
  DispatcherConfig listed;
  parsed = parse({"--route", "images.*=slow,echo=fast"}, listed);
  REQUIRE_FALSE(parsed.exit);
  CHECK(listed.routes == config.routes);

  const monsoon::test::TempDir dir;
  const std::string file =
      dir.write("broker.toml", "route = [\"images.*=slow\", \"echo=fast\"]\n");
  DispatcherConfig from_file;
  parsed = parse({"--config", file}, from_file);
  REQUIRE_FALSE(parsed.exit);
  CHECK(from_file.routes == config.routes);
}

TEST_CASE("an invalid --route exits 2 naming the rule") {
  DispatcherConfig config;
  Parsed parsed =
      parse({"--route", "echo=fast", "--route", "ima*ges=slow"}, config);
  CHECK(parsed.exit == 2);
  CHECK_THAT(parsed.errors, Catch::Contains("--route") &&
                                Catch::Contains("route 'ima*ges=slow'") &&
                                Catch::Contains("'*' may only end"));
  CHECK(config.routes.rules().empty());
}
