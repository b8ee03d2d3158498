// Hostile input against the real processes: malformed HTTP and bodies to the
// front end, foreign and truncated ZeroMQ messages to the broker's two
// endpoints and to a worker. Each must get a clear error or be dropped and
// counted; afterwards the process still runs and serves a normal job. The
// parsers themselves are unit-tested (tests/common, tests/frontend); these
// tests check the processes as deployed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "monsoon/common/protocol.hpp"
#include "monsoon/common/routing_id.hpp"
#include "monsoon/common/value.hpp"
#include "stack.hpp"

using monsoon::test::ChildProcess;
using monsoon::test::Counters;
using monsoon::test::eventually;
using monsoon::test::HttpBatch;
using monsoon::test::HttpRequest;
using monsoon::test::HttpResponse;
using monsoon::test::RawRequest;
using monsoon::test::Stack;
using monsoon::test::StackOptions;
using Json = nlohmann::json;
using namespace std::chrono_literals;
namespace protocol = monsoon::protocol;

namespace {

using Message = std::vector<std::string>;  // the frames of one message

const std::string kSig(protocol::kSignature);
const std::string kNil(protocol::kMsgpackNil);

std::string command(protocol::Command c) {
  return std::string(1, static_cast<char>(c));
}

std::string msgpack(const Json& value) { return monsoon::to_msgpack(value); }

// The front end is alive and a job makes the whole round trip.
bool echo_works(const Stack& stack) {
  HttpResponse echo = stack.post_json("/jobs/echo", R"({"still": "alive"})");
  return echo.status == 200 &&
         Json::parse(echo.body, nullptr, false) == Json{{"still", "alive"}};
}

std::string nested(const std::string& open, const std::string& close,
                   std::size_t depth, const std::string& inner = {}) {
  std::string text;
  for (std::size_t i = 0; i < depth; ++i) text += open;
  text += inner;
  for (std::size_t i = 0; i < depth; ++i) text += close;
  return text;
}

// Messages that no peer may send, whatever the endpoint: each must be
// dropped and counted.
std::vector<Message> foreign_messages() {
  return {
      {"GET / HTTP/1.1\r\n\r\n"},
      {"MNS\x02", command(protocol::Command::Heartbeat)},  // version 2
      {kSig},
      {kSig, ""},
      {kSig, "\x09"},
      {kSig, "\x06\x06"},
      {kSig, command(protocol::Command::Heartbeat), "extra"},
      {"", "", ""},
      [] {
        Message many = {kSig, command(protocol::Command::Heartbeat)};
        many.resize(1000, "x");
        return many;
      }(),
  };
}

// Meta frames a receiver must reject. Where the meta is a map, it carries
// every required key: only the flaw named makes it invalid.
std::vector<std::string> hostile_metas() {
  const Json valid = {{"id", 1}, {"timeout_ms", 1000}, {"attempt", 1}};
  auto with = [&](const std::string& key, const Json& value) {
    Json meta = valid;
    meta[key] = value;
    return msgpack(meta);
  };
  return {
      std::string("\xdf\xff\xff\xff\xff", 5),  // map32 claiming 4G pairs
      "\x82\xa2id",                            // truncated
      "\xc1",                                  // never-used byte
      msgpack(1),                              // not a map
      with("pad", std::string(5000, 'p')),     // over 4,096 bytes
      with("deep", Json::parse(nested(R"({"a":)", "}", 40, "1"))),
      with("id", "seven"),
      with("id", -1),
      with("timeout_ms", 0),
      with("timeout_ms", 86'400'001),
      msgpack({{"timeout_ms", 1000}, {"attempt", 1}}),  // no id
  };
}

// The task, meta and payload frames of SUBMIT or JOB, each spoilt one way.
std::vector<Message> hostile_jobs(protocol::Command c) {
  const std::string meta =
      msgpack({{"id", 1}, {"timeout_ms", 1000}, {"attempt", 1}});
  std::vector<Message> messages = {
      {kSig, command(c)},
      {kSig, command(c), "echo", meta},
      {kSig, command(c), "echo", meta, kNil, "extra"},
      {kSig, command(c), "bad name!", meta, kNil},
      {kSig, command(c), "", meta, kNil},
      {kSig, command(c), std::string(129, 't'), meta, kNil},
  };
  for (const std::string& spoilt : hostile_metas()) {
    messages.push_back({kSig, command(c), "echo", spoilt, kNil});
  }
  return messages;
}

// READY bodies a broker must refuse.
std::vector<Message> hostile_readies() {
  auto ready = [](const Json& info) {
    return Message{kSig, command(protocol::Command::Ready), msgpack(info)};
  };
  std::vector<std::string> too_many(1025, "t");
  return {
      {kSig, command(protocol::Command::Ready)},
      {kSig, command(protocol::Command::Ready), "\xc1"},
      {kSig, command(protocol::Command::Ready),
       std::string("\xdf\xff\xff\xff\xff", 5)},
      ready(Json::array()),
      ready({{"tasks", {"echo"}}, {"slots", 0}}),
      ready({{"tasks", {"echo"}}, {"slots", 65'537}}),
      ready({{"tasks", Json::array()}, {"slots", 1}}),
      ready({{"tasks", too_many}, {"slots", 1}}),
      ready({{"tasks", {"bad name!"}}, {"slots", 1}}),
      ready({{"tasks", "echo"}, {"slots", 1}}),
      ready({{"tasks", {"echo"}}, {"slots", 1}, {"free", 2}}),
  };
}

Message outcome(protocol::Command c, std::uint64_t id, std::string result,
                std::string task = "echo") {
  Message message = {kSig, command(c), std::move(task),
                     msgpack({{"id", id}, {"status", "ok"}}),
                     std::move(result)};
  return message;
}

Message job(protocol::Command c, std::uint64_t id, const std::string& task,
            std::string args, std::uint32_t timeout_ms = 10'000) {
  return {kSig, command(c), task,
          msgpack({{"id", id}, {"timeout_ms", timeout_ms}, {"attempt", 1}}),
          std::move(args)};
}

// A ZeroMQ peer played by the test: a DEALER (client, worker) or a ROUTER
// (broker). Receives time out, so a missing message fails the test.
class Peer {
 public:
  Peer(zmq::context_t& context, zmq::socket_type type)
      : socket_(context, type) {
    socket_.set(zmq::sockopt::linger, 0);
    if (type == zmq::socket_type::router) {
      socket_.set(zmq::sockopt::router_handover, 1);
    } else {
      socket_.set(zmq::sockopt::routing_id, monsoon::make_routing_id());
    }
  }

  void connect(const std::string& endpoint) { socket_.connect(endpoint); }
  std::string bind_any() {
    socket_.bind("tcp://127.0.0.1:*");
    return socket_.get(zmq::sockopt::last_endpoint);
  }

  void send(const Message& frames) {
    std::vector<zmq::const_buffer> parts;
    for (const auto& frame : frames) parts.emplace_back(zmq::buffer(frame));
    REQUIRE(zmq::send_multipart(socket_, parts));
  }

  // The next message, frames as strings; nullopt after `timeout`.
  std::optional<Message> receive(std::chrono::milliseconds timeout = 5s) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, timeout) == 0) return std::nullopt;
    std::vector<zmq::message_t> frames;
    if (!zmq::recv_multipart(socket_, std::back_inserter(frames),
                             zmq::recv_flags::dontwait)) {
      return std::nullopt;
    }
    Message message;
    for (const auto& frame : frames) message.push_back(frame.to_string());
    if (message.size() == 4 &&
        message[2] == command(protocol::Command::Ready)) {
      worker_ = message[0];
    }
    return message;
  }

  // As the broker: the identity of the worker that last sent READY.
  const std::string& worker() const { return worker_; }

  struct Outcome {
    Json meta;
    std::string result;  // MessagePack
  };
  // The RESULT or DONE (`c`) for job `id`, its frames after `offset`
  // identity frames. Outcomes of other jobs that arrive meanwhile are kept
  // for later calls; other messages are skipped. nullopt after `timeout`.
  std::optional<Outcome> outcome_for(std::uint64_t id, protocol::Command c,
                                     std::size_t offset = 0,
                                     std::chrono::milliseconds timeout = 5s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!outcomes_.contains(id)) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left <= 0ms) return std::nullopt;
      auto message = receive(left);
      if (message && message->size() == offset + 5 &&
          (*message)[offset + 1] == command(c)) {
        Json meta = monsoon::from_msgpack((*message)[offset + 3]);
        outcomes_[meta["id"].get<std::uint64_t>()] = {meta,
                                                      (*message)[offset + 4]};
      }
    }
    return outcomes_[id];
  }

  // The next message whose command (at `offset`, after any identity frame)
  // is not HEARTBEAT.
  std::optional<Message> receive_skipping_heartbeats(
      std::size_t offset, std::chrono::milliseconds timeout = 5s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      auto message = receive(std::max(left, 0ms));
      if (!message || message->size() <= offset + 1 ||
          (*message)[offset + 1] != command(protocol::Command::Heartbeat)) {
        return message;
      }
    }
  }

 private:
  zmq::socket_t socket_;
  std::map<std::uint64_t, Outcome> outcomes_;  // see outcome_for
  std::string worker_;
};

