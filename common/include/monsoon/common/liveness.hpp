// Heartbeat bookkeeping for one peer (docs/protocol.md section 5) and the
// reconnect back-off. Plain values: owned and used by a single thread.
#pragma once

#include <chrono>

namespace monsoon {

using Clock = std::chrono::steady_clock;

struct HeartbeatSettings {
  std::chrono::milliseconds interval{1000};
  int liveness = 3;  // missed intervals before the peer is declared dead
};

class PeerLiveness {
 public:
  PeerLiveness(HeartbeatSettings settings, Clock::time_point now)
      : settings_(settings), last_heard_(now), last_sent_(now) {}

  void heard(Clock::time_point now) { last_heard_ = now; }
  void sent(Clock::time_point now) { last_sent_ = now; }

  bool peer_dead(Clock::time_point now) const {
    return now - last_heard_ >= settings_.interval * settings_.liveness;
  }
  bool heartbeat_due(Clock::time_point now) const {
    return now - last_sent_ >= settings_.interval;
  }
  // The earliest moment at which peer_dead or heartbeat_due can change.
  Clock::time_point next_check() const {
    return std::min(last_sent_ + settings_.interval,
                    last_heard_ + settings_.interval * settings_.liveness);
  }

 private:
  HeartbeatSettings settings_;
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
