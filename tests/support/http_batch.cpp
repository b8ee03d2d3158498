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

namespace monsoon::test {
namespace {

using Clock = std::chrono::steady_clock;

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return text;
}

std::string serialise(const HttpRequest& request) {
  std::string out = request.method + " " + request.target + " HTTP/1.1\r\n";
  out += "Host: 127.0.0.1\r\n";
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

// Parses a complete response out of `in`; false while more bytes are needed.
bool parse_response(const std::string& in, HttpResponse& response) {
  auto header_end = in.find("\r\n\r\n");
  if (header_end == std::string::npos) return false;
  std::size_t line_end = in.find("\r\n");
  std::string status_line = in.substr(0, line_end);
  std::size_t space = status_line.find(' ');
  if (space == std::string::npos) {
    response.error = "bad status line: " + status_line;
    return true;
  }
  int status = std::atoi(status_line.c_str() + space + 1);
  std::map<std::string, std::string> headers;
  std::size_t pos = line_end + 2;
  while (pos < header_end) {
    std::size_t end = in.find("\r\n", pos);
    std::string line = in.substr(pos, end - pos);
    std::size_t colon = line.find(':');
    if (colon != std::string::npos) {
      std::size_t value_start = line.find_first_not_of(' ', colon + 1);
      headers[lower(line.substr(0, colon))] =
          value_start == std::string::npos ? "" : line.substr(value_start);
    }
    pos = end + 2;
  }
  std::size_t length = 0;
  if (auto it = headers.find("content-length"); it != headers.end()) {
    length = std::stoul(it->second);
  }
  if (in.size() < header_end + 4 + length) return false;
  response.status = status;
  response.headers = std::move(headers);
  response.body = in.substr(header_end + 4, length);
  return true;
}

}  // namespace

std::string HttpResponse::header(const std::string& lower_case_name) const {
  auto it = headers.find(lower_case_name);
  return it == headers.end() ? std::string() : it->second;
}

struct HttpBatch::Connection {
  int fd = -1;
  std::string out;
  std::size_t written = 0;
  std::string in;
  bool finished = false;
};

HttpBatch::HttpBatch(std::uint16_t port, std::vector<HttpRequest> requests)
    : connections_(requests.size()), responses_(requests.size()) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (std::size_t i = 0; i < requests.size(); ++i) {
    Connection& connection = connections_[i];
    connection.out = serialise(requests[i]);
    connection.fd =
        ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (connection.fd < 0) {
      responses_[i].error = std::string("socket: ") + std::strerror(errno);
      connection.finished = true;
      continue;
    }
    int one = 1;
    ::setsockopt(connection.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(connection.fd, reinterpret_cast<sockaddr*>(&address),
                  sizeof address) < 0 &&
        errno != EINPROGRESS) {
      responses_[i].error = std::string("connect: ") + std::strerror(errno);
      connection.finished = true;
    }
  }
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
      HttpResponse& response = responses_[index[k]];
      if ((fds[k].revents & POLLOUT) && c.written < c.out.size()) {
        ssize_t n = ::send(c.fd, c.out.data() + c.written,
                           c.out.size() - c.written, MSG_NOSIGNAL);
        if (n > 0) c.written += static_cast<std::size_t>(n);
      }
      if (fds[k].revents & (POLLIN | POLLHUP | POLLERR)) {
        ssize_t n = ::recv(c.fd, buffer, sizeof buffer, 0);
        if (n > 0) {
          c.in.append(buffer, static_cast<std::size_t>(n));
          c.finished = parse_response(c.in, response);
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
          response.error = n == 0
                               ? "connection closed before a full response"
                               : std::string("recv: ") + std::strerror(errno);
          c.finished = true;
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

HttpResponse http_request(std::uint16_t port, HttpRequest request,
                          std::chrono::milliseconds timeout) {
  HttpBatch batch(port, {std::move(request)});
  if (!batch.receive_all(timeout)) {
    HttpResponse response = batch.responses()[0];
    response.error =
        "no response within " + std::to_string(timeout.count()) + " ms";
    return response;
  }
  return batch.responses()[0];
}

}  // namespace monsoon::test
