#include "monsoon/workers/task_registry.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <new>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "inline_async_host.hpp"
#include "monsoon/common/protocol.hpp"
#include "monsoon/common/value.hpp"

namespace {

using monsoon::Clock;
using monsoon::Value;
using monsoon::workers::execute_task;
using monsoon::workers::TaskContext;
using monsoon::workers::TaskError;
using monsoon::workers::TaskRegistry;
namespace error_code = monsoon::protocol::error_code;

Value identity(const Value& args, const TaskContext&) { return args; }

TaskContext context_for(std::string_view task,
                        std::chrono::milliseconds budget = std::chrono::seconds{
                            30}) {
  TaskContext context;
  context.task = task;
  context.job_id = 42;
  context.deadline = Clock::now() + budget;
  return context;
}

}  // namespace

TEST_CASE("registry finds what was added and lists names sorted") {
  TaskRegistry registry;
  CHECK(registry.empty());
  registry.add("zeta", identity);
  registry.add("images:resize", identity);
  registry.add("db.query", identity);
  CHECK_FALSE(registry.empty());
  CHECK(registry.find("zeta") != nullptr);
  CHECK(registry.find("images:resize") != nullptr);
  CHECK(registry.find("missing") == nullptr);
  CHECK(registry.names() ==
        std::vector<std::string>{"db.query", "images:resize", "zeta"});
}

TEST_CASE("registry rejects duplicates, invalid names and empty functions") {
  TaskRegistry registry;
  registry.add("echo", identity);
  CHECK_THROWS_AS(registry.add("echo", identity), std::invalid_argument);
  CHECK_THROWS_AS(registry.add("", identity), std::invalid_argument);
  CHECK_THROWS_AS(registry.add("has space", identity), std::invalid_argument);
  CHECK_THROWS_AS(registry.add(std::string(129, 'a'), identity),
                  std::invalid_argument);
  CHECK_THROWS_AS(registry.add("fine", nullptr), std::invalid_argument);
  CHECK(registry.names() == std::vector<std::string>{"echo"});
  CHECK_NOTHROW(registry.add(std::string(128, 'a'), identity));
}

TEST_CASE("task context reports remaining time and expiry") {
  auto context = context_for("t", std::chrono::seconds{10});
  CHECK(context.remaining() > std::chrono::seconds{9});
  CHECK(context.remaining() <= std::chrono::seconds{10});
  CHECK_FALSE(context.expired());
  CHECK_NOTHROW(context.throw_if_stopped());

  context.deadline = Clock::now() - std::chrono::milliseconds{1};
  CHECK(context.expired());
  CHECK(context.remaining() == std::chrono::milliseconds{0});
  try {
    context.throw_if_stopped();
    FAIL("expected TaskError");
  } catch (const TaskError& e) {
    CHECK(e.code() == error_code::kDeadlineExceeded);
  }

  std::stop_source stop;
  auto cancelled = context_for("t");
  cancelled.cancellation = stop.get_token();
  CHECK_FALSE(cancelled.should_stop());
  stop.request_stop();
  CHECK(cancelled.cancelled());
  CHECK(cancelled.should_stop());
  CHECK_THROWS_AS(cancelled.throw_if_stopped(), TaskError);
}

TEST_CASE("execute_task returns the task's result as MessagePack") {
  TaskRegistry registry;
  registry.add("echo", identity);
  const Value args = {{"x", 1}, {"list", {1, "two", nullptr}}};
  auto outcome =
      execute_task(registry, context_for("echo"), monsoon::to_msgpack(args));
  REQUIRE(outcome.ok);
  CHECK(outcome.code.empty());
  CHECK(monsoon::from_msgpack(outcome.result) == args);
}

