#include "monsoon/frontend/http_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <thread>
#include <vector>

#include "fake_broker.hpp"
#include "monsoon/common/value.hpp"
#include "test_support.hpp"

using namespace monsoon::frontend;
using namespace monsoon::frontend::test;
using Json = nlohmann::json;

namespace {

struct HttpReply {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;

  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

std::string lower(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(c));
  return text;
}

// A blocking HTTP/1.1 client on a raw socket, so that tests control exactly
// which bytes go out (pipelining, malformed requests, disconnects). Reads
// time out after 5 s so that a missing response fails instead of hanging.
class Client {
 public:
  explicit Client(std::uint16_t port) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    REQUIRE(fd_ >= 0);
    timeval timeout{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&address),
                      sizeof address) == 0);
  }
  ~Client() { close(); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  void send(std::string_view bytes) {
    while (!bytes.empty()) {
      auto sent = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      REQUIRE(sent > 0);
      bytes.remove_prefix(static_cast<std::size_t>(sent));
    }
  }

  // The next complete response; nullopt when the server closed first. A
  // response to HEAD (`head`) has no content, whatever its Content-Length.
  std::optional<HttpReply> receive(bool head = false) {
    for (;;) {
      if (auto reply = parse(head)) return reply;
      if (!fill()) return std::nullopt;
    }
  }

  // The next header block, up to its blank line, as it came (for an
  // interim response such as 100 Continue); "" when the server closed first.
  std::string receive_header_block() {
    for (;;) {
      if (auto end = buffer_.find("\r\n\r\n"); end != std::string::npos) {
        std::string block = buffer_.substr(0, end + 4);
        buffer_.erase(0, end + 4);
        return block;
      }
      if (!fill()) return "";
    }
  }

  // True when the server closes the connection (no further bytes).
  bool closed_by_server() { return buffer_.empty() && !fill(); }

  // Sends without failing the test when the server has closed or reset the
  // connection; false then.
  bool try_send(std::string_view bytes) {
    return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(bytes.size());
  }

  // Without waiting: whether the server has closed or reset the connection.
  bool closed_now() {
    char byte;
    auto got = ::recv(fd_, &byte, 1, MSG_DONTWAIT | MSG_PEEK);
    return got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
  }

  HttpReply exchange(std::string_view request) {
    send(request);
    auto reply = receive(request.starts_with("HEAD "));
    REQUIRE(reply);
    return *reply;
  }

 private:
  bool fill() {
    char chunk[65536];
    auto got = ::recv(fd_, chunk, sizeof chunk, 0);
    if (got <= 0) return false;
    buffer_.append(chunk, static_cast<std::size_t>(got));
    return true;
  }

  std::optional<HttpReply> parse(bool to_head) {
    auto head_end = buffer_.find("\r\n\r\n");
    if (head_end == std::string::npos) return std::nullopt;
    // Whatever the previous response left behind (say, content after a
    // HEAD's header) would show here.
    REQUIRE(buffer_.starts_with("HTTP/1."));
    HttpReply reply;
    std::string head = buffer_.substr(0, head_end);
    reply.status = std::stoi(head.substr(9, 3));
    std::size_t line_start = head.find("\r\n");
    while (line_start != std::string::npos) {
      line_start += 2;
      auto line_end = head.find("\r\n", line_start);
      std::string line = head.substr(line_start, line_end - line_start);
      auto colon = line.find(':');
      reply.headers[lower(line.substr(0, colon))] = line.substr(colon + 2);
      line_start = line_end;
    }
    std::size_t length =
        to_head ? 0 : std::stoul(reply.header("content-length"));
    if (buffer_.size() < head_end + 4 + length) return std::nullopt;
    reply.body = buffer_.substr(head_end + 4, length);
    buffer_.erase(0, head_end + 4 + length);
    return reply;
  }

  int fd_;
  std::string buffer_;
};

std::string request(std::string_view method, std::string_view target,
                    std::string_view body = {}, std::string_view headers = {}) {
  std::string text = std::string(method) + " " + std::string(target) +
                     " HTTP/1.1\r\nHost: test\r\n";
  if (!body.empty() || method == "POST") {
    text += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  }
  text += headers;
  text += "\r\n";
  text += body;
  return text;
}

using Configure = std::function<void(FrontendConfig&)>;

FrontendConfig test_config(const Configure& configure = {}) {
  FrontendConfig config;
  config.port = 0;
  config.max_body_bytes = 1024;
  config.max_header_bytes = 1024;
  if (configure) configure(config);
  return config;
}

// A server on a free port, serving on a thread of its own until destroyed.
class RunningServer {
 public:
  RunningServer(const FrontendConfig& config, JobLink& link)
      : server_(config, link),
        served_(std::async(std::launch::async, [this] { server_.run(); })) {}
  ~RunningServer() {
    server_.stop();
    served_.wait();
  }

