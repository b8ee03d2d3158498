// A worker built the way a user builds one: the built-in tasks plus tasks of
// its own, registered through the public API. Integration tests use it for
// behaviour the built-ins cannot show, such as a task that throws.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <stdexcept>
#include <string>

#include "monsoon/workers/builtin_tasks.hpp"
#include "monsoon/workers/task_registry.hpp"
#include "monsoon/workers/worker_main.hpp"

int main(int argc, char** argv) {
  monsoon::workers::TaskRegistry registry;
  monsoon::workers::register_builtin_tasks(registry);
  registry.add(
      "test.fail",
      [](const monsoon::Value& args,
         const monsoon::workers::TaskContext&) -> monsoon::Value {
        throw std::runtime_error(args.value("message", std::string("failed")));
      });
  // Asks to be retried until attempt args.succeed_on, then reports it.
  registry.add("test.flaky", [](const monsoon::Value& args,
                                const monsoon::workers::TaskContext& context) {
    if (context.attempt < args.at("succeed_on").get<unsigned>()) {
      throw monsoon::workers::RetryLater("flaky on attempt " +
                                         std::to_string(context.attempt));
    }
    return monsoon::Value{{"attempt", context.attempt}};
  });
  // Creates the file args["mark"], so that a test sees the job running (say,
  // before it kills the worker), then waits args["ms"] like the built-in
  // sleep; returns its args, so that each request can recognise its answer.
  registry.add_async("test.hold", [](const monsoon::Value& args,
                                     monsoon::workers::AsyncJob& job) {
    std::ofstream(args.at("mark").get<std::string>());
    const std::chrono::milliseconds wait{args.at("ms").get<std::int64_t>()};
    job.resume_at(
        monsoon::Clock::now() + wait,
        [args](monsoon::workers::AsyncJob& held) { held.succeed(args); });
  });
  // A result of args["bytes"] bytes of 'x' (a string), for size limits.
  registry.add_async("test.blob", [](const monsoon::Value& args,
                                     monsoon::workers::AsyncJob& job) {
    job.succeed(std::string(args.at("bytes").get<std::size_t>(), 'x'));
  });
  return monsoon::workers::run_worker_main(argc, argv, std::move(registry));
}
