// The options every Monsoon process takes, and where options come from.
//
// add_process_options() declares the shared options (--heartbeat-ms,
// --liveness, --log-level) so that they read, default and validate alike
// everywhere. add_config_sources() and parse_options() then let every option
// of a process be set, from the highest precedence to the lowest:
//
//   1. on the command line: --heartbeat-ms 500
//   2. in the environment:  MONSOON_HEARTBEAT_MS=500
//   3. in a config file:    heartbeat-ms = 500 (--config FILE or
//                           MONSOON_CONFIG=FILE; TOML, simple INI too)
//   4. the built-in default
//
// A source replaces what a lower one set, for list options too (they never
// merge). The config file is read by CLI11 (set_config); CLI11 2.1 itself
// ranks the file above the environment, so the file's keys whose variable is
// set are dropped before CLI11 applies them. Unknown keys are errors.
// Used by the thin main() of each component, on its main thread.
#pragma once

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

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

// The environment variable that sets the option of long name `long_name`
// (without dashes): "MONSOON_" + the name upper-cased, with every character
// that is not a letter or digit as '_' ("heartbeat-ms" ->
// "MONSOON_HEARTBEAT_MS").
std::string environment_variable_name(std::string_view long_name);

// Adds --config FILE (or MONSOON_CONFIG) and --print-config to `app`, gives
// every other option its environment variable (environment_variable_name of
// its first long name), makes the config file's unknown keys errors and
// explains all of it at the end of --help. REQUIRES: every option of `app`
// is declared, each has a long name, and `app` has no subcommands; called
// once per app. Throws std::invalid_argument for an option without a long
// name.
void add_config_sources(CLI::App& app);

// Parses `argv` with `app` (add_config_sources() called). Returns nullopt
// when the process should run with what was parsed; otherwise the process's
// exit code: 0 after --help or --print-config, 2 after a message on stderr
// for any invalid option, variable or config file (missing or unreadable,
// unknown key, bad value; a message about the file names it).
// --print-config prints the effective configuration as a TOML config file
// on stdout: each option's description as a comment, then `key = value`, or
// `# key =` for an option with neither a value nor a default.
std::optional<int> parse_options(CLI::App& app, int argc,
                                 const char* const* argv);

}  // namespace monsoon
