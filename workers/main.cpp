// monsoon-worker: the stock worker, serving the built-in tasks.
#include <utility>

#include "monsoon/workers/builtin_tasks.hpp"
#include "monsoon/workers/worker_main.hpp"

int main(int argc, char** argv) {
  monsoon::workers::TaskRegistry registry;
  monsoon::workers::register_builtin_tasks(registry);
  return monsoon::workers::run_worker_main(argc, argv, std::move(registry));
}
