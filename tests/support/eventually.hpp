// How tests wait for something to happen: poll a condition until it holds or
// a deadline passes, never sleep a fixed time and hope.
#pragma once

#include <chrono>
#include <thread>

namespace monsoon::test {

// Polls `condition` every few milliseconds until it returns true or
// `timeout` passes; returns its last value (looked at once more at the
// deadline, so a condition that became true while sleeping counts).
template <typename Condition>
bool eventually(Condition&& condition,
                std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  constexpr std::chrono::milliseconds kPause{5};
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return condition();
    std::this_thread::sleep_for(kPause);
  }
  return true;
}

}  // namespace monsoon::test
