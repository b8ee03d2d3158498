// monsoon-frontend: the HTTP front end. Wiring only; see
// monsoon/frontend/http_server.hpp and broker_link.hpp, and, for the
// dispatcher it hosts with --worker-endpoint, monsoon/broker/broker_thread.hpp.
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <exception>
#include <optional>
#include <string>

#include "monsoon/broker/broker_options.hpp"
#include "monsoon/broker/broker_thread.hpp"
#include "monsoon/common/logging.hpp"
#include "monsoon/common/process_options.hpp"
#include "monsoon/common/stop_signals.hpp"
#include "monsoon/frontend/broker_link.hpp"
#include "monsoon/frontend/http_server.hpp"

namespace {

using monsoon::broker::BrokerConfig;
using monsoon::broker::BrokerThread;
using monsoon::broker::DispatcherConfig;
using monsoon::frontend::BrokerLink;
using monsoon::frontend::BrokerLinkConfig;
using monsoon::frontend::DispatcherStatsSource;
using monsoon::frontend::FrontendConfig;
using monsoon::frontend::HttpServer;

// With `embedded` (--worker-endpoint), the dispatcher runs here: bound
// before the link connects to it, stopped after the link.
int serve(const FrontendConfig& config, BrokerLinkConfig link_config,
          const std::optional<BrokerConfig>& embedded) {
  std::optional<BrokerThread> broker;
  DispatcherStatsSource dispatcher_stats;
  if (embedded) {
    broker.emplace(*embedded);
    link_config.endpoints = {broker->client_endpoint()};
    dispatcher_stats = [&broker] { return broker->stats(); };
  }
  BrokerLink link(link_config);
  HttpServer server(config, link, dispatcher_stats);
  if (broker) {
    spdlog::info(
        "listening on http://{}:{} ({} thread(s)), workers on {} (no broker "
        "process)",
        config.host, server.port(), config.threads, broker->worker_endpoint());
  } else {
    spdlog::info("listening on http://{}:{} ({} thread(s)), broker(s) {}",
                 config.host, server.port(), config.threads,
                 fmt::join(link_config.endpoints, ", "));
  }
  monsoon::StopSignalWatcher watcher([&server] {
    spdlog::info("stop requested");
    server.stop();
  });
  // HTTP drained first, then the link (its pending jobs answered), then the
  // dispatcher (its DISCONNECTs to the workers).
  server.run();
  link.stop();
  if (broker) broker->stop();
  spdlog::info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  monsoon::block_stop_signals();

  FrontendConfig config;
  BrokerLinkConfig link_config;
  BrokerConfig broker_config;
  std::int64_t default_timeout_ms = config.timeouts.default_timeout.count();
  std::int64_t max_timeout_ms = config.timeouts.max_timeout.count();
  std::int64_t idle_timeout_ms = config.idle_timeout.count();
  std::int64_t request_timeout_ms = config.request_timeout.count();
  std::int64_t drain_timeout_ms = config.drain_timeout.count();
  monsoon::ProcessOptions process;

  CLI::App app{
      "Monsoon HTTP front end: serves HTTP and runs jobs through the broker, "
      "or, with --worker-endpoint, hands them to workers itself"};
  app.add_option("--host", config.host, "Address to listen on")
      ->capture_default_str();
  app.add_option("--port", config.port, "TCP port to listen on (0 = any)")
      ->capture_default_str();
  app.add_option("--broker", link_config.endpoints,
                 "A broker's client endpoint; repeat it (or give a comma "
                 "list) for several brokers, all active: jobs are spread over "
                 "the live ones")
      ->delimiter(',')
      ->capture_default_str();
  app.add_flag("--reuse-port", config.reuse_port,
               "Share the port with other front ends that set it too "
               "(SO_REUSEPORT): the kernel spreads connections over them");
  const CLI::Option* worker_endpoint =
      app.add_option("--worker-endpoint", broker_config.worker_endpoint,
                     "Run the dispatcher in this process, with no broker: "
                     "bind this endpoint for workers (tcp://*:port or "
                     "tcp://host:port), as a broker's --worker-endpoint. Not "
                     "with --broker");
  app.add_option("--threads", config.threads, "I/O threads")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--default-timeout-ms", default_timeout_ms,
                 "Job timeout when a request sets none")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{86'400'000}))
      ->capture_default_str();
  app.add_option("--max-timeout-ms", max_timeout_ms,
                 "Largest timeout a request may ask for")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{86'400'000}))
      ->capture_default_str();
  app.add_option("--max-message-bytes", link_config.max_message_bytes,
                 "Largest frame accepted from the broker (a RESULT's result); "
                 "told to the broker with every job. With --worker-endpoint "
                 "also the largest accepted from a worker")
      ->check(CLI::Range(std::size_t{128} << 10, std::size_t{1} << 31))
      ->capture_default_str();
  // Bodies must fit our own frame limit too; the broker's, which it tells in
  // its WELCOME, is checked per request.
  app.add_option("--max-body-bytes", config.max_body_bytes,
                 "Largest request body accepted (at most --max-message-bytes "
                 "minus " +
                     std::to_string(monsoon::frontend::kSubmitEnvelopeBytes) +
                     ")")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-header-bytes", config.max_header_bytes,
                 "Largest request header accepted")
      ->check(CLI::Range(std::size_t{1024}, std::size_t{1} << 20))
      ->capture_default_str();
  app.add_option("--idle-timeout-ms", idle_timeout_ms,
                 "How long a keep-alive connection may wait for a request")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{3'600'000}))
      ->capture_default_str();
  app.add_option("--request-timeout-ms", request_timeout_ms,
                 "Time to receive one request; while sending a response, "
                 "the longest time without progress")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{3'600'000}))
      ->capture_default_str();
  app.add_option("--drain-timeout-ms", drain_timeout_ms,
                 "On SIGINT/SIGTERM, how long requests in progress may take "
                 "before they are answered 503 shutting_down")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{3'600'000}))
      ->capture_default_str();
  app.add_option("--max-pending", link_config.max_pending,
                 "Jobs that may await a result at once")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-connections", config.max_connections,
                 "Open connections allowed; more are closed at once")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  monsoon::add_process_options(app, process,
                               "the broker (with --worker-endpoint: a worker)");
  for (CLI::Option* option :
       monsoon::broker::add_broker_options(app, broker_config.dispatcher)) {
    option->group("Dispatcher (only with --worker-endpoint)");
  }
  // Checks across options, part of parsing so that --print-config checks
  // them too.
  app.callback([&] {
    if (config.max_body_bytes >
        monsoon::frontend::max_args_bytes(link_config)) {
      throw CLI::ValidationError(
          "--max-body-bytes",
          "must not exceed --max-message-bytes minus " +
              std::to_string(monsoon::frontend::kSubmitEnvelopeBytes) + " (" +
              std::to_string(monsoon::frontend::max_args_bytes(link_config)) +
              ")");
    }
    if (default_timeout_ms > max_timeout_ms) {
      throw CLI::ValidationError("--default-timeout-ms",
                                 "must not exceed --max-timeout-ms");
    }
    // By value, not by presence (CLI11's excludes and needs): --print-config
    // writes every default, --broker's too, and what it writes must start
    // the same front end.
    if (*worker_endpoint &&
        link_config.endpoints != BrokerLinkConfig{}.endpoints) {
      throw CLI::ValidationError(
          "--broker", "not with --worker-endpoint: the dispatcher runs here");
    }
    if (!*worker_endpoint && broker_config.dispatcher != DispatcherConfig{}) {
      throw CLI::ValidationError(
          "--route, --max-queue, --max-attempts and the other dispatcher "
          "options",
          "only with --worker-endpoint");
    }
  });
  monsoon::add_config_sources(app);
  if (const auto exit_code = monsoon::parse_options(app, argc, argv)) {
    return *exit_code;
  }
  config.timeouts.default_timeout =
      std::chrono::milliseconds(default_timeout_ms);
  config.timeouts.max_timeout = std::chrono::milliseconds(max_timeout_ms);
  link_config.heartbeat = process.heartbeat();
  config.idle_timeout = std::chrono::milliseconds(idle_timeout_ms);
  config.request_timeout = std::chrono::milliseconds(request_timeout_ms);
  config.drain_timeout = std::chrono::milliseconds(drain_timeout_ms);

  std::optional<BrokerConfig> embedded;
  if (*worker_endpoint) {
    broker_config.client_endpoint = monsoon::broker::unique_inproc_endpoint();
    broker_config.max_message_bytes = link_config.max_message_bytes;
    broker_config.dispatcher.heartbeat = process.heartbeat();
    embedded = broker_config;
  }

  monsoon::init_logging("frontend", process.log_level);
  try {
    return serve(config, link_config, embedded);
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
}
