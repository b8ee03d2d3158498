// Many HTTP/1.1 requests in flight at once from one thread, each on its own
// connection, multiplexed with poll(2). cpp-httplib (used for single requests
// in tests) blocks a thread per request, which cannot hold 1,000 requests
// pending; this can. It understands exactly what Monsoon's front end sends:
// responses with Content-Length.
#pragma once

#include <chrono>
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

struct HttpResponse {
  int status = 0;  // 0 until a complete response arrived
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string error;  // set when the exchange failed

  std::string header(const std::string& lower_case_name) const;
};

class HttpBatch {
 public:
  HttpBatch(std::uint16_t port, std::vector<HttpRequest> requests);
  ~HttpBatch();
  HttpBatch(const HttpBatch&) = delete;
  HttpBatch& operator=(const HttpBatch&) = delete;

  // Drives I/O until every request is fully written, or the timeout passes.
  bool send_all(std::chrono::milliseconds timeout);
  // Drives I/O until every response is complete (or failed), or the timeout
  // passes; returns true when none is still outstanding.
  bool receive_all(std::chrono::milliseconds timeout);
  const std::vector<HttpResponse>& responses() const { return responses_; }

 private:
  struct Connection;
  template <typename Done>
  bool pump(std::chrono::milliseconds timeout, Done done);

  std::vector<Connection> connections_;
  std::vector<HttpResponse> responses_;
};

// One request, one connection, waiting for the answer.
HttpResponse http_request(std::uint16_t port, HttpRequest request,
                          std::chrono::milliseconds timeout);

}  // namespace monsoon::test
