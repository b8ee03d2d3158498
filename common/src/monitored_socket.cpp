#include "monsoon/common/monitored_socket.hpp"

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>

namespace monsoon {
namespace {

std::string unique_monitor_endpoint() {
  static std::atomic<std::uint64_t> count{0};
  return "inproc://monsoon-monitor-" + std::to_string(++count);
}

}  // namespace

MonitoredSocket::MonitoredSocket(zmq::context_t& context, zmq::socket_type type,
                                 int events)
    : socket_(context, type), reader_(context, zmq::socket_type::pair) {
  const std::string endpoint = unique_monitor_endpoint();
  if (zmq_socket_monitor(socket_.handle(), endpoint.c_str(), events) != 0) {
    throw zmq::error_t();
  }
  // The inproc pipe's limit is the sum of both ends' limits, or none when
  // either is 0: with 0 here, libzmq's I/O thread never blocks on it.
  reader_.set(zmq::sockopt::rcvhwm, 0);
  reader_.set(zmq::sockopt::linger, 0);
  try {
    reader_.connect(endpoint);
  } catch (...) {
    zmq_socket_monitor(socket_.handle(), nullptr, 0);
    throw;
  }
}

MonitoredSocket::~MonitoredSocket() {
  // See the header: the writing end first, the reader last.
  zmq_socket_monitor(socket_.handle(), nullptr, 0);
  socket_.close();
  reader_.close();
}

MonitoredSocket::Events MonitoredSocket::take_events() {
  Events events;
  for (;;) {
    zmq::message_t frame;
    if (!reader_.recv(frame, zmq::recv_flags::dontwait)) return events;
    // Frame 1: a 16-bit event number and a 32-bit value; frame 2: the
    // endpoint. Both arrive together.
    std::uint16_t event = 0;
    if (frame.size() >= sizeof event) {
      std::memcpy(&event, frame.data(), sizeof event);
      events.seen |= event;
      events.last = event;
    }
    while (frame.more()) {
      if (!reader_.recv(frame, zmq::recv_flags::dontwait)) break;
    }
  }
}

}  // namespace monsoon
