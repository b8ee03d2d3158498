#include "http_batch.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string_view>

namespace monsoon::test {
namespace {

using Clock = std::chrono::steady_clock;

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return text;
}

constexpr const char* kLoopback = "127.0.0.1";

std::string serialise(const HttpRequest& request, const std::string& host) {
  std::string out = request.method + " " + request.target + " HTTP/1.1\r\n";
  out += "Host: " + host + "\r\n";
  for (const auto& [name, value] : request.headers) {
    out += name + ": " + value + "\r\n";
  }
  if (!request.body.empty() || request.method == "POST") {
    out += "Content-Length: " + std::to_string(request.body.size()) + "\r\n";
  }
  out += "\r\n";
  out += request.body;
  return out;
}

// Parses one complete response from the front of `in` into `response`; a
// response to HEAD (`head`) has no content whatever its Content-Length.
// Returns the bytes it took, or 0 while more are needed. A response that
// cannot be parsed takes everything and sets response.error.
std::size_t parse_response(std::string_view in, bool head,
                           HttpResponse& response) {
  auto header_end = in.find("\r\n\r\n");
  if (header_end == std::string::npos) return 0;
  std::size_t line_end = in.find("\r\n");
  std::string status_line(in.substr(0, line_end));
  std::size_t space = status_line.find(' ');
  if (!status_line.starts_with("HTTP/1.") || space == std::string::npos) {
    response.error = "bad status line: " + status_line;
    return in.size();
  }
  int status = std::atoi(status_line.c_str() + space + 1);
  std::map<std::string, std::string> headers;
  std::size_t pos = line_end + 2;
  while (pos < header_end) {
    std::size_t end = in.find("\r\n", pos);
    std::string line(in.substr(pos, end - pos));
    std::size_t colon = line.find(':');
    if (colon != std::string::npos) {
      std::size_t value_start = line.find_first_not_of(' ', colon + 1);
      headers[lower(line.substr(0, colon))] =
          value_start == std::string::npos ? "" : line.substr(value_start);
    }
    pos = end + 2;
  }
  std::size_t length = 0;
  if (auto it = headers.find("content-length"); it != headers.end() && !head) {
    length = std::stoul(it->second);
  }
  if (in.size() < header_end + 4 + length) return 0;
  response.status = status;
  response.headers = std::move(headers);
  response.body = in.substr(header_end + 4, length);
  return header_end + 4 + length;
}

}  // namespace

std::string HttpResponse::header(const std::string& lower_case_name) const {
  auto it = headers.find(lower_case_name);
  return it == headers.end() ? std::string() : it->second;
}

std::string HttpResponse::error_code() const {
  auto json = nlohmann::json::parse(body, nullptr, false);
  if (!json.is_object() || !json.contains("error")) return "";
  const auto& error = json["error"];
  if (!error.is_object() || !error.contains("code") ||
      !error["code"].is_string() || !error.contains("message") ||
      !error["message"].is_string()) {
    return "";
  }
  return error["code"];
}

// One connection and the group of requests pipelined on it:
// responses_[first, first + count).
struct HttpBatch::Connection {
  int fd = -1;
  std::size_t first = 0;
  std::size_t count = 0;
  std::size_t received = 0;  // complete responses so far
  std::string out;
  std::size_t written = 0;
  std::string in;
  std::vector<bool> head;  // per request: a HEAD, whose response is bodiless
  bool finished = false;   // every response received, or failed
  bool closed = false;     // by the server, or broken
};

HttpBatch::HttpBatch(std::uint16_t port,
                     const std::vector<HttpRequest>& requests,
                     std::size_t per_connection)
    : HttpBatch(kLoopback, port, requests, per_connection) {}

HttpBatch::HttpBatch(const std::string& address, std::uint16_t port,
                     const std::vector<HttpRequest>& requests,
                     std::size_t per_connection) {
  std::vector<std::string> wire;
  for (const auto& request : requests) {
    wire.push_back(serialise(request, address));
  }
  open(address, port, std::move(wire), per_connection);
}

HttpBatch::HttpBatch(std::uint16_t port,
                     const std::vector<RawRequest>& requests) {
  std::vector<std::string> wire;
  for (const auto& request : requests) wire.push_back(request.bytes);
  open(kLoopback, port, std::move(wire), 1);
}

void HttpBatch::open(const std::string& host, std::uint16_t port,
                     std::vector<std::string> wire,
                     std::size_t per_connection) {
  responses_.resize(wire.size());
  per_connection = std::max<std::size_t>(per_connection, 1);
  connections_.resize((wire.size() + per_connection - 1) / per_connection);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  const bool valid = ::inet_pton(AF_INET, host.c_str(), &address.sin_addr) == 1;
  for (std::size_t k = 0; k < connections_.size(); ++k) {
    Connection& connection = connections_[k];
    connection.first = k * per_connection;
    connection.count = std::min(per_connection, wire.size() - connection.first);
    for (std::size_t i = 0; i < connection.count; ++i) {
      const std::string& request = wire[connection.first + i];
      connection.out += request;
      connection.head.push_back(request.starts_with("HEAD "));
    }
    if (!valid) {
      fail(connection, "not an IPv4 address: " + host);
      continue;
    }
    connection.fd =
        ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (connection.fd < 0) {
      fail(connection, std::string("socket: ") + std::strerror(errno));
      continue;
    }
    int one = 1;
    ::setsockopt(connection.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(connection.fd, reinterpret_cast<sockaddr*>(&address),
                  sizeof address) < 0 &&
        errno != EINPROGRESS) {
      fail(connection, std::string("connect: ") + std::strerror(errno));
    }
  }
}