// The meta map of a JOB, RESULT or DONE received by a DEALER.
Json meta_of(const Message& message) {
  REQUIRE(message.size() == 5);
  return monsoon::from_msgpack(message[3]);
}

}  // namespace

TEST_CASE("malformed HTTP gets one clear error from the real front end",
          "[integration][hostile]") {
  Stack stack;
  struct Case {
    std::string name;
    std::string bytes;
    int status;
    std::string code;
  };
  const std::string post = "POST /jobs/echo HTTP/1.1\r\nHost: x\r\n";
  const std::string chunked = post + "Transfer-Encoding: chunked\r\n\r\n";
  std::string noise(4096, '\0');
  std::mt19937 random(1);
  for (char& c : noise) c = static_cast<char>(random());
  noise[0] = '\0';  // never a method character
  std::string many_headers = "GET /now HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 10'000; ++i) {
    many_headers += "X-" + std::to_string(i) + ": y\r\n";
  }
  std::string big_chunks;
  for (int i = 0; i < 2; ++i) {
    big_chunks += "100000\r\n" + std::string(0x100000, '1') + "\r\n";
  }
  const std::vector<Case> cases = {
      {"binary noise", noise, 400, "bad_request"},
      {"a TLS ClientHello",
       std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11), 400,
       "bad_request"},
      {"HTTP/9.9", "GET /now HTTP/9.9\r\n\r\n", 400, "bad_request"},
      {"no version", "GET /now\r\n\r\n", 400, "bad_request"},
      {"bare LF line ends", "GET /now HTTP/1.1\nHost: x\n\n", 400,
       "bad_request"},
      {"8-bit method", "G\xc3\x89T /now HTTP/1.1\r\n\r\n", 400, "bad_request"},
      {"field without colon", "GET /now HTTP/1.1\r\nHost x\r\n\r\n", 400,
       "bad_request"},
      {"NUL in a field",
       std::string("GET /now HTTP/1.1\r\nHost: x\0y\r\n\r\n", 32), 400,
       "bad_request"},
      {"negative Content-Length", post + "Content-Length: -1\r\n\r\n", 400,
       "bad_request"},
      {"Content-Length past 2^64",
       post + "Content-Length: 99999999999999999999999\r\n\r\n", 400,
       "bad_request"},
      {"two Content-Lengths",
       post + "Content-Length: 1\r\nContent-Length: 2\r\n\r\n12", 400,
       "bad_request"},
      {"Transfer-Encoding and Content-Length",
       post +
           "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
       400, "bad_request"},
      // Its body must not be read as a second request.
      {"Transfer-Encoding: gzip",
       post + "Transfer-Encoding: gzip\r\n\r\nGET /now HTTP/1.1\r\n\r\n", 400,
       "bad_request"},
      {"chunk size not hex", chunked + "zz\r\n1\r\n0\r\n\r\n", 400,
       "bad_request"},
      {"chunk size past 2^64",
       chunked + "fffffffffffffffffffff\r\n1\r\n0\r\n\r\n", 400, "bad_request"},
      {"negative chunk size", chunked + "-1\r\n1\r\n0\r\n\r\n", 400,
       "bad_request"},
      {"chunk without CRLF", chunked + "1\r\n1XX0\r\n\r\n", 400, "bad_request"},
      {"control byte in a chunk extension",
       chunked + "1;\x01\r\n1\r\n0\r\n\r\n", 400, "bad_request"},
      {"chunks past the body limit", chunked + big_chunks + "0\r\n\r\n", 413,
       "payload_too_large"},
      {"a 64 KiB header field",
       "GET /now HTTP/1.1\r\nX-Big: " + std::string(64 << 10, 'a') + "\r\n\r\n",
       431, "headers_too_large"},
      {"10,000 header fields", many_headers + "\r\n", 431, "headers_too_large"},
      {"a 100 KB target",
       "GET /" + std::string(100'000, 'a') + " HTTP/1.1\r\n\r\n", 431,
       "headers_too_large"},
  };
  std::vector<RawRequest> requests;
  for (const auto& c : cases) requests.push_back({c.bytes});
  HttpBatch batch(stack.http_port(), requests);
  REQUIRE(batch.receive_all(10s));
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const HttpResponse& response = batch.responses()[i];
    INFO(cases[i].name << ": " << response.status << " " << response.error
                       << " " << response.body);
    CHECK(response.status == cases[i].status);
    CHECK(response.error_code() == cases[i].code);
    // Malformed framing leaves the rest of the stream meaningless: closed.
    CHECK(response.header("connection") == "close");
  }
  // Exactly one response each: nothing after it, the server closed.
  CHECK(batch.connections_with_extra_data(500ms) == 0);
  CHECK(stack.frontend().running());
  CHECK(echo_works(stack));
}

