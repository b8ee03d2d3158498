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
// It parses the standard flags (--broker, --queue, --concurrency/-c,
// --async-concurrency, --tasks, --name, --db-path, --heartbeat-ms,
// --liveness, --drain-timeout-ms, --max-message-bytes, --log-level; see
// --help), each also read from its MONSOON_* variable and a --config file
// (monsoon/common/process_options.hpp), sets up logging, and runs one Worker
// (one registration with each broker) until SIGINT or SIGTERM. Call it first
// thing in main, before any other thread exists (it blocks the stop signals
// for every thread). Its pools: one per --queue NAME=SLOTS; without --queue,
// the default pools (WorkerConfig::pools), thread tasks' with
// --concurrency slots, async tasks' with --async-concurrency. Returns the
// process exit code: 0 after a clean stop, --help or --print-config, 2 for
// invalid options or config file (--queue with --concurrency or
// --async-concurrency too), 1 for set-up errors (each with a message on
// stderr).
#pragma once

#include <string_view>

#include "monsoon/workers/task_registry.hpp"
#include "monsoon/workers/worker.hpp"

namespace monsoon::workers {

int run_worker_main(int argc, char** argv, TaskRegistry registry);

// --queue's "NAME=SLOTS" as a pool of that one queue. Throws
// std::invalid_argument, saying why, unless NAME is a valid queue name and
// SLOTS a decimal number from 1 to kMaxSlots.
PoolConfig parse_queue_option(std::string_view text);

}  // namespace monsoon::workers
