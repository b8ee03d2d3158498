#include "monsoon/workers/worker_main.hpp"

#include <spdlog/fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <iostream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "monsoon/common/logging.hpp"
#include "monsoon/common/process_options.hpp"
#include "monsoon/common/protocol.hpp"
#include "monsoon/common/stop_signals.hpp"
#include "monsoon/workers/builtin_tasks.hpp"
#include "monsoon/workers/worker.hpp"

namespace monsoon::workers {

PoolConfig parse_queue_option(std::string_view text) {
  const std::size_t equals = text.find('=');
  if (equals == std::string_view::npos) {
    throw std::invalid_argument("'" + std::string(text) +
                                "' is not NAME=SLOTS (e.g. fast=16)");
  }
  PoolConfig pool{{std::string(text.substr(0, equals))}, 0};
  const std::string_view slots = text.substr(equals + 1);
  const auto* end = slots.data() + slots.size();
  const auto [parsed, error] = std::from_chars(slots.data(), end, pool.slots);
  if (slots.empty() || error != std::errc{} || parsed != end ||
      pool.slots < 1 || pool.slots > protocol::kMaxSlots) {
    throw std::invalid_argument("'" + std::string(text) +
                                "': SLOTS must be a number from 1 to " +
                                std::to_string(protocol::kMaxSlots));
  }
  check_pools({pool});  // the name
  return pool;
}

int run_worker_main(int argc, char** argv, TaskRegistry registry) {
  block_stop_signals();

  WorkerConfig config;
  std::vector<std::string> queues;
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
  app.add_option("--queue", queues,
                 "A pool of SLOTS jobs at once for the queue NAME (a task's "
                 "queue is its name unless the broker routes it elsewhere); "
                 "repeat it (or give a comma list) for a pool per queue. "
                 "Without it, two default pools: thread tasks' queues with "
                 "--concurrency slots, async tasks' with --async-concurrency")
      ->type_name("NAME=SLOTS")
      ->delimiter(',')
      ->check(CLI::Validator(
          [](std::string& text) {
            try {
              (void)parse_queue_option(text);
              return std::string();
            } catch (const std::invalid_argument& e) {
              return std::string(e.what());
            }
          },
          ""));
  CLI::Option* concurrency =
      app.add_option("-c,--concurrency", config.slots,
                     "Default pool of thread tasks (without --queue): jobs "
                     "executed at once, one thread each (default: number of "
                     "CPUs)")
          ->check(CLI::Range(std::uint32_t{1}, protocol::kMaxSlots));
  // No default shown (--print-config writes none): its presence is what
  // conflicts with --queue.
  CLI::Option* async_concurrency =
      app.add_option("--async-concurrency", config.async_slots,
                     "Default pool of async tasks (without --queue): jobs "
                     "(echo, sleep) held at once on the event thread "
                     "(default: " +
                         std::to_string(WorkerConfig{}.async_slots) + ")")
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

  // Checks across options, part of parsing so that --print-config checks
  // them too.
  app.callback([&] {
    if (queues.empty()) return;
    if (concurrency->count() > 0 || async_concurrency->count() > 0) {
      throw CLI::ValidationError(
          "--queue",
          "not with --concurrency or --async-concurrency (on the command "
          "line, in MONSOON_CONCURRENCY or MONSOON_ASYNC_CONCURRENCY, or in "
          "the config file): those size the default pools, which --queue "
          "replaces");
    }
    for (const auto& queue : queues) {
      config.pools.push_back(parse_queue_option(queue));
    }
    try {
      check_pools(config.pools);
    } catch (const std::invalid_argument& e) {
      throw CLI::ValidationError("--queue", e.what());
    }
  });
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
    Worker worker(std::move(config), registry);
    const WorkerConfig& served = worker.config();
    if (std::find(served.tasks.begin(), served.tasks.end(), "db.query") !=
        served.tasks.end()) {
      // Create the demo data at start rather than in the first request.
      prepare_demo_database(db_path);
    }
    spdlog::info("{}: serving [{}]", served.name,
                 fmt::join(served.tasks, ", "));
    for (std::size_t i = 0; i < served.pools.size(); ++i) {
      spdlog::info("pool {} [{}]: {} slot(s)", i,
                   fmt::join(served.pools[i].queues, ", "),
                   served.pools[i].slots);
    }
    const StopSignalWatcher watcher([&worker] { worker.stop(); });
    worker.run();
    const WorkerCounters total = worker.counters();
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
