#include "monsoon/broker/broker.hpp"

#include <spdlog/fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <stdexcept>
#include <zmq.hpp>

#include "log_throttle.hpp"
#include "monsoon/common/protocol.hpp"
#include "monsoon/common/wakeup.hpp"
#include "monsoon/common/zmq_context.hpp"
#include "monsoon/common/zmq_send.hpp"

namespace monsoon::broker {
namespace {

using protocol::Command;
using std::chrono::milliseconds;

// Identity frame plus the longest valid message (signature, command and three
// body frames) plus one, so that an over-long message still fails decoding
// while the frames kept stay bounded.
constexpr std::size_t kMaxKeptFrames = 1 + 5 + 1;

// Queues logged per stats interval, at most; one more line counts the rest.
constexpr std::size_t kMaxQueueReportLines = 32;

zmq::socket_t bind_router(zmq::context_t& context, const BrokerConfig& config,
                          const std::string& endpoint, std::string_view role) {
  zmq::socket_t socket(context, zmq::socket_type::router);
  socket.set(zmq::sockopt::router_mandatory, 1);
  // A peer whose TCP connection ZeroMQ re-established keeps its routing id
  // (monsoon::make_routing_id); the new pipe must take it over.
  socket.set(zmq::sockopt::router_handover, 1);
  socket.set(zmq::sockopt::linger, 0);
  socket.set(zmq::sockopt::sndhwm, config.high_water_mark);
  socket.set(zmq::sockopt::rcvhwm, config.high_water_mark);
  socket.set(zmq::sockopt::maxmsgsize,
             static_cast<std::int64_t>(config.max_message_bytes));
  try {
    socket.bind(endpoint);
  } catch (const zmq::error_t& e) {
    throw std::runtime_error("cannot bind " + std::string(role) +
                             " endpoint '" + endpoint + "': " + e.what());
  }
  return socket;
}

// Receives one multipart message without waiting. Returns false when none is
// pending. Frames beyond kMaxKeptFrames are read and discarded.
bool receive(zmq::socket_t& socket, protocol::Frames& frames) {
  frames.clear();
  zmq::message_t frame;
  if (!socket.recv(frame, zmq::recv_flags::dontwait)) return false;
  for (;;) {
    bool more = frame.more();
    if (frames.size() < kMaxKeptFrames) frames.push_back(std::move(frame));
    if (!more) return true;
    frame = zmq::message_t();
    // The rest of a multipart message arrives together with its first frame.
    (void)socket.recv(frame, zmq::recv_flags::dontwait);
  }
}

// What the dispatcher takes from the broker's own settings: a random first
// job id (ids must not repeat across restarts) and the frame limit.
BrokerConfig resolved(BrokerConfig config) {
  config.dispatcher.first_job_id = random_first_job_id();
  config.dispatcher.max_message_bytes = config.max_message_bytes;
  return config;
}

}  // namespace

struct Broker::Impl {
  explicit Impl(BrokerConfig cfg)
      : config(resolved(std::move(cfg))),
        clients(
            bind_router(*context, config, config.client_endpoint, "client")),
        workers(
            bind_router(*context, config, config.worker_endpoint, "worker")),
        client_endpoint(clients.get(zmq::sockopt::last_endpoint)),
        worker_endpoint(workers.get(zmq::sockopt::last_endpoint)),
        dispatcher(config.dispatcher),
        published_stats(dispatcher.stats()) {}

  BrokerConfig config;
  // Shared with the process's other components: a client in the same
  // process may connect to an inproc:// client endpoint.
  std::shared_ptr<zmq::context_t> context = shared_zmq_context();
  zmq::socket_t clients;
  zmq::socket_t workers;
  const std::string client_endpoint;
  const std::string worker_endpoint;
  Dispatcher dispatcher;
  Wakeup wakeup;
  std::atomic<bool> stopping{false};
  bool ran = false;  // run() closes the sockets: it cannot run again
  Outbox outbox;
  protocol::Frames frames;  // reused receive buffer
  LogThrottle malformed_log{std::chrono::seconds(1)};
  LogThrottle unroutable_log{std::chrono::seconds(1)};
  // The dispatcher's stats as of the loop's latest pass, for stats() on
  // other threads.
  mutable std::mutex stats_mutex;
  DispatcherStats published_stats;  // guarded by stats_mutex
  // The queues as of the last report (run()'s thread only).
  std::vector<QueueStats> reported_queues;

