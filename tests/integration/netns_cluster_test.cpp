// Monsoon across separate network hosts: the real binaries run in the network
// namespaces of scripts/netns-cluster.sh, each host with a network stack of
// its own, and reach each other only by the hosts' addresses over the bridge
// (nothing crosses hosts on 127.0.0.1). Needs root: where the machine cannot
// make namespaces, the test prints why after kSkipMarker, which CTest reports
// as a skip (SKIP_REGULAR_EXPRESSION in CMakeLists.txt).
#include "netns_cluster.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "stack.hpp"

using monsoon::test::ChildProcess;
using monsoon::test::Counters;
using monsoon::test::echoed;
using monsoon::test::eventually;
using monsoon::test::hold_request;
using monsoon::test::HttpBatch;
using monsoon::test::HttpRequest;
using monsoon::test::HttpResponse;
using monsoon::test::NetnsCluster;
using monsoon::test::NetnsUnsupported;
using monsoon::test::started_jobs;
using namespace std::chrono_literals;

namespace {

constexpr const char* kSkipMarker = "MONSOON-TEST-SKIPPED";

// Every host listens on the same ports: each has its own network stack.
constexpr const char* kClientPort = "5555";  // a broker's, for front ends
constexpr const char* kWorkerPort = "5556";  // a broker's, for workers
constexpr std::uint16_t kHttpPort = 8000;    // the front end's
// A death is seen at once (the connection drops); heartbeats only catch the
// silent ones. 500 ms rather than a stack's 200 ms: on a loaded machine, a
// live worker silent for 3 x 200 ms is taken for dead.
constexpr const char* kHeartbeatMs = "500";

// Two broker hosts, both active: the front end and every worker are given
// both endpoints. work1 and broker1 die together, with jobs in flight.
const std::vector<std::string> kBrokerHosts = {"broker1", "broker2"};
const std::vector<std::string> kKilledHosts = {"work1", "broker1"};

const std::vector<std::string> kWorkerHosts = {"work1", "work2"};
constexpr int kWorkersPerHost = 2;
// The order in which the processes stop at the end, as a stack's do: the
// front end first, so that no request waits on a stopped broker.
const std::vector<std::string> kStopOrder = {"front", "work1", "work2",
                                             "broker1", "broker2"};

// The host in a worker's name: workers are named <host>-<n>; by default the
// name would hold the machine's host name, which every namespace shares.
std::string host_of(const std::string& worker) {
  return worker.substr(0, worker.find('-'));
}

// "--broker E" for each endpoint, the option a front end and a worker take.
std::vector<std::string> broker_options(
    const std::vector<std::string>& endpoints) {
  std::vector<std::string> options;
  for (const auto& endpoint : endpoints) {
    options.insert(options.end(), {"--broker", endpoint});
  }
  return options;
}

// The processes the test runs, by host. Each is stopped by PID when the
// object goes (ChildProcess: SIGTERM, then SIGKILL after 10 s), in
// kStopOrder, before the cluster itself is brought down.
class Processes {
 public:
  explicit Processes(const NetnsCluster& cluster) : cluster_(cluster) {}
  ~Processes() {
    for (const auto& host : kStopOrder) by_host_.erase(host);
  }
  Processes(const Processes&) = delete;
  Processes& operator=(const Processes&) = delete;

  void start(const std::string& host, const std::string& executable,
             const std::string& name, const std::vector<std::string>& args) {
    by_host_[host].push_back(cluster_.start(
        host, executable, args, cluster_.directory() + "/" + name + ".log"));
  }
  std::vector<ChildProcess>& on(const std::string& host) {
    return by_host_.at(host);
  }
  // The host dies: SIGKILL to every process on it, then waits until they
  // are gone. False when one is still there 10 s later.
  bool kill_host(const std::string& host) {
    for (auto& process : by_host_.at(host)) process.signal(SIGKILL);
    return std::all_of(
        by_host_.at(host).begin(), by_host_.at(host).end(),
        [](ChildProcess& process) { return process.wait_exit(10s); });
  }
  std::string logs() const {
    std::string out;
    for (const auto& [host, processes] : by_host_) {
      for (const auto& process : processes) {
        out += "---- " + process.log_path() + "\n" + process.log();
      }
    }
    return out;
  }

 private:
  const NetnsCluster& cluster_;
  std::map<std::string, std::vector<ChildProcess>> by_host_;
};

// Polls until every worker takes jobs from the front end: two concurrent
// 100 ms sleep jobs per worker land on every one (a broker gives a job to an
// idle worker before a busy one). False at the timeout.
bool all_workers_serving(const NetnsCluster& cluster, std::size_t workers,
                         std::chrono::milliseconds timeout) {
  const HttpRequest sleep{.method = "POST",
                          .target = "/jobs/sleep",
                          .body = R"({"ms": 100})",
                          .headers = {}};
  return eventually(
      [&] {
        auto probe = cluster.on_host("front", [&] {
          return std::make_unique<HttpBatch>(
              cluster.address("front"), kHttpPort,
              std::vector<HttpRequest>(2 * workers, sleep));
        });
        probe->receive_all(10s);
        std::set<std::string> names;
        for (const auto& response : probe->responses()) {
          if (response.status == 200) {
            names.insert(response.header("x-monsoon-worker"));
          }
        }
        return names.size() == workers;
      },
      timeout);
}

}  // namespace

