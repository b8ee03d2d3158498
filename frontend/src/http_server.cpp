// Modelled on Boost.Beast's advanced_server example: a listener accepting
// connections and one Session per connection, whose async read -> handle ->
// write chain runs on the connection's executor (a strand when several I/O
// threads run the io_context).
//
// Lifetime: sessions are owned by the handlers that refer to them. A job's
// completion, which the BrokerLink may hold past run() and even past
// ~HttpServer, owns both the session and the Impl (and so the io_context),
// so a session never outlives the io_context its socket belongs to. The
// server also lists every session (weakly) so that stop() can reach them.
//
// One response per accepted request: a request is accepted once
// request_started() counts it (its header, or the whole of it, was read);
// from then on every path ends in exactly one reply(), whose write ends in
// on_write_some() (or, when even replying fails, in closing the connection):
// the result, an error, 500 when handling throws, or 503 shutting_down when
// the drain timeout passes first. Outcomes arriving after that are dropped.
#include "monsoon/frontend/http_server.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "monsoon/frontend/responses.hpp"
#include "request_parsing.hpp"

namespace monsoon::frontend {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

constexpr std::string_view kJson = "application/json";
constexpr std::string_view kPrometheusText = "text/plain; version=0.0.4";
constexpr std::chrono::milliseconds kAcceptRetryDelay{50};
// The first read of a request takes what is there, up to this much.
constexpr std::size_t kFirstReadBytes = 4096;

beast::string_view to_beast(std::string_view text) {
  return {text.data(), text.size()};
}

// A worker's self-chosen name, made safe to put in a header field.
std::string header_safe(std::string_view text) {
  std::string safe(text.substr(0, 256));
  for (char& c : safe) {
    auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte >= 0x7f) c = '?';
  }
  return safe;
}