  std::uint16_t port() const { return server_.port(); }
  HttpServer& server() { return server_; }
  bool stopped_within(std::chrono::milliseconds timeout) {
    return served_.wait_for(timeout) == std::future_status::ready;
  }

 private:
  HttpServer server_;
  std::future<void> served_;
};

// A server with a BrokerLink to a fake broker.
class Fixture {
 public:
  explicit Fixture(bool echo_jobs = true, const Configure& configure = {})
      : broker_(echo_jobs), link_(link_config(broker_.endpoint())) {
    broker_.set_worker_name("w1");
    running_.emplace(test_config(configure), link_);
    REQUIRE(eventually([&] { return link_.reachable(); }, 5s));
  }

  std::uint16_t port() const { return running_->port(); }
  FakeBroker& broker() { return broker_; }
  HttpServer& server() { return running_->server(); }
  bool stopped_within(std::chrono::milliseconds timeout) {
    return running_->stopped_within(timeout);
  }

 private:
  static BrokerLinkConfig link_config(const std::string& endpoint) {
    BrokerLinkConfig config;
    config.endpoints = {endpoint};
    config.heartbeat.interval = 50ms;
    return config;
  }

  FakeBroker broker_;
  BrokerLink link_;
  std::optional<RunningServer> running_;
};

// A JobLink that keeps every job for the test to complete by hand, and can
// fail the way a link must not: throw from submit() after taking the job.
class ManualLink final : public JobLink {
 public:
  explicit ManualLink(std::size_t max_args_bytes = 1u << 20)
      : max_args_bytes_(max_args_bytes) {}

  void submit(std::string, std::string args, std::chrono::milliseconds,
              JobCompletion completion) override {
    std::lock_guard lock(mutex_);
    jobs_.push_back({std::move(args), std::move(completion)});
    if (throw_after_taking_) throw std::runtime_error("injected fault");
  }
  bool reachable() const noexcept override { return true; }
  BrokerLinkStats stats() const noexcept override { return {}; }
  std::size_t max_args_bytes() const noexcept override {
    return max_args_bytes_;
  }

  void throw_after_taking(bool fail) {
    std::lock_guard lock(mutex_);
    throw_after_taking_ = fail;
  }
  std::size_t jobs() {
    std::lock_guard lock(mutex_);
    return jobs_.size();
  }
  // Completes the index-th job with `outcome` (on the test's thread, as a
  // link thread would).
  void complete(std::size_t index, JobOutcome outcome) {
    JobCompletion completion;
    {
      std::lock_guard lock(mutex_);
      completion = jobs_.at(index).completion;
    }
    completion(std::move(outcome));
  }

 private:
  struct Job {
    std::string args;
    JobCompletion completion;
  };
  const std::size_t max_args_bytes_;
  std::mutex mutex_;
  std::vector<Job> jobs_;
  bool throw_after_taking_ = false;
};

// Whether connecting to `port` on 127.0.0.1 is refused (nobody listens).
bool connection_refused(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool refused =
      ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0;
  ::close(fd);
  return refused;
}

}  // namespace

TEST_CASE("GET /now answers at once with the time") {
  Fixture fixture;
  Client client(fixture.port());
  HttpReply reply = client.exchange(request("GET", "/now"));
  CHECK(reply.status == 200);
  CHECK(reply.header("server") == "monsoon");
  CHECK(reply.header("content-type") == "application/json");
  CHECK(reply.header("connection") != "close");
  auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  Json body = Json::parse(reply.body);
  CHECK(std::abs(body["now_unix_ms"].get<std::int64_t>() - now_ms) < 5000);
  CHECK(body["now"].get<std::string>().back() == 'Z');
}

TEST_CASE("POST /jobs/{task} returns the task's result as JSON") {
  Fixture fixture;
  Client client(fixture.port());
  const std::string args = R"({"n":[1,-2,3.5],"s":"héllo"})";
  HttpReply reply = client.exchange(request(
      "POST", "/jobs/echo", args, "Content-Type: application/json\r\n"));
  CHECK(reply.status == 200);
  CHECK(Json::parse(reply.body) == Json::parse(args));
  CHECK(reply.header("x-monsoon-worker") == "w1");

  // Keep-alive: the same connection serves the next request; an empty body
  // means null args.
  HttpReply empty = client.exchange(request("POST", "/jobs/echo"));
  CHECK(empty.status == 200);
  CHECK(empty.body == "null");

  auto job = fixture.broker().wait_for_job(1, 1s);
  REQUIRE(job);
  CHECK(job->args == std::string("\xc0", 1));
}

TEST_CASE("MessagePack in and out") {
  Fixture fixture;
  Client client(fixture.port());
  Json args = {{"bytes", Json::binary({0, 1, 255})}};
  std::string packed = monsoon::to_msgpack(args);
  HttpReply reply =
      client.exchange(request("POST", "/jobs/echo", packed,
                              "Content-Type: application/msgpack\r\n"
                              "Accept: application/msgpack\r\n"));
  CHECK(reply.status == 200);
  CHECK(reply.header("content-type") == "application/msgpack");
  CHECK(reply.body == packed);

  HttpReply as_json = client.exchange(request(
      "POST", "/jobs/echo", packed, "Content-Type: application/msgpack\r\n"));
  CHECK(as_json.status == 200);
  CHECK(Json::parse(as_json.body) == Json{{"bytes", "AAH/"}});
}

