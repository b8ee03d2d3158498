#include "monsoon/broker/routing_table.hpp"

#include <stdexcept>
#include <utility>

#include "monsoon/common/protocol.hpp"

namespace monsoon::broker {
namespace {

[[noreturn]] void reject(std::string_view rule, std::string_view why) {
  throw std::invalid_argument("route '" + std::string(rule) +
                              "': " + std::string(why));
}

}  // namespace

RoutingTable::RoutingTable(const std::vector<std::string>& rules) {
  if (rules.size() > kMaxRules) {
    throw std::invalid_argument(std::to_string(rules.size()) +
                                " routes given, at most " +
                                std::to_string(kMaxRules) + " are allowed");
  }
  parsed_.reserve(rules.size());
  for (const std::string& rule : rules) {
    const std::size_t equals = rule.find('=');
    if (equals == std::string::npos) {
      reject(rule, "expected PATTERN=QUEUE");
    }
    std::string_view pattern = std::string_view(rule).substr(0, equals);
    const std::string_view queue = std::string_view(rule).substr(equals + 1);
    Rule parsed;
    parsed.wildcard = !pattern.empty() && pattern.back() == '*';
    if (parsed.wildcard) pattern.remove_suffix(1);
    if (pattern.find('*') != std::string_view::npos) {
      reject(rule, "'*' may only end the pattern");
    }
    // "*" alone leaves an empty prefix: it matches every task.
    if (!(parsed.wildcard && pattern.empty()) &&
        !protocol::is_valid_task_name(pattern)) {
      reject(rule,
             "the pattern is not a task name (1 to 128 of A-Z a-z 0-9 . _ : "
             "-), optionally followed by '*'");
    }
    if (!protocol::is_valid_task_name(queue)) {
      reject(rule,
             "the queue name is not valid (1 to 128 of A-Z a-z 0-9 . _ : -)");
    }
    for (const Rule& earlier : parsed_) {
      if (earlier.wildcard == parsed.wildcard && earlier.prefix == pattern) {
        reject(rule,
               "an earlier rule has the same pattern, and the first match "
               "wins: this one would never apply");
      }
    }
    parsed.prefix = pattern;
    parsed.queue = queue;
    parsed_.push_back(std::move(parsed));
  }
  rules_ = rules;
}

std::string_view RoutingTable::queue_for(std::string_view task) const noexcept {
  for (const Rule& rule : parsed_) {
    if (rule.wildcard ? task.starts_with(rule.prefix) : task == rule.prefix) {
      return rule.queue;
    }
  }
  return task;
}

}  // namespace monsoon::broker
