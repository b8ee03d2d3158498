// BrokerSession, driven by hand on the test thread against a raw ROUTER
// standing in for the broker.
#include "monsoon/common/broker_session.hpp"

#include <poll.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <iterator>
#include <string>
#include <vector>
#include <zmq_addon.hpp>

#include "../support/eventually.hpp"

using monsoon::BrokerSession;
using monsoon::BrokerSessionCallbacks;
using monsoon::BrokerSessionConfig;
using monsoon::Clock;
namespace protocol = monsoon::protocol;
using namespace std::chrono_literals;

namespace {

struct Seen {
  std::vector<std::string> events;  // "up", "down", "message"
  int ups = 0;
};

BrokerSessionCallbacks client_callbacks(Seen& seen) {
  BrokerSessionCallbacks callbacks;
  callbacks.greeting = [] { return protocol::encode_hello({}); };
  callbacks.on_message = [&seen](protocol::Command command,
                                 protocol::Frames& frames, Clock::time_point) {
    (void)protocol::decode_outcome(command, frames);  // throws if malformed
    seen.events.push_back("message");
  };
  callbacks.on_up = [&seen](Clock::time_point) {
    ++seen.ups;
    seen.events.push_back("up");
  };
  callbacks.on_down = [&seen](Clock::time_point) {
    seen.events.push_back("down");
  };
  return callbacks;
}

BrokerSessionConfig client_config(const std::string& endpoint) {
  BrokerSessionConfig config;
  config.role = BrokerSessionConfig::Role::client;
  config.endpoint = endpoint;
  config.heartbeat = {std::chrono::milliseconds{60'000}, 3};
  return config;
}

// One round of the owner's loop: poll briefly, process, tick.
void step(BrokerSession& session, std::chrono::milliseconds wait = 5ms) {
  std::vector<zmq::pollitem_t> items;
  if (session.poll_items(items) > 0) zmq::poll(items, wait);
  session.process(Clock::now());
  session.tick(Clock::now());
}

void send_to(zmq::socket_t& router, const std::string& identity,
             protocol::Frames frames) {
  router.send(zmq::buffer(identity), zmq::send_flags::sndmore);
  for (std::size_t i = 0; i < frames.size(); ++i) {
    router.send(frames[i], i + 1 < frames.size() ? zmq::send_flags::sndmore
                                                 : zmq::send_flags::none);
  }
}

// A session that the fake broker at `router` has heard (HELLO) and answered
// (HEARTBEAT): up. Returns the session's routing identity.
std::string bring_up(BrokerSession& session, zmq::socket_t& router,
                     Seen& seen) {
  std::string identity;
  REQUIRE(monsoon::test::eventually([&] {
    step(session);
    zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, 0ms) == 1) {
      std::vector<zmq::message_t> frames;
      (void)zmq::recv_multipart(router, std::back_inserter(frames));
      identity = frames.at(0).to_string();
    }
    return !identity.empty();
  }));
  send_to(router, identity,
          protocol::encode_control(protocol::Command::Heartbeat));
  REQUIRE(monsoon::test::eventually([&] {
    step(session);
    return session.up();
  }));
  REQUIRE(seen.ups == 1);
  return identity;
}

}  // namespace

// docs/protocol.md section 5: the RESULTs a broker delivered before its
// connection dropped are valid answers. The old BrokerLink read the socket
// before the monitor; BrokerSession::process reads the monitor first and
// throws such RESULTs away with the socket, so their jobs run again
// (duplicates) or fail broker_unavailable when no other broker is live.
TEST_CASE(
    "BrokerSession: a RESULT received before the connection dropped "
    "is delivered",
    "[broker_session]") {
  zmq::context_t broker_context(1);
  zmq::socket_t router(broker_context, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 1000);
  router.bind("tcp://127.0.0.1:*");
  const std::string endpoint = router.get(zmq::sockopt::last_endpoint);

  zmq::context_t context(1);
  Seen seen;
  BrokerSession session(context, client_config(endpoint),
                        client_callbacks(seen));
  const std::string identity = bring_up(session, router, seen);

  // The broker answers a job, then goes away (kill, restart, shutdown).
  protocol::OutcomeMeta meta = protocol::OutcomeMeta::success(42);
  send_to(router, identity,
          protocol::encode_outcome(protocol::Command::Result, "echo", meta,
                                   protocol::nil_payload()));
  router.close();

  // Both the RESULT and the monitor's DISCONNECTED wait, unread.
  std::vector<zmq::pollitem_t> items;
  REQUIRE(session.poll_items(items) == 2);
  REQUIRE(monsoon::test::eventually([&] {
    zmq::poll(items, 10ms);
    return (items[0].revents & ZMQ_POLLIN) != 0 &&
           (items[1].revents & ZMQ_POLLIN) != 0;
  }));

  session.process(Clock::now());
  CHECK(seen.events == std::vector<std::string>{"up", "message", "down"});
}

