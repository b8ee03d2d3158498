#include "monsoon/common/liveness.hpp"

#include <catch2/catch.hpp>

using namespace std::chrono_literals;
using monsoon::Clock;

TEST_CASE("a peer is dead after liveness x interval of silence") {
  Clock::time_point t0{};
  monsoon::PeerLiveness peer({.interval = 100ms, .liveness = 3}, t0);
  CHECK_FALSE(peer.peer_dead(t0 + 299ms));
  CHECK(peer.peer_dead(t0 + 300ms));
  peer.heard(t0 + 250ms);
  CHECK_FALSE(peer.peer_dead(t0 + 500ms));
  CHECK(peer.peer_dead(t0 + 550ms));
}

TEST_CASE("heartbeats are due one interval after the last send") {
  Clock::time_point t0{};
  monsoon::PeerLiveness peer({.interval = 100ms, .liveness = 3}, t0);
  CHECK_FALSE(peer.heartbeat_due(t0 + 99ms));
  CHECK(peer.heartbeat_due(t0 + 100ms));
  CHECK(peer.next_check() == t0 + 100ms);
  peer.sent(t0 + 100ms);
  CHECK(peer.next_check() == t0 + 200ms);
}

TEST_CASE(
    "a peer with its own interval: send at the shorter, wait the longer") {
  Clock::time_point t0{};
  monsoon::PeerLiveness fast_peer({.interval = 1000ms, .liveness = 3}, t0);
  fast_peer.set_peer_interval(200ms);
  CHECK(fast_peer.send_interval() == 200ms);
  CHECK(fast_peer.heartbeat_due(t0 + 200ms));
  CHECK_FALSE(fast_peer.peer_dead(t0 + 2999ms));
  CHECK(fast_peer.peer_dead(t0 + 3000ms));

  monsoon::PeerLiveness slow_peer({.interval = 1000ms, .liveness = 3}, t0);
  slow_peer.set_peer_interval(3000ms);
  CHECK(slow_peer.send_interval() == 1000ms);
  CHECK_FALSE(slow_peer.heartbeat_due(t0 + 999ms));
  CHECK(slow_peer.heartbeat_due(t0 + 1000ms));
  CHECK_FALSE(slow_peer.peer_dead(t0 + 8999ms));
  CHECK(slow_peer.peer_dead(t0 + 9000ms));
  CHECK(slow_peer.next_check() == t0 + 1000ms);
}

TEST_CASE("back-off doubles up to its cap and resets") {
  monsoon::Backoff backoff(250ms, 1000ms);
  CHECK(backoff.next() == 250ms);
  CHECK(backoff.next() == 500ms);
  CHECK(backoff.next() == 1000ms);
  CHECK(backoff.next() == 1000ms);
  backoff.reset();
  CHECK(backoff.next() == 250ms);
}
