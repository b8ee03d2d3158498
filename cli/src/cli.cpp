#include "monsoon/cli/cli.hpp"

#include <CLI/CLI.hpp>

#include "monsoon/cli/keygen.hpp"

namespace monsoon::cli {

int run(int argc, const char* const* argv, std::ostream& out,
        std::ostream& err) {
  CLI::App app{"Monsoon's command-line tool."};
  app.name("monsoon");
  app.require_subcommand(1);
  // The subcommand's callback runs it once its arguments are parsed.
  int exit_code = 0;
  KeygenOptions keygen_options;
  add_keygen_command(app, keygen_options)->callback([&] {
    exit_code = run_keygen(keygen_options, out, err);
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help exits 0; every other parse error is a usage error.
    const int code = app.exit(e, out, err);
    return code == 0 ? 0 : 2;
  }
  return exit_code;
}

}  // namespace monsoon::cli
