// HttpServer: the front end's HTTP/1.1 server (Boost.Beast, kept out of this
// header). It answers GET /now, /healthz and /metrics itself and turns
// POST /jobs/{task} and GET /query/{flag} into jobs on a JobLink (the
// BrokerLink in production), replying when their outcome arrives; no request
// ever blocks an I/O thread.
//
// HTTP semantics (RFC 9110, RFC 9112), on every route, errors included:
// every request it accepts (whose header it has read) gets exactly one
// response. HEAD is answered like GET, with GET's Content-Length and no
// content (a HEAD /query/{flag} runs its job); no response to HEAD carries
// content. An HTTP/1.1 request without exactly one valid Host, or any with
// several, gets 400 (then close); absolute-form targets are routed by their
// path. A job's result is negotiated by Accept (negotiate_result_format in
// routes.hpp), 406 before the job is submitted when neither JSON nor
// MessagePack is acceptable; errors are always JSON.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "monsoon/frontend/broker_link.hpp"
#include "monsoon/frontend/routes.hpp"

namespace monsoon::frontend {

struct FrontendConfig {
  std::string host = "127.0.0.1";
  std::uint16_t port = 8000;  // 0 = any free port, see HttpServer::port()
  int threads = 1;            // I/O threads running the event loop
  // SO_REUSEPORT: several front-end processes listen on one port and the
  // kernel spreads new connections over them (Linux 3.9+), so a host runs N
  // front ends, each restartable alone. Every one of them must set it.
  bool reuse_port = false;
  TimeoutPolicy timeouts;
  // At most the link's max_args_bytes() (the constructor checks).
  std::size_t max_body_bytes = 1u << 20;
  std::size_t max_header_bytes = 16u << 10;
  std::size_t max_connections = 10'000;
  // A connection may wait this long for the first byte of its next
  // request...
  std::chrono::milliseconds idle_timeout{60'000};
  // ...whose headers and body must then all arrive within this, counted from
  // that first byte (slowloris defence). This deliberately bounds the body's
  // total time too, not only its idleness: a client trickling one byte now
  // and then could otherwise hold a connection (and its body buffer, up to
  // max_body_bytes) for ever, and bodies are small, so the bound means a
  // modest minimum upload rate (at the defaults, 1 MiB in 30 s: 35 KB/s).
  // Raise it for clients on slower links.
  //
  // Writing a response is bounded by idleness instead: the connection is
  // closed when request_timeout passes with no byte of it accepted by the
  // client, however long the whole transfer takes, so a slow but steady
  // reader gets all of a large result and one that stops reading is cut
  // off.
  std::chrono::milliseconds request_timeout{30'000};
  // After stop(), how long requests in progress may take to be answered.
  // Those still waiting then (for their job) get 503 shutting_down with
  // Retry-After and Connection: close; these and the responses being
  // written then get one more second before the server stops regardless.
  std::chrono::milliseconds drain_timeout{5'000};
};

class HttpServer {
 public:
  // Binds and listens at once. Throws std::invalid_argument when
  // config.max_body_bytes exceeds link.max_args_bytes(), std::runtime_error
  // (with the OS reason, e.g. "Address already in use") when it cannot
  // listen. `link` must outlive the server.
  HttpServer(FrontendConfig config, JobLink& link);
  // Not while run() is running. Closes the connections still open; jobs
  // still pending on the link keep the server's internals alive until they
  // complete, so the link may be stopped before or after this.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound TCP port (useful with port 0).
  std::uint16_t port() const noexcept;

  // Serves on config.threads threads (the caller's included) until stop()
  // and the drain that follows it complete. Call once.
  void run();

  // Any thread, any time, idempotent: stops accepting, closes idle
  // connections, answers requests in progress and those whose bytes have
  // begun to arrive (each with Connection: close), then makes run()
  // return. Requests still unanswered after drain_timeout are answered 503
  // shutting_down (an outcome arriving later is dropped, never a second
  // response); requests still arriving then are dropped with their
  // connection, unaccepted.
  void stop();

 private:
  class Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace monsoon::frontend
