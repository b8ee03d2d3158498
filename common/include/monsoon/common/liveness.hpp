// Heartbeat bookkeeping for one peer (docs/protocol.md section 5) and the
// reconnect back-off. Plain values: owned and used by a single thread.
#pragma once

#include <algorithm>
#include <chrono>

namespace monsoon {

using Clock = std::chrono::steady_clock;

struct HeartbeatSettings {
  std::chrono::milliseconds interval{1000};
  int liveness = 3;  // missed intervals before the peer is declared dead

  bool operator==(const HeartbeatSettings&) const = default;
};

class PeerLiveness {
 public:
  PeerLiveness(HeartbeatSettings settings, Clock::time_point now)
      : settings_(settings),
        send_every_(settings.interval),
        dead_after_(settings.interval * settings.liveness),
        last_heard_(now),
        last_sent_(now) {}

  // The peer's own heartbeat interval, when it announced one (READY's
  // heartbeat_ms) and it differs from ours: heartbeats then go out after the
  // shorter of the two intervals of silence, and the peer is dead after
  // liveness x the longer one, so that neither side takes the other for
  // silent (docs/protocol.md section 5).
  void set_peer_interval(std::chrono::milliseconds peer) {
    send_every_ = std::min(settings_.interval, peer);
    dead_after_ = std::max(settings_.interval, peer) * settings_.liveness;
  }

  void heard(Clock::time_point now) { last_heard_ = now; }
  void sent(Clock::time_point now) { last_sent_ = now; }

  bool peer_dead(Clock::time_point now) const {
    return now - last_heard_ >= dead_after_;
  }
  bool heartbeat_due(Clock::time_point now) const {
    return now - last_sent_ >= send_every_;
  }
  std::chrono::milliseconds send_interval() const { return send_every_; }
  // The earliest moment at which peer_dead or heartbeat_due can change.
  Clock::time_point next_check() const {
    return std::min(last_sent_ + send_every_, last_heard_ + dead_after_);
  }

 private:
  HeartbeatSettings settings_;
  std::chrono::milliseconds send_every_;
  std::chrono::milliseconds dead_after_;
  Clock::time_point last_heard_;
  Clock::time_point last_sent_;
};

// Exponential back-off: initial, 2x, 4x ... capped at max; reset() on success.
class Backoff {
 public:
  Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max)
      : initial_(initial), max_(max), next_(initial) {}

  std::chrono::milliseconds next() {
    auto current = next_;
    next_ = std::min(next_ * 2, max_);
    return current;
  }
  void reset() { next_ = initial_; }

 private:
  std::chrono::milliseconds initial_;
  std::chrono::milliseconds max_;
  std::chrono::milliseconds next_;
};

}  // namespace monsoon
