#include "monsoon/common/process_options.hpp"

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <utility>
#include <vector>

namespace monsoon {
namespace {

constexpr const char* kPrintConfigFlag = "--print-config";
// The variable naming the config file when --config is not given.
constexpr const char* kConfigEnvironmentVariable = "MONSOON_CONFIG";

// The value of environment variable `name`, or nullptr when it is unset or
// empty (CLI11 skips an empty variable too).
const char* environment_value(const std::string& name) {
  const char* value = std::getenv(name.c_str());
  return value != nullptr && *value != '\0' ? value : nullptr;
}

// CLI11's TOML reader, with the file's keys checked against `app`: a key of
// no option is an error that names it, and a key whose option's environment
// variable is set is dropped, so that the environment wins over the file.
// (CLI11 2.1 applies the file first and the environment only to options
// still unset, which would rank the file above the environment.)
class EnvironmentFirstConfig : public CLI::ConfigTOML {
 public:
  explicit EnvironmentFirstConfig(const CLI::App& app) : app_(app) {}

  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override {
    std::vector<CLI::ConfigItem> items = CLI::ConfigTOML::from_config(input);
    std::erase_if(items, [this](const CLI::ConfigItem& item) {
      const CLI::Option* option = find(item);
      const std::string& variable = option->get_envname();
      return !variable.empty() && environment_value(variable) != nullptr;
    });
    return items;
  }

 private:
  // The option `item` sets, found the way CLI11 does. Throws
  // CLI::ConfigError for a key of no option, and for any section (Monsoon's
  // apps have no subcommands, which is what sections would configure).
  const CLI::Option* find(const CLI::ConfigItem& item) const {
    if (!item.parents.empty()) {
      const bool marker = item.name == "++" || item.name == "--";
      std::string section = item.parents.front();
      for (std::size_t i = 1; i < item.parents.size(); ++i) {
        section += '.' + item.parents[i];
      }
      throw CLI::ConfigError(marker ? "unknown section [" + section + "]"
                                    : "unknown key '" + item.fullname() + "'");
    }
    const CLI::Option* option = app_.get_option_no_throw("--" + item.name);
    if (option == nullptr && item.name.size() == 1) {
      option = app_.get_option_no_throw("-" + item.name);
    }
    if (option == nullptr) option = app_.get_option_no_throw(item.name);
    if (option == nullptr) {
      throw CLI::ConfigError("unknown key '" + item.name + "'");
    }
    return option;
  }

  const CLI::App& app_;
};

// `option`'s default as a TOML value. CLI11 keeps the default of a list
// option as one string, "[a,b]", which would be written as that string
// rather than as an array.
std::string default_value(const CLI::Option& option) {
  const std::string text = option.get_default_str();
  if (option.get_items_expected_max() > 1 && text.size() >= 2 &&
      text.front() == '[' && text.back() == ']') {
    return CLI::detail::ini_join(
        CLI::detail::split(text.substr(1, text.size() - 2), ','));
  }
  return CLI::detail::convert_arg_for_ini(text);
}

// What --print-config writes: every option `key = value`, after its
// description as a comment; an option with neither a value nor a default
// (its description says what it then means) commented out, as CLI11 2.1's
// own writer gives it an empty string that fails when read back.
std::string effective_config(const CLI::App& app) {
  std::ostringstream out;
  out << "# " << app.get_description()
      << "\n# Effective configuration; every key is an option's long name "
         "(see --help).\n";
  for (const CLI::Option* option : app.get_options()) {
    if (!option->get_configurable()) continue;
    out << '\n';
    if (option->has_description()) {
      out << "# " << option->get_description() << '\n';
    }
    const std::string key = option->get_lnames().front();
    const std::vector<std::string> values = option->reduced_results();
    if (!values.empty()) {
      out << key << " = " << CLI::detail::ini_join(values) << '\n';
    } else if (!option->get_default_str().empty()) {
      out << key << " = " << default_value(*option) << '\n';
    } else {
      out << "# " << key << " =\n";
    }
  }
  return out.str();
}

// The config file in use: the last --config, else MONSOON_CONFIG; empty
// when there is none.
std::string config_file(const CLI::App& app) {
  const CLI::Option* config = app.get_config_ptr();
  if (config == nullptr || config->count() == 0) return {};
  return config->results().back();
}

constexpr const char* kHelpFooter =
    "Configuration: every option can also be set in the environment, as "
    "MONSOON_ and its long name in capitals with '_' for '-' (shown as Env: "
    "above), or in a TOML config file (--config FILE, or MONSOON_CONFIG=FILE): "
    "one `name = value` per line, keyed by the long name without dashes, a "
    "list as an array (heartbeat-ms = 500, tasks = [\"echo\", \"sleep\"]). An "
    "unknown key is an error. The command line wins over the environment, "
    "which wins over the file, which wins over the default; a list is "
    "replaced, never merged. --print-config writes the effective "
    "configuration as a file to start from.";

}  // namespace

std::string environment_variable_name(std::string_view long_name) {
  std::string name = "MONSOON_";
  for (const char c : long_name) {
    const auto byte = static_cast<unsigned char>(c);
    name += std::isalnum(byte) ? static_cast<char>(std::toupper(byte)) : '_';
  }
  return name;
}

void add_config_sources(CLI::App& app) {
  for (CLI::Option* option : app.get_options()) {
    if (option == app.get_help_ptr()) {
      option->configurable(false);
      continue;
    }
    if (option->get_lnames().empty()) {
      throw std::invalid_argument("option " + option->get_name() +
                                  " has no long name to derive its "
                                  "environment variable from");
    }
    option->envname(environment_variable_name(option->get_lnames().front()));
  }
  CLI::Option* config =
      app.set_config("--config", "",
                     "TOML (or INI) file of option values keyed by long name; "
                     "the environment and the command line override it");
  // The last --config wins. CLI11 2.1 reads the file before it looks at the
  // environment, so MONSOON_CONFIG is added here, before the command line,
  // which therefore replaces it; its envname only shows it in --help.
  config->type_name("FILE")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast)
      ->envname(kConfigEnvironmentVariable);
  app.preparse_callback([config](std::size_t) {
    if (const char* file = environment_value(kConfigEnvironmentVariable)) {
      config->add_result(file);
    }
  });
  app.add_flag(kPrintConfigFlag)
      ->description("Print the effective configuration as TOML and exit")
      ->configurable(false);
  app.config_formatter(std::make_shared<EnvironmentFirstConfig>(app));
  // EnvironmentFirstConfig already rejects unknown keys; this keeps CLI11
  // from ever ignoring one (its default).
  app.allow_config_extras(CLI::config_extras_mode::error);
  app.footer(kHelpFooter);
}

std::optional<int> parse_options(CLI::App& app, int argc,
                                 const char* const* argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help
    return app.exit(e);
  } catch (const CLI::FileError&) {
    std::cerr << std::filesystem::path(app.get_name()).filename().string()
              << ": cannot read config file '" << config_file(app) << "'\n";
    return 2;
  } catch (const CLI::ConfigError& e) {
    std::cerr << std::filesystem::path(app.get_name()).filename().string()
              << ": config file '" << config_file(app) << "': " << e.what()
              << '\n';
    return 2;
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    if (const std::string file = config_file(app); !file.empty()) {
      std::cerr << "(options come from the command line, MONSOON_* variables "
                   "and config file '"
                << file << "')\n";
    }
    return 2;
  }
  if (app.get_option(kPrintConfigFlag)->count() > 0) {
    std::cout << effective_config(app);
    return 0;
  }
  return std::nullopt;
}

}  // namespace monsoon