TEST_CASE("hostile bodies get 400, nothing is allocated for their claims",
          "[integration][hostile]") {
  Stack stack;
  struct Case {
    std::string name;
    std::string body;
    std::string content_type;
    int status;
    std::string echoed = {};  // the JSON of a 200
  };
  const std::string json = "application/json";
  const std::string packed = "application/msgpack";
  const std::vector<Case> cases = {
      {"JSON nested 100,000 deep", nested("[", "]", 100'000), json, 400},
      {"JSON nested 129 deep", nested("[", "]", 129), json, 400},
      {"JSON nested 128 deep", nested("[", "]", 128), json, 200,
       nested("[", "]", 128)},
      {"str32 claiming 4 GiB", std::string("\xdb\xff\xff\xff\xff", 5), packed,
       400},
      {"bin32 claiming 4 GiB", std::string("\xc6\xff\xff\xff\xff", 5), packed,
       400},
      {"array32 claiming 4G items", std::string("\xdd\xff\xff\xff\xff\xc0", 6),
       packed, 400},
      {"map32 claiming 4G pairs", std::string("\xdf\xff\xff\xff\xff", 5),
       packed, 400},
      {"ext32 claiming 4 GiB", std::string("\xc9\xff\xff\xff\xff\x01", 6),
       packed, 400},
      {"MessagePack nested 100,000 deep", std::string(100'000, '\x91') + kNil,
       packed, 400},
      {"MessagePack nested 128 deep", std::string(128, '\x91') + kNil, packed,
       200, nested("[", "]", 128, "null")},
      {"truncated map",
       "\x83\xa1"
       "a\x01",
       packed, 400},
      {"truncated str8",
       "\xd9\x05"
       "ab",
       packed, 400},
      {"trailing bytes", msgpack(1) + msgpack(2), packed, 400},
      // Well-formed MessagePack the worker cannot turn into a value.
      {"map with an integer key", "\x81\x01\x02", packed, 400},
      {"map with a duplicate key", "\x82\xa1k\x01\xa1k\x02", packed, 400},
  };
  std::vector<HttpRequest> requests;
  for (const auto& c : cases) {
    requests.push_back({.method = "POST",
                        .target = "/jobs/echo",
                        .body = c.body,
                        .headers = {{"Content-Type", c.content_type}}});
  }
  HttpBatch batch(stack.http_port(), requests);
  REQUIRE(batch.receive_all(20s));
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const HttpResponse& response = batch.responses()[i];
    INFO(cases[i].name << ": " << response.status << " " << response.error
                       << " " << response.body);
    CHECK(response.status == cases[i].status);
    if (cases[i].status == 400) {
      CHECK(response.error_code() == "bad_request");
    } else {
      CHECK(response.body == cases[i].echoed);
    }
  }
  // Had a length claim been believed, gigabytes would have been allocated.
  CHECK(stack.frontend().resident_kib().value_or(0) < 200 * 1024);
  for (auto& worker : stack.workers()) {
    CHECK(worker.resident_kib().value_or(0) < 200 * 1024);
  }
  CHECK(echo_works(stack));
}

TEST_CASE("2,000 pipelined requests on one connection are answered in order",
          "[integration][hostile]") {
  Stack stack;
  constexpr int kRequests = 2000;
  std::vector<HttpRequest> requests;
  for (int i = 0; i < kRequests; ++i) {
    if (i % 3 == 0) {
      requests.push_back({.method = "POST",
                          .target = "/jobs/echo",
                          .body = std::to_string(i),
                          .headers = {}});
    } else if (i % 3 == 1) {
      requests.push_back(
          {.method = "GET", .target = "/now", .body = {}, .headers = {}});
    } else {
      requests.push_back(
          {.method = "GET", .target = "/nowhere", .body = {}, .headers = {}});
    }
  }
  HttpBatch batch(stack.http_port(), requests, kRequests);
  REQUIRE(batch.receive_all(60s));
  int wrong = 0;
  for (int i = 0; i < kRequests; ++i) {
    const HttpResponse& response = batch.responses()[i];
    bool right = i % 3 == 0 ? response.status == 200 &&
                                  response.body == std::to_string(i)
                 : i % 3 == 1 ? response.status == 200 &&
                                    Json::parse(response.body, nullptr, false)
                                        .contains("now_unix_ms")
                              : response.status == 404 &&
                                    response.error_code() == "not_found";
    if (!right && ++wrong <= 5) {
      UNSCOPED_INFO("request " << i << ": " << response.status << " "
                               << response.error << " " << response.body);
    }
  }
  CHECK(wrong == 0);
  CHECK(batch.connections_with_extra_data(300ms) == 0);
  CHECK(echo_works(stack));
}

TEST_CASE("trickling connections are cut off while others are served",
          "[integration][hostile]") {
  monsoon::test::raise_open_files_limit();
  StackOptions options;
  options.frontend_args = {"--request-timeout-ms", "1000"};
  Stack stack(options);

  // 200 connections, each sending one more header byte every 100 ms.
  constexpr int kSlow = 200;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(stack.http_port());
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::vector<int> slow;
  for (int i = 0; i < kSlow; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&address),
                      sizeof address) == 0);
    slow.push_back(fd);
  }
  std::vector<bool> closed(kSlow, false);
  std::size_t bytes_received = 0;
  int served = 0;
  int refused = 0;
  const std::string head = "POST /jobs/echo HTTP/1.1\r\nHost: x\r\nX-Slow: ";
  const auto started = std::chrono::steady_clock::now();
  for (int tick = 0; tick < 100; ++tick) {
    int open = 0;
    for (int i = 0; i < kSlow; ++i) {
      if (closed[i]) continue;
      char buffer[512];
      ssize_t n = ::recv(slow[i], buffer, sizeof buffer, MSG_DONTWAIT);
      if (n > 0) bytes_received += static_cast<std::size_t>(n);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
        closed[i] = true;
        continue;
      }
      const std::string next = tick == 0 ? head : "a";
      if (::send(slow[i], next.data(), next.size(), MSG_NOSIGNAL) < 0) {
        closed[i] = true;
        continue;
      }
      ++open;
    }
    if (open == 0) break;
    // Meanwhile, everyone else is served as usual.
    (echo_works(stack) ? served : refused) += 1;
    // Pacing the trickle, not synchronisation: the loop checks what happened.
    ::poll(nullptr, 0, 100);
  }
  const auto took = std::chrono::steady_clock::now() - started;
  for (int fd : slow) ::close(fd);
  CHECK(std::count(closed.begin(), closed.end(), true) == kSlow);
  CHECK(bytes_received == 0);  // cut off, not answered
  CHECK(took >= 1s);           // not before --request-timeout-ms
  CHECK(took < 8s);            // but soon after, even on a loaded machine
  CHECK(served > 0);
  CHECK(refused == 0);
  CHECK(stack.frontend().running());
}

