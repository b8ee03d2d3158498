// The command-line flags of the broker's dispatch policy, declared in one
// place so that they read, default and validate alike in monsoon-broker and
// in a front end that hosts the dispatcher (monsoon-frontend
// --worker-endpoint): --max-queue, --max-queued, --route, --max-attempts,
// --max-workers, --retry-after-ms, --retry-backoff-ms,
// --retry-backoff-max-ms, --in-flight-grace-ms. An invalid --route fails the
// parse with a CLI::ValidationError that quotes the rule (exit code 2
// through parse_options).
//
// Not declared here, as each process words them its own way: the endpoints,
// --max-message-bytes (DispatcherConfig::max_message_bytes comes from the
// broker's frame limit) and the heartbeat (add_process_options).
#pragma once

#include <vector>

#include "monsoon/broker/dispatcher.hpp"

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace monsoon::broker {

// Declares the flags on `app`, each writing its value into `config` while
// `app` parses; `config`'s values are the defaults shown by --help. `config`
// must outlive the parse. Returns the options declared, so that a caller
// may group them or make them depend on another flag.
std::vector<CLI::Option*> add_broker_options(CLI::App& app,
                                             DispatcherConfig& config);

}  // namespace monsoon::broker
