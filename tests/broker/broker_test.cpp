#include "monsoon/broker/broker.hpp"

#include <catch2/catch.hpp>
#include <future>
#include <thread>
#include <zmq_addon.hpp>

#include "eventually.hpp"
#include "monsoon/broker/broker_thread.hpp"
#include "monsoon/common/zmq_context.hpp"

using namespace monsoon;
using namespace monsoon::broker;
using protocol::Command;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

BrokerConfig ephemeral_config() {
  BrokerConfig config;
  config.client_endpoint = "tcp://127.0.0.1:*";
  config.worker_endpoint = "tcp://127.0.0.1:*";
  return config;
}

// Runs a broker on its own thread; stops and joins it on destruction.
class RunningBroker {
 public:
  explicit RunningBroker(BrokerConfig config) : broker_(std::move(config)) {
    finished_ = std::async(std::launch::async, [this] { broker_.run(); });
  }
  ~RunningBroker() {
    broker_.stop();
    finished_.wait();
  }

  Broker& broker() { return broker_; }
  // Stops the broker and reports whether run() returned within `limit`.
  bool stop_within(milliseconds limit) {
    broker_.stop();
    return finished_.wait_for(limit) == std::future_status::ready;
  }

 private:
  Broker broker_;
  std::future<void> finished_;
};

zmq::socket_t dealer(zmq::context_t& context, const std::string& endpoint) {
  zmq::socket_t socket(context, zmq::socket_type::dealer);
  socket.set(zmq::sockopt::linger, 0);
  socket.set(zmq::sockopt::rcvtimeo, 5000);  // a failing test fails, not hangs
  socket.connect(endpoint);
  return socket;
}

protocol::Frames receive(zmq::socket_t& socket) {
  protocol::Frames frames;
  auto received = zmq::recv_multipart(socket, std::back_inserter(frames));
  REQUIRE(received.has_value());
  return frames;
}

void send(zmq::socket_t& socket, protocol::Frames frames) {
  REQUIRE(zmq::send_multipart(socket, frames).has_value());
}

}  // namespace

TEST_CASE("Broker binds free ports and stops promptly on stop()") {
  RunningBroker running(ephemeral_config());
  CHECK(running.broker().client_endpoint().rfind("tcp://127.0.0.1:", 0) == 0);
  CHECK(running.broker().client_endpoint() !=
        running.broker().worker_endpoint());
  std::thread stopper([&running] { running.broker().stop(); });
  stopper.join();
  CHECK(running.stop_within(seconds(5)));
  CHECK_THROWS_AS(running.broker().run(), std::logic_error);
}

TEST_CASE("Broker refuses an endpoint in use with a clear error") {
  Broker first(ephemeral_config());
  BrokerConfig config = ephemeral_config();
  config.client_endpoint = first.client_endpoint();
  try {
    Broker second(config);
    FAIL("a second broker bound the same port");
  } catch (const std::runtime_error& e) {
    CHECK_THAT(e.what(), Catch::Contains("client endpoint") &&
                             Catch::Contains(first.client_endpoint()));
  }
}

TEST_CASE("Broker relays a job from a client to a worker and back") {
  RunningBroker running(ephemeral_config());
  zmq::context_t context;
  zmq::socket_t worker = dealer(context, running.broker().worker_endpoint());
  zmq::socket_t client = dealer(context, running.broker().client_endpoint());

  protocol::WorkerInfo info;
  info.tasks = {"echo"};
  info.slots = 1;
  info.name = "test-worker";
  send(worker, protocol::encode_ready(info));
  const protocol::Welcome welcome = protocol::decode_welcome(receive(worker));
  CHECK(welcome.ok);
  CHECK(welcome.max_message_bytes == BrokerConfig{}.max_message_bytes);

  send(client, protocol::encode_control(Command::Heartbeat));
  protocol::Frames heartbeat = receive(client);
  CHECK(protocol::decode_command(heartbeat) == Command::Heartbeat);

  const std::string args = "\x81\xa1x\x01";  // MessagePack {"x": 1}
  send(client, protocol::encode_job(Command::Submit, "echo", {42, 5000, 1},
                                    zmq::message_t(args.data(), args.size())));

  protocol::Frames job_frames = receive(worker);
  protocol::JobMessage job = protocol::decode_job(Command::Job, job_frames);
  CHECK(job.task == "echo");
  CHECK(job.meta.attempt == 1);
  CHECK(job.meta.timeout_ms <= 5000);
  CHECK(job.args.to_string() == args);
  send(worker,
       protocol::encode_outcome(Command::Done, "echo",
                                protocol::OutcomeMeta::success(job.meta.id),
                                std::move(job.args)));

  protocol::Frames result_frames = receive(client);
  protocol::OutcomeMessage result =
      protocol::decode_outcome(Command::Result, result_frames);
  CHECK(result.meta.id == 42);
  CHECK(result.meta.ok);
  CHECK(result.result.to_string() == args);

  // Garbage is dropped, not fatal: the broker still answers afterwards.
  protocol::Frames garbage;
  garbage.emplace_back("junk", 4);
  send(client, std::move(garbage));
  send(client, protocol::encode_control(Command::Heartbeat));
  CHECK(protocol::decode_command(receive(client)) == Command::Heartbeat);

  // On stop the worker is told to go away.
  CHECK(running.stop_within(seconds(5)));
  CHECK(protocol::decode_command(receive(worker)) == Command::Disconnect);
  CHECK(running.broker().stats().completed == 1);
  CHECK(running.broker().stats().malformed_dropped == 1);
}