TEST_CASE("a result JSON cannot carry gets 406; MessagePack clients get it") {
  Fixture fixture;  // the fake broker answers each job with its args
  Client client(fixture.port());
  const std::string nan("\x81\xa1n\xcb\x7f\xf8\0\0\0\0\0\0", 12);
  HttpReply refused = client.exchange(request(
      "POST", "/jobs/echo", nan, "Content-Type: application/msgpack\r\n"));
  CHECK(refused.status == 406);
  CHECK(refused.header("content-type") == "application/json");
  Json error = Json::parse(refused.body)["error"];
  CHECK(error["code"] == "not_acceptable");
  CHECK_THAT(error["message"].get<std::string>(),
             Catch::Contains("Accept: application/msgpack"));

  HttpReply exact =
      client.exchange(request("POST", "/jobs/echo", nan,
                              "Content-Type: application/msgpack\r\n"
                              "Accept: application/msgpack\r\n"));
  CHECK(exact.status == 200);
  CHECK(exact.body == nan);
}

TEST_CASE("GET /query/{flag} submits db.query") {
  Fixture fixture;
  Client client(fixture.port());
  HttpReply reply = client.exchange(request("GET", "/query/-3"));
  CHECK(reply.status == 200);
  CHECK(Json::parse(reply.body) == Json{{"flag", -3}});
  auto job = fixture.broker().wait_for_job(0, 1s);
  REQUIRE(job);
  CHECK(job->task == "db.query");
}

TEST_CASE("bad requests get a JSON error and the right status") {
  Fixture fixture;
  Client client(fixture.port());

  HttpReply bad_json = client.exchange(request(
      "POST", "/jobs/echo", R"({"a": )", "Content-Type: application/json\r\n"));
  CHECK(bad_json.status == 400);
  CHECK(Json::parse(bad_json.body)["error"]["code"] == "bad_request");

  HttpReply bad_msgpack =
      client.exchange(request("POST", "/jobs/echo", "\x92\x01",
                              "Content-Type: application/msgpack\r\n"));
  CHECK(bad_msgpack.status == 400);

  HttpReply wrong_type = client.exchange(
      request("POST", "/jobs/echo", "x=1", "Content-Type: text/plain\r\n"));
  CHECK(wrong_type.status == 415);

  // What curl -d sends by default is read as JSON.
  HttpReply curl_default = client.exchange(
      request("POST", "/jobs/echo", "x=1",
              "Content-Type: application/x-www-form-urlencoded\r\n"));
  CHECK(curl_default.status == 400);
  CHECK(Json::parse(curl_default.body)["error"]["message"]
            .get<std::string>()
            .find("invalid body") != std::string::npos);

  HttpReply not_found = client.exchange(request("GET", "/nope"));
  CHECK(not_found.status == 404);
  CHECK(Json::parse(not_found.body)["error"]["code"] == "not_found");

  HttpReply wrong_method = client.exchange(request("DELETE", "/now"));
  CHECK(wrong_method.status == 405);
  CHECK(wrong_method.header("allow") == "GET, HEAD");

  HttpReply bad_timeout =
      client.exchange(request("POST", "/jobs/echo?timeout_ms=0", "1"));
  CHECK(bad_timeout.status == 400);

  // None of these closed the connection, nor reached the broker: the first
  // job it receives is the next one.
  CHECK(client.exchange(request("GET", "/now")).status == 200);
  CHECK(client.exchange(request("POST", "/jobs/echo", "\"last\"")).status ==
        200);
  auto first_job = fixture.broker().wait_for_job(0, 1s);
  REQUIRE(first_job);
  CHECK(first_job->args == monsoon::to_msgpack("last"));
}

TEST_CASE("oversized and malformed requests are answered, then closed") {
  Fixture fixture;
  SECTION("body over the limit: 413") {
    Client client(fixture.port());
    HttpReply reply =
        client.exchange(request("POST", "/jobs/echo", std::string(2000, '1')));
    CHECK(reply.status == 413);
    CHECK(Json::parse(reply.body)["error"]["code"] == "payload_too_large");
    CHECK(client.closed_by_server());
  }
  SECTION("header over the limit: 431") {
    Client client(fixture.port());
    HttpReply reply = client.exchange(request(
        "GET", "/now", {}, "X-Big: " + std::string(2000, 'a') + "\r\n"));
    CHECK(reply.status == 431);
    CHECK(client.closed_by_server());
  }
  SECTION("garbage: 400") {
    Client client(fixture.port());
    HttpReply reply = client.exchange("NOT HTTP AT ALL\r\n\r\n");
    CHECK(reply.status == 400);
    CHECK(client.closed_by_server());
  }
}

