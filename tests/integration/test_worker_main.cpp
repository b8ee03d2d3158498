// A worker built the way a user builds one: the built-in tasks plus tasks of
// its own, registered through the public API. Integration tests use it for
// behaviour the built-ins cannot show, such as a task that throws.
#include <stdexcept>

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
  return monsoon::workers::run_worker_main(argc, argv, std::move(registry));
}
