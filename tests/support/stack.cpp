#include "stack.hpp"

#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

namespace monsoon::test {

std::ostream& operator<<(std::ostream& out, Topology topology) {
  return out << (topology == Topology::broker ? "broker" : "brokerless");
}

std::uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

std::vector<HttpRequest> sleep_requests(int count, int first_ms,
                                        std::chrono::milliseconds timeout) {
  std::vector<HttpRequest> requests;
  for (int i = 0; i < count; ++i) {
    requests.push_back(
        {.method = "POST",
         .target = "/jobs/sleep?timeout_ms=" + std::to_string(timeout.count()),
         .body = nlohmann::json{{"ms", first_ms + i}}.dump(),
         .headers = {{"Content-Type", "application/json"}}});
  }
  return requests;
}

bool slept(const HttpResponse& response, int ms) {
  return response.status == 200 &&
         nlohmann::json::parse(response.body, nullptr, false) ==
             nlohmann::json{{"slept_ms", ms}};
}

HttpRequest hold_request(int index, int ms, std::chrono::milliseconds timeout,
                         const std::string& directory) {
  return {
      .method = "POST",
      .target = "/jobs/test.hold?timeout_ms=" + std::to_string(timeout.count()),
      .body =
          nlohmann::json{{"ms", ms},
                         {"mark", directory + "/mark-" + std::to_string(index)}}
              .dump(),
      .headers = {{"Content-Type", "application/json"}}};
}

std::vector<HttpRequest> hold_requests(int count, int ms,
                                       std::chrono::milliseconds timeout,
                                       const std::string& directory) {
  std::vector<HttpRequest> requests;
  for (int i = 0; i < count; ++i) {
    requests.push_back(hold_request(i, ms, timeout, directory));
  }
  return requests;
}

int started_jobs(const std::string& directory) {
  int marks = 0;
  for (const auto& entry : std::filesystem::directory_iterator(directory)) {
    if (entry.path().filename().string().starts_with("mark-")) ++marks;
  }
  return marks;
}

bool echoed(const HttpResponse& response, const HttpRequest& request) {
  return response.status == 200 &&
         nlohmann::json::parse(response.body, nullptr, false) ==
             nlohmann::json::parse(request.body);
}

void raise_open_files_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 &&
      limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
}

namespace {

std::string comma_list(const std::vector<std::string>& items) {
  std::string list;
  for (const auto& item : items) {
    if (!list.empty()) list += ',';
    list += item;
  }
  return list;
}

}  // namespace