// Section 5: the broker is heard on the first *well-formed* message; a
// malformed RESULT is dropped and counted, and proves nothing. The old
// BrokerLink decoded before calling it heard.
TEST_CASE("BrokerSession: a malformed RESULT does not bring the broker up",
          "[broker_session]") {
  zmq::context_t broker_context(1);
  zmq::socket_t router(broker_context, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.bind("tcp://127.0.0.1:*");
  const std::string endpoint = router.get(zmq::sockopt::last_endpoint);

  zmq::context_t context(1);
  Seen seen;
  BrokerSession session(context, client_config(endpoint),
                        client_callbacks(seen));
  std::vector<zmq::message_t> hello;
  REQUIRE(monsoon::test::eventually([&] {
    step(session);
    zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, 0ms) == 1) {
      (void)zmq::recv_multipart(router, std::back_inserter(hello));
    }
    return !hello.empty();
  }));
  const std::string identity = hello.at(0).to_string();

  // A RESULT whose meta is not a map.
  protocol::Frames bad;
  bad.emplace_back(protocol::kSignature.data(), protocol::kSignature.size());
  const char result = static_cast<char>(protocol::Command::Result);
  bad.emplace_back(&result, 1);
  bad.emplace_back("echo", 4);
  bad.emplace_back("\xc0", 1);  // nil, not a map
  bad.emplace_back("\xc0", 1);
  send_to(router, identity, std::move(bad));

  REQUIRE(monsoon::test::eventually([&] {
    step(session);
    return session.counters().malformed_dropped == 1;
  }));
  CHECK_FALSE(session.up());
  CHECK(seen.ups == 0);
}

// open() drops a stale opening message but not the HEARTBEAT a client posts
// behind it: while no broker listens, every reconnect leaves one more in the
// posted queue (unbounded; sent in a burst once a broker answers).
TEST_CASE(
    "BrokerSession: reconnecting to a broker that is down does not "
    "pile up posted messages",
    "[broker_session]") {
  // A port nobody listens on: bind, note it, close.
  std::string endpoint;
  {
    zmq::context_t scratch(1);
    zmq::socket_t router(scratch, zmq::socket_type::router);
    router.set(zmq::sockopt::linger, 0);
    router.bind("tcp://127.0.0.1:*");
    endpoint = router.get(zmq::sockopt::last_endpoint);
  }
  zmq::context_t context(1);
  Seen seen;
  BrokerSessionConfig config = client_config(endpoint);
  config.heartbeat = {std::chrono::milliseconds{10}, 1};
  BrokerSession session(context, config, client_callbacks(seen));

  REQUIRE(monsoon::test::eventually([&] {
    step(session, 2ms);
    return session.counters().reconnects >= 5;
  }));
  CHECK(session.posted(protocol::Command::Hello) <= 1);
  CHECK(session.posted(protocol::Command::Heartbeat) <= 1);
}

// The session as an event loop drives it (the front end's HTTP I/O threads,
// later): waiting on its ZMQ_FDs with poll(2), then processing until it
// reports no work left (ZMQ_FD is edge-triggered). Every RESULT arrives, more
// than one batch of them, with no zmq::poll anywhere.
TEST_CASE("BrokerSession: driven through ZMQ_FD like an event loop") {
  zmq::context_t context;
  zmq::socket_t router(context, zmq::socket_type::router);
  router.bind("tcp://127.0.0.1:*");
  const std::string endpoint = router.get(zmq::sockopt::last_endpoint);
  Seen seen;
  BrokerSession session(context, client_config(endpoint),
                        client_callbacks(seen));

  auto run_loop_once = [&session](std::chrono::milliseconds wait) {
    std::vector<pollfd> fds;
    for (const int fd : session.event_fds()) fds.push_back({fd, POLLIN, 0});
    if (!fds.empty()) {
      ::poll(fds.data(), fds.size(), static_cast<int>(wait.count()));
    }
    while (session.process(Clock::now()) || session.work_pending()) {
    }
    session.tick(Clock::now());
  };

  std::string identity;
  REQUIRE(monsoon::test::eventually([&] {
    run_loop_once(5ms);
    zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
    while (zmq::poll(&item, 1, 0ms) == 1) {
      std::vector<zmq::message_t> frames;
      (void)zmq::recv_multipart(router, std::back_inserter(frames));
      identity = frames.at(0).to_string();
    }
    return !identity.empty();
  }));
  send_to(router, identity,
          protocol::encode_control(protocol::Command::Heartbeat));
  constexpr int kResults = 200;  // more than one receive batch
  for (int i = 0; i < kResults; ++i) {
    send_to(router, identity,
            protocol::encode_outcome(
                protocol::Command::Result, "echo",
                protocol::OutcomeMeta::success(static_cast<std::uint64_t>(i)),
                protocol::nil_payload()));
  }
  REQUIRE(monsoon::test::eventually([&] {
    run_loop_once(50ms);
    return std::count(seen.events.begin(), seen.events.end(), "message") ==
           kResults;
  }));
  CHECK(session.up());
  CHECK(seen.ups == 1);
}