TEST_CASE("the real front end checks Host and target forms and answers HEAD",
          "[integration][hostile][http]") {
  Stack stack;
  struct Case {
    std::string name;
    std::string bytes;
    int status;
    std::string code = {};  // of an error; "" for a success
    std::string content_type = "application/json";
  };
  const std::string big(64 << 10, 'a');
  const std::string get_now = "GET /now HTTP/1.1\r\n";
  const std::vector<Case> cases = {
      // RFC 9112 section 3.2: Host.
      {"HTTP/1.1 without Host", get_now + "\r\n", 400, "bad_request"},
      {"two Host fields", get_now + "Host: a\r\nHost: b\r\n\r\n", 400,
       "bad_request"},
      {"HTTP/1.0 with two Host fields",
       "GET /now HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400, "bad_request"},
      {"HTTP/1.0 without Host", "GET /now HTTP/1.0\r\n\r\n", 200},
      {"a Host with a space", get_now + "Host: a b\r\n\r\n", 400,
       "bad_request"},
      {"a Host with a path", get_now + "Host: a/b\r\n\r\n", 400, "bad_request"},
      {"a Host with userinfo", get_now + "Host: u@a\r\n\r\n", 400,
       "bad_request"},
      {"a Host with a bad port", get_now + "Host: a:8x\r\n\r\n", 400,
       "bad_request"},
      {"an empty Host", get_now + "Host:\r\n\r\n", 200},
      {"an IPv6 Host with a port", get_now + "Host: [::1]:8000\r\n\r\n", 200},
      {"a POST without Host",
       "POST /jobs/echo HTTP/1.1\r\nContent-Length: 1\r\n\r\n1", 400,
       "bad_request"},
      // RFC 9112 section 3.2.2: absolute-form is routed by its path.
      {"absolute-form",
       "GET http://127.0.0.1:1/now HTTP/1.1\r\nHost: x\r\n\r\n", 200},
      {"absolute-form, upper-case scheme, with a query",
       "POST HTTP://elsewhere.example/jobs/echo?timeout_ms=5000 HTTP/1.1\r\n"
       "Host: x\r\nContent-Length: 1\r\n\r\n7",
       200},
      {"absolute-form https",
       "GET https://x/metrics HTTP/1.1\r\nHost: x\r\n\r\n",
       200,
       {},
       "text/plain; version=0.0.4"},
      {"absolute-form without a path",
       "GET http://x HTTP/1.1\r\nHost: x\r\n\r\n", 404, "not_found"},
      {"absolute-form without a host",
       "GET http:///now HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"},
      {"absolute-form with userinfo",
       "GET http://u:p@x/now HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"},
      {"absolute-form, not http", "GET ftp://x/now HTTP/1.1\r\nHost: x\r\n\r\n",
       400, "bad_request"},
      {"absolute-form without //", "GET http:now HTTP/1.1\r\nHost: x\r\n\r\n",
       400, "bad_request"},
      {"asterisk-form with GET", "GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400,
       "bad_request"},
      {"authority-form with GET", "GET x:80 HTTP/1.1\r\nHost: x\r\n\r\n", 400,
       "bad_request"},
      {"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 501,
       "not_implemented"},
      {"CONNECT", "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", 501,
       "not_implemented"},
      // RFC 9110 section 9.3.2: HEAD is GET without content, errors too.
      {"HEAD /now", "HEAD /now HTTP/1.1\r\nHost: x\r\n\r\n", 200},
      {"HEAD /healthz", "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200},
      {"HEAD /metrics",
       "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
       200,
       {},
       "text/plain; version=0.0.4"},
      {"HEAD /query/1", "HEAD /query/1 HTTP/1.1\r\nHost: x\r\n\r\n", 200},
      {"HEAD absolute-form", "HEAD http://x/now HTTP/1.1\r\nHost: x\r\n\r\n",
       200},
      {"HEAD /now over HTTP/1.0", "HEAD /now HTTP/1.0\r\n\r\n", 200},
      {"HEAD to an unknown path", "HEAD /nowhere HTTP/1.1\r\nHost: x\r\n\r\n",
       404, "not_found"},
      {"HEAD to a POST route", "HEAD /jobs/echo HTTP/1.1\r\nHost: x\r\n\r\n",
       405, "method_not_allowed"},
      {"HEAD without Host", "HEAD /now HTTP/1.1\r\n\r\n", 400, "bad_request"},
      {"HEAD with a bad flag", "HEAD /query/x HTTP/1.1\r\nHost: x\r\n\r\n", 400,
       "bad_request"},
      {"HEAD refusing both result types",
       "HEAD /query/1 HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n\r\n", 406,
       "not_acceptable"},
      {"HEAD with a 64 KiB header field",
       "HEAD /now HTTP/1.1\r\nHost: x\r\nX-Big: " + big + "\r\n\r\n", 431,
       "headers_too_large"},
      {"HEAD with a body over the limit",
       "HEAD /now HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", 413,
       "payload_too_large"},
      {"DELETE /now", "DELETE /now HTTP/1.1\r\nHost: x\r\n\r\n", 405,
       "method_not_allowed"},
  };
  std::vector<RawRequest> requests;
  for (const auto& c : cases) requests.push_back({c.bytes});
  HttpBatch batch(stack.http_port(), requests);
  REQUIRE(batch.receive_all(20s));
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    const HttpResponse& response = batch.responses()[i];
    INFO(c.name << ": " << response.status << " " << response.error << " "
                << response.body);
    CHECK(response.status == c.status);
    CHECK(response.header("content-type") == c.content_type);
    const bool head = c.bytes.starts_with("HEAD ");
    if (head) {
      // The Content-Length of the GET response, without its content.
      CHECK(response.body.empty());
      CHECK(std::stoul(response.header("content-length")) > 0);
    } else if (!c.code.empty()) {
      CHECK(response.error_code() == c.code);
    }
    if (c.bytes.starts_with("POST HTTP://")) CHECK(response.body == "7");
    if (c.status == 405) {
      CHECK(
          response.header("allow") ==
          (c.bytes.find("/jobs/") == std::string::npos ? "GET, HEAD" : "POST"));
    }
  }
  // Nothing follows a response: above all no content after a HEAD's.
  CHECK(batch.connections_with_extra_data(500ms) == 0);
  CHECK(echo_works(stack));
}

TEST_CASE("HEAD answers like GET and pipelined requests after it still parse",
          "[integration][hostile][http]") {
  Stack stack;
  auto request = [](std::string method, std::string target,
                    std::string body = {}) {
    return HttpRequest{.method = std::move(method),
                       .target = std::move(target),
                       .body = std::move(body),
                       .headers = {}};
  };
  const std::vector<HttpRequest> requests = {
      request("GET", "/query/3"),    request("HEAD", "/query/3"),
      request("HEAD", "/now"),       request("GET", "/now"),
      request("HEAD", "/nowhere"),   request("GET", "/nowhere"),
      request("HEAD", "/jobs/echo"), request("POST", "/jobs/echo", "[1,2]"),
      request("HEAD", "/healthz"),   request("GET", "/healthz"),
  };
  HttpBatch batch(stack.http_port(), requests, requests.size());
  REQUIRE(batch.receive_all(20s));
  const auto& responses = batch.responses();
  for (std::size_t i = 0; i < responses.size(); ++i) {
    INFO(i << ": " << requests[i].method << " " << requests[i].target << ": "
           << responses[i].status << " " << responses[i].error << " "
           << responses[i].body);
    REQUIRE(responses[i].error.empty());
    if (requests[i].method == "HEAD") CHECK(responses[i].body.empty());
  }
  // The same status and headers as GET, with GET's Content-Length.
  for (std::size_t get : {0, 5, 9}) {
    std::size_t head = get == 0 ? 1 : get - 1;
    INFO(requests[get].target);
    CHECK(responses[head].status == responses[get].status);
    CHECK(responses[head].header("content-type") ==
          responses[get].header("content-type"));
    CHECK(responses[head].header("content-length") ==
          std::to_string(responses[get].body.size()));
  }
  CHECK(responses[0].status == 200);
  CHECK(responses[1].header("x-monsoon-worker") ==
        responses[0].header("x-monsoon-worker"));
  CHECK(responses[2].status == 200);
  CHECK(Json::parse(responses[3].body).contains("now_unix_ms"));
  CHECK(responses[4].status == 404);
  CHECK(responses[6].status == 405);
  CHECK(responses[6].header("allow") == "POST");
  CHECK(responses[7].body == "[1,2]");
  CHECK(batch.connections_with_extra_data(300ms) == 0);
}

TEST_CASE("Accept chooses JSON or MessagePack by q-value or answers 406",
          "[integration][hostile][http]") {
  Stack stack;
  const std::string json = "application/json";
  const std::string packed = "application/msgpack";
  struct Case {
    std::string accept;        // "" = no Accept field
    std::string content_type;  // "" = 406
  };
  const std::vector<Case> cases = {
      {"", json},
      {"application/json, application/msgpack;q=0", json},
      {"application/msgpack", packed},
      {"application/x-msgpack", "application/x-msgpack"},
      {"APPLICATION/MSGPACK;Q=1", packed},
      {"application/msgpack;q=0.9, application/json;q=0.8", packed},
      {" application/msgpack ; q=0.8 , application/json ; q=0.7 ", packed},
      {"application/json;q=0.5, application/msgpack;q=0.5", json},
      {"*/*", json},
      {"application/*", json},
      {"*/*;q=0.1, application/msgpack;q=0.2", packed},
      {"application/json;q=0, */*", packed},
      {"application/json;charset=utf-8, application/msgpack;q=0.9", json},
      {"application/msgpack;q=0.001", packed},
      {"text/html, application/json;q=0.1", json},
      {"application/msgpack;q=0", ""},
      {"text/html", ""},
      {"application/json;q=0", ""},
      {"application/*;q=0", ""},
      {"text/*, application/json;q=0", ""},
      {"application/json;q=0, application/msgpack;q=abc", ""},
      // Nothing valid in it: as if there were no Accept.
      {"application/msgpack;q=2", json},
      {"application/msgpack;q=0.0001", json},
      {"msgpack", json},
  };
  const std::uint64_t submitted_before =
      stack.frontend_metrics()["jobs_submitted_total"];
  std::vector<HttpRequest> requests;
  for (const auto& c : cases) {
    HttpRequest request{.method = "POST",
                        .target = "/jobs/echo",
                        .body = R"({"a":[1,"b"]})",
                        .headers = {}};
    if (!c.accept.empty()) request.headers["Accept"] = c.accept;
    requests.push_back(request);
  }
  HttpBatch batch(stack.http_port(), requests);
  REQUIRE(batch.receive_all(20s));
  std::size_t acceptable = 0;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const HttpResponse& response = batch.responses()[i];
    INFO("Accept: " << cases[i].accept << " -> " << response.status << " "
                    << response.header("content-type") << " "
                    << response.error);
    const Json expected = {{"a", {1, "b"}}};
    if (cases[i].content_type.empty()) {
      CHECK(response.status == 406);
      // Errors are JSON whatever Accept says.
      CHECK(response.header("content-type") == json);
      CHECK(response.error_code() == "not_acceptable");
      continue;
    }
    ++acceptable;
    CHECK(response.status == 200);
    CHECK(response.header("content-type") == cases[i].content_type);
    if (cases[i].content_type == json) {
      CHECK(Json::parse(response.body, nullptr, false) == expected);
    } else {
      CHECK(monsoon::from_msgpack(response.body) == expected);
    }
  }
  // Two Accept field lines make one list.
  HttpBatch split(
      stack.http_port(),
      std::vector<RawRequest>{{"POST /jobs/echo HTTP/1.1\r\nHost: x\r\n"
                               "Accept: application/json;q=0\r\n"
                               "Accept: application/msgpack\r\n"
                               "Content-Length: 1\r\n\r\n1"}});
  REQUIRE(split.receive_all(10s));
  CHECK(split.responses()[0].status == 200);
  CHECK(split.responses()[0].header("content-type") == packed);
  // A 406 is decided before the job is submitted: none of them ran.
  CHECK(stack.frontend_metrics()["jobs_submitted_total"] ==
        submitted_before + acceptable + 1);
}

