#include "counters.hpp"

#include <regex>
#include <sstream>

namespace monsoon::test {
namespace {

// The front end's own series, and the others of its /metrics (the queues of
// a dispatcher it hosts: monsoon_queue_*).
constexpr std::string_view kFrontendPrefix = "monsoon_frontend_";
constexpr std::string_view kMetricPrefix = "monsoon_";

}  // namespace

std::string to_string(const Counters& counters) {
  std::string out;
  for (const auto& [key, value] : counters) {
    if (!out.empty()) out += ' ';
    out += key + "=" + std::to_string(value);
  }
  return out;
}

Counters parse_metrics(const std::string& text) {
  Counters counters;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(kMetricPrefix, 0) != 0) continue;
    auto space = line.rfind(' ');
    if (space == std::string::npos) continue;
    const std::size_t prefix = line.rfind(kFrontendPrefix, 0) == 0
                                   ? kFrontendPrefix.size()
                                   : kMetricPrefix.size();
    counters[line.substr(prefix, space - prefix)] =
        std::stoull(line.substr(space + 1));
  }
  return counters;
}

Counters broker_exit_stats(const std::string& log) {
  constexpr std::string_view kMarker = "broker stopped: ";
  auto at = log.rfind(kMarker);
  if (at == std::string::npos) return {};
  std::istringstream pairs(log.substr(
      at + kMarker.size(), log.find('\n', at) - at - kMarker.size()));
  Counters counters;
  std::string pair;
  while (pairs >> pair) {
    auto equals = pair.find('=');
    if (equals == std::string::npos) continue;
    counters[pair.substr(0, equals)] = std::stoull(pair.substr(equals + 1));
  }
  return counters;
}

Counters worker_exit_stats(const std::string& log) {
  static const std::regex kLine(
      R"(stopped: (\d+) job\(s\) received, (\d+) succeeded, (\d+) failed, )"
      R"((\d+) malformed message\(s\) dropped, (\d+) reconnect\(s\))");
  Counters counters;
  for (std::sregex_iterator it(log.begin(), log.end(), kLine), end; it != end;
       ++it) {
    const std::smatch& match = *it;
    counters = {{"received", std::stoull(match[1])},
                {"succeeded", std::stoull(match[2])},
                {"failed", std::stoull(match[3])},
                {"malformed_dropped", std::stoull(match[4])},
                {"reconnects", std::stoull(match[5])}};
  }
  return counters;
}

}  // namespace monsoon::test
