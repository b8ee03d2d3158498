// A worker built the way a user builds one: the built-in tasks plus tasks of
// its own, registered through the public API. Integration tests use it for
// behaviour the built-ins cannot show, such as a task that throws.
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
  // Creates the file args["mark"], so that a test sees the job running (say,
  // before it kills the worker), then sleeps args["ms"] like the built-in
  // sleep; returns its args, so that each request can recognise its answer.
  registry.add("test.hold", [sleep = *registry.find("sleep")](
                                const monsoon::Value& args,
                                const monsoon::workers::TaskContext& context) {
    std::ofstream(args.at("mark").get<std::string>());
    sleep({{"ms", args.at("ms")}}, context);
    return args;
  });
  return monsoon::workers::run_worker_main(argc, argv, std::move(registry));
}