TEST_CASE("a Transfer-Encoding other than chunked gets 400, then close") {
  Fixture fixture;
  Client client(fixture.port());
  // The "body" is a whole request: read as one, it would get a response of
  // its own.
  HttpReply reply = client.exchange(
      "POST /jobs/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n" +
      request("GET", "/now"));
  CHECK(reply.status == 400);
  CHECK(Json::parse(reply.body)["error"]["code"] == "bad_request");
  CHECK(client.closed_by_server());
}

TEST_CASE("pipelined requests are answered in order") {
  Fixture fixture;
  Client client(fixture.port());
  client.send(request("POST", "/jobs/echo", "1") + request("GET", "/nope") +
              request("POST", "/jobs/echo", "2") + request("GET", "/healthz"));
  auto first = client.receive();
  auto second = client.receive();
  auto third = client.receive();
  auto fourth = client.receive();
  REQUIRE(first);
  REQUIRE(second);
  REQUIRE(third);
  REQUIRE(fourth);
  CHECK(first->body == "1");
  CHECK(second->status == 404);
  CHECK(third->body == "2");
  CHECK(Json::parse(fourth->body)["broker"] == "reachable");
}

TEST_CASE("HTTP/1.0 gets one response, then the connection closes") {
  Fixture fixture;
  Client client(fixture.port());
  HttpReply reply = client.exchange("GET /now HTTP/1.0\r\n\r\n");
  CHECK(reply.status == 200);
  CHECK(client.closed_by_server());
}

TEST_CASE("broker errors map to HTTP statuses") {
  Fixture fixture(/*echo_jobs=*/false);
  Client client(fixture.port());
  using monsoon::protocol::OutcomeMeta;
  const std::string nil("\xc0", 1);

  client.send(request("POST", "/jobs/echo", "1"));
  auto job = fixture.broker().wait_for_job(0, 5s);
  REQUIRE(job);
  fixture.broker().reply(
      *job,
      OutcomeMeta::failure(job->meta.id, "overloaded", "queue full", 2500),
      nil);
  auto overloaded = client.receive();
  REQUIRE(overloaded);
  CHECK(overloaded->status == 503);
  CHECK(overloaded->header("retry-after") == "3");
  CHECK(Json::parse(overloaded->body) ==
        Json{{"error", {{"code", "overloaded"}, {"message", "queue full"}}}});

  client.send(request("POST", "/jobs/echo", "1"));
  job = fixture.broker().wait_for_job(1, 5s);
  REQUIRE(job);
  fixture.broker().reply(
      *job, OutcomeMeta::failure(job->meta.id, "task_failed", "boom"), nil);
  auto failed = client.receive();
  REQUIRE(failed);
  CHECK(failed->status == 500);
  CHECK(failed->header("retry-after").empty());

  client.send(request("POST", "/jobs/echo", "1"));
  job = fixture.broker().wait_for_job(2, 5s);
  REQUIRE(job);
  fixture.broker().reply(*job, OutcomeMeta::success(job->meta.id),
                         "\xc1");  // never valid MessagePack
  auto unusable = client.receive();
  REQUIRE(unusable);
  CHECK(unusable->status == 502);
}

TEST_CASE("a job without an answer gets 504 at its deadline") {
  Fixture fixture(/*echo_jobs=*/false);
  Client client(fixture.port());
  auto started = std::chrono::steady_clock::now();
  HttpReply reply = client.exchange(
      request("POST", "/jobs/echo", "1", "X-Timeout-Ms: 150\r\n"));
  CHECK(reply.status == 504);
  CHECK(Json::parse(reply.body)["error"]["code"] == "deadline_exceeded");
  CHECK(std::chrono::steady_clock::now() - started >= 150ms);
}

TEST_CASE("an unreachable broker gives 503 with Retry-After") {
  Fixture fixture;
  fixture.broker().set_answer_heartbeats(false);
  Client client(fixture.port());
  REQUIRE(eventually(
      [&] { return client.exchange(request("GET", "/healthz")).status == 503; },
      5s));
  HttpReply reply = client.exchange(request("POST", "/jobs/echo", "1"));
  CHECK(reply.status == 503);
  CHECK(reply.header("retry-after") == "1");
  CHECK(Json::parse(reply.body)["error"]["code"] == "broker_unavailable");
}

TEST_CASE("GET /metrics counts responses") {
  Fixture fixture;
  Client client(fixture.port());
  client.exchange(request("GET", "/now"));
  client.exchange(request("GET", "/nope"));
  HttpReply reply = client.exchange(request("GET", "/metrics"));
  CHECK(reply.status == 200);
  CHECK(reply.header("content-type") == "text/plain; version=0.0.4");
  CHECK(reply.body.find(
            "monsoon_frontend_http_responses_total{class=\"2xx\"} 1\n") !=
        std::string::npos);
  CHECK(reply.body.find(
            "monsoon_frontend_http_responses_total{class=\"4xx\"} 1\n") !=
        std::string::npos);
  CHECK(reply.body.find("monsoon_frontend_connections_open 1\n") !=
        std::string::npos);
}

