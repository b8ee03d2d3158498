// The broker's engine: two bound ROUTER sockets (clients, workers) served by
// one thread that polls both and feeds a Dispatcher. It runs the broker
// process, and a front end that hosts the dispatcher (BrokerThread).
//
// Threads: run() blocks the calling thread, which then owns the sockets;
// stop() may be called from any thread (e.g. a StopSignalWatcher). The
// sockets belong to the process's shared ZeroMQ context
// (shared_zmq_context), so a client endpoint such as inproc://name is
// reachable from the same process.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "monsoon/broker/dispatcher.hpp"

namespace monsoon::broker {

struct BrokerConfig {
  // Any ZeroMQ bind endpoint, e.g. tcp://*:5555, tcp://127.0.0.1:* or
  // inproc://name (clients in the same process).
  std::string client_endpoint = "tcp://127.0.0.1:5555";
  std::string worker_endpoint = "tcp://127.0.0.1:5556";
  // Queues, attempts, heartbeats. Its first_job_id is replaced by a random
  // one: ids must not repeat across broker restarts.
  DispatcherConfig dispatcher;
  // Largest frame accepted from any peer (ZMQ_MAXMSGSIZE); a peer that sends
  // more is disconnected by ZeroMQ.
  std::size_t max_message_bytes = 16 * 1024 * 1024;
  int high_water_mark = 100'000;  // per peer, both directions
  std::size_t drain_batch = 64;   // messages per socket per wake-up
  // How long closing the sockets may wait to deliver the final DISCONNECTs.
  std::chrono::milliseconds shutdown_linger{250};
  // How often the broker logs its counters (debug level) and the figures
  // of the queues that changed since (info level, with their completion
  // rate per second).
  std::chrono::milliseconds stats_interval{10'000};
  // How often the per-queue figures given by stats() are sampled: they cost
  // time per queue, the other stats nothing.
  std::chrono::milliseconds queue_stats_interval{1'000};
};

class Broker {
 public:
  // Binds both sockets. Throws std::runtime_error naming the endpoint and the
  // reason (e.g. "Address already in use") when either cannot be bound, and
  // std::invalid_argument for an invalid DispatcherConfig.
  explicit Broker(BrokerConfig config);
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // Serves until stop(); then sends DISCONNECT to every known worker (and to
  // clients with unanswered jobs), closes the sockets and returns. Returns
  // at once if stop() came first. Throws std::logic_error if called twice.
  void run();

  // Any thread, any time, idempotent.
  void stop() noexcept;

  // The endpoints as bound, with wildcard ports resolved. Any thread.
  const std::string& client_endpoint() const noexcept;
  const std::string& worker_endpoint() const noexcept;

  // Any thread: the dispatcher's stats as of the last time run()'s loop
  // began to wait for messages (before run(): the initial ones; after it
  // returned: the final ones); their `queues` as of the latest sample (at
  // most queue_stats_interval old).
  DispatcherStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace monsoon::broker
