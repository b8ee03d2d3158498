#include "monsoon/broker/broker_options.hpp"

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace monsoon::broker {
namespace {

// A duration flag in whole milliseconds, 0 (or 1) to one hour.
CLI::Option* add_milliseconds(CLI::App& app, const std::string& name,
                              std::chrono::milliseconds& value,
                              std::int64_t min, const std::string& help) {
  return app
      .add_option_function<std::int64_t>(
          name,
          [&value](std::int64_t ms) { value = std::chrono::milliseconds(ms); },
          help)
      ->check(CLI::Range(min, std::int64_t{3'600'000}))
      ->default_str(std::to_string(value.count()));
}

}  // namespace

std::vector<CLI::Option*> add_broker_options(CLI::App& app,
                                             DispatcherConfig& config) {
  return {
      app.add_option("--max-queue", config.max_queued_per_queue,
                     "Most jobs waiting per queue; more are rejected "
                     "'overloaded'")
          ->capture_default_str(),
      app.add_option("--max-queued", config.max_queued_total,
                     "Most jobs waiting over all queues")
          ->capture_default_str(),
      app.add_option_function<std::vector<std::string>>(
             "--route",
             [&config](const std::vector<std::string>& rules) {
               try {
                 config.routes = RoutingTable(rules);
               } catch (const std::invalid_argument& e) {
                 throw CLI::ValidationError("--route", e.what());
               }
             },
             "Jobs of the tasks PATTERN matches (a task name, or a prefix "
             "ending in '*': 'images.*', '*' for all) wait in QUEUE; "
             "repeatable or a comma list, the first match wins, a task no "
             "rule matches waits in the queue of its own name (at most " +
                 std::to_string(RoutingTable::kMaxRules) + " rules)")
          ->type_name("PATTERN=QUEUE")
          ->delimiter(','),
      app.add_option("--max-attempts", config.max_attempts,
                     "Dispatches of one job before a worker death or a "
                     "'retry' answer fails it")
          ->check(CLI::Range(1, 100))
          ->capture_default_str(),
      app.add_option("--max-workers", config.max_workers,
                     "Most registered workers; READY from more is ignored")
          ->capture_default_str(),
      add_milliseconds(app, "--retry-after-ms", config.retry_after, 0,
                       "Retry hint sent with 'overloaded' rejections"),
      add_milliseconds(app, "--retry-backoff-ms", config.retry_backoff_base, 1,
                       "First delay before retrying a job whose task asked "
                       "for it; doubles per attempt, with jitter"),
      add_milliseconds(app, "--retry-backoff-max-ms", config.retry_backoff_max,
                       1, "Longest delay before a retry"),
      add_milliseconds(app, "--in-flight-grace-ms", config.in_flight_grace, 0,
                       "How long past its deadline a running job may take "
                       "before its client is answered 'deadline_exceeded'"),
  };
}

}  // namespace monsoon::broker
