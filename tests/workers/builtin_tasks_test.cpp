#include "monsoon/workers/builtin_tasks.hpp"

#include <sqlite3.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "inline_async_host.hpp"
#include "monsoon/common/protocol.hpp"
#include "monsoon/common/value.hpp"
#include "monsoon/workers/task_registry.hpp"
#include "temp_dir.hpp"

namespace {

using monsoon::Clock;
using monsoon::Value;
using monsoon::workers::TaskContext;
using monsoon::workers::TaskOutcome;
using monsoon::workers::TaskRegistry;
using std::chrono::milliseconds;
namespace error_code = monsoon::protocol::error_code;
using monsoon::test::TempDir;

struct Builtins {
  explicit Builtins(std::filesystem::path db_path = "unused.sqlite3") {
    monsoon::workers::register_builtin_tasks(registry, {std::move(db_path)});
  }

  TaskOutcome run(std::string_view task, const Value& args,
                  milliseconds budget = std::chrono::seconds{30},
                  std::stop_token cancellation = {}) {
    if (registry.find_async(task) != nullptr) {
      return async_host.run(registry, task, monsoon::to_msgpack(args),
                            Clock::now() + budget, cancellation);
    }
    TaskContext context;
    context.task = task;
    context.job_id = 1;
    context.deadline = Clock::now() + budget;
    return monsoon::workers::execute_task(registry, context,
                                          monsoon::to_msgpack(args));
  }

  Value run_ok(std::string_view task, const Value& args) {
    auto outcome = run(task, args);
    INFO(outcome.code << ": " << outcome.message);
    REQUIRE(outcome.ok);
    return monsoon::from_msgpack(outcome.result);
  }

  TaskRegistry registry;
  monsoon::test::InlineAsyncHost async_host;
};

std::int64_t count_rows(const std::filesystem::path& path) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) ==
          SQLITE_OK);
  sqlite3_stmt* statement = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "SELECT count(*) FROM items", -1, &statement,
                             nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(statement) == SQLITE_ROW);
  const auto rows = sqlite3_column_int64(statement, 0);
  sqlite3_finalize(statement);
  sqlite3_close(db);
  return rows;
}

}  // namespace

TEST_CASE("built-ins are registered under their names") {
  Builtins builtins;
  CHECK(builtins.registry.names() ==
        std::vector<std::string>{"db.query", "echo", "hash", "sleep"});
  CHECK_THROWS_AS(
      monsoon::workers::register_builtin_tasks(builtins.registry, {}),
      std::invalid_argument);
}

TEST_CASE("echo returns its args unchanged") {
  Builtins builtins;
  for (const Value& args :
       {Value(nullptr), Value(true), Value(-5), Value(2.5), Value("text"),
        Value::binary({1, 2, 3}), Value{{"a", {1, 2}}, {"b", nullptr}}}) {
    CHECK(builtins.run_ok("echo", args) == args);
  }
}

TEST_CASE("sleep sleeps the requested time") {
  Builtins builtins;
  const auto start = Clock::now();
  CHECK(builtins.run_ok("sleep", {{"ms", 30}}) == Value{{"slept_ms", 30}});
  CHECK(Clock::now() - start >= milliseconds{30});
  CHECK(builtins.run_ok("sleep", {{"ms", 0}}) == Value{{"slept_ms", 0}});
}

TEST_CASE("sleep rejects bad args") {
  Builtins builtins;
  for (const Value& args :
       {Value(nullptr), Value(5), Value::object(), Value{{"ms", -1}},
        Value{{"ms", 3'600'001}}, Value{{"ms", 1.5}}, Value{{"ms", "10"}},
        Value{{"ms", 18'446'744'073'709'551'615ULL}}}) {
    INFO(args.dump());
    auto outcome = builtins.run("sleep", args);
    CHECK_FALSE(outcome.ok);
    CHECK(outcome.code == error_code::kBadRequest);
  }
}

