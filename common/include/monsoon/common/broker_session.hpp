// BrokerSession: the connecting side of one MNS session with one broker
// (docs/protocol.md section 5), for a client (front end, client library) or a
// worker. It owns the DEALER socket and its monitor and applies the
// protocol's rules for the role: the opening message (HELLO or READY) first
// on every new socket, heartbeats, the broker's liveness, reconnecting with a
// back-off on a new socket (new routing identity), WELCOME and DISCONNECT.
// What the session is for (jobs, results) stays with its owner, through
// callbacks. A process that talks to several brokers keeps one session each.
//
// Outgoing messages either go at once (try_send: a SUBMIT, which fails fast
// when it cannot go) or are posted (post: a DONE, which must not be lost to
// a reconnect): posted messages wait, in order, for a connected socket whose
// opening message went first, and survive the socket being replaced.
//
// Driving it: the owner either polls (poll_items, then process after
// zmq::poll returns) on a dedicated thread, or waits on the sockets' ZMQ_FDs
// in an event loop and calls process until it returns false (ZMQ_FD is
// edge-triggered: see ../shared/platform-notes.md). Either way it calls
// tick at next_wake() at the latest.
//
// Thread: one thread (the owner's) calls everything except counters() and
// up(), which any thread may call. Callbacks run on that thread, inside
// process, tick or open; they must not destroy the session.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "monsoon/common/liveness.hpp"
#include "monsoon/common/monitored_socket.hpp"
#include "monsoon/common/protocol.hpp"
#include "monsoon/common/zmq_send.hpp"

namespace monsoon {

struct BrokerSessionConfig {
  enum class Role : std::uint8_t { client, worker };
  // client: a dropped TCP connection (socket monitor) or a DISCONNECT means
  // the broker is lost: the session closes the socket and reconnects after
  // the back-off. worker: ZeroMQ reconnects the socket by itself and the
  // broker recognises its routing identity, so a dropped connection only
  // holds posted messages back; a DISCONNECT ("not registered") opens a new
  // socket at once, except once stopping (docs/protocol.md section 5).
  Role role = Role::client;
  std::string endpoint;                       // a ZeroMQ connect endpoint
  HeartbeatSettings heartbeat;                // interval >= 1 ms, liveness >= 1
  std::size_t max_message_bytes = 16u << 20;  // ZMQ_MAXMSGSIZE
  int high_water_mark = 1000;                 // both directions
};

struct BrokerSessionCallbacks {
  // The opening message of a new socket (HELLO or READY), built when the
  // socket is opened. Required.
  std::function<protocol::Frames()> greeting;
  // A well-formed message for the owner: anything but HEARTBEAT, WELCOME and
  // DISCONNECT, which the session handles. May throw protocol::ProtocolError
  // for a message it finds malformed: the session counts and drops it, and
  // it does not count as hearing the broker. Runs before on_up when it is
  // the first message heard on a socket.
  std::function<void(protocol::Command, protocol::Frames&, Clock::time_point)>
      on_message;
  // The broker was heard on a new socket (its first well-formed message
  // there that is not a refusal): jobs may flow. Optional.
  std::function<void(Clock::time_point)> on_up;
  // A WELCOME accepted the socket (welcome() has it), possibly again on the
  // same socket. Runs before on_up when it is the first message. Optional.
  std::function<void(Clock::time_point)> on_welcome;
  // The session gave the socket up (silence, dropped connection, DISCONNECT
  // or a refusal) after on_up. Posted messages stay queued. Optional.
  std::function<void(Clock::time_point)> on_down;
};

struct BrokerSessionCounters {
  std::uint64_t reconnects = 0;  // sockets opened after the first
  std::uint64_t malformed_dropped = 0;
};

class BrokerSession {
 public:
  // Opens the first socket at once (so the greeting callback runs inside the
  // constructor). Throws std::invalid_argument for an unusable config or
  // endpoint (naming it), zmq::error_t if a socket cannot be created.
  BrokerSession(zmq::context_t& context, BrokerSessionConfig config,
                BrokerSessionCallbacks callbacks);
  BrokerSession(const BrokerSession&) = delete;
  BrokerSession& operator=(const BrokerSession&) = delete;

  const BrokerSessionConfig& config() const noexcept { return config_; }

  // Whether the broker has been heard on the current socket (section 5) and
  // not lost since. Any thread.
  bool up() const noexcept { return up_.load(std::memory_order_relaxed); }
  // The WELCOME that accepted the current socket, if any: the broker's frame
  // limit and protocol minor version. Reset when a socket is opened.
  const std::optional<protocol::Welcome>& welcome() const noexcept {
    return welcome_;
  }

  // Sends `frames` now, with ZMQ_DONTWAIT, if the broker is up and nothing
  // posted waits before it. Frames are consumed only when `sent`.
  [[nodiscard]] SendResult try_send(protocol::Frames& frames);