  void run() {
    if (ran) throw std::logic_error("Broker::run() called twice");
    ran = true;
    spdlog::info("broker serving clients on {}, workers on {}", client_endpoint,
                 worker_endpoint);
    const auto& routes = config.dispatcher.routes.rules();
    if (!routes.empty()) {
      spdlog::info("routes (first match wins, else the task's own queue): {}",
                   fmt::join(routes, ", "));
    }
    zmq::pollitem_t items[] = {
        {workers.handle(), 0, ZMQ_POLLIN, 0},
        {clients.handle(), 0, ZMQ_POLLIN, 0},
        {nullptr, wakeup.fd(), ZMQ_POLLIN, 0},
    };
    auto last_stats = Clock::now();
    auto next_stats = last_stats + config.stats_interval;
    auto next_queue_sample = last_stats;
    while (!stopping.load(std::memory_order_acquire)) {
      auto now = Clock::now();
      dispatcher.on_tick(now, outbox);
      flush(now);
      if (now >= next_queue_sample || now >= next_stats) {
        sample_queues();
        next_queue_sample = now + config.queue_stats_interval;
      }
      const DispatcherStats& stats = publish_stats();
      if (now >= next_stats) {
        report(stats, std::chrono::duration<double>(now - last_stats).count());
        last_stats = now;
        next_stats = now + config.stats_interval;
      }
      auto wake_at =
          std::min({dispatcher.next_deadline(), next_stats, next_queue_sample});
      auto timeout = std::chrono::ceil<milliseconds>(wake_at - now);
      poll(items, std::max(timeout, milliseconds(0)));
      if (items[2].revents & ZMQ_POLLIN) wakeup.drain();
      // Workers first: their DONEs free credit for the clients' SUBMITs.
      if (items[0].revents & ZMQ_POLLIN) {
        drain(workers, &Impl::from_worker, "worker");
      }
      if (items[1].revents & ZMQ_POLLIN) {
        drain(clients, &Impl::from_client, "client");
      }
    }
    shut_down();
  }

  // Returns the stats published, which only this thread changes; their
  // queues are those of the latest sample_queues().
  const DispatcherStats& publish_stats() {
    DispatcherStats stats = dispatcher.stats();
    std::lock_guard lock(stats_mutex);
    stats.queues = std::move(published_stats.queues);
    published_stats = std::move(stats);
    return published_stats;
  }

  void sample_queues() {
    std::vector<QueueStats> queues = dispatcher.queue_stats();
    std::lock_guard lock(stats_mutex);
    published_stats.queues = std::move(queues);
  }

  // The periodic report: the counters at debug level, and the queues that
  // changed since the last report at info level.
  void report(const DispatcherStats& stats, double seconds) {
    spdlog::debug("stats: {}", to_string(stats));
    for (const std::string& line :
         queue_report(reported_queues, stats.queues, std::max(seconds, 1e-3),
                      kMaxQueueReportLines)) {
      spdlog::info("{}", line);
    }
    reported_queues = stats.queues;
  }

  DispatcherStats stats() const {
    std::lock_guard lock(stats_mutex);
    return published_stats;
  }

  static void poll(std::span<zmq::pollitem_t> items, milliseconds timeout) {
    try {
      zmq::poll(items.data(), items.size(), timeout);
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
      for (auto& item : items) item.revents = 0;
    }
  }

  using Handler = void (Impl::*)(std::string_view, std::span<zmq::message_t>,
                                 Clock::time_point);

  void drain(zmq::socket_t& socket, Handler handle, std::string_view role) {
    for (std::size_t n = 0; n < config.drain_batch && receive(socket, frames);
         ++n) {
      auto now = Clock::now();
      // ROUTER always prepends the sender's identity.
      std::span<zmq::message_t> body(frames);
      try {
        (this->*handle)(protocol::frame_view(frames[0]), body.subspan(1), now);
      } catch (const protocol::ProtocolError& e) {
        drop_malformed(role, e.what(), now);
      }
      flush(now);
    }
  }

  void from_worker(std::string_view identity, std::span<zmq::message_t> body,
                   Clock::time_point now) {
    switch (Command command = protocol::decode_command(body)) {
      case Command::Ready:
        dispatcher.on_ready(identity, protocol::decode_ready(body), now,
                            outbox);
        return;
      case Command::Done:
        dispatcher.on_done(identity,
                           protocol::decode_outcome(Command::Done, body), now,
                           outbox);
        return;
      case Command::Credit:
        dispatcher.on_credit(identity, protocol::decode_credit(body), now,
                             outbox);
        return;
      case Command::Heartbeat:
        dispatcher.on_heartbeat(identity, now, outbox);
        return;
      case Command::Disconnect:
        dispatcher.on_disconnect(identity, now, outbox);
        return;
      default:
        throw protocol::ProtocolError(
            std::string(protocol::command_name(command)) +
            " is not valid from a worker");
    }
  }