TEST_CASE("sleep stops at the job's deadline") {
  Builtins builtins;
  const auto start = Clock::now();
  auto outcome = builtins.run("sleep", {{"ms", 60'000}}, milliseconds{50});
  const auto elapsed = Clock::now() - start;
  CHECK_FALSE(outcome.ok);
  CHECK(outcome.code == error_code::kDeadlineExceeded);
  CHECK(elapsed >= milliseconds{50});
  CHECK(elapsed < std::chrono::seconds{10});
}

TEST_CASE("sleep ends early when the worker cancels it") {
  Builtins builtins;
  std::stop_source stop;
  std::jthread canceller([&stop] {
    std::this_thread::sleep_for(milliseconds{20});
    stop.request_stop();
  });
  const auto start = Clock::now();
  auto outcome = builtins.run("sleep", {{"ms", 60'000}},
                              std::chrono::minutes{1}, stop.get_token());
  CHECK_FALSE(outcome.ok);
  CHECK(outcome.code == error_code::kInternal);
  CHECK(Clock::now() - start < std::chrono::seconds{10});
}

TEST_CASE("hash matches known SHA-256 answers") {
  Builtins builtins;
  // SHA-256("abc"), FIPS 180-2 appendix B.1.
  CHECK(builtins.run_ok("hash", {{"rounds", 1}, {"data", "abc"}}) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // SHA-256 of the 32-byte digest above (computed with Python's hashlib).
  CHECK(builtins.run_ok("hash", {{"rounds", 2}, {"data", "abc"}}) ==
        "4f8b42c22dd3729b519ba6f68d2da7cc5b2d606d05daed5ad5128cc03e6c6358");
  // Default data: bytes 0x00..0x3f (hashlib again).
  CHECK(builtins.run_ok("hash", {{"rounds", 1}}) ==
        "fdeab9acf3710362bd2658cdc9a29e8f9c757fcf9811603a8c447cd1d9151108");
  // 5001 rounds, across several of the task's deadline checks (hashlib).
  CHECK(builtins.run_ok("hash", {{"rounds", 5001}}) ==
        "5b43a7537f8eeee027c8cca1c0ca46959e544bb85adf28687c766e53b34ad6dd");
}

TEST_CASE("hash rejects bad args") {
  Builtins builtins;
  for (const Value& args :
       {Value::array(), Value::object(), Value{{"rounds", 0}},
        Value{{"rounds", 10'000'001}}, Value{{"rounds", "1"}},
        Value{{"rounds", 1}, {"data", 5}}}) {
    INFO(args.dump());
    auto outcome = builtins.run("hash", args);
    CHECK_FALSE(outcome.ok);
    CHECK(outcome.code == error_code::kBadRequest);
  }
}

TEST_CASE("hash gives up at the deadline") {
  Builtins builtins;
  const auto start = Clock::now();
  auto outcome =
      builtins.run("hash", {{"rounds", 10'000'000}}, milliseconds{20});
  CHECK_FALSE(outcome.ok);
  CHECK(outcome.code == error_code::kDeadlineExceeded);
  CHECK(Clock::now() - start < std::chrono::seconds{2});
}

TEST_CASE("db.query returns the rows with the requested flag") {
  TempDir dir;
  Builtins builtins(dir.path() / "demo.sqlite3");
  const Value rows = builtins.run_ok("db.query", {{"flag", 3}});
  REQUIRE(rows.is_array());
  CHECK(rows.size() == 100);
  std::set<std::int64_t> ids;
  for (const auto& row : rows) {
    CHECK(row.at("flag") == 3);
    CHECK(row.at("name").is_string());
    CHECK(row.at("created_at").is_string());
    ids.insert(row.at("id").get<std::int64_t>());
  }
  CHECK(ids.size() == 100);
  CHECK(rows.at(0) == Value{{"id", 4},
                            {"name", "item-0004"},
                            {"flag", 3},
                            {"created_at", "2024-01-01T04:00:00Z"}});

  CHECK(builtins.run_ok("db.query", {{"flag", 3}, {"limit", 5}}).size() == 5);
  CHECK(builtins.run_ok("db.query", {{"flag", 10}}).empty());
  CHECK(builtins.run_ok("db.query", {{"flag", -1}}).empty());
}

TEST_CASE("db.query rejects a flag that is not an integer") {
  TempDir dir;
  Builtins builtins(dir.path() / "demo.sqlite3");
  for (const Value& args :
       {Value(3), Value::object(), Value{{"flag", "3 OR 1=1"}},
        Value{{"flag", 1.5}}, Value{{"flag", nullptr}},
        Value{{"flag", 1}, {"limit", 0}},
        Value{{"flag", 1}, {"limit", 1001}}}) {
    INFO(args.dump());
    auto outcome = builtins.run("db.query", args);
    CHECK_FALSE(outcome.ok);
    CHECK(outcome.code == error_code::kBadRequest);
  }
}

TEST_CASE("db.query reports an unusable database as internal") {
  TempDir dir;
  Builtins builtins(dir.path() / "missing-dir" / "demo.sqlite3");
  auto outcome = builtins.run("db.query", {{"flag", 1}});
  CHECK_FALSE(outcome.ok);
  CHECK(outcome.code == error_code::kInternal);
}

TEST_CASE("demo data is created once, also by concurrent first starts") {
  TempDir dir;
  const auto path = dir.path() / "demo.sqlite3";
  std::atomic<int> failures{0};
  {
    std::vector<std::jthread> starters;
    for (int i = 0; i < 4; ++i) {
      starters.emplace_back([&path, &failures] {
        try {
          monsoon::workers::prepare_demo_database(path);
        } catch (const std::exception&) {
          ++failures;
        }
      });
    }
  }
  CHECK(failures == 0);
  CHECK(count_rows(path) == 1000);
  monsoon::workers::prepare_demo_database(path);
  CHECK(count_rows(path) == 1000);

  Builtins first(path);
  Builtins second(path);
  CHECK(first.run_ok("db.query", {{"flag", 0}}).size() == 100);
  CHECK(second.run_ok("db.query", {{"flag", 0}}).size() == 100);
  CHECK(count_rows(path) == 1000);
}

TEST_CASE("db.query serves concurrent callers") {
  TempDir dir;
  Builtins builtins(dir.path() / "demo.sqlite3");
  std::atomic<int> good{0};
  {
    std::vector<std::jthread> callers;
    for (int t = 0; t < 4; ++t) {
      callers.emplace_back([&builtins, &good, t] {
        for (int i = 0; i < 20; ++i) {
          auto outcome = builtins.run("db.query", {{"flag", (t + i) % 10}});
          if (outcome.ok &&
              monsoon::from_msgpack(outcome.result).size() == 100) {
            ++good;
          }
        }
      });
    }
  }
  CHECK(good == 80);
}

TEST_CASE("db.query without a path uses the process-wide default") {
  TempDir dir;
  const auto path = dir.path() / "default.sqlite3";
  const auto previous = monsoon::workers::default_demo_database_path();
  CHECK(previous == "monsoon-demo.sqlite3");
  monsoon::workers::set_default_demo_database_path(path);
  Builtins builtins(std::filesystem::path{});
  CHECK(builtins.run_ok("db.query", {{"flag", 9}}).size() == 100);
  CHECK(std::filesystem::exists(path));
  monsoon::workers::set_default_demo_database_path(previous);
}
