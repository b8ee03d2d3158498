#include "monsoon/workers/worker_main.hpp"

#include <spdlog/fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <iostream>
#include <string>

#include "monsoon/common/logging.hpp"
#include "monsoon/common/process_options.hpp"
#include "monsoon/common/protocol.hpp"
#include "monsoon/common/stop_signals.hpp"
#include "monsoon/workers/builtin_tasks.hpp"
#include "monsoon/workers/worker.hpp"

namespace monsoon::workers {

int run_worker_main(int argc, char** argv, TaskRegistry registry) {
  block_stop_signals();

  WorkerConfig config;
  std::int64_t drain_timeout_ms = config.drain_timeout.count();
  std::int64_t cancel_grace_ms = config.cancel_grace.count();
  std::filesystem::path db_path = default_demo_database_path();
  ProcessOptions process;

  CLI::App app{
      "Monsoon worker: executes tasks dispatched by a Monsoon broker."};
  app.add_option("--broker", config.broker_endpoint,
                 "The broker's worker endpoint")
      ->capture_default_str();
  app.add_option("-c,--concurrency", config.slots,
                 "Jobs executed at once (default: number of CPUs)")
      ->check(CLI::Range(std::uint32_t{1}, protocol::kMaxSlots));
  app.add_option("--tasks", config.tasks,
                 "Comma-separated subset of the tasks to serve (default: all)")
      ->delimiter(',');
  app.add_option("--name", config.name,
                 "Name shown by the broker (default: worker-<pid>@<host>)");
  app.add_option("--db-path", db_path,
                 "SQLite file of the built-in db.query task (created with "
                 "demo rows at start)")
      ->capture_default_str();
  add_process_options(app, process, "the broker");
  app.add_option("--drain-timeout-ms", drain_timeout_ms,
                 "On SIGINT/SIGTERM, how long running jobs may finish")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{3'600'000}));
  app.add_option("--cancel-grace-ms", cancel_grace_ms,
                 "After the drain timeout, how long cancelled jobs may take "
                 "before the worker exits without them")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{3'600'000}));
  app.add_option("--max-message-bytes", config.max_message_bytes,
                 "Largest message accepted from the broker, and largest "
                 "result sent")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{65'536}, std::size_t{1} << 30));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 1;
  }

  try {
    init_logging("worker", process.log_level);
    config.heartbeat = process.heartbeat();
    config.drain_timeout = std::chrono::milliseconds{drain_timeout_ms};
    config.cancel_grace = std::chrono::milliseconds{cancel_grace_ms};
    set_default_demo_database_path(db_path);
    Worker worker(std::move(config), registry);
    const auto& served = worker.config().tasks;
    if (std::find(served.begin(), served.end(), "db.query") != served.end()) {
      // Create the demo data at start rather than in the first request.
      prepare_demo_database(db_path);
    }
    const StopSignalWatcher watcher([&worker] { worker.stop(); });
    spdlog::info("serving [{}] with {} slot(s)",
                 fmt::join(worker.config().tasks, ", "), worker.config().slots);
    worker.run();
    const WorkerCounters counters = worker.counters();
    spdlog::info(
        "stopped: {} job(s) received, {} succeeded, {} failed, {} malformed "
        "message(s) dropped, {} reconnect(s)",
        counters.jobs_received, counters.jobs_succeeded, counters.jobs_failed,
        counters.malformed_dropped, counters.reconnects);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << app.get_name() << ": error: " << e.what() << '\n';
    return 1;
  }
}

}  // namespace monsoon::workers
