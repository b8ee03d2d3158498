// The flags every Monsoon process takes (--heartbeat-ms, --liveness,
// --log-level), declared in one place so that they read, default and
// validate alike everywhere. Used by the thin main() of each component.
#pragma once

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <string>

#include "monsoon/common/liveness.hpp"

namespace monsoon {

struct ProcessOptions {
  std::int64_t heartbeat_ms = 1000;
  int liveness = 3;
  std::string log_level = "info";

  HeartbeatSettings heartbeat() const {
    return {std::chrono::milliseconds(heartbeat_ms), liveness};
  }
};

// Declares the shared flags on `app`, bound to `options`; `silent_peer`
// names who is declared dead after --liveness silent intervals ("a worker",
// "the broker").
inline void add_process_options(CLI::App& app, ProcessOptions& options,
                                const std::string& silent_peer) {
  app.add_option("--heartbeat-ms", options.heartbeat_ms, "Heartbeat interval")
      ->check(CLI::Range(std::int64_t{10}, std::int64_t{3'600'000}))
      ->capture_default_str();
  app.add_option(
         "--liveness", options.liveness,
         "Silent heartbeat intervals before " + silent_peer + " counts as dead")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--log-level", options.log_level,
                 "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
      ->capture_default_str();
}

}  // namespace monsoon
