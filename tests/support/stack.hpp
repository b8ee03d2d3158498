// A whole Monsoon stack of real processes on 127.0.0.1 for integration tests:
// one broker (or several, all active), N workers and one front end (or,
// brokerless, N workers and a front end that hosts the dispatcher), on ports
// chosen free at run time, with logs and the demo database in a private
// temporary directory.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "child_process.hpp"
#include "counters.hpp"
#include "eventually.hpp"
#include "http_batch.hpp"

namespace monsoon::test {

// How the front end reaches the workers (README, "Topologies"): through a
// broker process, or with the dispatcher in the front end itself
// (monsoon-frontend --worker-endpoint). Tests about behaviour that does not
// depend on it run in both: MONSOON_EACH_TOPOLOGY (each_topology.hpp).
enum class Topology { broker, brokerless };
std::ostream& operator<<(std::ostream& out, Topology topology);

struct StackOptions {
  // The usual variation: how many workers, with how many slots each (in
  // both default pools, thread tasks and async tasks), in which topology.
  static StackOptions pool(int workers, int concurrency,
                           Topology topology = Topology::broker) {
    StackOptions options;
    options.topology = topology;
    options.workers = workers;
    options.worker_concurrency = concurrency;
    return options;
  }

  Topology topology = Topology::broker;
  int workers = 1;
  int worker_concurrency = 2;
  int worker_async_concurrency = 0;  // 0: worker_concurrency
  // Arguments of every worker; with --queue, the two above are not passed
  // (the worker refuses them beside --queue).
  // Brokers, all active: the front end and every worker get all of them.
  // The broker topology only.
  int brokers = 1;
  // The dispatcher's flags: the broker's, or in the brokerless topology the
  // front end's (add_broker_options gives both the same flags).
  std::vector<std::string> broker_args;
  std::vector<std::string> worker_args;
  std::vector<std::string> frontend_args;
  // The worker executable; tests that need extra tasks use their own.
  std::string worker_executable = MONSOON_WORKER_BIN;
};

class Stack {
 public:
  // Starts every process and waits until an echo job makes the round trip.
  // Throws std::runtime_error (with the processes' logs) if it does not.
  explicit Stack(StackOptions options = {});
  ~Stack();

  Topology topology() const { return options_.topology; }
  std::uint16_t http_port() const { return http_port_; }
  // Broker 0's client endpoint; the broker topology only (the brokerless
  // one has none).
  const std::string& client_endpoint() const;
  // Broker 0's worker endpoint, or the brokerless front end's.
  const std::string& worker_endpoint() const { return worker_endpoints_[0]; }
  const std::string& directory() const { return directory_; }

  // A request to the front end, waiting at most `timeout` for the answer.
  HttpResponse request(HttpRequest request, std::chrono::milliseconds timeout =
                                                std::chrono::seconds(30)) const;
  HttpResponse get(const std::string& target) const;
  HttpResponse post_json(const std::string& target,
                         const std::string& body) const;

  // The front end's GET /metrics, parsed; empty when it does not answer 200.
  Counters frontend_metrics() const;
  // Jobs the front end awaits a result for (its jobs_pending gauge).
  std::uint64_t pending_jobs() const;

  // Polls until every worker started so far takes jobs: among four
  // concurrent 100 ms sleep jobs per worker, every worker runs one (a broker
  // gives a job to an idle worker before a busy one). False at the timeout.
  bool all_workers_serving(std::chrono::milliseconds timeout);

  // SIGTERM to the broker; waits for it to exit and returns the counters of
  // its final stats line. Throws std::runtime_error (with the logs) when it
  // does not exit within 15 s or logs no stats. Brokerless, the dispatcher
  // stops with the front end that hosts it: this stops the front end.
  Counters stop_broker();
  // The same for workers()[index], with its final counters.
  Counters stop_worker(std::size_t index);

  // The broker topology only: throws std::logic_error in the other.
  ChildProcess& broker(std::size_t index = 0);
  ChildProcess& frontend() { return frontend_.at(0); }
  // start_worker() may move the elements: take references anew after it.
  std::vector<ChildProcess>& workers() { return workers_; }

  // (Re)starts broker `index` on its endpoints; the broker topology only
  // (std::logic_error).
  void start_broker(std::size_t index = 0);
  void start_worker(const std::vector<std::string>& extra_args = {});
  // Everything each process printed, for failure messages.
  std::string logs() const;

 private:
  void start_frontend();

  StackOptions options_;
  std::string directory_;
  std::uint16_t http_port_ = 0;
  std::vector<std::string> client_endpoints_;
  std::vector<std::string> worker_endpoints_;
  std::vector<std::optional<ChildProcess>> brokers_;  // by index
  std::vector<ChildProcess> workers_;
  std::vector<ChildProcess> frontend_;
};

// Jobs of the built-in sleep task with deadline `timeout`: request i sleeps
// first_ms + i ms, so its result {"slept_ms": first_ms + i} tells it apart
// from every other request's.
std::vector<HttpRequest> sleep_requests(int count, int first_ms,
                                        std::chrono::milliseconds timeout);
// Whether `response` is the 200 of a sleep job of `ms`.
bool slept(const HttpResponse& response, int ms);

// A job of the test worker's test.hold task (MONSOON_TEST_WORKER_BIN): it
// creates the file <directory>/mark-<index> when it starts, then waits `ms`;
// its answer is its own args, so each request recognises its result.
HttpRequest hold_request(int index, int ms, std::chrono::milliseconds timeout,
                         const std::string& directory);
// Jobs 0 .. count-1 of test.hold, each waiting `ms`.
std::vector<HttpRequest> hold_requests(int count, int ms,
                                       std::chrono::milliseconds timeout,
                                       const std::string& directory);
// How many test.hold jobs marking `directory` have started (a job that runs
// again marks the same file).
int started_jobs(const std::string& directory);
// Whether `response` is the 200 of a job answering its own args (test.hold,
// echo).
bool echoed(const HttpResponse& response, const HttpRequest& request);

// A TCP port on 127.0.0.1 that was free a moment ago.
std::uint16_t free_port();

// Raises this process's open-files limit to its hard limit (children inherit
// it), for tests that hold thousands of connections.
void raise_open_files_limit();

}  // namespace monsoon::test
