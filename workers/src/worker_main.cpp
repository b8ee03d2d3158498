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
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "monsoon/common/logging.hpp"
#include "monsoon/common/process_options.hpp"
#include "monsoon/common/protocol.hpp"
#include "monsoon/common/stop_signals.hpp"
#include "monsoon/workers/builtin_tasks.hpp"
#include "monsoon/workers/worker.hpp"

namespace monsoon::workers {

namespace {

// The pools a process runs: one Worker for its thread tasks, one for its
// async tasks, each with its own concurrency and connection.
std::vector<std::unique_ptr<Worker>> make_pools(const WorkerConfig& config,
                                                std::uint32_t async_slots,
                                                const TaskRegistry& registry) {
  WorkerConfig threads = config;
  WorkerConfig async = config;
  threads.tasks.clear();
  async.tasks.clear();
  for (auto& task : config.tasks.empty() ? registry.names() : config.tasks) {
    // Unknown names go to the thread pool, whose Worker rejects them.
    (registry.find_async(task) ? async : threads).tasks.push_back(task);
  }
  std::vector<std::unique_ptr<Worker>> pools;
  if (!threads.tasks.empty()) {
    pools.push_back(std::make_unique<Worker>(std::move(threads), registry));
  }
  if (!async.tasks.empty()) {
    async.slots = async_slots;
    // Distinct from the thread pool's name: the broker tells registrations
    // apart by name and pid.
    async.name =
        (config.name.empty() ? default_worker_name() : config.name) + "/async";
    pools.push_back(std::make_unique<Worker>(std::move(async), registry));
  }
  return pools;
}

// Runs every pool, each on its own thread, until all have returned. The
// first exception is rethrown after stopping the others.
void run_pools(const std::vector<std::unique_ptr<Worker>>& pools) {
  std::mutex mutex;
  std::exception_ptr failure;
  std::vector<std::jthread> threads;
  for (const auto& pool : pools) {
    threads.emplace_back([&, worker = pool.get()] {
      try {
        worker->run();
      } catch (...) {
        const std::lock_guard lock(mutex);
        if (!failure) failure = std::current_exception();
        for (const auto& other : pools) other->stop();
      }
    });
  }
  threads.clear();  // joins
  if (failure) std::rethrow_exception(failure);
}

}  // namespace

int run_worker_main(int argc, char** argv, TaskRegistry registry) {
  block_stop_signals();

  WorkerConfig config;
  std::uint32_t async_slots = 1000;
  std::int64_t drain_timeout_ms = config.drain_timeout.count();
  std::int64_t cancel_grace_ms = config.cancel_grace.count();
  std::filesystem::path db_path = default_demo_database_path();
  ProcessOptions process;

  CLI::App app{
      "Monsoon worker: executes tasks dispatched by a Monsoon broker."};
  app.add_option("--broker", config.broker_endpoints,
                 "A broker's worker endpoint; repeat it (or give a comma "
                 "list) to serve several brokers, all sharing this worker's "
                 "slots")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("-c,--concurrency", config.slots,
                 "Thread-task jobs executed at once, one thread each "
                 "(default: number of CPUs)")
      ->check(CLI::Range(std::uint32_t{1}, protocol::kMaxSlots));
  app.add_option("--async-concurrency", async_slots,
                 "Async-task jobs (echo, sleep) held at once on the event "
                 "thread")
      ->capture_default_str()
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

  add_config_sources(app);
  if (const auto exit_code = parse_options(app, argc, argv)) {
    return *exit_code;
  }

  try {
    init_logging("worker", process.log_level);
    config.heartbeat = process.heartbeat();
    config.drain_timeout = std::chrono::milliseconds{drain_timeout_ms};
    config.cancel_grace = std::chrono::milliseconds{cancel_grace_ms};
    set_default_demo_database_path(db_path);
    const auto pools = make_pools(config, async_slots, registry);
    for (const auto& pool : pools) {
      const auto& served = pool->config().tasks;
      if (std::find(served.begin(), served.end(), "db.query") != served.end()) {
        // Create the demo data at start rather than in the first request.
        prepare_demo_database(db_path);
      }
      spdlog::info("{}: serving [{}] with {} {}", pool->config().name,
                   fmt::join(served, ", "), pool->config().slots,
                   pool->serves_async() ? "async job(s)" : "thread slot(s)");
    }
    const StopSignalWatcher watcher([&pools] {
      for (const auto& pool : pools) pool->stop();
    });
    run_pools(pools);
    WorkerCounters total;
    for (const auto& pool : pools) total += pool->counters();
    spdlog::info(
        "stopped: {} job(s) received, {} succeeded, {} failed, {} malformed "
        "message(s) dropped, {} reconnect(s)",
        total.jobs_received, total.jobs_succeeded, total.jobs_failed,
        total.malformed_dropped, total.reconnects);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << app.get_name() << ": error: " << e.what() << '\n';
    return 1;
  }
}

}  // namespace monsoon::workers
