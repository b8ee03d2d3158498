// monsoon-frontend: the HTTP front end. Wiring only; see
// monsoon/frontend/http_server.hpp and broker_link.hpp.
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <exception>
#include <string>

#include "monsoon/common/logging.hpp"
#include "monsoon/common/process_options.hpp"
#include "monsoon/common/stop_signals.hpp"
#include "monsoon/frontend/broker_link.hpp"
#include "monsoon/frontend/http_server.hpp"

namespace {

using monsoon::frontend::BrokerLink;
using monsoon::frontend::BrokerLinkConfig;
using monsoon::frontend::FrontendConfig;
using monsoon::frontend::HttpServer;

int serve(const FrontendConfig& config, const BrokerLinkConfig& link_config) {
  BrokerLink link(link_config);
  HttpServer server(config, link);
  spdlog::info("listening on http://{}:{} ({} thread(s)), broker(s) {}",
               config.host, server.port(), config.threads,
               fmt::join(link_config.endpoints, ", "));
  monsoon::StopSignalWatcher watcher([&server] {
    spdlog::info("stop requested");
    server.stop();
  });
  server.run();
  spdlog::info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  monsoon::block_stop_signals();

  FrontendConfig config;
  BrokerLinkConfig link_config;
  std::int64_t default_timeout_ms = config.timeouts.default_timeout.count();
  std::int64_t max_timeout_ms = config.timeouts.max_timeout.count();
  std::int64_t idle_timeout_ms = config.idle_timeout.count();
  std::int64_t request_timeout_ms = config.request_timeout.count();
  std::int64_t drain_timeout_ms = config.drain_timeout.count();
  monsoon::ProcessOptions process;

  CLI::App app{
      "Monsoon HTTP front end: serves HTTP and runs jobs through the broker"};
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
                 "told to the broker with every job")
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
  monsoon::add_process_options(app, process, "the broker");
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

  monsoon::init_logging("frontend", process.log_level);
  try {
    return serve(config, link_config);
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
}