TEST_CASE("execute_task passes the job's context to the task") {
  TaskRegistry registry;
  registry.add("ctx", [](const Value&, const TaskContext& context) {
    return Value{{"task", std::string(context.task)},
                 {"id", context.job_id},
                 {"attempt", context.attempt}};
  });
  auto context = context_for("ctx");
  context.attempt = 3;
  auto outcome = execute_task(registry, context, monsoon::to_msgpack(nullptr));
  REQUIRE(outcome.ok);
  CHECK(monsoon::from_msgpack(outcome.result) ==
        Value{{"task", "ctx"}, {"id", 42}, {"attempt", 3}});
}

TEST_CASE("execute_task turns exceptions into error outcomes") {
  TaskRegistry registry;
  registry.add("throws", [](const Value&, const TaskContext&) -> Value {
    throw std::runtime_error("disk on fire");
  });
  registry.add("task-error", [](const Value&, const TaskContext&) -> Value {
    throw TaskError(error_code::kBadRequest, "need 'x'");
  });
  registry.add("throws-int",
               [](const Value&, const TaskContext&) -> Value { throw 7; });
  registry.add("json-error", [](const Value& args, const TaskContext&) {
    return Value(args.at("missing"));
  });
  const auto args = monsoon::to_msgpack(Value::object());

  auto thrown = execute_task(registry, context_for("throws"), args);
  CHECK_FALSE(thrown.ok);
  CHECK(thrown.code == error_code::kTaskFailed);
  CHECK(thrown.message == "disk on fire");
  CHECK(monsoon::from_msgpack(thrown.result).is_null());

  auto coded = execute_task(registry, context_for("task-error"), args);
  CHECK_FALSE(coded.ok);
  CHECK(coded.code == error_code::kBadRequest);
  CHECK(coded.message == "need 'x'");

  auto unknown = execute_task(registry, context_for("throws-int"), args);
  CHECK_FALSE(unknown.ok);
  CHECK(unknown.code == error_code::kTaskFailed);
  CHECK(unknown.message == "unknown exception");

  auto json = execute_task(registry, context_for("json-error"), args);
  CHECK_FALSE(json.ok);
  CHECK(json.code == error_code::kTaskFailed);
  CHECK_FALSE(json.message.empty());
}

TEST_CASE("execute_task reports running out of memory as internal") {
  TaskRegistry registry;
  registry.add("greedy", [](const Value&, const TaskContext&) -> Value {
    throw std::bad_alloc();
  });
  auto outcome = execute_task(registry, context_for("greedy"),
                              monsoon::to_msgpack(Value::object()));
  CHECK_FALSE(outcome.ok);
  CHECK(outcome.code == error_code::kInternal);
  CHECK(outcome.message == "out of memory");
  CHECK(monsoon::from_msgpack(outcome.result).is_null());
}

TEST_CASE("TaskError with an empty code means task_failed") {
  CHECK(TaskError("", "x").code() == error_code::kTaskFailed);
}

TEST_CASE("execute_task reports unknown tasks, bad args and late starts") {
  TaskRegistry registry;
  int calls = 0;
  registry.add("count", [&calls](const Value& args, const TaskContext&) {
    ++calls;
    return args;
  });

  auto unknown =
      execute_task(registry, context_for("nope"), monsoon::to_msgpack(nullptr));
  CHECK_FALSE(unknown.ok);
  CHECK(unknown.code == error_code::kUnknownTask);

  const std::string truncated_map("\x81\xa1x", 3);  // map of 1, value missing
  auto undecodable =
      execute_task(registry, context_for("count"), truncated_map);
  CHECK_FALSE(undecodable.ok);
  CHECK(undecodable.code == error_code::kBadRequest);

  auto trailing =
      execute_task(registry, context_for("count"), std::string("\xc0\xc0", 2));
  CHECK(trailing.code == error_code::kBadRequest);

  auto late = execute_task(registry,
                           context_for("count", std::chrono::milliseconds{-1}),
                           monsoon::to_msgpack(nullptr));
  CHECK_FALSE(late.ok);
  CHECK(late.code == error_code::kDeadlineExceeded);
  CHECK(calls == 0);
}