TEST_CASE("a client that leaves while its job is pending harms nothing") {
  Fixture fixture(/*echo_jobs=*/false);
  {
    Client leaving(fixture.port());
    leaving.send(request("POST", "/jobs/echo", "1"));
    REQUIRE(fixture.broker().wait_for_job(0, 5s));
  }
  auto job = fixture.broker().wait_for_job(0, 1s);
  fixture.broker().reply(
      *job, monsoon::protocol::OutcomeMeta::success(job->meta.id), job->args);

  Client client(fixture.port());
  REQUIRE(eventually(
      [&] {
        HttpReply metrics = client.exchange(request("GET", "/metrics"));
        return metrics.body.find("monsoon_frontend_jobs_completed_total 1\n") !=
               std::string::npos;
      },
      5s));
  CHECK(client.exchange(request("GET", "/now")).status == 200);
}

TEST_CASE("connections beyond the limit are closed at once") {
  Fixture fixture(true,
                  [](FrontendConfig& config) { config.max_connections = 1; });
  Client first(fixture.port());
  CHECK(first.exchange(request("GET", "/now")).status == 200);
  Client second(fixture.port());
  CHECK(second.closed_by_server());
  CHECK(first.exchange(request("GET", "/now")).status == 200);
}

TEST_CASE("idle and slow connections are closed") {
  Fixture fixture(true, [](FrontendConfig& config) {
    config.idle_timeout = 100ms;
    config.request_timeout = 100ms;
  });
  Client idle(fixture.port());
  CHECK(idle.exchange(request("GET", "/now")).status == 200);
  CHECK(idle.closed_by_server());

  Client slow(fixture.port());
  slow.send("GET /now HTTP/1.1\r\nHost: x\r\n");  // never finished
  CHECK(slow.closed_by_server());
}

TEST_CASE("stop() answers the requests in progress, then run() returns") {
  Fixture fixture(/*echo_jobs=*/false);
  Client idle(fixture.port());
  CHECK(idle.exchange(request("GET", "/now")).status == 200);
  Client waiting(fixture.port());
  waiting.send(request("POST", "/jobs/echo", "5"));
  auto job = fixture.broker().wait_for_job(0, 5s);
  REQUIRE(job);

  fixture.server().stop();
  // Draining: no new connections, yet the request in progress is answered.
  REQUIRE(eventually([&] { return connection_refused(fixture.port()); }, 5s));
  fixture.broker().reply(
      *job, monsoon::protocol::OutcomeMeta::success(job->meta.id), job->args);
  auto reply = waiting.receive();
  REQUIRE(reply);
  CHECK(reply->status == 200);
  CHECK(reply->body == "5");
  CHECK(reply->header("connection") == "close");
  CHECK(fixture.stopped_within(5s));
}

TEST_CASE("stop() answers 503 shutting_down to what outlasts the drain") {
  const int threads = GENERATE(1, 2);
  INFO(threads << " I/O thread(s)");
  Fixture fixture(false, [&](FrontendConfig& config) {
    config.drain_timeout = 100ms;
    config.threads = threads;
  });
  std::vector<std::unique_ptr<Client>> waiting;
  for (int i = 0; i < 5; ++i) {
    waiting.push_back(std::make_unique<Client>(fixture.port()));
    waiting.back()->send(request("POST", "/jobs/echo", std::to_string(i)));
    REQUIRE(fixture.broker().wait_for_job(static_cast<std::size_t>(i), 5s));
  }
  // A HEAD waiting for its job, too: its 503 has no content.
  Client head(fixture.port());
  head.send(request("HEAD", "/query/1"));
  REQUIRE(fixture.broker().wait_for_job(5, 5s));
  auto started = std::chrono::steady_clock::now();
  fixture.server().stop();
  for (auto& client : waiting) {
    auto reply = client->receive();
    REQUIRE(reply);
    CHECK(reply->status == 503);
    CHECK(Json::parse(reply->body)["error"]["code"] == "shutting_down");
    CHECK(reply->header("retry-after") == "1");
    CHECK(reply->header("connection") == "close");
    CHECK(client->closed_by_server());
  }
  auto head_reply = head.receive(/*head=*/true);
  REQUIRE(head_reply);
  CHECK(head_reply->status == 503);
  CHECK(head.closed_by_server());
  CHECK(std::chrono::steady_clock::now() - started >= 100ms);
  REQUIRE(fixture.stopped_within(5s));
}