namespace {

// A client socket to the front end with a small receive buffer, so that
// what the test does not read holds the sender back (the kernel would
// otherwise take megabytes on its behalf).
int slow_client(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  int size = 64 << 10;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&address),
                    sizeof address) == 0);
  return fd;
}

// Reads what is there without waiting: false once the connection is closed
// or broken.
bool read_available(int fd, std::string& into, std::size_t at_most) {
  std::string buffer(at_most, '\0');
  ssize_t n = ::recv(fd, buffer.data(), buffer.size(), MSG_DONTWAIT);
  if (n > 0) into.append(buffer.data(), static_cast<std::size_t>(n));
  return n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
}

// The length of the whole response once its header has arrived; 0 before.
std::size_t response_length(const std::string& received) {
  auto end = received.find("\r\n\r\n");
  if (end == std::string::npos) return 0;
  auto at = received.find("Content-Length: ");
  if (at == std::string::npos || at > end) return 0;
  return end + 4 + std::stoul(received.substr(at + 16));
}

constexpr std::size_t kBlobBytes = 10'000'000;

std::string blob_request() {
  const std::string body = R"({"bytes":)" + std::to_string(kBlobBytes) + "}";
  return "POST /jobs/test.blob HTTP/1.1\r\nHost: x\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

StackOptions blob_stack() {
  StackOptions options;
  options.worker_executable = MONSOON_TEST_WORKER_BIN;
  options.frontend_args = {"--request-timeout-ms", "1000"};
  return options;
}

}  // namespace