TEST_CASE("execute_task refuses results nested deeper than peers accept") {
  TaskRegistry registry;
  registry.add("deep", [](const Value&, const TaskContext&) {
    Value value = 1;
    for (int i = 0; i < 200; ++i) value = Value::array({value});
    return value;
  });
  auto outcome =
      execute_task(registry, context_for("deep"), monsoon::to_msgpack(nullptr));
  CHECK_FALSE(outcome.ok);
  CHECK(outcome.code == error_code::kTaskFailed);
}

// ---- async tasks
// -------------------------------------------------------------

namespace {

using monsoon::test::InlineAsyncHost;
using monsoon::workers::AsyncJob;
using monsoon::workers::TaskOutcome;

TaskOutcome run_async(const TaskRegistry& registry, std::string_view task,
                      const Value& args,
                      std::chrono::milliseconds budget = std::chrono::seconds{
                          30}) {
  InlineAsyncHost host;
  return host.run(registry, task, monsoon::to_msgpack(args),
                  Clock::now() + budget);
}

}  // namespace

TEST_CASE("registry keeps thread and async tasks apart") {
  TaskRegistry registry;
  registry.add("threaded", identity);
  registry.add_async(
      "evented", [](const Value& args, AsyncJob& job) { job.succeed(args); });
  CHECK(registry.find("threaded") != nullptr);
  CHECK(registry.find("evented") == nullptr);
  CHECK(registry.find_async("evented") != nullptr);
  CHECK(registry.find_async("threaded") == nullptr);
  CHECK(registry.contains("evented"));
  CHECK_FALSE(registry.contains("missing"));
  CHECK(registry.names() == std::vector<std::string>{"evented", "threaded"});
  CHECK_THROWS_AS(
      registry.add_async("threaded", [](const Value&, AsyncJob&) {}),
      std::invalid_argument);
  CHECK_THROWS_AS(registry.add_async("empty", nullptr), std::invalid_argument);
  // A thread task is not started as an async one, nor the other way round.
  CHECK(run_async(registry, "threaded", 1).code == error_code::kUnknownTask);
  CHECK(execute_task(registry, context_for("evented"), monsoon::to_msgpack(1))
            .code == error_code::kUnknownTask);
}

TEST_CASE("an async task may finish its job in a later step") {
  TaskRegistry registry;
  registry.add_async("later", [](const Value& args, AsyncJob& job) {
    CHECK(job.context().task == "later");
    CHECK(job.context().job_id == 1);
    const int steps = args.get<int>();
    job.resume_at(Clock::now(), [steps](AsyncJob& next) {
      next.resume_at(Clock::now(), [steps](AsyncJob& last) {
        last.succeed(Value{{"steps", steps}});
      });
    });
  });
  auto outcome = run_async(registry, "later", 2);
  INFO(outcome.message);
  REQUIRE(outcome.ok);
  CHECK(monsoon::from_msgpack(outcome.result) == Value{{"steps", 2}});
}

TEST_CASE("async failures keep their codes; a dropped job fails internal") {
  TaskRegistry registry;
  registry.add_async("refuse", [](const Value&, AsyncJob&) {
    throw TaskError(error_code::kBadRequest, "no thanks");
  });
  registry.add_async("explode_later", [](const Value&, AsyncJob& job) {
    job.resume_at(Clock::now(),
                  [](AsyncJob&) { throw std::runtime_error("boom later"); });
  });
  registry.add_async("drop", [](const Value&, AsyncJob& job) {
    AsyncJob taken = std::move(job);  // destroyed unfinished
  });
  registry.add_async("forget", [](const Value&, AsyncJob&) {});
  registry.add_async("fail", [](const Value&, AsyncJob& job) {
    job.fail(error_code::kOverloaded, "busy");
    CHECK_FALSE(job.open());
    CHECK_THROWS_AS(job.succeed(1), std::logic_error);
  });

  auto outcome = run_async(registry, "refuse", nullptr);
  CHECK(outcome.code == error_code::kBadRequest);
  CHECK(outcome.message == "no thanks");
  outcome = run_async(registry, "explode_later", nullptr);
  CHECK(outcome.code == error_code::kTaskFailed);
  CHECK(outcome.message == "boom later");
  for (const char* task : {"drop", "forget"}) {
    outcome = run_async(registry, task, nullptr);
    CHECK(outcome.code == error_code::kInternal);
    CHECK(outcome.message == "the task dropped its job unfinished");
  }
  outcome = run_async(registry, "fail", nullptr);
  CHECK(outcome.code == error_code::kOverloaded);
  CHECK(outcome.message == "busy");
}