TEST_CASE("an outcome after the drain's 503 is no second response") {
  ManualLink link;
  RunningServer running(
      test_config([](FrontendConfig& config) { config.drain_timeout = 50ms; }),
      link);
  Client client(running.port());
  client.send(request("POST", "/jobs/echo", "1"));
  REQUIRE(eventually([&] { return link.jobs() == 1; }, 5s));
  running.server().stop();
  auto reply = client.receive();
  REQUIRE(reply);
  CHECK(reply->status == 503);
  // The link completes the job after all (as BrokerLink::stop() does).
  link.complete(
      0, {monsoon::protocol::OutcomeMeta::success(1), monsoon::to_msgpack(1)});
  CHECK(client.closed_by_server());
  CHECK(running.stopped_within(5s));
}

TEST_CASE("stop() answers a request that is arriving when it begins") {
  Fixture fixture(true,
                  [](FrontendConfig& config) { config.drain_timeout = 5s; });
  Client client(fixture.port());
  // 100 Continue shows the server has read the header: the request is
  // arriving, its body still to come.
  client.send(
      "POST /jobs/echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
      "Content-Length: 1\r\n\r\n");
  REQUIRE(client.receive_header_block().starts_with("HTTP/1.1 100 "));
  fixture.server().stop();
  REQUIRE(eventually([&] { return connection_refused(fixture.port()); }, 5s));
  client.send("7");
  auto reply = client.receive();
  REQUIRE(reply);
  CHECK(reply->status == 200);
  CHECK(reply->body == "7");
  CHECK(reply->header("connection") == "close");
  CHECK(client.closed_by_server());
  CHECK(fixture.stopped_within(5s));
}

TEST_CASE("a request still arriving at the drain deadline is dropped") {
  Fixture fixture(true,
                  [](FrontendConfig& config) { config.drain_timeout = 100ms; });
  Client client(fixture.port());
  client.send(
      "POST /jobs/echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
      "Content-Length: 10\r\n\r\n");
  REQUIRE(client.receive_header_block().starts_with("HTTP/1.1 100 "));
  auto started = std::chrono::steady_clock::now();
  fixture.server().stop();
  // Never accepted (its body never came): no response is owed.
  CHECK(client.closed_by_server());
  CHECK(fixture.stopped_within(5s));
  CHECK(std::chrono::steady_clock::now() - started >= 100ms);
}

TEST_CASE("stop() closes idle connections and stops at once") {
  Fixture fixture;
  Client idle(fixture.port());
  CHECK(idle.exchange(request("GET", "/now")).status == 200);
  fixture.server().stop();
  CHECK(idle.closed_by_server());
  CHECK(fixture.stopped_within(5s));
}

TEST_CASE("a pending job survives the broker's DISCONNECT") {
  Fixture fixture(/*echo_jobs=*/false);
  Client client(fixture.port());
  client.send(request("POST", "/jobs/echo", "1", "X-Timeout-Ms: 60000\r\n"));
  auto job = fixture.broker().wait_for_job(0, 5s);
  REQUIRE(job);
  // DISCONNECT: the broker is shutting down. The link reconnects (here to
  // the same broker) and sends the job again.
  fixture.broker().send_raw(
      job->identity,
      {std::string(monsoon::protocol::kSignature), std::string(1, '\x07')});
  auto again = fixture.broker().wait_for_job(1, 5s);
  REQUIRE(again);
  CHECK(again->args == job->args);
  fixture.broker().reply(
      *again, monsoon::protocol::OutcomeMeta::success(again->meta.id),
      again->args);
  auto reply = client.receive();
  REQUIRE(reply);
  CHECK(reply->status == 200);
  CHECK(reply->body == "1");
}

TEST_CASE("a request trickling in is cut off after request_timeout") {
  Fixture fixture(true, [](FrontendConfig& config) {
    config.idle_timeout = 30s;
    config.request_timeout = 300ms;
  });
  Client slow(fixture.port());
  std::string trickle;
  SECTION("its header") {
    trickle =
        "GET /now HTTP/1.1\r\nHost: x\r\nX-Slow: " + std::string(200, 'a');
  }
  SECTION("its body") {
    REQUIRE(
        slow.try_send("POST /jobs/echo HTTP/1.1\r\nHost: x\r\n"
                      "Content-Length: 200\r\n\r\n"));
    trickle = std::string(200, '1');
  }
  // One byte per 100 ms, for at most 5 s.
  auto started = std::chrono::steady_clock::now();
  bool closed = false;
  for (char byte : trickle) {
    if (!slow.try_send({&byte, 1}) || slow.closed_now()) {
      closed = true;
      break;
    }
    if (std::chrono::steady_clock::now() - started > 5s) break;
    std::this_thread::sleep_for(100ms);
  }
  auto took = std::chrono::steady_clock::now() - started;
  CHECK(closed);
  CHECK(took >= 300ms);
  CHECK(took < 3s);
}

TEST_CASE("a keep-alive connection may idle longer than request_timeout") {
  Fixture fixture(true, [](FrontendConfig& config) {
    config.idle_timeout = 30s;
    config.request_timeout = 100ms;
  });
  Client client(fixture.port());
  CHECK(client.exchange(request("GET", "/now")).status == 200);
  std::this_thread::sleep_for(300ms);
  CHECK(client.exchange(request("GET", "/now")).status == 200);
}