TEST_CASE("a slow but steady reader gets all of a large result",
          "[integration][hostile][http]") {
  Stack stack(blob_stack());
  int fd = slow_client(stack.http_port());
  const std::string request = blob_request();
  REQUIRE(::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(request.size()));
  // About 2.5 MB/s, 64 KiB at a time: the 10 MB result takes about four
  // times --request-timeout-ms to read, never pausing near that long.
  using Clock = std::chrono::steady_clock;
  std::string received;
  std::optional<Clock::time_point> first_byte;
  const auto deadline = Clock::now() + 60s;
  while (Clock::now() < deadline) {
    std::size_t total = response_length(received);
    if (total > 0 && received.size() >= total) break;
    if (!read_available(fd, received, 64 << 10)) break;  // cut off
    if (received.empty()) {
      // The job is still running: wait for the response to start.
      pollfd item{fd, POLLIN, 0};
      ::poll(&item, 1, 100);
      continue;
    }
    if (!first_byte) first_byte = Clock::now();
    ::poll(nullptr, 0, 25);  // pacing: the slow reader is what is tested
  }
  const auto reading = Clock::now() - first_byte.value_or(Clock::now());
  ::close(fd);
  INFO("received "
       << received.size() << " bytes in "
       << std::chrono::duration_cast<std::chrono::milliseconds>(reading).count()
       << " ms");
  REQUIRE(received.starts_with("HTTP/1.1 200 "));
  std::size_t total = response_length(received);
  REQUIRE(total > kBlobBytes);
  CHECK(received.size() == total);
  CHECK(received.ends_with("x\""));
  // It took well over the timeout: the timeout did not bound the transfer.
  CHECK(reading > 2s);
  CHECK(stack.frontend().running());
}

TEST_CASE("a reader that stops reading is cut off after the request timeout",
          "[integration][hostile][http]") {
  Stack stack(blob_stack());
  int fd = slow_client(stack.http_port());
  const std::string request = blob_request();
  REQUIRE(::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(request.size()));
  std::string received;
  REQUIRE(eventually(
      [&] {
        read_available(fd, received, 1024);
        return !received.empty();
      },
      30s));
  // From here on the test reads nothing until the front end gives up.
  const auto stalled = std::chrono::steady_clock::now();
  REQUIRE(eventually(
      [&] { return stack.frontend_metrics()["connections_open"] == 1; }, 20s));
  const auto cut_off = std::chrono::steady_clock::now() - stalled;
  CHECK(cut_off >= 900ms);  // --request-timeout-ms without progress
  CHECK(cut_off < 10s);
  // What was sent before the cut arrives, then the end: never all of it.
  while (read_available(fd, received, 1 << 20)) {
    pollfd item{fd, POLLIN, 0};
    if (::poll(&item, 1, 5000) <= 0) break;
  }
  ::close(fd);
  CHECK(received.size() < response_length(received));
  CHECK(stack.frontend().running());
  CHECK(echo_works(stack));
}

