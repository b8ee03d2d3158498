// A complete worker process in one call, so that a user's own worker binary
// is a few lines:
//
//   int main(int argc, char** argv) {
//     monsoon::workers::TaskRegistry registry;
//     monsoon::workers::register_builtin_tasks(registry);  // optional
//     registry.add("my.task", my_task);
//     return monsoon::workers::run_worker_main(argc, argv,
//                                              std::move(registry));
//   }
//
// It parses the standard flags (--broker, --concurrency/-c,
// --async-concurrency, --tasks, --name,
// --db-path, --heartbeat-ms, --liveness, --drain-timeout-ms,
// --max-message-bytes, --log-level; see --help), each also read from its
// MONSOON_* variable and a --config file (monsoon/common/process_options.hpp),
// sets up logging, and runs a Worker until SIGINT or SIGTERM. Call it first
// thing in main, before any other thread exists (it blocks the stop signals for
// every thread). Thread tasks and async tasks are served by two Workers (two
// registrations, the async one named "<name>/async"), each on its own thread.
// Returns the process exit code: 0 after a clean stop, --help or
// --print-config, 2 for invalid options or config file, 1 for set-up errors
// (each with a message on stderr).
#pragma once

#include "monsoon/workers/task_registry.hpp"

namespace monsoon::workers {

int run_worker_main(int argc, char** argv, TaskRegistry registry);

}  // namespace monsoon::workers