TEST_CASE("an async job is admitted like a thread job") {
  TaskRegistry registry;
  bool started = false;
  registry.add_async("mark", [&started](const Value&, AsyncJob& job) {
    started = true;
    job.succeed(nullptr);
  });
  CHECK(run_async(registry, "mark", 1, std::chrono::milliseconds{-1}).code ==
        error_code::kDeadlineExceeded);
  InlineAsyncHost host;
  CHECK(
      host.run(registry, "mark", "\x81", Clock::now() + std::chrono::seconds{5})
          .code == error_code::kBadRequest);
  CHECK_FALSE(started);
  CHECK(run_async(registry, "nope", 1).code == error_code::kUnknownTask);
}

TEST_CASE("RetryLater asks for a retry, with its least delay") {
  TaskRegistry registry;
  registry.add("later", [](const Value&, const TaskContext&) -> Value {
    throw monsoon::workers::RetryLater("database busy",
                                       std::chrono::milliseconds{250});
  });
  registry.add_async("later_async", [](const Value&, AsyncJob&) {
    throw monsoon::workers::RetryLater("still busy");
  });
  auto outcome = execute_task(registry, context_for("later"),
                              monsoon::to_msgpack(nullptr));
  CHECK_FALSE(outcome.ok);
  CHECK(outcome.code == error_code::kRetry);
  CHECK(outcome.message == "database busy");
  CHECK(outcome.retry_after_ms == 250);
  outcome = run_async(registry, "later_async", nullptr);
  CHECK(outcome.code == error_code::kRetry);
  CHECK(outcome.retry_after_ms == 0);
}

TEST_CASE("a task's options are kept with it") {
  TaskRegistry registry;
  registry.add("plain", identity);
  registry.add("once", identity, {.retry_if_worker_dies = false});
  registry.add_async("once_async",
                     [](const Value&, AsyncJob& job) { job.succeed(nullptr); },
                     {.retry_if_worker_dies = false});
  CHECK(registry.options("plain").retry_if_worker_dies);
  CHECK_FALSE(registry.options("once").retry_if_worker_dies);
  CHECK_FALSE(registry.options("once_async").retry_if_worker_dies);
  CHECK(registry.options("missing").retry_if_worker_dies);
}

TEST_CASE("args a task would see altered are refused and the task not run") {
  TaskRegistry registry;
  int calls = 0;
  registry.add("count", [&calls](const Value& args, const TaskContext&) {
    ++calls;
    return args;
  });
  registry.add_async("count_async", [&calls](const Value& args, AsyncJob& job) {
    ++calls;
    job.succeed(args);
  });
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"\x82\xa1k\x01\xa1k\x02", R"(duplicate key "k")"},
      {"\x81\xa1x\x82\xa1k\x01\xa1k\x01", "at /x"},
      {"\x81\x01\x02", "not a string"}};
  for (const auto& [args, why] : cases) {
    INFO(why);
    auto outcome = execute_task(registry, context_for("count"), args);
    CHECK_FALSE(outcome.ok);
    CHECK(outcome.code == error_code::kBadRequest);
    CHECK_THAT(outcome.message, Catch::Contains(why));

    InlineAsyncHost host;
    auto async = host.run(registry, "count_async", args,
                          Clock::now() + std::chrono::seconds{30});
    CHECK_FALSE(async.ok);
    CHECK(async.code == error_code::kBadRequest);
    CHECK_THAT(async.message, Catch::Contains(why));
  }
  CHECK(calls == 0);
}
