// monsoon-broker: routes jobs from clients to workers (docs/protocol.md).
#include <CLI/CLI.hpp>
#include <iostream>
#include <string>

#include "monsoon/broker/broker.hpp"
#include "monsoon/common/logging.hpp"
#include "monsoon/common/process_options.hpp"
#include "monsoon/common/stop_signals.hpp"

int main(int argc, char** argv) {
  monsoon::block_stop_signals();

  monsoon::broker::BrokerConfig config;
  monsoon::broker::DispatcherConfig& dispatch = config.dispatcher;
  int retry_after_ms = static_cast<int>(dispatch.retry_after.count());
  int grace_ms = static_cast<int>(dispatch.in_flight_grace.count());
  int backoff_ms = static_cast<int>(dispatch.retry_backoff_base.count());
  int backoff_max_ms = static_cast<int>(dispatch.retry_backoff_max.count());
  monsoon::ProcessOptions process;

  CLI::App app{
      "Monsoon broker: queues jobs from clients and hands them to "
      "workers with a free slot."};
  app.add_option("--client-endpoint", config.client_endpoint,
                 "Bind endpoint for clients (tcp://*:port or tcp://host:port)")
      ->capture_default_str();
  app.add_option("--worker-endpoint", config.worker_endpoint,
                 "Bind endpoint for workers (tcp://*:port or tcp://host:port)")
      ->capture_default_str();
  monsoon::add_process_options(app, process, "a worker");
  app.add_option("--max-queue", dispatch.max_queue_per_task,
                 "Most jobs waiting per task; more are rejected 'overloaded'")
      ->capture_default_str();
  app.add_option("--max-queued", dispatch.max_queued_total,
                 "Most jobs waiting over all tasks")
      ->capture_default_str();
  app.add_option("--max-attempts", dispatch.max_attempts,
                 "Dispatches of one job before a worker death or a 'retry' "
                 "answer fails it")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  app.add_option("--max-workers", dispatch.max_workers,
                 "Most registered workers; READY from more is ignored")
      ->capture_default_str();
  app.add_option("--retry-after-ms", retry_after_ms,
                 "Retry hint sent with 'overloaded' rejections")
      ->check(CLI::Range(0, 3'600'000))
      ->capture_default_str();
  app.add_option("--retry-backoff-ms", backoff_ms,
                 "First delay before retrying a job whose task asked for it; "
                 "doubles per attempt, with jitter")
      ->check(CLI::Range(1, 3'600'000))
      ->capture_default_str();
  app.add_option("--retry-backoff-max-ms", backoff_max_ms,
                 "Longest delay before a retry")
      ->check(CLI::Range(1, 3'600'000))
      ->capture_default_str();
  app.add_option("--in-flight-grace-ms", grace_ms,
                 "How long past its deadline a running job may take before "
                 "its client is answered 'deadline_exceeded'")
      ->check(CLI::Range(0, 3'600'000))
      ->capture_default_str();
  app.add_option("--max-message-bytes", config.max_message_bytes,
                 "Largest frame accepted from a peer")
      ->check(CLI::Range(std::size_t{4096}, std::size_t{1} << 31))
      ->capture_default_str();
  monsoon::add_config_sources(app);
  if (const auto exit_code = monsoon::parse_options(app, argc, argv)) {
    return *exit_code;
  }
  dispatch.heartbeat = process.heartbeat();
  dispatch.retry_after = std::chrono::milliseconds(retry_after_ms);
  dispatch.in_flight_grace = std::chrono::milliseconds(grace_ms);
  dispatch.retry_backoff_base = std::chrono::milliseconds(backoff_ms);
  dispatch.retry_backoff_max = std::chrono::milliseconds(backoff_max_ms);

  try {
    monsoon::init_logging("broker", process.log_level);
    monsoon::broker::Broker broker(config);
    monsoon::StopSignalWatcher watcher([&broker] { broker.stop(); });
    broker.run();
  } catch (const std::exception& e) {
    std::cerr << "monsoon-broker: " << e.what() << '\n';
    return 1;
  }
  return 0;
}