  void from_client(std::string_view identity, std::span<zmq::message_t> body,
                   Clock::time_point now) {
    switch (Command command = protocol::decode_command(body)) {
      case Command::Submit:
        dispatcher.on_submit(
            identity, protocol::decode_job(Command::Submit, body), now, outbox);
        return;
      case Command::Heartbeat: {
        protocol::Frames reply = protocol::encode_control(Command::Heartbeat);
        // A client that cannot take a heartbeat will notice its absence.
        (void)send_frames_to(clients, identity, reply);
        return;
      }
      case Command::Hello: {
        (void)protocol::decode_hello(body);  // validated; nothing kept
        protocol::Frames reply = protocol::encode_welcome(dispatcher.welcome());
        // Lost only to a client that is not reading; it keeps its own limit.
        (void)send_frames_to(clients, identity, reply);
        return;
      }
      case Command::Disconnect:
        return;  // the client's unanswered jobs still run; their RESULTs
                 // are counted as unroutable if it is gone
      default:
        throw protocol::ProtocolError(
            std::string(protocol::command_name(command)) +
            " is not valid from a client");
    }
  }

  void drop_malformed(std::string_view role, const char* why,
                      Clock::time_point now) {
    dispatcher.note_malformed();
    std::uint64_t suppressed = 0;
    if (malformed_log.allow(now, suppressed)) {
      spdlog::warn(
          "dropped a malformed message from a {}: {} ({} more dropped since "
          "last report)",
          role, why, suppressed);
    }
  }

  // Sends everything the dispatcher decided. A failed send to a worker makes
  // the dispatcher forget it, which may append more messages; hence the index
  // loop and the move out of each slot before handling it.
  void flush(Clock::time_point now) {
    for (std::size_t i = 0; i < outbox.size(); ++i) {
      Outgoing message = std::move(outbox[i]);
      if (message.peer == Outgoing::Peer::client) {
        SendResult result =
            send_frames_to(clients, message.identity, message.frames);
        if (result != SendResult::sent && message.command == Command::Result) {
          note_result_lost(result, now);
        }
        continue;
      }
      if (message.command == Command::Job &&
          !dispatcher.knows_worker(message.identity)) {
        continue;  // its worker was lost meanwhile; the job was requeued
      }
      if (send_frames_to(workers, message.identity, message.frames) !=
          SendResult::sent) {
        dispatcher.on_worker_unreachable(message.identity, now, outbox);
      }
    }
    outbox.clear();
  }

  void note_result_lost(SendResult result, Clock::time_point now) {
    dispatcher.note_result_unroutable();
    std::uint64_t suppressed = 0;
    if (unroutable_log.allow(now, suppressed)) {
      spdlog::warn(
          "could not deliver a RESULT: client {} ({} more since last report)",
          result == SendResult::unroutable ? "is gone" : "is not reading",
          suppressed);
    }
  }

  void shut_down() {
    dispatcher.on_shutdown(outbox);
    flush(Clock::now());
    // Give the final DISCONNECTs a moment to leave; dead peers cannot hold
    // the close up for longer than this.
    auto linger = static_cast<int>(config.shutdown_linger.count());
    workers.set(zmq::sockopt::linger, linger);
    clients.set(zmq::sockopt::linger, linger);
    workers.close();
    clients.close();
    publish_stats();
    spdlog::info("broker stopped: {}", to_string(dispatcher.stats()));
  }
};

Broker::Broker(BrokerConfig config)
    : impl_(std::make_unique<Impl>(std::move(config))) {}

Broker::~Broker() = default;

void Broker::run() { impl_->run(); }

void Broker::stop() noexcept {
  impl_->stopping.store(true, std::memory_order_release);
  impl_->wakeup.notify();
}

const std::string& Broker::client_endpoint() const noexcept {
  return impl_->client_endpoint;
}

const std::string& Broker::worker_endpoint() const noexcept {
  return impl_->worker_endpoint;
}

DispatcherStats Broker::stats() const { return impl_->stats(); }

}  // namespace monsoon::broker
