// `monsoon keygen NAME [--dir DIR]`: writes a new CurveZMQ key pair,
// DIR/NAME.key (secret, mode 0600) and DIR/NAME.pub (common/curve_keys.hpp),
// then prints both paths and the public key.
// Used on the main thread of the monsoon command.
#pragma once

#include <CLI/CLI.hpp>
#include <ostream>
#include <string>

namespace monsoon::cli {

struct KeygenOptions {
  std::string name;
  std::string directory = ".";
};

// Declares the keygen subcommand on `app`, bound to `options`, and returns
// it. A NAME that is not valid_curve_key_name is a usage error.
CLI::App* add_keygen_command(CLI::App& app, KeygenOptions& options);

// Generates and writes the key pair; reports on `out`. Returns the exit code:
// 0, or 1 after a one-line message on `err` (a file exists already, the
// directory is missing or not writable, libzmq lacks CURVE).
int run_keygen(const KeygenOptions& options, std::ostream& out,
               std::ostream& err);

}  // namespace monsoon::cli