TEST_CASE("foreign and malformed messages to the broker are dropped, counted",
          "[integration][hostile]") {
  StackOptions options;
  // The test's fake worker sends no heartbeats: the broker must not give up
  // on it (200 ms x 50) while the test runs.
  options.broker_args = {"--max-message-bytes", "65536", "--liveness", "50"};
  Stack stack(options);
  zmq::context_t context;
  std::size_t malformed = 0;

  // --- the client endpoint ---
  Peer client(context, zmq::socket_type::dealer);
  client.connect(stack.client_endpoint());
  std::vector<Message> garbage = foreign_messages();
  for (auto& m : hostile_jobs(protocol::Command::Submit)) garbage.push_back(m);
  garbage.push_back(job(protocol::Command::Job, 1, "echo", kNil));
  garbage.push_back(outcome(protocol::Command::Done, 1, kNil));
  garbage.push_back(outcome(protocol::Command::Result, 1, kNil));
  garbage.push_back(hostile_readies().back());
  for (const auto& message : garbage) client.send(message);
  malformed += garbage.size();
  // Nothing answers garbage: the first reply is to this heartbeat.
  client.send({kSig, command(protocol::Command::Heartbeat)});
  auto reply = client.receive();
  REQUIRE(reply);
  CHECK(*reply == Message{kSig, command(protocol::Command::Heartbeat)});

  // Args are the worker's business: the broker relays them, the worker
  // refuses them clearly.
  const auto result = protocol::Command::Result;
  client.send(job(protocol::Command::Submit, 7, "echo", "\xc1"));
  auto refused = client.outcome_for(7, result);
  REQUIRE(refused);
  CHECK(refused->meta["code"] == "bad_request");
  client.send(job(protocol::Command::Submit, 8, "echo", msgpack("fine")));
  auto answered = client.outcome_for(8, result);
  REQUIRE(answered);
  CHECK(answered->meta["status"] == "ok");
  CHECK(answered->result == msgpack("fine"));

  // A frame over --max-message-bytes costs the sender its connection (ZeroMQ
  // drops it) but nobody else anything; the DEALER reconnects.
  client.send(job(protocol::Command::Submit, 9, "echo",
                  msgpack(std::string(100'000, 'x'))));
  std::uint64_t id = 10;
  CHECK(eventually(
      [&] {
        client.send(job(protocol::Command::Submit, ++id, "echo", kNil));
        return client.outcome_for(id, result, 0, 500ms).has_value();
      },
      10s));

  // --- the worker endpoint ---
  Peer worker(context, zmq::socket_type::dealer);
  worker.connect(stack.worker_endpoint());
  garbage = foreign_messages();
  for (auto& m : hostile_readies()) garbage.push_back(m);
  for (auto& m : hostile_jobs(protocol::Command::Job)) garbage.push_back(m);
  garbage.push_back(job(protocol::Command::Submit, 1, "echo", kNil));
  garbage.push_back(outcome(protocol::Command::Result, 1, kNil));
  garbage.push_back({kSig, command(protocol::Command::Done), "echo",
                     msgpack({{"id", 1}, {"status", "maybe"}}), kNil});
  for (const auto& message : garbage) worker.send(message);
  malformed += garbage.size();
  // Well-formed, but from a worker it does not know: "register first".
  worker.send(outcome(protocol::Command::Done, 1, kNil));
  auto disconnect = worker.receive();
  REQUIRE(disconnect);
  CHECK(*disconnect == Message{kSig, command(protocol::Command::Disconnect)});

  // Registered for a task of its own, it answers its job twice and a job it
  // never had: the client sees one RESULT, the rest is dropped and counted.
  worker.send({kSig, command(protocol::Command::Ready),
               msgpack({{"tasks", {"hostile.task"}},
                        {"slots", 1},
                        {"name", "hostile"},
                        {"pid", 1}})});
  worker.send(outcome(protocol::Command::Done, 999'999, kNil));
  client.send(job(protocol::Command::Submit, 100, "hostile.task", kNil));
  auto welcome = worker.receive_skipping_heartbeats(0);  // answers READY
  REQUIRE(welcome);
  REQUIRE((*welcome)[1] == command(protocol::Command::Welcome));
  auto dispatched = worker.receive_skipping_heartbeats(0);
  REQUIRE(dispatched);
  REQUIRE((*dispatched)[1] == command(protocol::Command::Job));
  const std::uint64_t job_id = meta_of(*dispatched)["id"];
  for (int i = 0; i < 2; ++i) {
    worker.send(
        outcome(protocol::Command::Done, job_id, msgpack(i), "hostile.task"));
  }
  auto relayed = client.outcome_for(100, result);
  REQUIRE(relayed);
  CHECK(relayed->result == msgpack(0));
  client.send({kSig, command(protocol::Command::Heartbeat)});
  auto next = client.receive();
  REQUIRE(next);
  CHECK(*next == Message{kSig, command(protocol::Command::Heartbeat)});
  worker.send({kSig, command(protocol::Command::Disconnect)});

  CHECK(echo_works(stack));
  Counters broker = stack.stop_broker();
  INFO(monsoon::test::to_string(broker));
  CHECK(broker["malformed_dropped"] == malformed);
  CHECK(broker["late_done_dropped"] == 2);
  CHECK(broker["unknown_worker_messages"] == 1);
}

// Brokerless, the front end's own process binds the worker endpoint: what a
// hostile peer sends there must cost it nothing but counters.
TEST_CASE(
    "a front end hosting the dispatcher drops what a hostile worker sends",
    "[integration][hostile]") {
  StackOptions options;
  options.topology = monsoon::test::Topology::brokerless;
  options.frontend_args = {"--max-message-bytes", "131072", "--max-body-bytes",
                           "65536"};
  Stack stack(options);
  zmq::context_t context;
  Peer worker(context, zmq::socket_type::dealer);
  worker.connect(stack.worker_endpoint());

  // A frame over --max-message-bytes costs the sender its connection; the
  // DEALER reconnects.
  worker.send(
      {kSig, command(protocol::Command::Heartbeat), std::string(200'000, 'x')});
  std::vector<Message> garbage = foreign_messages();
  for (auto& m : hostile_readies()) garbage.push_back(m);
  for (auto& m : hostile_jobs(protocol::Command::Job)) garbage.push_back(m);
  garbage.push_back(job(protocol::Command::Submit, 1, "echo", kNil));
  garbage.push_back(outcome(protocol::Command::Result, 1, kNil));
  // Well-formed, but from a worker it does not know: "register first",
  // once the connection is back (messages sent before may be lost with it).
  const Message disconnect = {kSig, command(protocol::Command::Disconnect)};
  std::size_t sent = 0;
  CHECK(eventually(
      [&] {
        for (const auto& message : garbage) worker.send(message);
        sent += garbage.size();
        worker.send(outcome(protocol::Command::Done, 1, kNil));
        auto reply = worker.receive(500ms);
        return reply && *reply == disconnect;
      },
      10s));

  CHECK(stack.frontend().running());
  CHECK(echo_works(stack));
  Counters broker = stack.stop_broker();  // stops the front end
  INFO(monsoon::test::to_string(broker));
  CHECK(broker["malformed_dropped"] >= garbage.size());
  CHECK(broker["malformed_dropped"] <= sent);
  CHECK(broker["unknown_worker_messages"] >= 1);
  CHECK(broker["workers_lost"] == 0);
}

TEST_CASE("a real worker survives a hostile broker", "[integration][hostile]") {
  zmq::context_t context;
  Peer broker(context, zmq::socket_type::router);
  const std::string endpoint = broker.bind_any();
  std::string directory =
      (std::filesystem::temp_directory_path() / "monsoon-hostile-XXXXXX")
          .string();
  REQUIRE(::mkdtemp(directory.data()) != nullptr);
  struct Cleanup {
    std::string path;
    ~Cleanup() {
      std::error_code ignored;
      std::filesystem::remove_all(path, ignored);
    }
  } cleanup{directory};
  // This test is the broker and sends no heartbeats, only jobs: the worker
  // may wait 2 s for them before it reconnects (and registers again).
  ChildProcess worker(
      MONSOON_WORKER_BIN,
      // echo and sleep only: one pool (async).
      {"--broker", endpoint, "--tasks", "echo,sleep", "--async-concurrency",
       "2", "--name", "target", "--heartbeat-ms", "200", "--liveness", "10",
       "--max-message-bytes", "65536", "--db-path",
       directory + "/demo.sqlite3"},
      directory + "/worker.log");
  auto ready = broker.receive_skipping_heartbeats(1, 10s);
  REQUIRE(ready);
  REQUIRE(ready->size() == 4);
  REQUIRE((*ready)[2] == command(protocol::Command::Ready));
  auto to_worker = [&](Message message) {
    message.insert(message.begin(), broker.worker());
    broker.send(message);
  };
  auto done = [&](std::uint64_t id, std::chrono::milliseconds timeout = 5s) {
    return broker.outcome_for(id, protocol::Command::Done, 1, timeout);
  };
  std::uint64_t next_id = 1;
  auto round_trip = [&] {
    const std::uint64_t id = next_id++;
    to_worker(job(protocol::Command::Job, id, "echo", msgpack(id)));
    auto echoed = done(id, 1s);
    return echoed && echoed->meta["status"] == "ok" &&
           echoed->result == msgpack(id);
  };
  REQUIRE(round_trip());

  std::vector<Message> garbage = foreign_messages();
  for (auto& m : hostile_jobs(protocol::Command::Job)) garbage.push_back(m);
  garbage.push_back(job(protocol::Command::Submit, 1, "echo", kNil));
  garbage.push_back(outcome(protocol::Command::Done, 1, kNil));
  garbage.push_back(outcome(protocol::Command::Result, 1, kNil));
  garbage.push_back({kSig, command(protocol::Command::Ready),
                     msgpack({{"tasks", {"echo"}}, {"slots", 1}})});
  for (const auto& message : garbage) to_worker(message);
  CHECK(round_trip());
  CHECK(worker.running());

  // Well-formed JOBs it cannot run get a clear error in their DONE.
  struct Refusal {
    std::string name;
    std::string task;
    std::string args;
    std::string code;
  };
  const std::vector<Refusal> refusals = {
      {"str32 claiming 4 GiB", "echo", std::string("\xdb\xff\xff\xff\xff", 5),
       "bad_request"},
      {"array32 claiming 4G items", "echo",
       std::string("\xdd\xff\xff\xff\xff", 5), "bad_request"},
      {"args nested 10,000 deep", "echo", std::string(10'000, '\x91') + kNil,
       "bad_request"},
      {"truncated args", "echo", "\x92\x01", "bad_request"},
      {"map with an integer key", "echo", "\x81\x01\x02", "bad_request"},
      {"sleep without ms", "sleep", msgpack({{"ms", "long"}}), "bad_request"},
      {"a task it does not serve", "no.such.task", kNil, "unknown_task"},
  };
  for (const auto& refusal : refusals) {
    INFO(refusal.name);
    const std::uint64_t id = next_id++;
    to_worker(job(protocol::Command::Job, id, refusal.task, refusal.args));
    auto refused = done(id);
    REQUIRE(refused);
    CHECK(refused->meta["status"] == "error");
    CHECK(refused->meta["code"] == refusal.code);
  }

  // More JOBs than slots: the extra one is refused at once, not queued.
  const std::uint64_t first = next_id;
  for (int i = 0; i < 3; ++i) {
    to_worker(job(protocol::Command::Job, next_id++, "sleep",
                  msgpack({{"ms", 300}})));
  }
  auto extra = done(first + 2);
  REQUIRE(extra);
  CHECK(extra->meta["code"] == "overloaded");
  for (std::uint64_t id : {first, first + 1}) {
    auto slept = done(id);
    REQUIRE(slept);
    CHECK(slept->meta["status"] == "ok");
  }

  // A frame over --max-message-bytes: ZeroMQ closes that connection for
  // good; the worker hears nothing more, so it reconnects and registers again
  // after its liveness interval.
  to_worker(job(protocol::Command::Job, next_id++, "echo",
                msgpack(std::string(100'000, 'x'))));
  CHECK(eventually(round_trip, 10s));
  REQUIRE(worker.running());

  worker.signal(SIGTERM);
  auto status = worker.wait_exit(15s);
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
  Counters counters = monsoon::test::worker_exit_stats(worker.log());
  INFO(monsoon::test::to_string(counters));
  CHECK(counters["malformed_dropped"] == garbage.size());
  CHECK(counters["reconnects"] >= 1);
}
