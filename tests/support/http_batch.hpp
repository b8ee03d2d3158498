// Many HTTP/1.1 requests in flight at once from one thread, multiplexed with
// poll(2): each on its own connection, or pipelined several to a connection.
// cpp-httplib (used for single requests in tests) blocks a thread per
// request, which cannot hold 1,000 requests pending; this can. It understands
// exactly what Monsoon's front end sends: responses with Content-Length
// (without content when they answer HEAD).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace monsoon::test {

struct HttpRequest {
  std::string method = "GET";
  std::string target = "/";
  std::string body;
  std::map<std::string, std::string> headers;
};

// A request sent exactly as given, for bytes no well-behaved client sends
// (malformed or hostile requests).
struct RawRequest {
  std::string bytes;
};

struct HttpResponse {
  int status = 0;  // 0 until a complete response arrived
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string error;  // set when the exchange failed

  std::string header(const std::string& lower_case_name) const;
  // The code of a JSON error body as the front end documents it,
  // {"error": {"code": str, "message": str}}; "" for any other body.
  std::string error_code() const;
};

class HttpBatch {
 public:
  // Opens the connections at once, to 127.0.0.1:`port`. Consecutive groups
  // of `per_connection` requests share one connection: all of a group is
  // written at once (pipelined) and its responses are expected in order.
  // responses()[i] answers requests[i].
  HttpBatch(std::uint16_t port, const std::vector<HttpRequest>& requests,
            std::size_t per_connection = 1);
  // The same to `address` (IPv4, dotted), which each request also names in
  // its Host field. The sockets belong to the network namespace of the
  // calling thread at construction.
  HttpBatch(const std::string& address, std::uint16_t port,
            const std::vector<HttpRequest>& requests,
            std::size_t per_connection = 1);
  // Each on its own connection, expecting one response each.
  HttpBatch(std::uint16_t port, const std::vector<RawRequest>& requests);
  ~HttpBatch();
  HttpBatch(const HttpBatch&) = delete;
  HttpBatch& operator=(const HttpBatch&) = delete;

  // Drives I/O until every request is fully written, or the timeout passes.
  bool send_all(std::chrono::milliseconds timeout);
  // Drives I/O until every response is complete (or failed), or the timeout
  // passes; returns true when none is still outstanding.
  bool receive_all(std::chrono::milliseconds timeout);
  const std::vector<HttpResponse>& responses() const { return responses_; }
  // After receive_all: watches the connections that got all their responses
  // for `quiet` and returns how many received bytes beyond those responses
  // (a second answer to some request). A connection the server closes does
  // not count. Waits the whole `quiet`: it checks that nothing arrives.
  std::size_t connections_with_extra_data(std::chrono::milliseconds quiet);

 private:
  struct Connection;
  template <typename Done>
  bool pump(std::chrono::milliseconds timeout, Done done);
  // Opens one connection per group of `per_connection` requests, given in
  // wire form, to address:port.
  void open(const std::string& address, std::uint16_t port,
            std::vector<std::string> wire, std::size_t per_connection);
  // Sets `error` on the connection's outstanding responses; it is done.
  void fail(Connection& connection, const std::string& error);
  // Moves every complete response out of the connection's input.
  void take_responses(Connection& connection);

  std::vector<Connection> connections_;
  std::vector<HttpResponse> responses_;
};

// One request, one connection, waiting for the answer.
HttpResponse http_request(std::uint16_t port, HttpRequest request,
                          std::chrono::milliseconds timeout);
// The same to `address` (see HttpBatch).
HttpResponse http_request(const std::string& address, std::uint16_t port,
                          HttpRequest request,
                          std::chrono::milliseconds timeout);

}  // namespace monsoon::test
