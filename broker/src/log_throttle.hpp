// Rate limit for log lines about events a peer can trigger at will (malformed
// frames, unroutable replies), so a hostile or broken peer cannot flood the
// log. Plain value, used by one thread.
#pragma once

#include <cstdint>

#include "monsoon/common/liveness.hpp"

namespace monsoon::broker {

class LogThrottle {
 public:
  explicit LogThrottle(Clock::duration period) : period_(period) {}

  // True when a line may be logged now; `suppressed` is then set to the
  // number of events held back since the previous line.
  bool allow(Clock::time_point now, std::uint64_t& suppressed) {
    if (logged_once_ && now - last_ < period_) {
      ++held_back_;
      return false;
    }
    logged_once_ = true;
    last_ = now;
    suppressed = held_back_;
    held_back_ = 0;
    return true;
  }

 private:
  Clock::duration period_;
  Clock::time_point last_{};
  bool logged_once_ = false;
  std::uint64_t held_back_ = 0;
};

}  // namespace monsoon::broker
