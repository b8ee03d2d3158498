// The broker's routing table (docs/protocol.md, "Named queues"): which queue
// a submitted job waits in. An ordered list of rules PATTERN=QUEUE; PATTERN
// is an exact task name, or a prefix followed by '*' ("images.*"; "*" alone
// matches every task). The first rule that matches a task names its queue;
// with none, the queue is named as the task (the default).
//
// A value type: copied into each DispatcherConfig, read by one thread at a
// time. Construction validates; lookups do not throw.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace monsoon::broker {

class RoutingTable {
 public:
  // Rules in one table, at most (--route given more often is an error).
  static constexpr std::size_t kMaxRules = 1024;

  // The empty table: every task to the queue of its own name.
  RoutingTable() = default;

  // Rules "PATTERN=QUEUE", first match wins. Throws std::invalid_argument,
  // with a message that quotes the offending rule, for a rule without '=',
  // a pattern that is not a task name (protocol::is_valid_task_name) with
  // an optional trailing '*' (a '*' anywhere else), a queue that is not a
  // valid queue name, or more than kMaxRules rules.
  explicit RoutingTable(const std::vector<std::string>& rules);

  // The queue of `task`: a rule's queue (owned by this table) or, when no
  // rule matches, `task` itself. The view lives as long as both.
  std::string_view queue_for(std::string_view task) const noexcept;

  // The rules as given, in order.
  const std::vector<std::string>& rules() const noexcept { return rules_; }

  bool operator==(const RoutingTable& other) const {
    return rules_ == other.rules_;
  }

 private:
  struct Rule {
    std::string prefix;  // the pattern without its '*'
    bool wildcard = false;
    std::string queue;
  };

  std::vector<std::string> rules_;
  std::vector<Rule> parsed_;
};

}  // namespace monsoon::broker
