#include "monsoon/common/monitored_socket.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <string>

using monsoon::MonitoredSocket;
using namespace std::chrono_literals;

namespace {

zmq::socket_t bound_router(zmq::context_t& context, std::string& endpoint) {
  zmq::socket_t router(context, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.bind("tcp://127.0.0.1:*");
  endpoint = router.get(zmq::sockopt::last_endpoint);
  return router;
}

// Whether `socket` becomes readable within `timeout`.
bool readable(zmq::socket_t& socket, std::chrono::milliseconds timeout) {
  zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
  return zmq::poll(&item, 1, timeout) == 1;
}

// A message from a new DEALER reaches a new ROUTER in `context` within 5 s:
// libzmq's I/O thread for the context is not stuck.
bool context_usable(zmq::context_t& context) {
  std::string endpoint;
  zmq::socket_t router = bound_router(context, endpoint);
  zmq::socket_t dealer(context, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect(endpoint);
  if (!dealer.send(zmq::str_buffer("ping"), zmq::send_flags::dontwait)) {
    return false;
  }
  return readable(router, 5s);
}

// Connects `dealer` to the ROUTER at `endpoint` and proves the connection
// with a message the ROUTER receives.
bool connected(MonitoredSocket& dealer, const std::string& endpoint,
               zmq::socket_t& router) {
  dealer.socket().set(zmq::sockopt::linger, 0);
  dealer.socket().connect(endpoint);
  return dealer.socket().send(zmq::str_buffer("hello"),
                              zmq::send_flags::dontwait) &&
         readable(router, 5s);
}

}  // namespace

TEST_CASE("a monitored socket reports a dropped connection",
          "[monitored_socket]") {
  zmq::context_t context(1);
  std::string endpoint;
  zmq::socket_t router = bound_router(context, endpoint);
  MonitoredSocket dealer(context, zmq::socket_type::dealer,
                         ZMQ_EVENT_DISCONNECTED);
  REQUIRE(connected(dealer, endpoint, router));
  CHECK(dealer.take_events().seen == 0);

  router.close();
  REQUIRE(readable(dealer.events(), 5s));
  const MonitoredSocket::Events events = dealer.take_events();
  CHECK((events.seen & ZMQ_EVENT_DISCONNECTED) != 0);
  CHECK(events.last == ZMQ_EVENT_DISCONNECTED);
}

// The front end's fault of issue 8: its monitor reader closed before the
// socket it watched, a connection that dropped meanwhile blocked libzmq's
// I/O thread in the monitor's send, and the context never connected again.
TEST_CASE(
    "closing a monitored socket as its peer goes away never blocks "
    "the context",
    "[monitored_socket]") {
  zmq::context_t context(1);
  for (int i = 0; i < 50; ++i) {
    INFO("round " << i);
    std::string endpoint;
    zmq::socket_t router = bound_router(context, endpoint);
    {
      MonitoredSocket dealer(context, zmq::socket_type::dealer,
                             ZMQ_EVENT_DISCONNECTED);
      REQUIRE(connected(dealer, endpoint, router));
      // The peer goes away, and the socket is closed while libzmq may be
      // reporting the drop; every other round the report is waiting first.
      router.close();
      if (i % 2 == 1) REQUIRE(readable(dealer.events(), 5s));
    }
    REQUIRE(context_usable(context));
  }
}
