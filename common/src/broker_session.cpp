#include "monsoon/common/broker_session.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <iterator>
#include <stdexcept>
#include <string>
#include <utility>
#include <zmq_addon.hpp>

#include "monsoon/common/routing_id.hpp"

namespace monsoon {
namespace {

using protocol::Command;
using std::chrono::milliseconds;

// Messages taken per call: draining a batch per wake-up is much cheaper than
// one wake-up per message (platform notes).
constexpr int kReceiveBatch = 64;
// docs/protocol.md section 5: the back-off starts at H / 4, at least 10 ms so
// that a tiny interval cannot turn reconnecting into a busy loop, and
// doubles up to 32 times its start.
constexpr milliseconds kMinBackoff{10};
constexpr int kMaxBackoffFactor = 32;

milliseconds first_backoff(const HeartbeatSettings& heartbeat) {
  return std::max(kMinBackoff, heartbeat.interval / 4);
}

BrokerSessionConfig validated(BrokerSessionConfig config) {
  if (config.endpoint.empty()) {
    throw std::invalid_argument("empty broker endpoint");
  }
  if (config.heartbeat.interval < milliseconds{1}) {
    throw std::invalid_argument("heartbeat interval must be at least 1 ms");
  }
  if (config.heartbeat.liveness < 1) {
    throw std::invalid_argument("liveness must be at least 1");
  }
  if (config.max_message_bytes == 0 ||
      config.max_message_bytes > static_cast<std::size_t>(INT64_MAX)) {
    throw std::invalid_argument("max message bytes out of range");
  }
  config.high_water_mark = std::max(config.high_water_mark, 1);
  return config;
}

// Commands a broker may send to each role (docs/protocol.md section 2).
bool valid_from_broker(BrokerSessionConfig::Role role, Command command) {
  switch (command) {
    case Command::Heartbeat:
    case Command::Welcome:
    case Command::Disconnect:
      return true;
    case Command::Result:
      return role == BrokerSessionConfig::Role::client;
    case Command::Job:
      return role == BrokerSessionConfig::Role::worker;
    default:
      return false;
  }
}

}  // namespace

BrokerSession::BrokerSession(zmq::context_t& context,
                             BrokerSessionConfig config,
                             BrokerSessionCallbacks callbacks)
    : context_(context),
      config_(validated(std::move(config))),
      callbacks_(std::move(callbacks)),
      liveness_(config_.heartbeat, Clock::now()),
      backoff_(first_backoff(config_.heartbeat),
               first_backoff(config_.heartbeat) * kMaxBackoffFactor) {
  if (!callbacks_.greeting || !callbacks_.on_message) {
    throw std::invalid_argument(
        "a broker session needs greeting and "
        "on_message callbacks");
  }
  open(Clock::now());
}

SendResult BrokerSession::try_send(protocol::Frames& frames) {
  if (!socket_ || !up() || !connected_ || !posted_.empty()) {
    return SendResult::would_block;
  }
  return send_frames(socket_->socket(), frames);
}

void BrokerSession::post(Command command, protocol::Frames frames, bool first,
                         std::size_t key) {
  auto position = posted_.end();
  if (first) {
    position = posted_.begin();
    if (greeting_pending()) ++position;  // the opening message stays first
  }
  posted_.insert(position, {command, std::move(frames), key});
}

std::size_t BrokerSession::posted(Command command,
                                  std::optional<std::size_t> key) const {
  return static_cast<std::size_t>(
      std::count_if(posted_.begin(), posted_.end(),
                    [&](const Posted& p) { return p.is(command, key); }));
}

std::size_t BrokerSession::poll_items(std::vector<zmq::pollitem_t>& items) {
  polled_at_ = SIZE_MAX;
  if (!socket_) return 0;
  polled_at_ = items.size();
  polled_generation_ = generation_;
  short events = ZMQ_POLLIN;
  if (connected_ && !posted_.empty()) events |= ZMQ_POLLOUT;
  items.push_back({socket_->socket().handle(), 0, events, 0});
  items.push_back({socket_->events().handle(), 0, ZMQ_POLLIN, 0});
  return 2;
}

bool BrokerSession::polled_ready(
    const std::vector<zmq::pollitem_t>& items) const {
  if (polled_at_ == SIZE_MAX || polled_at_ + 1 >= items.size()) {
    return socket_.has_value();  // opened since: look at it
  }
  if (polled_generation_ != generation_) return true;
  return (items[polled_at_].revents | items[polled_at_ + 1].revents) != 0;
}

bool BrokerSession::process(Clock::time_point now) {
  if (!socket_) return false;
  const MonitoredSocket::Events events = socket_->take_events();
  if (events.last != 0) {
    monitor_connected_ = events.last == ZMQ_EVENT_CONNECTED;
    connected_ = monitor_connected_;
  }
  const bool dropped = (events.seen & ZMQ_EVENT_DISCONNECTED) != 0;

  // What the socket already holds is read first, also from a connection
  // that just dropped: each RESULT answers one of this client's jobs, whose
  // id is never reused, and would otherwise be sent again.
  const std::uint64_t generation = generation_;
  bool more = false;
  for (int i = 0; socket_ && generation_ == generation; ++i) {
    if (i == kReceiveBatch) {
      more = true;
      break;
    }
    frames_.clear();
    if (!zmq::recv_multipart(socket_->socket(), std::back_inserter(frames_),
                             zmq::recv_flags::dontwait)) {
      break;
    }
    handle(frames_, now);
  }
  if (client() && dropped && socket_ && generation_ == generation) {
    // The broker may be a new one by the time ZeroMQ reconnects this
    // socket, with no knowledge of the SUBMITs sent before (section 5).
    spdlog::warn("connection to the broker at {} dropped", config_.endpoint);
    lose(now, backoff_.next());
    return false;
  }
  flush(now);
  return more;
}

void BrokerSession::send_posted(Clock::time_point now) { flush(now); }

std::vector<int> BrokerSession::event_fds() {
  if (!socket_) return {};
  return {socket_->socket().get(zmq::sockopt::fd),
          socket_->events().get(zmq::sockopt::fd)};
}

bool BrokerSession::work_pending() {
  if (!socket_) return false;
  const int events = socket_->socket().get(zmq::sockopt::events);
  if ((events & ZMQ_POLLIN) != 0) return true;
  if ((events & ZMQ_POLLOUT) != 0 && connected_ && !posted_.empty()) {
    return true;
  }
  return (socket_->events().get(zmq::sockopt::events) & ZMQ_POLLIN) != 0;
}

void BrokerSession::discard_posted(Command command,
                                   std::optional<std::size_t> key) {
  std::erase_if(posted_, [&](const Posted& p) { return p.is(command, key); });
}

void BrokerSession::tick(Clock::time_point now) {
  if (!socket_) {
    if (!stopping_ && now >= reconnect_at_) {
      try {
        open(now);
      } catch (const zmq::error_t&) {
        // Out of file descriptors, say (an HTTP flood near ulimit -n): a
        // passing shortage, tried again after the back-off. The reason is
        // read from zmq_errno(), which error_t was made from: no call on the
        // exception object, whose vptr UBSan could not check without a
        // descriptor (it would report a false error).
        const int error = zmq_errno();
        socket_.reset();
        const milliseconds delay = backoff_.next();
        spdlog::error(
            "cannot open a socket to the broker at {}: {}; trying "
            "again in {} ms",
            config_.endpoint, zmq_strerror(error), delay.count());
        reconnect_at_ = now + delay;
      }
    }
    return;
  }
  // What already arrived counts: after a pause (SIGSTOP, a stall) messages
  // may wait in the socket, and giving it up would lose them.
  if (liveness_.peer_dead(now)) process(now);
  if (socket_ && liveness_.peer_dead(now)) {
    const auto silence =
        config_.heartbeat.interval * config_.heartbeat.liveness;
    if (stopping_) {
      spdlog::warn(
          "broker at {} silent for {} ms while stopping; not "
          "reconnecting",
          config_.endpoint, silence.count());
      lose(now, milliseconds{0});
      return;
    }
    const milliseconds delay = backoff_.next();
    spdlog::warn("broker at {} silent for {} ms; reconnecting in {} ms",
                 config_.endpoint, silence.count(), delay.count());
    lose(now, delay);
    return;
  }
  // Heartbeats only behind the opening message, on a connected socket: one
  // parked in the pipe of a socket not yet connected would reach a
  // restarted broker first and be answered DISCONNECT (issue 8).
  if (socket_ && liveness_.heartbeat_due(now)) {
    if (connected_ && !greeting_pending()) {
      protocol::Frames heartbeat = protocol::encode_control(Command::Heartbeat);
      (void)send_frames(socket_->socket(), heartbeat);  // else the next one
    }
    liveness_.sent(now);  // even if not sent: no busy loop
  }
}

Clock::time_point BrokerSession::next_wake() const noexcept {
  if (socket_) return liveness_.next_check();
  return stopping_ ? Clock::time_point::max() : reconnect_at_;
}

BrokerSessionCounters BrokerSession::counters() const noexcept {
  return {reconnects_.load(std::memory_order_relaxed),
          malformed_dropped_.load(std::memory_order_relaxed)};
}

void BrokerSession::close(milliseconds linger) {
  stopping_ = true;
  up_.store(false);
  if (!socket_) return;
  socket_->socket().set(zmq::sockopt::linger, static_cast<int>(linger.count()));
  socket_.reset();
}

void BrokerSession::open(Clock::time_point now) {
  // The old socket (if any) goes first, with its monitor, in the safe order.
  socket_.reset();
  socket_.emplace(context_, zmq::socket_type::dealer,
                  ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED);
  ++generation_;
  connected_ = false;
  monitor_connected_ = true;  // no word from it yet
  heard_on_socket_ = false;
  welcome_.reset();
  zmq::socket_t& socket = socket_->socket();
  socket.set(zmq::sockopt::routing_id, make_routing_id());
  // A socket closed to reconnect must not wait on a dead peer.
  socket.set(zmq::sockopt::linger, 0);
  // Not ZMQ_IMMEDIATE: with it libzmq 4.3 aborts (fq.cpp: !_more) when a
  // connection drops between two frames being read. Posted messages wait
  // for the monitor's CONNECTED instead.
  socket.set(zmq::sockopt::maxmsgsize,
             static_cast<std::int64_t>(config_.max_message_bytes));
  socket.set(zmq::sockopt::sndhwm, config_.high_water_mark);
  socket.set(zmq::sockopt::rcvhwm, config_.high_water_mark);
  try {
    socket.connect(config_.endpoint);
  } catch (const zmq::error_t& e) {
    socket_.reset();
    throw std::invalid_argument("cannot connect to broker endpoint '" +
                                config_.endpoint + "': " + e.what());
  }
  // An inproc connection (a dispatcher in this process) exists as soon as
  // it is made, and libzmq reports no connection events for it.
  if (config_.endpoint.starts_with("inproc://")) connected_ = true;
  if (opened_once_) reconnects_.fetch_add(1, std::memory_order_relaxed);
  opened_once_ = true;
  liveness_ = PeerLiveness(config_.heartbeat, now);
  // What was posted for a socket now gone and is stale on a new one: its
  // opening message and heartbeat, and CREDITs (the new READY's `free`
  // says it all).
  std::erase_if(posted_, [](const Posted& p) {
    return p.command == Command::Ready || p.command == Command::Hello ||
           p.command == Command::Heartbeat || p.command == Command::Credit;
  });
  protocol::Frames greeting = callbacks_.greeting();
  const Command command = protocol::decode_command(greeting);
  posted_.push_front({command, std::move(greeting)});
  if (client()) {
    // Its answer proves the broker reachable even if it predates HELLO
    // (protocol 1.0 discards it) and sends no WELCOME.
    post(Command::Heartbeat, protocol::encode_control(Command::Heartbeat),
         true);
  }
  flush(now);
}

void BrokerSession::lose(Clock::time_point now, milliseconds delay) {
  socket_.reset();
  connected_ = false;
  welcome_.reset();
  reconnect_at_ = now + delay;
  if (up_.exchange(false) && callbacks_.on_down) callbacks_.on_down(now);
}

void BrokerSession::handle(protocol::Frames& frames, Clock::time_point now) {
  try {
    const Command command = protocol::decode_command(frames);
    if (!valid_from_broker(config_.role, command)) {
      throw protocol::ProtocolError(
          std::string("command not valid from a broker: ") +
          std::string(protocol::command_name(command)));
    }
    switch (command) {
      case Command::Heartbeat:
        heard(now);
        return;
      case Command::Welcome:
        handle_welcome(frames, now);
        return;
      case Command::Disconnect:
        liveness_.heard(now);
        if (client()) {
          spdlog::warn("broker at {} is shutting down", config_.endpoint);
          lose(now, backoff_.next());
          return;
        }
        if (stopping_) return;  // it has forgotten us; we are leaving
        spdlog::warn(
            "broker at {} does not know this worker; registering "
            "again",
            config_.endpoint);
        backoff_.reset();
        lose(now, milliseconds{0});
        open(now);
        return;
      default:
        // Decoded first: only a well-formed message proves the broker
        // (section 5).
        callbacks_.on_message(command, frames, now);
        heard(now);
        return;
    }
  } catch (const protocol::ProtocolError& e) {
    count_malformed(e);
  }
}

// A refused READY (the broker's worker limit) is tried again on a new socket
// after the broker's retry_after_ms, not at once: heartbeats on this one
// would only be answered DISCONNECT. A refusal is no success for the
// back-off either (section 5).
void BrokerSession::handle_welcome(const protocol::Frames& frames,
                                   Clock::time_point now) {
  protocol::Welcome welcome = protocol::decode_welcome(frames);
  liveness_.heard(now);
  if (!welcome.ok) {
    const milliseconds delay =
        std::max(milliseconds{welcome.retry_after_ms}, backoff_.next());
    spdlog::error("the broker at {} refused us ({}: {}); trying again in {} ms",
                  config_.endpoint, welcome.code, welcome.message,
                  delay.count());
    lose(now, delay);
    return;
  }
  if (!welcome_ || welcome_->max_message_bytes != welcome.max_message_bytes) {
    spdlog::debug("broker at {} accepts frames of up to {} bytes",
                  config_.endpoint, welcome.max_message_bytes);
  }
  welcome_ = std::move(welcome);
  if (callbacks_.on_welcome) callbacks_.on_welcome(now);
  heard(now);
}

void BrokerSession::heard(Clock::time_point now) {
  liveness_.heard(now);
  // A message proves a connection, unless the monitor's last word was that
  // it dropped (the message was read from before the drop).
  if (monitor_connected_) connected_ = true;
  if (!heard_on_socket_) {
    heard_on_socket_ = true;
    backoff_.reset();
  }
  if (!up_.exchange(true)) {
    spdlog::info("broker at {} is reachable", config_.endpoint);
    if (callbacks_.on_up) callbacks_.on_up(now);
  }
}

void BrokerSession::flush(Clock::time_point now) {
  // What would block stays posted; ZMQ_POLLOUT is polled for meanwhile.
  while (socket_ && connected_ && !posted_.empty()) {
    if (send_frames(socket_->socket(), posted_.front().frames) !=
        SendResult::sent) {
      return;
    }
    posted_.pop_front();
    liveness_.sent(now);
  }
}

bool BrokerSession::greeting_pending() const noexcept {
  return !posted_.empty() && (posted_.front().command == Command::Ready ||
                              posted_.front().command == Command::Hello);
}

void BrokerSession::count_malformed(const std::exception& error) {
  const auto count =
      malformed_dropped_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (std::has_single_bit(count)) {  // rate-limited: 1st, 2nd, 4th, 8th...
    spdlog::warn(
        "dropped a malformed message from the broker at {} ({} so "
        "far): {}",
        config_.endpoint, count, error.what());
  }
}

}  // namespace monsoon
