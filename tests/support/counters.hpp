// How integration tests read the counters Monsoon's processes expose: the
// front end's GET /metrics (Prometheus text), and the line the broker and a
// worker log when they stop. Pure parsing functions, any thread.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace monsoon::test {

using Counters = std::map<std::string, std::uint64_t>;

// "key=value key=value ...", for failure messages.
std::string to_string(const Counters& counters);

// "monsoon_frontend_<name>[{labels}] <value>" lines of /metrics (and other
// "monsoon_<name>..." series, such as monsoon_queue_*), keyed by
// "<name>[{labels}]"; comments and other lines are skipped.
Counters parse_metrics(const std::string& text);

// The key=value pairs of the last "broker stopped: ..." line in a broker's
// log (see to_string(DispatcherStats)); empty when there is none.
Counters broker_exit_stats(const std::string& log);

// The last "stopped: N job(s) received, ..." line in a worker's log, as
// received, succeeded, failed, malformed_dropped and reconnects; empty when
// there is none.
Counters worker_exit_stats(const std::string& log);

}  // namespace monsoon::test