TEST_CASE("Broker relays the DONE of a stopping worker exactly once") {
  RunningBroker running(ephemeral_config());
  zmq::context_t context;
  zmq::socket_t worker = dealer(context, running.broker().worker_endpoint());
  zmq::socket_t client = dealer(context, running.broker().client_endpoint());

  protocol::WorkerInfo info;
  info.tasks = {"echo"};
  info.slots = 1;
  info.name = "stopping-worker";
  send(worker, protocol::encode_ready(info));
  CHECK(protocol::decode_welcome(receive(worker)).ok);
  const std::string args = "\xa2hi";  // MessagePack "hi"
  send(client, protocol::encode_job(Command::Submit, "echo", {7, 5000, 1},
                                    zmq::message_t(args.data(), args.size())));
  protocol::Frames job_frames = receive(worker);
  protocol::JobMessage job = protocol::decode_job(Command::Job, job_frames);

  send(worker, protocol::encode_control(Command::Disconnect));
  send(worker,
       protocol::encode_outcome(Command::Done, "echo",
                                protocol::OutcomeMeta::success(job.meta.id),
                                std::move(job.args)));

  protocol::Frames result_frames = receive(client);
  protocol::OutcomeMessage result =
      protocol::decode_outcome(Command::Result, result_frames);
  CHECK(result.meta.id == 7);
  CHECK(result.meta.ok);
  CHECK(result.meta.worker == "stopping-worker");
  CHECK(result.result.to_string() == args);

  // Nothing else: no second RESULT, and the job was not sent out again.
  client.set(zmq::sockopt::rcvtimeo, 300);
  zmq::message_t extra;
  CHECK_FALSE(client.recv(extra).has_value());
  worker.set(zmq::sockopt::rcvtimeo, 300);
  CHECK_FALSE(worker.recv(extra).has_value());

  CHECK(running.stop_within(seconds(5)));
  DispatcherStats stats = running.broker().stats();
  CHECK(stats.completed == 1);
  CHECK(stats.dispatched == 1);
  CHECK(stats.workers_stopped == 1);
  CHECK(stats.workers == 0);
}

TEST_CASE("Broker answers a client's HELLO with its frame limit") {
  BrokerConfig config = ephemeral_config();
  config.max_message_bytes = 300'000;
  RunningBroker running(config);
  zmq::context_t context;
  zmq::socket_t client = dealer(context, running.broker().client_endpoint());
  protocol::Hello hello;
  hello.max_message_bytes = 1'000'000;
  send(client, protocol::encode_hello(hello));
  const protocol::Welcome welcome = protocol::decode_welcome(receive(client));
  CHECK(welcome.ok);
  CHECK(welcome.max_message_bytes == 300'000);
  CHECK(welcome.heartbeat_ms > 0);
  CHECK(running.stop_within(seconds(5)));
}

TEST_CASE("BrokerThread serves a client of its own process over inproc") {
  BrokerConfig config = ephemeral_config();
  config.client_endpoint = unique_inproc_endpoint();
  CHECK(unique_inproc_endpoint() != config.client_endpoint);
  // Declared first: the sockets below must close before it terminates.
  std::shared_ptr<zmq::context_t> context = shared_zmq_context();
  BrokerThread broker(config);
  CHECK(broker.client_endpoint() == config.client_endpoint);
  zmq::socket_t worker = dealer(*context, broker.worker_endpoint());
  zmq::socket_t client = dealer(*context, broker.client_endpoint());

  protocol::WorkerInfo info;
  info.tasks = {"echo"};
  info.slots = 1;
  info.name = "in-process";
  send(worker, protocol::encode_ready(info));
  CHECK(protocol::decode_welcome(receive(worker)).ok);
  // Read while the broker's thread runs (TSan checks the hand-over).
  CHECK(monsoon::test::eventually([&] { return broker.stats().workers == 1; },
                                  seconds(5)));

  const std::string args = "\xa2hi";  // MessagePack "hi"
  send(client, protocol::encode_job(Command::Submit, "echo", {9, 5000, 1},
                                    zmq::message_t(args.data(), args.size())));
  protocol::Frames job_frames = receive(worker);
  protocol::JobMessage job = protocol::decode_job(Command::Job, job_frames);
  CHECK(monsoon::test::eventually([&] { return broker.stats().in_flight == 1; },
                                  seconds(5)));
  send(worker,
       protocol::encode_outcome(Command::Done, "echo",
                                protocol::OutcomeMeta::success(job.meta.id),
                                std::move(job.args)));
  protocol::Frames result_frames = receive(client);
  protocol::OutcomeMessage result =
      protocol::decode_outcome(Command::Result, result_frames);
  CHECK(result.meta.id == 9);
  CHECK(result.result.to_string() == args);

  broker.stop();
  broker.stop();  // idempotent
  CHECK(protocol::decode_command(receive(worker)) == Command::Disconnect);
  DispatcherStats stats = broker.stats();
  CHECK(stats.completed == 1);
  CHECK(stats.in_flight == 0);
}