TEST_CASE("an error response does not carry the previous job's worker") {
  Fixture fixture;
  Client client(fixture.port());
  HttpReply job = client.exchange(request("POST", "/jobs/echo", "1"));
  REQUIRE(job.status == 200);
  REQUIRE(job.header("x-monsoon-worker") == "w1");
  SECTION("413") {
    HttpReply reply =
        client.exchange(request("POST", "/jobs/echo", std::string(2000, '1')));
    CHECK(reply.status == 413);
    CHECK(reply.headers.count("x-monsoon-worker") == 0);
  }
  SECTION("431") {
    HttpReply reply = client.exchange(request(
        "GET", "/now", {}, "X-Big: " + std::string(2000, 'a') + "\r\n"));
    CHECK(reply.status == 431);
    CHECK(reply.headers.count("x-monsoon-worker") == 0);
  }
  SECTION("400") {
    HttpReply reply = client.exchange("NOT HTTP AT ALL\r\n\r\n");
    CHECK(reply.status == 400);
    CHECK(reply.headers.count("x-monsoon-worker") == 0);
  }
}

TEST_CASE("a request is answered once, even if submit() throws late") {
  ManualLink link;
  link.throw_after_taking(true);
  RunningServer running(test_config(), link);
  Client client(running.port());
  HttpReply failed = client.exchange(request("POST", "/jobs/echo", "1"));
  CHECK(failed.status == 500);
  REQUIRE(link.jobs() == 1);

  // The link completes the job it took after all: that outcome must answer
  // neither the request (answered already) nor the next one.
  auto outcome = monsoon::protocol::OutcomeMeta::success(1);
  outcome.worker = "late";
  link.complete(0, {outcome, monsoon::to_msgpack(1)});
  for (int i = 0; i < 3; ++i) {
    HttpReply now = client.exchange(request("GET", "/now"));
    CHECK(now.status == 200);
    CHECK(now.header("x-monsoon-worker").empty());
    CHECK(Json::parse(now.body).contains("now_unix_ms"));
  }
}

TEST_CASE("args whose MessagePack outgrows the link's limit get 413") {
  ManualLink link(/*max_args_bytes=*/100);
  RunningServer running(
      test_config([](FrontendConfig& config) { config.max_body_bytes = 100; }),
      link);
  Client client(running.port());
  // 97 bytes of JSON, 217 of MessagePack (each 0.1 is a 9-byte float 64).
  std::string body = "[0.1";
  for (int i = 1; i < 24; ++i) body += ",0.1";
  body += "]";
  REQUIRE(body.size() <= 100);
  HttpReply reply = client.exchange(request("POST", "/jobs/echo", body));
  CHECK(reply.status == 413);
  CHECK(Json::parse(reply.body)["error"]["code"] == "payload_too_large");
  CHECK(link.jobs() == 0);
}

TEST_CASE("a body limit above the link's args limit is refused at start") {
  ManualLink link(/*max_args_bytes=*/100);
  auto config =
      test_config([](FrontendConfig& config) { config.max_body_bytes = 101; });
  CHECK_THROWS_AS(HttpServer(config, link), std::invalid_argument);
  config.max_body_bytes = 100;
  CHECK_NOTHROW(HttpServer(config, link));
}

TEST_CASE("HEAD is answered like GET but without content") {
  Fixture fixture;
  Client client(fixture.port());
  for (std::string_view target : {"/now", "/healthz", "/query/7"}) {
    INFO(target);
    // Pipelined: had the HEAD's response any content, the GET's would not
    // parse.
    client.send(request("HEAD", target) + request("GET", target));
    auto head = client.receive(/*head=*/true);
    auto get = client.receive();
    REQUIRE(head);
    REQUIRE(get);
    CHECK(head->status == 200);
    CHECK(head->status == get->status);
    CHECK(head->header("content-type") == get->header("content-type"));
    CHECK(head->header("content-length") == std::to_string(get->body.size()));
    CHECK(head->header("connection") != "close");
  }
  HttpReply metrics = client.exchange(request("HEAD", "/metrics"));
  CHECK(metrics.status == 200);
  CHECK(metrics.header("content-type") == "text/plain; version=0.0.4");
  CHECK(std::stoul(metrics.header("content-length")) > 0);
  CHECK(client.exchange(request("GET", "/now")).status == 200);
}