Stack::Stack(StackOptions options) : options_(std::move(options)) {
  std::string pattern =
      (std::filesystem::temp_directory_path() / "monsoon-test-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr)
    throw std::runtime_error("mkdtemp failed");
  directory_ = pattern;
  http_port_ = free_port();
  const int brokers =
      options_.topology == Topology::broker ? std::max(options_.brokers, 1) : 1;
  for (int i = 0; i < brokers; ++i) {
    client_endpoints_.push_back("tcp://127.0.0.1:" +
                                std::to_string(free_port()));
    worker_endpoints_.push_back("tcp://127.0.0.1:" +
                                std::to_string(free_port()));
  }

  // Whoever binds the worker endpoint first; workers connect (and
  // reconnect) on their own.
  if (options_.topology == Topology::broker) {
    for (int i = 0; i < brokers; ++i) start_broker(static_cast<std::size_t>(i));
    for (int i = 0; i < options_.workers; ++i) start_worker();
    start_frontend();
  } else {
    start_frontend();
    for (int i = 0; i < options_.workers; ++i) start_worker();
  }

  bool ready = eventually(
      [&] {
        HttpRequest echo{.method = "POST",
                         .target = "/jobs/echo?timeout_ms=1000",
                         .body = "\"ping\"",
                         .headers = {}};
        return http_request(http_port_, echo, std::chrono::seconds(2)).status ==
               200;
      },
      std::chrono::seconds(20));
  if (!ready) {
    throw std::runtime_error("the stack did not answer an echo job in 20 s\n" +
                             logs());
  }
}

Stack::~Stack() {
  // Front end first, so no request is left waiting on a stopped broker.
  frontend_.clear();
  workers_.clear();
  brokers_.clear();
  std::error_code ignored;
  std::filesystem::remove_all(directory_, ignored);
}

void Stack::start_frontend() {
  std::vector<std::string> args = {"--host",         "127.0.0.1",
                                   "--port",         std::to_string(http_port_),
                                   "--heartbeat-ms", "200"};
  if (options_.topology == Topology::broker) {
    args.insert(args.end(), {"--broker", comma_list(client_endpoints_)});
  } else {
    args.insert(args.end(), {"--worker-endpoint", worker_endpoints_[0]});
    args.insert(args.end(), options_.broker_args.begin(),
                options_.broker_args.end());
  }
  // A flag given twice is refused: the test's own drain timeout wins.
  const auto& extra = options_.frontend_args;
  if (std::find(extra.begin(), extra.end(), "--drain-timeout-ms") ==
      extra.end()) {
    args.insert(args.end(), {"--drain-timeout-ms", "1000"});
  }
  args.insert(args.end(), extra.begin(), extra.end());
  frontend_.emplace_back(MONSOON_FRONTEND_BIN, args,
                         directory_ + "/frontend.log");
}

const std::string& Stack::client_endpoint() const {
  if (options_.topology != Topology::broker)
    throw std::logic_error("a brokerless stack has no client endpoint");
  return client_endpoints_[0];
}

ChildProcess& Stack::broker(std::size_t index) {
  if (options_.topology != Topology::broker)
    throw std::logic_error("a brokerless stack has no broker process");
  return *brokers_.at(index);
}

void Stack::start_broker(std::size_t index) {
  if (options_.topology != Topology::broker)
    throw std::logic_error("a brokerless stack has no broker process");
  std::vector<std::string> args = {
      "--client-endpoint", client_endpoints_.at(index),
      "--worker-endpoint", worker_endpoints_.at(index),
      "--heartbeat-ms",    "200"};
  args.insert(args.end(), options_.broker_args.begin(),
              options_.broker_args.end());
  const std::string log =
      directory_ + (index == 0 ? std::string("/broker.log")
                               : "/broker-" + std::to_string(index) + ".log");
  if (index >= brokers_.size()) brokers_.resize(index + 1);
  // The old one is stopped first (ChildProcess's destructor), then the new
  // one binds the same endpoints.
  brokers_[index].reset();
  brokers_[index].emplace(MONSOON_BROKER_BIN, args, log);
}

void Stack::start_worker(const std::vector<std::string>& extra_args) {
  std::string name = "worker-" + std::to_string(workers_.size() + 1);
  std::vector<std::string> args = {
      "--broker",  comma_list(worker_endpoints_), "--name",         name,
      "--db-path", directory_ + "/demo.sqlite3",  "--heartbeat-ms", "200"};
  args.insert(args.end(), options_.worker_args.begin(),
              options_.worker_args.end());
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  // The default pools' sizes, which the worker refuses beside --queue.
  if (std::find(args.begin(), args.end(), "--queue") == args.end()) {
    args.insert(args.end(),
                {"--concurrency", std::to_string(options_.worker_concurrency),
                 "--async-concurrency",
                 std::to_string(options_.worker_async_concurrency > 0
                                    ? options_.worker_async_concurrency
                                    : options_.worker_concurrency)});
  }
  workers_.emplace_back(options_.worker_executable, args,
                        directory_ + "/" + name + ".log");
}

HttpResponse Stack::request(HttpRequest request,
                            std::chrono::milliseconds timeout) const {
  return http_request(http_port_, std::move(request), timeout);
}

HttpResponse Stack::get(const std::string& target) const {
  return request(
      {.method = "GET", .target = target, .body = {}, .headers = {}});
}

HttpResponse Stack::post_json(const std::string& target,
                              const std::string& body) const {
  return request({.method = "POST",
                  .target = target,
                  .body = body,
                  .headers = {{"Content-Type", "application/json"}}});
}

Counters Stack::frontend_metrics() const {
  HttpResponse metrics = get("/metrics");
  return metrics.status == 200 ? parse_metrics(metrics.body) : Counters{};
}

std::uint64_t Stack::pending_jobs() const {
  Counters metrics = frontend_metrics();
  return metrics["jobs_pending"];
}

bool Stack::all_workers_serving(std::chrono::milliseconds timeout) {
  const std::size_t count = workers_.size();
  return eventually(
      [&] {
        // Four per worker: with several brokers, each picks the idle
        // workers it sees, and two of them may pick the same ones.
        HttpBatch probe(http_port_,
                        std::vector<HttpRequest>(
                            4 * count, HttpRequest{.method = "POST",
                                                   .target = "/jobs/sleep",
                                                   .body = R"({"ms": 100})",
                                                   .headers = {}}));
        probe.receive_all(std::chrono::seconds(10));
        std::set<std::string> names;
        for (const auto& response : probe.responses()) {
          if (response.status == 200)
            names.insert(response.header("x-monsoon-worker"));
        }
        return names.size() == count;
      },
      timeout);
}

namespace {

Counters stop_and_read(ChildProcess& process, const Stack& stack,
                       Counters (*read)(const std::string&)) {
  process.signal(SIGTERM);
  if (!process.wait_exit(std::chrono::seconds(15))) {
    throw std::runtime_error(process.log_path() +
                             ": still running 15 s after SIGTERM\n" +
                             stack.logs());
  }
  Counters counters = read(process.log());
  if (counters.empty()) {
    throw std::runtime_error(process.log_path() + ": no final stats\n" +
                             stack.logs());
  }
  return counters;
}

}  // namespace

Counters Stack::stop_broker() {
  ChildProcess& host =
      options_.topology == Topology::broker ? broker() : frontend();
  return stop_and_read(host, *this, broker_exit_stats);
}

Counters Stack::stop_worker(std::size_t index) {
  return stop_and_read(workers_.at(index), *this, worker_exit_stats);
}

std::string Stack::logs() const {
  std::string out;
  auto append = [&out](const std::vector<ChildProcess>& processes) {
    for (const auto& process : processes) {
      out += "---- " + process.log_path() + "\n" + process.log();
    }
  };
  for (const auto& broker : brokers_) {
    if (broker) out += "---- " + broker->log_path() + "\n" + broker->log();
  }
  append(workers_);
  append(frontend_);
  return out;
}

}  // namespace monsoon::test
