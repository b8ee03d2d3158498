// BrokerThread: a Broker serving on a thread of its own, so that a process
// can host the dispatcher beside its other work: the front end with
// --worker-endpoint, which then needs no broker process. Its clients in the
// same process connect to an inproc:// client endpoint
// (unique_inproc_endpoint) through the process's shared ZeroMQ context; its
// workers connect to its worker endpoint as to any broker. The protocol, the
// Dispatcher and its rules are the broker process's own.
//
// Threads: constructed, stopped and destroyed by one owner thread; the
// endpoints and stats() from any thread. Should the broker's loop throw
// (only a fault of ZeroMQ or of memory can make it), its thread logs why at
// critical level and aborts the process, as BrokerLink's thread does: a
// process whose dispatcher is gone would leave every job hanging.
#pragma once

#include <string>
#include <thread>

#include "monsoon/broker/broker.hpp"

namespace monsoon::broker {

class BrokerThread {
 public:
  // Binds both endpoints, so that clients may connect as soon as it
  // returns, and starts the thread. Throws what Broker's constructor throws
  // (an endpoint that cannot be bound: std::runtime_error), or
  // std::system_error when the thread cannot start.
  explicit BrokerThread(BrokerConfig config);
  // Calls stop().
  ~BrokerThread();
  BrokerThread(const BrokerThread&) = delete;
  BrokerThread& operator=(const BrokerThread&) = delete;

  // Owner thread, idempotent: the broker sends its final DISCONNECTs (to
  // every worker, and to clients with unanswered jobs) and closes its
  // sockets; returns when its thread has ended. Stop the clients in this
  // process first, or their pending jobs wait in vain until their deadlines.
  void stop();

  // As bound (Broker::client_endpoint and worker_endpoint). Any thread.
  const std::string& client_endpoint() const noexcept;
  const std::string& worker_endpoint() const noexcept;

  // Any thread: Broker::stats().
  DispatcherStats stats() const;

 private:
  Broker broker_;
  std::thread thread_;
};

// "inproc://monsoon-broker-<n>", with an n that no other call in this
// process returns. Any thread.
std::string unique_inproc_endpoint();

}  // namespace monsoon::broker