// Job outcomes applied per turn of the I/O loop (see Server::deliver).
constexpr std::size_t kOutcomesPerTurn = 16;
// After the drain timeout, how long the 503s it sends (and responses being
// written then) may take before the server stops regardless.
constexpr std::chrono::milliseconds kDrainWriteGrace{1'000};

class Session;

struct Counters {
  std::array<std::atomic<std::uint64_t>, 6> responses_by_class{};
  std::atomic<std::uint64_t> connections_accepted{0};
  std::atomic<std::uint64_t> connections_rejected{0};
  std::atomic<std::uint64_t> open_connections{0};
  std::atomic<std::uint64_t> requests_in_progress{0};
};

// The listener and everything the sessions share; HttpServer::Impl.
class Server : public std::enable_shared_from_this<Server> {
 public:
  Server(FrontendConfig config, JobLink& link);

  void run();
  void stop() {
    net::post(accept_executor_, [this] { begin_drain(); });
  }

  void request_started() { counters_.requests_in_progress.fetch_add(1); }
  void request_finished() {
    // Paired with drain_noticed(): whichever of the two sees the other's
    // write stops the io_context.
    if (counters_.requests_in_progress.fetch_sub(1) == 1 &&
        drain_notices_left_.load() == 0) {
      ioc_.stop();
    }
  }
  // A session has seen the drain begin and can accept no new request
  // (Session::notice_drain). Once all have, the server stops with the
  // last request in progress.
  void drain_noticed() {
    if (drain_notices_left_.fetch_sub(1) == 1 &&
        counters_.requests_in_progress.load() == 0) {
      ioc_.stop();
    }
  }

  // The accept executor (Session::start): lists a session for stop().
  // Returns what forget() takes.
  using SessionList = std::list<std::weak_ptr<Session>>;
  SessionList::iterator remember(std::weak_ptr<Session> session) {
    const std::lock_guard lock(sessions_mutex_);
    return sessions_.insert(sessions_.end(), std::move(session));
  }
  // ~Session, any thread.
  void forget(SessionList::iterator position) {
    const std::lock_guard lock(sessions_mutex_);
    sessions_.erase(position);
  }

  // Any thread: hands a job's outcome to its session. Outcomes are applied
  // in turns of at most kOutcomesPerTurn, each turn a handler queued behind
  // the I/O that is ready by then: a burst of thousands of completions
  // (jobs started together end together) cannot hold back a new request,
  // such as a GET /now, for longer than one turn.
  void deliver(std::shared_ptr<Session> session, std::uint64_t request,
               JobOutcome outcome);

  ServerStats stats() const;
  ServerLimits limits() const;

  const FrontendConfig config_;
  JobLink& link_;
  Counters counters_;
  std::atomic<bool> draining_{false};
  std::uint16_t port_ = 0;

 private:
  net::any_io_executor connection_executor();
  void accept();
  void on_accept(beast::error_code ec, tcp::socket socket);
  void begin_drain();
  void drain_deadline();
  std::vector<std::shared_ptr<Session>> live_sessions();
  void apply_outcomes();

  // Sessions (and the +1 of begin_drain) yet to see the drain; SIZE_MAX
  // until it begins.
  std::atomic<std::size_t> drain_notices_left_{SIZE_MAX};
  // Every session started; each erases itself when destroyed, which may be
  // while ioc_ is destroyed, so these are declared (and outlive it) first.
  std::mutex sessions_mutex_;
  SessionList sessions_;

  // Destroyed before the members above, together with every handler still
  // queued (and the sessions those own).
  net::io_context ioc_;
  net::any_io_executor accept_executor_;
  tcp::acceptor acceptor_;
  net::steady_timer accept_retry_timer_;
  net::steady_timer drain_timer_;

  // Outcomes not yet applied; at most one per pending job. Destroyed before
  // ioc_, so the sessions held here never outlive their sockets' context.
  struct Delivery {
    std::shared_ptr<Session> session;
    std::uint64_t request;
    JobOutcome outcome;
  };
  std::mutex outcomes_mutex_;
  std::deque<Delivery> outcomes_;
  bool outcomes_scheduled_ = false;  // an apply_outcomes() turn is queued
};

// One client connection; serves its requests one at a time, in order.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, Server& server)
      : server_(server),
        executor_(socket.get_executor()),
        stream_(std::move(socket)) {
    server_.counters_.open_connections.fetch_add(1);
  }
  ~Session() {
    if (listed_) server_.forget(*listed_);
    server_.counters_.open_connections.fetch_sub(1);
  }

  // The accept executor, before the drain can begin there.
  void start() {
    listed_ = server_.remember(weak_from_this());
    beast::error_code ignored;
    stream_.socket().set_option(tcp::no_delay(true), ignored);
    net::dispatch(executor_,
                  [self = shared_from_this()] { self->read_request(); });
  }

  // An I/O thread: applies the outcome of the job of request number
  // `request` on this session's executor (at once when it can).
  void apply_outcome(std::uint64_t request, JobOutcome outcome) {
    net::dispatch(executor_, [self = shared_from_this(), request,
                              outcome = std::move(outcome)]() mutable {
      self->on_job_done(request, std::move(outcome));
    });
  }

  // Any thread, once each, when the server stops (begin_drain): an idle
  // connection closes at once; one with a request in progress, or one
  // whose request is arriving, closes after answering it. The server hears
  // (drain_noticed) once the connection can accept no new request.
  void drain() {
    net::dispatch(executor_, [self = shared_from_this()] { self->on_drain(); });
  }

  // Any thread, after drain(), when the drain timeout passes: a request
  // still unanswered gets 503 shutting_down now; one still arriving is
  // dropped with its connection.
  void drain_deadline() {
    net::dispatch(executor_,
                  [self = shared_from_this()] { self->on_drain_deadline(); });
  }

 private:
  // Per-request state starts afresh, so nothing of the previous response
  // (its worker, its keep-alive) leaks into the next one.
  void begin_request() {
    ++request_;
    in_progress_ = false;
    answered_ = false;
    version_ = 11;
    keep_alive_ = false;
    head_ = false;
    format_ = {};
    worker_.clear();
    reset_request_parser(parser_, server_.config_);
  }

  // idle_timeout bounds only the wait for a request's first byte; from then
  // on the whole request, headers and body, must arrive within
  // request_timeout (slowloris defence).
  void read_request() {
    if (closed_) return;
    begin_request();
    if (buffer_.size() > 0) {  // pipelined: begun already
      arriving_ = true;
      return read_header();
    }
    stream_.expires_after(server_.config_.idle_timeout);
    stream_.async_read_some(buffer_.prepare(kFirstReadBytes),
                            beast::bind_front_handler(&Session::on_first_bytes,
                                                      shared_from_this()));
  }

  void on_first_bytes(beast::error_code ec, std::size_t size) {
    // Closed, idle for too long or broken: nothing to answer.
    if (ec || closed_) return shutdown();
    arriving_ = true;
    buffer_.commit(size);
    read_header();
  }

  void read_header() {
    stream_.expires_after(server_.config_.request_timeout);
    http::async_read_header(
        stream_, buffer_, *parser_,
        beast::bind_front_handler(&Session::on_header, shared_from_this()));
  }

  void on_header(beast::error_code ec, std::size_t) {
    if (closed_) return;  // by the drain, before this request was accepted
    if (!ec) {
      if (std::optional<HttpError> error = header_error(*parser_)) {
        return answer_error(*error);
      }
    }
    if (ec || parser_->is_done()) return on_read(ec, 0);
    if (beast::iequals(parser_->get()[http::field::expect], "100-continue")) {
      continue_response_ =
          http::response<http::empty_body>(http::status::continue_, 11);
      http::async_write(
          stream_, continue_response_,
          [self = shared_from_this()](beast::error_code ec, std::size_t) {
            if (ec || self->closed_) return self->shutdown();  // gone
            self->read_body();
          });
      return;
    }
    read_body();
  }

  // The body, like the header, must arrive within request_timeout of the
  // request's first byte (see FrontendConfig::request_timeout).
  void read_body() {
    http::async_read(
        stream_, buffer_, *parser_,
        beast::bind_front_handler(&Session::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (closed_) return;  // by the drain, before this request was accepted
    if (!ec) return handle_request();
    std::optional<HttpError> error = read_error(ec, server_.config_);
    if (!error) return shutdown();
    answer_error(*error);
  }

  // Accepts the request: from here on it gets exactly one response.
  void accept_request() {
    in_progress_ = true;
    arriving_ = false;
    server_.request_started();
    // Counted first: the server cannot stop before answering it.
    if (drained_) notice_drain();
    // Known once the start line is parsed, even if the rest is refused.
    head_ = parser_->get().method() == http::verb::head;
  }

  // A request refused while reading it (the connection then closes).
  void answer_error(const HttpError& error) {
    accept_request();
    guarded([&] { reply_error(error.status, error.code, error.message); });
  }

  void handle_request() {
    accept_request();
    auto& request = parser_->get();
    version_ = request.version();
    keep_alive_ =
        version_ >= 11 && request.keep_alive() && !server_.draining_.load();
    // Unless a reply is being written already, a failure is answered 500.
    // The outcome of a job that submit() took before throwing is then
    // dropped (see on_job_done).
    guarded([&] {
      Route route = classify(request_head(request), server_.config_.timeouts);
      switch (route.kind) {
        case Route::Kind::now:
          return reply(200, now_body(std::chrono::system_clock::now()), kJson);
        case Route::Kind::healthz: {
          bool reachable = server_.link_.reachable();
          return reply(reachable ? 200 : 503,
                       healthz_body(reachable, server_.link_.stats().pending),
                       kJson, reachable ? 0 : 1);
        }
        case Route::Kind::metrics:
          return reply(200,
                       metrics_text(server_.stats(), server_.link_.stats(),
                                    server_.limits()),
                       kPrometheusText);
        case Route::Kind::job:
          return start_job(route);
        case Route::Kind::error:
          return reply_error(route.error.status, route.error.code,
                             route.error.message, 0, route.error.allow);
      }
    });
  }

  void start_job(Route& route) {
    auto& request = parser_->get();
    // Before anything runs: a result the client cannot take is not worth
    // computing.
    auto format = negotiate_result_format(field_values(request, "Accept"));
    if (!format) {
      return reply_error(406, http_error_code::kNotAcceptable,
                         "the result is available as application/json or "
                         "application/msgpack; the Accept header refuses both");
    }
    format_ = *format;
    std::string args;
    if (route.fixed_args) {
      args = std::move(*route.fixed_args);
    } else {
      auto body_args =
          job_args(to_std(request[http::field::content_type]),
                   std::move(request.body()), server_.link_.max_args_bytes());
      if (auto* error = std::get_if<HttpError>(&body_args)) {
        return reply_error(error->status, error->code, error->message);
      }
      args = std::move(std::get<std::string>(body_args));
    }
    stream_.expires_never();  // the job's deadline bounds the wait
    server_.link_.submit(
        std::move(route.task), std::move(args), route.timeout,
        Completion{server_.shared_from_this(), shared_from_this(), request_});
  }

  // Owns the server before the session: members are destroyed in reverse
  // order, so the session (and its socket) goes before the io_context can.
  struct Completion {
    std::shared_ptr<Server> server;
    std::shared_ptr<Session> session;
    std::uint64_t request;
    void operator()(JobOutcome outcome) const {
      server->deliver(session, request, std::move(outcome));
    }
  };

  void on_job_done(std::uint64_t request, JobOutcome outcome) {
    // An outcome for a request that was answered otherwise (submit() threw
    // after taking the job and handle_request answered 500, or the drain
    // timeout answered 503) must not become a second response, nor the
    // response to a later request.
    if (request != request_ || answered_) {
      spdlog::warn("dropped the outcome of a job whose request was answered");
      return;
    }
    guarded([&] {
      const auto& meta = outcome.meta;
      worker_ = header_safe(meta.worker);
      if (!meta.ok) {
        // The front end is going away: so does this connection.
        if (meta.code == link_error_code::kShuttingDown) keep_alive_ = false;
        int status = http_status_for_error(meta.code);
        return reply_error(
            status, meta.code, meta.message,
            status == 503 ? retry_after_seconds(meta.retry_after_ms) : 0);
      }
      auto body = job_result(std::move(outcome.result), format_.msgpack);
      if (auto* error = std::get_if<HttpError>(&body)) {
        return reply_error(error->status, error->code, error->message);
      }
      reply(200, std::move(std::get<std::string>(body)),
            format_.msgpack ? format_.content_type : kJson);
    });
  }

  void on_drain() {
    drained_ = true;
    // A request arriving is accepted (accept_request tells the server) or
    // fails (shutdown tells it).
    if (arriving_) return;
    // Idle: nothing is owed, close now. With a request in progress,
    // on_write_some closes after its response.
    if (!in_progress_) close();
    notice_drain();
  }

  // Once per session, after on_drain, when it can accept no new request.
  void notice_drain() {
    if (drain_noticed_) return;
    drain_noticed_ = true;
    server_.drain_noticed();
  }

  void on_drain_deadline() {
    if (arriving_ && !in_progress_) return close();
    if (!in_progress_ || answered_) return;
    worker_.clear();
    guarded([&] {
      reply_error(503, link_error_code::kShuttingDown,
                  "the front end is shutting down and the request did not "
                  "complete in time",
                  1);
    });
  }

  // Runs `step`, which is to reply to the current request. If it throws
  // before its reply is under way, answers 500 instead; if even that fails,
  // closes the connection and counts the request finished, so that no
  // request is left hanging and the drain is not held up.
  template <typename Step>
  void guarded(Step&& step) {
    try {
      step();
      return;
    } catch (const std::exception& e) {
      spdlog::error("failed to handle a request: {}", e.what());
    }
    if (answered_) return;
    try {
      worker_.clear();
      reply_error(500, protocol::error_code::kInternal, "internal error");
      return;
    } catch (const std::exception& e) {
      spdlog::error("failed to answer a request: {}; closing", e.what());
    }
    answered_ = true;
    close();
    finish_request();
  }

  void reply_error(int status, std::string_view code, std::string_view message,
                   std::uint32_t retry_after_s = 0,
                   std::string_view allow = {}) {
    if (status == 503)
      retry_after_s = std::max<std::uint32_t>(retry_after_s, 1);
    // Errors are JSON whatever the Accept header says: RFC 9110 section
    // 12.5.1 lets a server disregard Accept rather than answer 406.
    reply(status, error_body(code, message), kJson, retry_after_s, allow);
  }

  // Exactly one reply per request: see on_job_done and handle_request.
  void reply(int status, std::string body, std::string_view content_type,
             std::uint32_t retry_after_s = 0, std::string_view allow = {}) {
    response_ = {};
    response_.result(static_cast<unsigned>(status));
    response_.version(version_);
    response_.set(http::field::server, "monsoon");
    response_.set(http::field::content_type, to_beast(content_type));
    if (retry_after_s > 0) {
      response_.set(http::field::retry_after, std::to_string(retry_after_s));
    }
    if (!allow.empty()) response_.set(http::field::allow, to_beast(allow));
    if (!worker_.empty()) response_.set("X-Monsoon-Worker", worker_);
    if (server_.draining_.load()) keep_alive_ = false;
    response_.keep_alive(keep_alive_);
    response_.body() = std::move(body);
    response_.prepare_payload();
    // HEAD: the headers of GET, Content-Length included, and no content
    // (RFC 9110 section 9.3.2), errors included.
    if (head_) response_.body().clear();
    serializer_.emplace(response_);
    answered_ = true;  // before the write: guarded() must not reply again
    write_some();
    server_.counters_
        .responses_by_class[static_cast<std::size_t>(
            std::clamp(status / 100, 1, 5))]
        .fetch_add(1, std::memory_order_relaxed);
  }

  // Writing a response may take as long as it needs while it makes
  // progress; only request_timeout without any bounds it (a slow but
  // steady reader gets all of a large result, one that stops reading is cut
  // off).
  void write_some() {
    stream_.expires_after(server_.config_.request_timeout);
    http::async_write_some(
        stream_, *serializer_,
        beast::bind_front_handler(&Session::on_write_some, shared_from_this()));
  }

  void on_write_some(beast::error_code ec, std::size_t) {
    if (!ec && !serializer_->is_done()) return write_some();
    serializer_.reset();
    finish_request();
    if (ec) return;  // the client is gone; dropping the session closes it
    if (!keep_alive_ || drained_) return shutdown();
    read_request();
  }

  void finish_request() {
    in_progress_ = false;
    server_.request_finished();
  }

  // No more requests on this connection.
  void shutdown() {
    arriving_ = false;
    if (drained_) notice_drain();
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  // Cancels whatever is pending on the connection and closes it.
  void close() {
    closed_ = true;
    arriving_ = false;
    if (drained_) notice_drain();
    stream_.close();
  }

  Server& server_;
  const net::any_io_executor executor_;  // immutable: read from any thread
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<Server::SessionList::iterator> listed_;  // see start()
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::empty_body> continue_response_;
  http::response<http::string_body> response_;
  std::optional<http::response_serializer<http::string_body>> serializer_;
  bool drained_ = false;        // on_drain ran: no new request
  bool drain_noticed_ = false;  // see notice_drain()
  bool closed_ = false;         // by close(): nothing more is read or answered
  // Bytes of a request arrived, and it is neither accepted nor failed.
  bool arriving_ = false;
  // The current request's state; see begin_request().
  std::uint64_t request_ = 0;  // its number on this connection
  bool in_progress_ = false;   // accepted, and its response not yet written
  bool answered_ = false;      // its response is written or being written
  unsigned version_ = 11;
  bool keep_alive_ = false;
  bool head_ = false;    // a HEAD request: its response has no content
  ResultFormat format_;  // of a job's result
  std::string worker_;   // X-Monsoon-Worker of the response
};

tcp::endpoint resolve(const std::string& host, std::uint16_t port) {
  net::io_context resolver_context;
  tcp::resolver resolver(resolver_context);
  beast::error_code ec;
  auto results =
      resolver.resolve(host, std::to_string(port), tcp::resolver::passive, ec);
  if (ec || results.empty()) {
    throw std::runtime_error("cannot resolve " + host + ": " + ec.message());
  }
  return *results.begin();
}

Server::Server(FrontendConfig config, JobLink& link)
    : config_(std::move(config)),
      link_(link),
      ioc_(std::max(config_.threads, 1)),
      accept_executor_(connection_executor()),
      acceptor_(accept_executor_),
      accept_retry_timer_(accept_executor_),
      drain_timer_(accept_executor_) {
  if (config_.max_body_bytes > link_.max_args_bytes()) {
    throw std::invalid_argument(
        "the body limit (" + std::to_string(config_.max_body_bytes) +
        " bytes) exceeds the largest job args the broker accepts (" +
        std::to_string(link_.max_args_bytes()) + " bytes)");
  }
  auto endpoint = resolve(config_.host, config_.port);
  auto where = config_.host + ":" + std::to_string(config_.port);
  beast::error_code ec;
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec && config_.reuse_port) {
    acceptor_.set_option(
        net::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>(true),
        ec);
  }
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    throw std::runtime_error("cannot listen on " + where + ": " + ec.message());
  port_ = acceptor_.local_endpoint().port();
  accept();
}

// A strand only when several threads could run one connection's handlers.
net::any_io_executor Server::connection_executor() {
  if (config_.threads > 1) return net::make_strand(ioc_);
  return ioc_.get_executor();
}

void Server::run() {
  auto serve = [this] {
    for (;;) {
      try {
        ioc_.run();
        return;
      } catch (const std::exception& e) {
        spdlog::error("unexpected exception in the event loop: {}", e.what());
      }
    }
  };
  std::vector<std::thread> helpers;
  for (int i = 1; i < config_.threads; ++i) helpers.emplace_back(serve);
  serve();
  for (auto& helper : helpers) helper.join();
}

void Server::accept() {
  acceptor_.async_accept(connection_executor(),
                         beast::bind_front_handler(&Server::on_accept, this));
}

void Server::on_accept(beast::error_code ec, tcp::socket socket) {
  if (!acceptor_.is_open()) return;  // draining
  if (ec) {
    // E.g. out of file descriptors: retrying at once would spin.
    spdlog::warn("accept failed: {}", ec.message());
    accept_retry_timer_.expires_after(kAcceptRetryDelay);
    accept_retry_timer_.async_wait([this](beast::error_code wait_ec) {
      if (!wait_ec) accept();
    });
    return;
  }
  if (counters_.open_connections.load() >= config_.max_connections) {
    counters_.connections_rejected.fetch_add(1, std::memory_order_relaxed);
    beast::error_code ignored;
    socket.close(ignored);
  } else {
    counters_.connections_accepted.fetch_add(1, std::memory_order_relaxed);
    std::make_shared<Session>(std::move(socket), *this)->start();
  }
  accept();
}

// Stops accepting, then lets every session know (Session::drain); the
// io_context stops once all have and no request is in progress, or at the
// drain timeout after the 503s it sends (drain_deadline).
void Server::begin_drain() {
  if (draining_.exchange(true)) return;
  beast::error_code ignored;
  acceptor_.close(ignored);
  accept_retry_timer_.cancel();
  auto sessions = live_sessions();
  // Sessions are started on this executor, so none can be missing here.
  drain_notices_left_.store(sessions.size() + 1);
  spdlog::info("stopping: {} connection(s), {} request(s) in progress",
               sessions.size(), counters_.requests_in_progress.load());
  for (auto& session : sessions) session->drain();
  drain_timer_.expires_after(config_.drain_timeout);
  drain_timer_.async_wait([this](beast::error_code ec) {
    if (!ec) drain_deadline();
  });
  drain_noticed();
}

void Server::drain_deadline() {
  spdlog::warn(
      "stopping: drain timeout, answering {} request(s) in progress with 503",
      counters_.requests_in_progress.load());
  for (auto& session : live_sessions()) session->drain_deadline();
  drain_timer_.expires_after(kDrainWriteGrace);
  drain_timer_.async_wait([this](beast::error_code ec) {
    if (ec) return;
    spdlog::warn("stopping: {} response(s) still unwritten, closing",
                 counters_.requests_in_progress.load());
    ioc_.stop();
  });
}

std::vector<std::shared_ptr<Session>> Server::live_sessions() {
  std::vector<std::shared_ptr<Session>> live;
  const std::lock_guard lock(sessions_mutex_);
  live.reserve(sessions_.size());
  for (const auto& weak : sessions_) {
    if (auto session = weak.lock()) live.push_back(std::move(session));
  }
  return live;
}

void Server::deliver(std::shared_ptr<Session> session, std::uint64_t request,
                     JobOutcome outcome) {
  const std::lock_guard lock(outcomes_mutex_);
  outcomes_.push_back({std::move(session), request, std::move(outcome)});
  if (!outcomes_scheduled_) {
    outcomes_scheduled_ = true;
    net::post(ioc_, [this] { apply_outcomes(); });
  }
}

void Server::apply_outcomes() {
  std::vector<Delivery> turn;
  turn.reserve(kOutcomesPerTurn);
  {
    const std::lock_guard lock(outcomes_mutex_);
    while (!outcomes_.empty() && turn.size() < kOutcomesPerTurn) {
      turn.push_back(std::move(outcomes_.front()));
      outcomes_.pop_front();
    }
    if (outcomes_.empty()) {
      outcomes_scheduled_ = false;
    } else {
      net::post(ioc_, [this] { apply_outcomes(); });
    }
  }
  for (auto& [session, request, outcome] : turn) {
    session->apply_outcome(request, std::move(outcome));
  }
}

ServerStats Server::stats() const {
  ServerStats stats;
  for (std::size_t i = 0; i < stats.responses_by_class.size(); ++i) {
    stats.responses_by_class[i] = counters_.responses_by_class[i].load();
  }
  stats.connections_accepted = counters_.connections_accepted.load();
  stats.connections_rejected = counters_.connections_rejected.load();
  stats.open_connections = counters_.open_connections.load();
  stats.requests_in_progress = counters_.requests_in_progress.load();
  return stats;
}

ServerLimits Server::limits() const {
  return {config_.max_connections, config_.max_body_bytes,
          config_.max_header_bytes,
          static_cast<std::uint64_t>(config_.timeouts.default_timeout.count()),
          static_cast<std::uint64_t>(config_.timeouts.max_timeout.count())};
}

}  // namespace

void reset_request_parser(std::optional<RequestParser>& parser,
                          const FrontendConfig& config) {
  parser.emplace();
  parser->body_limit(config.max_body_bytes);
  parser->header_limit(static_cast<std::uint32_t>(config.max_header_bytes));
}

RequestHead request_head(const Request& request) {
  return {to_std(request.method_string()), to_std(request.target()),
          to_std(request["X-Timeout-Ms"])};
}

std::string field_values(const Request& request, std::string_view name) {
  std::string joined;
  auto [first, last] = request.equal_range(to_beast(name));
  for (auto field = first; field != last; ++field) {
    if (!joined.empty()) joined += ", ";
    joined += to_std(field->value());
  }
  return joined;
}

std::optional<HttpError> header_error(const RequestParser& parser) {
  const Request& request = parser.get();
  if (!parser.chunked() && request.count(http::field::transfer_encoding) > 0) {
    // RFC 9112 section 6.3: without chunked last, the body's length is
    // unknowable; answer 400 and close. Beast reads such a request as
    // having no body, so its body would be taken for the next request: a
    // second response to one request, and a request smuggling hole.
    return HttpError{400,
                     std::string(protocol::error_code::kBadRequest),
                     "Transfer-Encoding must end with chunked",
                     {}};
  }
  return host_error(request.version(), request.count(http::field::host),
                    to_std(request[http::field::host]));
}

std::optional<HttpError> read_error(const beast::error_code& ec,
                                    const FrontendConfig& config) {
  // Beast's parser reports what it rejects in the request in the
  // http::error category; in it, end_of_stream and partial_message mean
  // that the client closed. Other categories: a timeout or a broken
  // connection.
  bool rejected =
      ec.category() ==
          http::make_error_code(http::error::bad_target).category() &&
      ec != http::error::end_of_stream && ec != http::error::partial_message;
  if (!rejected) return std::nullopt;
  if (ec == http::error::body_limit) {
    return HttpError{
        413,
        std::string(http_error_code::kPayloadTooLarge),
        "the body exceeds " + std::to_string(config.max_body_bytes) + " bytes",
        {}};
  }
  if (ec == http::error::header_limit) {
    return HttpError{431,
                     std::string(http_error_code::kHeadersTooLarge),
                     "the header exceeds " +
                         std::to_string(config.max_header_bytes) + " bytes",
                     {}};
  }
  return HttpError{400,
                   std::string(protocol::error_code::kBadRequest),
                   "malformed HTTP request: " + ec.message(),
                   {}};
}

class HttpServer::Impl final : public Server {
 public:
  using Server::Server;
};

HttpServer::HttpServer(FrontendConfig config, JobLink& link)
    : impl_(std::make_shared<Impl>(std::move(config), link)) {}

HttpServer::~HttpServer() = default;

std::uint16_t HttpServer::port() const noexcept { return impl_->port_; }

void HttpServer::run() { impl_->run(); }

void HttpServer::stop() { impl_->stop(); }

}  // namespace monsoon::frontend
