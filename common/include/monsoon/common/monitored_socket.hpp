// MonitoredSocket: a ZeroMQ socket together with libzmq's monitor of its
// connection events (zmq_socket_monitor), owned as one so that they are
// always torn down in the only safe order.
//
// Why it matters: libzmq 4.3 sends monitor events from its own I/O thread,
// with a blocking send on an inproc PAIR socket. If the reading end is
// closed while the monitored socket still emits events (its connections
// report DISCONNECTED as they close, also while the socket itself is being
// closed), that send waits forever, and with it every socket of the context
// that the I/O thread serves: a front end that closed the reader first never
// heard a restarted broker again (issue 8). Hence:
//   - the reader's receive high-water mark is 0 (unlimited), so the I/O
//     thread never waits for room either: the owner must keep reading
//     (take_events() whenever events() polls readable);
//   - the destructor first stops monitoring (zmq_socket_monitor(socket,
//     nullptr, 0) closes the writing end, under libzmq's monitor lock), then
//     closes the socket, then the reader.
//
// Thread: one thread owns the object and both of its sockets.
#pragma once

#include <zmq.hpp>

namespace monsoon {

class MonitoredSocket {
 public:
  // A new socket of `type` in `context`, monitored for the ZMQ_EVENT_* bits
  // in `events` (non-zero). Configure and connect it through socket().
  // Throws zmq::error_t when a socket cannot be created or monitored.
  MonitoredSocket(zmq::context_t& context, zmq::socket_type type, int events);
  // Stops monitoring, closes the socket (with its linger), then the reader.
  ~MonitoredSocket();
  MonitoredSocket(const MonitoredSocket&) = delete;
  MonitoredSocket& operator=(const MonitoredSocket&) = delete;

  zmq::socket_t& socket() noexcept { return socket_; }
  // The reading end of the monitor, to poll for ZMQ_POLLIN.
  zmq::socket_t& events() noexcept { return reader_; }

  struct Events {
    int seen = 0;  // the bitwise or of their ZMQ_EVENT_* numbers
    int last = 0;  // the number of the latest one
  };
  // Reads every event waiting, without blocking; zeros when none waited.
  [[nodiscard]] Events take_events();

 private:
  zmq::socket_t socket_;
  zmq::socket_t reader_;
};

}  // namespace monsoon
