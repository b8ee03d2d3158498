// monsoon-broker: routes jobs from clients to workers (docs/protocol.md).
#include <CLI/CLI.hpp>
#include <iostream>
#include <string>

#include "monsoon/broker/broker.hpp"
#include "monsoon/broker/broker_options.hpp"
#include "monsoon/common/logging.hpp"
#include "monsoon/common/process_options.hpp"
#include "monsoon/common/stop_signals.hpp"

int main(int argc, char** argv) {
  monsoon::block_stop_signals();

  monsoon::broker::BrokerConfig config;
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
  monsoon::broker::add_broker_options(app, config.dispatcher);
  app.add_option("--max-message-bytes", config.max_message_bytes,
                 "Largest frame accepted from a peer")
      ->check(CLI::Range(std::size_t{4096}, std::size_t{1} << 31))
      ->capture_default_str();
  monsoon::add_config_sources(app);
  if (const auto exit_code = monsoon::parse_options(app, argc, argv)) {
    return *exit_code;
  }
  config.dispatcher.heartbeat = process.heartbeat();

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
