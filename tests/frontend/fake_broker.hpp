// A stand-in for the broker's client endpoint, for tests: a ROUTER socket on
// a free 127.0.0.1 port served by its own thread. It answers HEARTBEATs and,
// when asked to, echoes each SUBMIT's args back as an ok RESULT; otherwise it
// records SUBMITs so the test can answer them (or not) itself.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "monsoon/common/protocol.hpp"

namespace monsoon::frontend::test {

struct ReceivedJob {
  std::string identity;  // the client's routing identity
  std::string task;
  protocol::JobMeta meta;
  std::string args;
};

class FakeBroker {
 public:
  explicit FakeBroker(bool echo_jobs);
  ~FakeBroker();
  FakeBroker(const FakeBroker&) = delete;
  FakeBroker& operator=(const FakeBroker&) = delete;

  const std::string& endpoint() const { return endpoint_; }

  void set_answer_heartbeats(bool answer) { answer_heartbeats_ = answer; }
  // Worker name put in echoed RESULTs.
  void set_worker_name(std::string name);

  // The index-th SUBMIT received (0-based), waiting up to `timeout` for it.
  std::optional<ReceivedJob> wait_for_job(std::size_t index,
                                          std::chrono::milliseconds timeout);
  // The identity of the first client heard from, waiting up to `timeout`.
  std::optional<std::string> wait_for_client(std::chrono::milliseconds timeout);

  // Queues a RESULT for `job`; the broker thread sends it.
  void reply(const ReceivedJob& job, protocol::OutcomeMeta meta,
             std::string result);
  // Queues arbitrary frames for the client with `identity`.
  void send_raw(const std::string& identity, std::vector<std::string> frames);

 private:
  void run();
  void handle(protocol::Frames& frames);
  void flush_outbox();

  const bool echo_jobs_;
  std::atomic<bool> answer_heartbeats_{true};
  std::atomic<bool> stop_{false};
  zmq::context_t context_{1};
  zmq::socket_t router_;
  std::string endpoint_;

  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<ReceivedJob> jobs_;            // guarded by mutex_
  std::optional<std::string> first_client_;  // guarded by mutex_
  std::vector<protocol::Frames> outbox_;     // guarded by mutex_
  std::string worker_name_;                  // guarded by mutex_
  std::thread thread_;
};

}  // namespace monsoon::frontend::test