  // Queues `frames` to be sent in order once connected, behind the opening
  // message. The owner bounds what it posts (posted() counts it). `first`
  // puts it before the other posted messages (a worker's DISCONNECT). `key`
  // is the owner's label for it (a worker's pool), which posted() and
  // discard_posted() may select by.
  void post(protocol::Command command, protocol::Frames frames,
            bool first = false, std::size_t key = 0);
  // Posted messages not yet handed to ZeroMQ, of one command (and `key`).
  [[nodiscard]] std::size_t posted(
      protocol::Command command,
      std::optional<std::size_t> key = std::nullopt) const;
  // Drops the posted messages of one command (and `key`) that are still
  // waiting (a CREDIT superseded by a newer one).
  void discard_posted(protocol::Command command,
                      std::optional<std::size_t> key = std::nullopt);
  // Hands posted messages to ZeroMQ while it takes them, receiving nothing
  // (a stopping worker's last DONEs).
  void send_posted(Clock::time_point now);

  // Stopping (a worker that said DISCONNECT): never reconnects, and ignores
  // the broker's DISCONNECT. Sessions of clients stop by being destroyed.
  void set_stopping() noexcept { stopping_ = true; }
  // Whether a socket is open (false while backing off, or once stopping and
  // lost).
  bool has_socket() const noexcept { return socket_.has_value(); }

  // Appends the items to poll for (the socket and its monitor); none while
  // backing off. Returns how many it appended, and remembers where, for
  // polled_ready.
  std::size_t poll_items(std::vector<zmq::pollitem_t>& items);
  // After zmq::poll on `items` (filled by poll_items, among the owner's
  // own): whether process has anything to do. True also when the socket
  // was replaced since poll_items.
  [[nodiscard]] bool polled_ready(
      const std::vector<zmq::pollitem_t>& items) const;
  // Handles whatever the socket and monitor hold: monitor events, up to a
  // batch of messages, then posted messages that can go. Returns true if the
  // batch limit stopped it (call again before waiting on ZMQ_FD).
  bool process(Clock::time_point now);
  // For an event loop (e.g. Asio) instead of zmq::poll: the descriptors to
  // wait on for readability, the socket's and its monitor's ZMQ_FD (none
  // while backing off; they change when the socket is replaced, so ask
  // again after process and tick). They are edge-triggered: after a wake-up
  // call process until work_pending() is false before waiting again
  // (../shared/platform-notes.md). The session owns them: never close them.
  [[nodiscard]] std::vector<int> event_fds();
  // Whether process has something to do now (ZMQ_EVENTS of the socket and
  // its monitor): a message to read, or posted messages that can go.
  [[nodiscard]] bool work_pending();

  // Heartbeats, the broker's liveness and reconnecting; call at next_wake()
  // at the latest (earlier is harmless). A socket that cannot be opened
  // (zmq::error_t, e.g. out of file descriptors) is tried again after the
  // back-off.
  void tick(Clock::time_point now);
  Clock::time_point next_wake() const noexcept;

  // Any thread.
  BrokerSessionCounters counters() const noexcept;

  // Closes the socket for good, giving ZeroMQ up to `linger` to deliver what
  // it already took (a stopping worker's last DONEs). Messages still posted
  // are lost. The session then stays closed.
  void close(std::chrono::milliseconds linger);

 private:
  struct Posted {
    protocol::Command command;
    protocol::Frames frames;
    std::size_t key = 0;  // the owner's label (post)

    bool is(protocol::Command c, std::optional<std::size_t> k) const {
      return command == c && (!k || key == *k);
    }
  };

  void open(Clock::time_point now);
  void lose(Clock::time_point now, std::chrono::milliseconds delay);
  void handle(protocol::Frames& frames, Clock::time_point now);
  void handle_welcome(const protocol::Frames& frames, Clock::time_point now);
  void heard(Clock::time_point now);
  void flush(Clock::time_point now);
  bool greeting_pending() const noexcept;
  bool client() const noexcept {
    return config_.role == BrokerSessionConfig::Role::client;
  }
  void count_malformed(const std::exception& error);

  zmq::context_t& context_;
  const BrokerSessionConfig config_;
  const BrokerSessionCallbacks callbacks_;
  std::optional<MonitoredSocket> socket_;  // empty while backing off
  bool connected_ = false;                 // posted messages may go
  // False once the monitor's last event was a dropped connection.
  bool monitor_connected_ = true;
  bool heard_on_socket_ = false;
  bool opened_once_ = false;
  std::uint64_t generation_ = 0;  // sockets opened, to notice a replacement
  // Where poll_items put this session's items, and for which socket.
  std::size_t polled_at_ = SIZE_MAX;
  std::uint64_t polled_generation_ = 0;
  bool stopping_ = false;
  std::optional<protocol::Welcome> welcome_;
  std::deque<Posted> posted_;  // in sending order; see post
  PeerLiveness liveness_;
  Backoff backoff_;
  Clock::time_point reconnect_at_{};
  protocol::Frames frames_;  // receive buffer
  std::atomic<bool> up_{false};
  std::atomic<std::uint64_t> reconnects_{0};
  std::atomic<std::uint64_t> malformed_dropped_{0};
};

}  // namespace monsoon
