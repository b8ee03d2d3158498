#include "monsoon/cli/keygen.hpp"

#include <exception>
#include <filesystem>

#include "monsoon/common/curve_keys.hpp"

namespace monsoon::cli {

CLI::App* add_keygen_command(CLI::App& app, KeygenOptions& options) {
  CLI::App* keygen = app.add_subcommand(
      "keygen",
      "Write a new CurveZMQ key pair: DIR/NAME.key (secret, mode 0600) and "
      "DIR/NAME.pub (public); see docs/security.md");
  keygen
      ->add_option("NAME", options.name,
                   "Name of the key pair's files (letters, digits, '.', '_', "
                   "'-'; at most 64)")
      ->required()
      ->check(CLI::Validator(
          [](const std::string& name) -> std::string {
            return valid_curve_key_name(name)
                       ? std::string()
                       : "use 1 to 64 letters, digits, '.', '_' or '-'";
          },
          "", "key name"));
  keygen->add_option("--dir", options.directory, "Directory to write them in")
      ->capture_default_str();
  return keygen;
}

int run_keygen(const KeygenOptions& options, std::ostream& out,
               std::ostream& err) {
  const std::filesystem::path directory(options.directory);
  try {
    const CurveKeyPair keys = generate_curve_key_pair();
    write_curve_key_pair(directory, options.name, keys);
    out << "wrote " << (directory / (options.name + ".key")).string()
        << " (secret key, mode 0600: keep it private)\n"
        << "wrote " << (directory / (options.name + ".pub")).string()
        << " (public key)\n"
        << "public key: " << keys.public_key << '\n';
  } catch (const std::exception& e) {
    err << "monsoon keygen: " << e.what() << '\n';
    return 1;
  }
  return 0;
}

}  // namespace monsoon::cli