TEST_CASE("a HEAD that fails gets the error's headers and no content") {
  Fixture fixture;
  Client client(fixture.port());
  HttpReply not_found = client.exchange(request("HEAD", "/nope"));
  CHECK(not_found.status == 404);
  CHECK(not_found.header("content-type") == "application/json");
  CHECK(std::stoul(not_found.header("content-length")) > 0);
  HttpReply wrong_method = client.exchange(request("HEAD", "/jobs/echo"));
  CHECK(wrong_method.status == 405);
  CHECK(wrong_method.header("allow") == "POST");
  HttpReply bad_flag = client.exchange(request("HEAD", "/query/x"));
  CHECK(bad_flag.status == 400);
  CHECK(client.exchange(request("GET", "/now")).status == 200);

  Client too_big(fixture.port());
  HttpReply big = too_big.exchange(
      request("HEAD", "/now", {}, "X-Big: " + std::string(2000, 'a') + "\r\n"));
  CHECK(big.status == 431);
  CHECK(too_big.closed_by_server());
}

TEST_CASE("405 lists HEAD wherever GET is allowed") {
  Fixture fixture;
  Client client(fixture.port());
  for (std::string_view target : {"/now", "/healthz", "/metrics", "/query/1"}) {
    INFO(target);
    HttpReply reply = client.exchange(request("DELETE", target));
    CHECK(reply.status == 405);
    CHECK(reply.header("allow") == "GET, HEAD");
  }
}

TEST_CASE("HTTP/1.1 needs exactly one Host; HTTP/1.0 none or one") {
  Fixture fixture;
  SECTION("none") {
    Client client(fixture.port());
    HttpReply reply = client.exchange("GET /now HTTP/1.1\r\n\r\n");
    CHECK(reply.status == 400);
    CHECK(Json::parse(reply.body)["error"]["code"] == "bad_request");
    CHECK(client.closed_by_server());
  }
  SECTION("two") {
    Client client(fixture.port());
    HttpReply reply =
        client.exchange("GET /now HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n");
    CHECK(reply.status == 400);
    CHECK(client.closed_by_server());
  }
  SECTION("an invalid one") {
    Client client(fixture.port());
    CHECK(client.exchange("GET /now HTTP/1.1\r\nHost: a b\r\n\r\n").status ==
          400);
  }
  SECTION("none, HTTP/1.0") {
    Client client(fixture.port());
    CHECK(client.exchange("GET /now HTTP/1.0\r\n\r\n").status == 200);
  }
  SECTION("two, HTTP/1.0") {
    Client client(fixture.port());
    CHECK(client.exchange("GET /now HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n")
              .status == 400);
  }
}

TEST_CASE("an absolute-form target is routed by its path and query") {
  Fixture fixture(/*echo_jobs=*/false);
  Client client(fixture.port());
  HttpReply now = client.exchange(
      "GET http://example.com:8000/now HTTP/1.1\r\nHost: other\r\n\r\n");
  CHECK(now.status == 200);
  CHECK(Json::parse(now.body).contains("now_unix_ms"));
  client.send(
      "POST http://example.com/jobs/echo?timeout_ms=150 HTTP/1.1\r\n"
      "Host: x\r\nContent-Length: 1\r\n\r\n1");
  auto job = fixture.broker().wait_for_job(0, 5s);
  REQUIRE(job);
  CHECK(job->task == "echo");
  auto reply = client.receive();
  REQUIRE(reply);
  CHECK(reply->status == 504);  // after its 150 ms: the query was read
  CHECK(client.exchange("GET * HTTP/1.1\r\nHost: x\r\n\r\n").status == 400);
  CHECK(client.exchange("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n").status == 501);
}

TEST_CASE("a result no Accept allows gets 406 and no job runs") {
  ManualLink link;
  RunningServer running(test_config(), link);
  Client client(running.port());
  for (std::string_view accept :
       {"text/html", "application/json;q=0", "application/msgpack;q=0",
        "application/*;q=0, text/plain"}) {
    INFO(accept);
    HttpReply reply = client.exchange(request(
        "POST", "/jobs/echo", "1", "Accept: " + std::string(accept) + "\r\n"));
    CHECK(reply.status == 406);
    CHECK(reply.header("content-type") == "application/json");
    CHECK(Json::parse(reply.body)["error"]["code"] == "not_acceptable");
    HttpReply query = client.exchange(request(
        "GET", "/query/1", {}, "Accept: " + std::string(accept) + "\r\n"));
    CHECK(query.status == 406);
  }
  CHECK(link.jobs() == 0);
}

TEST_CASE("Accept q-values choose between JSON and MessagePack") {
  Fixture fixture;
  Client client(fixture.port());
  auto content_type = [&](std::string_view accept) {
    HttpReply reply =
        client.exchange(request("POST", "/jobs/echo", "[1]",
                                "Accept: " + std::string(accept) + "\r\n"));
    CHECK(reply.status == 200);
    return reply.header("content-type");
  };
  CHECK(content_type("application/json, application/msgpack;q=0") ==
        "application/json");
  CHECK(content_type("application/msgpack;q=0.5, application/json;q=0.4") ==
        "application/msgpack");
  CHECK(content_type("application/x-msgpack") == "application/x-msgpack");
  CHECK(content_type("*/*") == "application/json");
  CHECK(content_type("application/json;q=0, */*;q=0.1") ==
        "application/msgpack");
}