TEST_CASE("separate hosts share 1000 jobs and lose none when a host dies",
          "[integration][netns]") {
  monsoon::test::raise_open_files_limit();
  std::optional<NetnsCluster> cluster;
  try {
    // Names of this run's own: never a cluster a user left running.
    cluster.emplace("mnstest" + std::to_string(::getpid()) + "-",
                    "10.77.1.0/24");
  } catch (const NetnsUnsupported& unsupported) {
    WARN(kSkipMarker << ": " << unsupported.what());
    return;
  }
  Processes processes(*cluster);
  const std::string& directory = cluster->directory();

  std::vector<std::string> client_endpoints;
  std::vector<std::string> worker_endpoints;
  for (const auto& host : kBrokerHosts) {
    const std::string address = "tcp://" + cluster->address(host) + ":";
    client_endpoints.push_back(address + kClientPort);
    worker_endpoints.push_back(address + kWorkerPort);
    processes.start(
        host, MONSOON_BROKER_BIN, host,
        {"--client-endpoint", client_endpoints.back(), "--worker-endpoint",
         worker_endpoints.back(), "--heartbeat-ms", kHeartbeatMs});
  }
  for (const auto& host : kWorkerHosts) {
    for (int n = 1; n <= kWorkersPerHost; ++n) {
      const std::string name = host + "-" + std::to_string(n);
      // Async tasks only: one pool per process, with room for every job
      // at once.
      std::vector<std::string> args = {"--name",
                                       name,
                                       "--tasks",
                                       "echo,sleep,test.hold",
                                       "--async-concurrency",
                                       "1000",
                                       "--heartbeat-ms",
                                       kHeartbeatMs,
                                       "--drain-timeout-ms",
                                       "1000",
                                       "--db-path",
                                       directory + "/demo.sqlite3"};
      std::vector<std::string> brokers = broker_options(worker_endpoints);
      args.insert(args.end(), brokers.begin(), brokers.end());
      processes.start(host, MONSOON_TEST_WORKER_BIN, name, args);
    }
  }
  const std::string front = cluster->address("front");
  std::vector<std::string> frontend_args = {"--host",
                                            front,
                                            "--port",
                                            std::to_string(kHttpPort),
                                            "--heartbeat-ms",
                                            kHeartbeatMs,
                                            "--drain-timeout-ms",
                                            "1000"};
  std::vector<std::string> brokers = broker_options(client_endpoints);
  frontend_args.insert(frontend_args.end(), brokers.begin(), brokers.end());
  processes.start("front", MONSOON_FRONTEND_BIN, "frontend", frontend_args);

  const std::size_t workers = kWorkerHosts.size() * kWorkersPerHost;
  if (!all_workers_serving(*cluster, workers, 30s)) {
    FAIL("not every worker serves after 30 s\n" << processes.logs());
  }

  // Jobs 0-199 return at once, on both worker hosts; the other 800 hold
  // their slot 3 s, so that they are all in flight when work1 and broker1
  // die: those on work1 are dispatched again by broker2, and those broker1
  // held are sent again by the front end through broker2.
  constexpr int kJobs = 1000;
  constexpr int kShort = 200;
  std::vector<HttpRequest> requests;
  for (int i = 0; i < kJobs; ++i) {
    requests.push_back(hold_request(i, i < kShort ? 0 : 3000, 30s, directory));
  }
  auto batch = cluster->on_host("front", [&] {
    return std::make_unique<HttpBatch>(front, kHttpPort, requests);
  });
  REQUIRE(batch->send_all(20s));
  int answered = 0;
  const bool all_started = eventually(
      [&] {
        batch->receive_all(10ms);
        answered = static_cast<int>(
            std::count_if(batch->responses().begin(), batch->responses().end(),
                          [](const HttpResponse& r) {
                            return r.status != 0 || !r.error.empty();
                          }));
        return answered >= kShort && started_jobs(directory) == kJobs;
      },
      30s);
  if (!all_started) {
    FAIL(started_jobs(directory)
         << " jobs started, " << answered << " answered after 30 s\n"
         << processes.logs());
  }
  INFO("answered when the hosts died: " << answered);

  for (const auto& host : kKilledHosts) {
    REQUIRE(processes.kill_host(host));
    // Nothing else ran there: the host is gone as a whole.
    CHECK(cluster->processes(host).empty());
  }

  if (!batch->receive_all(40s)) {
    FAIL("not every job answered 40 s after the kill\n" << processes.logs());
  }
  std::map<std::string, int> served;  // by worker host
  int wrong = 0;
  for (int i = 0; i < kJobs; ++i) {
    const HttpResponse& response = batch->responses()[i];
    if (!echoed(response, requests[i])) {
      ++wrong;
      UNSCOPED_INFO("request " << i << ": " << response.status << " "
                               << response.error << " " << response.body);
    }
    ++served[host_of(response.header("x-monsoon-worker"))];
  }
  INFO("jobs by worker host: work1 " << served["work1"] << ", work2 "
                                     << served["work2"]);
  CHECK(wrong == 0);
  for (const auto& host : kWorkerHosts) CHECK(served[host] > 0);
  CHECK(batch->connections_with_extra_data(500ms) == 0);

  // What the surviving broker saw: work1's workers lost with jobs in
  // flight, and every such job dispatched again rather than failed.
  std::uint64_t requeued = 0;
  for (const auto& host : kBrokerHosts) {
    if (std::count(kKilledHosts.begin(), kKilledHosts.end(), host)) continue;
    ChildProcess& broker = processes.on(host).front();
    broker.signal(SIGTERM);
    REQUIRE(broker.wait_exit(15s));
    Counters stats = monsoon::test::broker_exit_stats(broker.log());
    INFO(host << ": " << monsoon::test::to_string(stats));
    // More when a live worker was taken for dead on a loaded machine.
    CHECK(stats["workers_lost"] >= kWorkersPerHost);
    CHECK(stats["failed_worker_lost"] == 0);
    requeued += stats["requeued"];
  }
  CHECK(requeued > 0);
  CHECK(processes.on("front").front().running());
}
