// Process-wide logging set-up (spdlog, stderr, one line per event with
// timestamp, level and process role). Call once from main before threads
// start; spdlog's default logger is thread-safe afterwards.
#pragma once

#include <string_view>

namespace monsoon {

// `level` is one of trace, debug, info, warn, error, off; throws
// std::invalid_argument for anything else.
void init_logging(std::string_view role, std::string_view level);

}  // namespace monsoon
