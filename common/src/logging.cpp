#include "monsoon/common/logging.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <stdexcept>
#include <string>

namespace monsoon {

void init_logging(std::string_view role, std::string_view level) {
  auto parsed = spdlog::level::from_str(std::string(level));
  // from_str maps unknown names to "off"; only accept "off" when asked for.
  if (parsed == spdlog::level::off && level != "off") {
    throw std::invalid_argument("unknown log level '" + std::string(level) +
                                "' (trace, debug, info, warn, error, off)");
  }
  auto logger = spdlog::stderr_logger_mt(std::string(role));
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n %P] %v");
  logger->set_level(parsed);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace monsoon
