// The `monsoon` command: one subcommand per task (today: keygen). Called by
// cli/main.cpp on the main thread.
#pragma once

#include <ostream>

namespace monsoon::cli {

// Parses `argv` and runs the subcommand it names, writing to `out` and `err`.
// Returns the exit code: 0 on success and after --help, 1 when the
// subcommand failed (a one-line message on `err`), 2 for a usage error
// (missing or unknown subcommand, bad argument; CLI11's message on `err`).
int run(int argc, const char* const* argv, std::ostream& out,
        std::ostream& err);

}  // namespace monsoon::cli