void HttpBatch::fail(Connection& connection, const std::string& error) {
  for (std::size_t i = connection.received; i < connection.count; ++i) {
    responses_[connection.first + i].error = error;
  }
  connection.finished = true;
  connection.closed = true;
}

void HttpBatch::take_responses(Connection& connection) {
  while (connection.received < connection.count) {
    HttpResponse& response = responses_[connection.first + connection.received];
    std::size_t used = parse_response(
        connection.in, connection.head[connection.received], response);
    if (used == 0) return;
    connection.in.erase(0, used);
    if (!response.error.empty()) {
      fail(connection, response.error);
      return;
    }
    ++connection.received;
  }
  connection.finished = true;
}

HttpBatch::~HttpBatch() {
  for (auto& connection : connections_) {
    if (connection.fd >= 0) ::close(connection.fd);
  }
}

template <typename Done>
bool HttpBatch::pump(std::chrono::milliseconds timeout, Done done) {
  auto deadline = Clock::now() + timeout;
  std::vector<pollfd> fds;
  std::vector<std::size_t> index;
  char buffer[65536];
  while (!done()) {
    auto now = Clock::now();
    if (now >= deadline) return false;
    fds.clear();
    index.clear();
    for (std::size_t i = 0; i < connections_.size(); ++i) {
      Connection& c = connections_[i];
      if (c.finished) continue;
      short events = POLLIN;
      if (c.written < c.out.size()) events |= POLLOUT;
      fds.push_back({c.fd, events, 0});
      index.push_back(i);
    }
    auto wait =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    int ready =
        ::poll(fds.data(), fds.size(), static_cast<int>(wait.count()) + 1);
    if (ready < 0 && errno != EINTR) return false;
    for (std::size_t k = 0; k < fds.size(); ++k) {
      if (fds[k].revents == 0) continue;
      Connection& c = connections_[index[k]];
      if ((fds[k].revents & POLLOUT) && c.written < c.out.size()) {
        ssize_t n = ::send(c.fd, c.out.data() + c.written,
                           c.out.size() - c.written, MSG_NOSIGNAL);
        if (n > 0) c.written += static_cast<std::size_t>(n);
      }
      if (fds[k].revents & (POLLIN | POLLHUP | POLLERR)) {
        ssize_t n = ::recv(c.fd, buffer, sizeof buffer, 0);
        if (n > 0) {
          c.in.append(buffer, static_cast<std::size_t>(n));
          take_responses(c);
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
          fail(c, n == 0 ? "connection closed before a full response"
                         : std::string("recv: ") + std::strerror(errno));
        }
      }
    }
  }
  return true;
}

bool HttpBatch::send_all(std::chrono::milliseconds timeout) {
  return pump(timeout, [this] {
    return std::all_of(connections_.begin(), connections_.end(),
                       [](const Connection& c) {
                         return c.finished || c.written == c.out.size();
                       });
  });
}

bool HttpBatch::receive_all(std::chrono::milliseconds timeout) {
  return pump(timeout, [this] {
    return std::all_of(connections_.begin(), connections_.end(),
                       [](const Connection& c) { return c.finished; });
  });
}

std::size_t HttpBatch::connections_with_extra_data(
    std::chrono::milliseconds quiet) {
  auto deadline = Clock::now() + quiet;
  std::size_t extra = 0;
  std::vector<Connection*> watched;
  for (auto& c : connections_) {
    if (c.closed || c.received < c.count) continue;
    if (!c.in.empty()) {
      ++extra;  // arrived together with the last expected response
    } else {
      watched.push_back(&c);
    }
  }
  std::vector<pollfd> fds;
  char buffer[4096];
  while (!watched.empty()) {
    auto now = Clock::now();
    if (now >= deadline) break;
    fds.clear();
    for (Connection* c : watched) fds.push_back({c->fd, POLLIN, 0});
    auto wait =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    if (::poll(fds.data(), fds.size(), static_cast<int>(wait.count()) + 1) <
            0 &&
        errno != EINTR) {
      break;
    }
    std::vector<Connection*> still;
    for (std::size_t k = 0; k < fds.size(); ++k) {
      if (fds[k].revents == 0) {
        still.push_back(watched[k]);
        continue;
      }
      ssize_t n = ::recv(watched[k]->fd, buffer, sizeof buffer, 0);
      if (n > 0) {
        ++extra;
      } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        still.push_back(watched[k]);
      } else {
        watched[k]->closed = true;
      }
    }
    watched.swap(still);
  }
  return extra;
}

HttpResponse http_request(std::uint16_t port, HttpRequest request,
                          std::chrono::milliseconds timeout) {
  return http_request(kLoopback, port, std::move(request), timeout);
}

HttpResponse http_request(const std::string& address, std::uint16_t port,
                          HttpRequest request,
                          std::chrono::milliseconds timeout) {
  HttpBatch batch(address, port, std::vector<HttpRequest>{std::move(request)});
  if (!batch.receive_all(timeout)) {
    HttpResponse response = batch.responses()[0];
    response.error =
        "no response within " + std::to_string(timeout.count()) + " ms";
    return response;
  }
  return batch.responses()[0];
}

}  // namespace monsoon::test
