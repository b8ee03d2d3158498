// End-to-end tests of Worker against a minimal broker: a ROUTER socket
// driven by the test thread on a free local TCP port.
#include "monsoon/workers/worker.hpp"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "child_process.hpp"
#include "eventually.hpp"
#include "monsoon/common/protocol.hpp"
#include "monsoon/common/stop_signals.hpp"
#include "monsoon/common/value.hpp"
#include "monsoon/workers/builtin_tasks.hpp"
#include "monsoon/workers/task_registry.hpp"
#include "monsoon/workers/worker_main.hpp"

namespace {

using monsoon::Clock;
using monsoon::Value;
using monsoon::protocol::Command;
using monsoon::protocol::Frames;
using monsoon::test::eventually;
using monsoon::workers::Worker;
using monsoon::workers::WorkerConfig;
using std::chrono::milliseconds;
using std::chrono::seconds;
namespace protocol = monsoon::protocol;
namespace error_code = monsoon::protocol::error_code;

constexpr milliseconds kPatience = seconds{10};

zmq::message_t msgpack_frame(const Value& value) {
  const std::string bytes = monsoon::to_msgpack(value);
  return zmq::message_t(bytes.data(), bytes.size());
}

Value decode(const zmq::message_t& frame) {
  return monsoon::from_msgpack(
      std::string_view(static_cast<const char*>(frame.data()), frame.size()));
}

Frames job(std::string_view task, std::uint64_t id, const Value& args,
           std::uint32_t timeout_ms = 30'000) {
  return protocol::encode_job(Command::Job, task, {id, timeout_ms, 1},
                              msgpack_frame(args));
}

// A JOB taken from `queue` (protocol 1.3).
Frames queued_job(std::string_view task, std::uint64_t id, const Value& args,
                  std::string queue) {
  protocol::JobMeta meta{id, 30'000, 1};
  meta.queue = std::move(queue);
  return protocol::encode_job(Command::Job, task, meta, msgpack_frame(args));
}

// WELCOME from a broker of protocol 1.`minor`.
Frames welcome(std::uint32_t minor) {
  protocol::Welcome welcome;
  welcome.minor = minor;
  return protocol::encode_welcome(welcome);
}

class FakeBroker {
 public:
  struct Message {
    std::string identity;
    Command command;
    Frames frames;  // without the identity
  };

  explicit FakeBroker(const std::string& endpoint = "tcp://127.0.0.1:*")
      : socket_(context_, zmq::socket_type::router) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.bind(endpoint);
    endpoint_ = socket_.get(zmq::sockopt::last_endpoint);
  }

  const std::string& endpoint() const { return endpoint_; }
  int heartbeats() const { return heartbeats_; }

  // The next message that is not a HEARTBEAT, or nullopt after `timeout`.
  std::optional<Message> next(milliseconds timeout = kPatience) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      auto message = receive(deadline);
      if (!message || message->command != Command::Heartbeat) return message;
    }
  }

  // Waits for `count` HEARTBEATs in total; false on timeout or when another
  // message arrives first.
  bool await_heartbeats(int count, milliseconds timeout = kPatience) {
    const auto deadline = Clock::now() + timeout;
    while (heartbeats_ < count) {
      auto message = receive(deadline);
      if (!message || message->command != Command::Heartbeat) return false;
    }
    return true;
  }

  void send(const std::string& identity, Frames frames) {
    socket_.send(zmq::buffer(identity), zmq::send_flags::sndmore);
    for (std::size_t i = 0; i < frames.size(); ++i) {
      socket_.send(frames[i], i + 1 < frames.size() ? zmq::send_flags::sndmore
                                                    : zmq::send_flags::none);
    }
  }

 private:
  std::optional<Message> receive(Clock::time_point deadline) {
    for (;;) {
      const auto left =
          std::chrono::ceil<milliseconds>(deadline - Clock::now());
      if (left <= milliseconds{0}) return std::nullopt;
      zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, left);
      if ((item.revents & ZMQ_POLLIN) == 0) continue;
      Frames frames;
      REQUIRE(zmq::recv_multipart(socket_, std::back_inserter(frames)));
      REQUIRE(frames.size() >= 2);
      Message message{frames.front().to_string(), {}, {}};
      frames.erase(frames.begin());
      message.command = protocol::decode_command(frames);
      message.frames = std::move(frames);
      if (message.command == Command::Heartbeat) ++heartbeats_;
      return message;
    }
  }

  zmq::context_t context_;
  zmq::socket_t socket_;
  std::string endpoint_;
  int heartbeats_ = 0;
};

// Runs a Worker on its own thread; always stops and joins it.
class RunningWorker {
 public:
  RunningWorker(WorkerConfig config,
                const monsoon::workers::TaskRegistry& tasks)
      : worker_(std::move(config), tasks),
        finished_(std::async(std::launch::async, [this] { worker_.run(); })) {}
  ~RunningWorker() {
    worker_.stop();
    if (finished_.valid()) finished_.wait();
  }

  Worker& operator*() { return worker_; }
  Worker* operator->() { return &worker_; }

  // Calls stop() and reports whether run() returned within `limit`.
  bool stops_within(milliseconds limit) {
    worker_.stop();
    if (finished_.wait_for(limit) != std::future_status::ready) return false;
    finished_.get();  // rethrows what run() threw
    return true;
  }

 private:
  Worker worker_;
  std::future<void> finished_;
};

// Holds the "hold" jobs until opened (or cancelled).
class Gate {
 public:
  void open() {
    {
      std::lock_guard lock(mutex_);
      open_ = true;
    }
    opened_.notify_all();
  }
  void wait(std::stop_token cancellation) {
    std::unique_lock lock(mutex_);
    opened_.wait(lock, cancellation, [this] { return open_; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable_any opened_;
  bool open_ = false;
};

// Thread tasks for the worker's slot mechanics: "echo", and "sleep", which
// holds its slot thread for args.ms (or until the deadline or cancellation).
void add_thread_tasks(monsoon::workers::TaskRegistry& tasks) {
  tasks.add("echo", [](const Value& args,
                       const monsoon::workers::TaskContext&) { return args; });
  tasks.add("sleep", [](const Value& args,
                        const monsoon::workers::TaskContext& context) {
    std::mutex mutex;
    std::condition_variable_any never_notified;
    std::unique_lock lock(mutex);
    never_notified.wait_until(
        lock, context.cancellation,
        std::min(Clock::now() + milliseconds{args.at("ms").get<int>()},
                 context.deadline),
        [] { return false; });
    context.throw_if_stopped();
    return Value{{"slept_ms", args.at("ms")}};
  });
}

struct Fixture {
  Fixture() {
    add_thread_tasks(tasks);
    tasks.add("big",
              [](const Value& args, const monsoon::workers::TaskContext&) {
                return Value(std::string(args.get<std::size_t>(), 'x'));
              });
    tasks.add("boom",
              [](const Value&, const monsoon::workers::TaskContext&) -> Value {
                throw std::runtime_error("boom!");
              });
    // Returns its args once the gate is open.
    tasks.add("hold", [this](const Value& args,
                             const monsoon::workers::TaskContext& context) {
      gate.wait(context.cancellation);
      context.throw_if_stopped();
      return args;
    });
    config.broker_endpoints = {broker.endpoint()};
    config.slots = 2;
    config.name = "test-worker";
  }

  FakeBroker::Message expect(Command command) {
    auto message = broker.next();
    REQUIRE(message);
    REQUIRE(protocol::command_name(message->command) ==
            protocol::command_name(command));
    return std::move(*message);
  }

  protocol::WorkerInfo expect_ready() {
    auto message = expect(Command::Ready);
    identity = message.identity;
    return protocol::decode_ready(message.frames);
  }

  protocol::OutcomeMessage expect_done() {
    auto message = expect(Command::Done);
    CHECK(message.identity == identity);
    return protocol::decode_outcome(Command::Done, message.frames);
  }

  // The next message, which must be a CREDIT: its body as a map.
  Value expect_credit() {
    auto message = expect(Command::Credit);
    CHECK(message.identity == identity);
    (void)protocol::decode_credit(message.frames);  // well-formed
    return decode(message.frames.back());
  }

  Gate gate;  // before the worker, which holds jobs waiting on it
  FakeBroker broker;
  monsoon::workers::TaskRegistry tasks;
  WorkerConfig config;
  std::string identity;  // of the worker's current connection
};

using monsoon::workers::PoolConfig;

}  // namespace

TEST_CASE_METHOD(Fixture, "worker config is validated and resolved") {
  config.tasks = {"echo", "nope"};
  CHECK_THROWS_AS(Worker(config, tasks), std::invalid_argument);
  config.tasks = {};
  config.slots = protocol::kMaxSlots + 1;
  CHECK_THROWS_AS(Worker(config, tasks), std::invalid_argument);
  config.slots = 2;
  config.heartbeat.liveness = 0;
  CHECK_THROWS_AS(Worker(config, tasks), std::invalid_argument);
  config.heartbeat.liveness = 3;
  CHECK_THROWS_AS(Worker(config, monsoon::workers::TaskRegistry{}),
                  std::invalid_argument);

  config.slots = 0;
  config.name.clear();
  config.tasks = {"sleep", "echo", "sleep"};
  Worker worker(config, tasks);
  const auto cpus = std::max(1u, std::thread::hardware_concurrency());
  CHECK(worker.config().slots == cpus);
  CHECK(worker.config().tasks == std::vector<std::string>{"echo", "sleep"});
  // The default pools: only thread tasks, so one pool of their queues.
  CHECK(worker.config().pools ==
        std::vector<PoolConfig>{{{"echo", "sleep"}, cpus}});
  CHECK(worker.config().name.starts_with("worker-" + std::to_string(getpid()) +
                                         "@"));
}

TEST_CASE_METHOD(Fixture, "pools are validated") {
  const auto rejected = [&](std::vector<PoolConfig> pools,
                            const std::string& reason) {
    config.pools = std::move(pools);
    try {
      Worker worker(config, tasks);
      FAIL("expected std::invalid_argument");
    } catch (const std::invalid_argument& e) {
      CHECK_THAT(e.what(), Catch::Contains(reason));
    }
  };
  rejected({{{"fast"}, 2}, {{"slow", "fast"}, 1}},
           "queue 'fast' is in more than one pool");
  rejected({{{"fast", "fast"}, 2}}, "queue 'fast' is in more than one pool");
  rejected({{{"no spaces"}, 2}}, "invalid queue name 'no spaces'");
  rejected({{{}, 2}}, "pool 0 serves 0 queues");
  rejected({{{"fast"}, 2}, {{"slow"}, 0}}, "pool 1 (slow) has 0 slots");
  rejected({{{"fast"}, protocol::kMaxSlots}, {{"slow"}, 1}},
           "the pools have 65537 slots in all");
  std::vector<PoolConfig> many;
  for (std::size_t i = 0; i <= protocol::kMaxPools; ++i) {
    many.push_back({{"q" + std::to_string(i)}, 1});
  }
  rejected(many, "a worker has 1 to 64 pools, not 65");
  many.pop_back();
  config.pools = many;
  CHECK(Worker(config, tasks).config().pools == many);
  // The default pools are checked alike.
  config.pools.clear();
  config.slots = protocol::kMaxSlots + 1;
  CHECK_THROWS_AS(Worker(config, tasks), std::invalid_argument);
}

TEST_CASE_METHOD(Fixture, "READY names the tasks that are not retried") {
  tasks.add("charge",
            [](const Value& args, const monsoon::workers::TaskContext&) {
              return args;
            },
            {.retry_if_worker_dies = false});
  config.tasks = {"charge", "echo"};
  RunningWorker worker(config, tasks);
  const auto info = expect_ready();
  CHECK(info.tasks == std::vector<std::string>{"charge", "echo"});
  CHECK(info.no_retry == std::vector<std::string>{"charge"});
}

TEST_CASE_METHOD(Fixture, "a worker whose READY would be too big is refused") {
  // 200 names of 21 characters: over the protocol's 4096-byte info frame.
  config.tasks.clear();
  for (int i = 0; i < 200; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "reports.monthly.%05d", i);
    tasks.add(name, [](const Value& args,
                       const monsoon::workers::TaskContext&) { return args; });
    config.tasks.push_back(name);
  }
  try {
    Worker worker(config, tasks);
    FAIL("expected std::invalid_argument");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("split the tasks") != std::string::npos);
  }
  config.tasks.resize(100);  // fits
  CHECK_NOTHROW(Worker(config, tasks));
}

TEST_CASE_METHOD(Fixture, "worker registers, executes jobs and stops") {
  config.tasks = {"echo", "sleep", "boom", "big"};
  config.max_message_bytes = 64 * 1024;
  RunningWorker worker(config, tasks);

  const auto info = expect_ready();
  CHECK(info.tasks == std::vector<std::string>{"big", "boom", "echo", "sleep"});
  CHECK(info.slots == 2);
  CHECK(info.name == "test-worker");
  CHECK(info.pid == static_cast<std::uint32_t>(getpid()));
  CHECK(info.heartbeat_ms == 1000);
  CHECK(info.max_message_bytes == 64 * 1024);

  const Value args = {{"x", 1}, {"nested", {true, nullptr, "s"}}};
  broker.send(identity, job("echo", 77, args));
  auto done = expect_done();
  CHECK(done.task == "echo");
  CHECK(done.meta.id == 77);
  CHECK(done.meta.ok);
  CHECK(decode(done.result) == args);

  broker.send(identity, job("boom", 78, nullptr));
  done = expect_done();
  CHECK(done.meta.id == 78);
  CHECK_FALSE(done.meta.ok);
  CHECK(done.meta.code == error_code::kTaskFailed);
  CHECK(done.meta.message == "boom!");

  broker.send(identity, job("hash", 79, {{"rounds", 1}}));  // not served
  done = expect_done();
  CHECK(done.meta.id == 79);
  CHECK(done.meta.code == error_code::kUnknownTask);

  broker.send(identity,
              protocol::encode_job(Command::Job, "echo", {80, 1000, 1},
                                   zmq::message_t("\x81", 1)));
  done = expect_done();
  CHECK(done.meta.id == 80);
  CHECK(done.meta.code == error_code::kBadRequest);

  broker.send(identity, job("big", 81, 100 * 1024));
  done = expect_done();
  CHECK(done.meta.id == 81);
  CHECK(done.meta.code == error_code::kTooLarge);
  CHECK(decode(done.result).is_null());

  // The JOB's own limit (the client's) wins over the worker's.
  broker.send(identity,
              protocol::encode_job(Command::Job, "echo", {82, 1000, 1, 8},
                                   msgpack_frame("more than 8 bytes")));
  done = expect_done();
  CHECK(done.meta.id == 82);
  CHECK(done.meta.code == error_code::kTooLarge);
  CHECK_THAT(done.meta.message, Catch::Contains("limit of 8 bytes"));
  broker.send(identity,
              protocol::encode_job(Command::Job, "echo", {83, 1000, 1, 8},
                                   msgpack_frame("fits")));
  done = expect_done();
  CHECK(done.meta.id == 83);
  CHECK(done.meta.ok);

  const auto counters = worker->counters();
  CHECK(counters.jobs_received == 7);
  CHECK(counters.jobs_succeeded == 2);
  CHECK(counters.jobs_failed == 5);
  CHECK(counters.reconnects == 0);

  CHECK(worker.stops_within(seconds{5}));
  CHECK(expect(Command::Disconnect).identity == identity);
}

TEST_CASE_METHOD(Fixture, "worker runs jobs concurrently up to its slots") {
  config.slots = 2;
  RunningWorker worker(config, tasks);
  CHECK(worker->counters().threads_started == 0);  // on demand
  expect_ready();
  broker.send(identity, job("sleep", 1, {{"ms", 300}}));
  broker.send(identity, job("sleep", 2, {{"ms", 300}}));
  broker.send(identity, job("echo", 3, "over credit"));  // a broker bug

  auto done = expect_done();
  CHECK(done.meta.id == 3);
  CHECK(done.meta.code == error_code::kOverloaded);
  auto first = expect_done();
  const auto first_done = Clock::now();
  auto second = expect_done();
  CHECK(first.meta.ok);
  CHECK(second.meta.ok);
  CHECK(first.meta.id + second.meta.id == 3);
  // Both slept in parallel: the second ended right after the first, not
  // 300 ms later.
  CHECK(Clock::now() - first_done < milliseconds{250});
  // One thread per slot at most, however many jobs come.
  CHECK(worker->counters().threads_started == 2);
  for (std::uint64_t id = 4; id < 20; ++id) {
    broker.send(identity, job("echo", id, nullptr));
    CHECK(expect_done().meta.ok);
  }
  CHECK(worker->counters().threads_started == 2);
}

namespace {

// Threads of this process, from /proc/self/status.
int thread_count() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with("Threads:")) return std::stoi(line.substr(8));
  }
  return -1;
}

}  // namespace

TEST_CASE_METHOD(Fixture, "an async pool holds many jobs on one thread") {
  monsoon::workers::TaskRegistry builtins;
  monsoon::workers::register_builtin_tasks(builtins, {"unused.sqlite3"});
  config.tasks = {"echo", "sleep"};
  config.async_slots = 500;
  const int threads_before = thread_count();
  RunningWorker worker(config, builtins);
  const auto info = expect_ready();
  CHECK(info.slots == 500);

  for (std::uint64_t id = 1; id <= 500; ++id) {
    broker.send(identity, job("sleep", id, {{"ms", 300}}));
  }
  broker.send(identity, job("echo", 501, "over credit"));  // a broker bug
  auto done = expect_done();
  CHECK(done.meta.id == 501);
  CHECK(done.meta.code == error_code::kOverloaded);
  REQUIRE(eventually([&] { return worker->counters().jobs_received == 501; }));
  // 500 sleeping jobs, no thread each: the socket thread plus ZeroMQ's.
  CHECK(thread_count() - threads_before < 10);
  CHECK(worker->counters().threads_started == 0);

  std::set<std::uint64_t> answered;
  for (int i = 0; i < 500; ++i) {
    done = expect_done();
    CHECK(done.meta.ok);
    CHECK(decode(done.result) == Value{{"slept_ms", 300}});
    answered.insert(done.meta.id);
  }
  CHECK(answered.size() == 500);
  CHECK(*answered.begin() == 1);
  CHECK(*answered.rbegin() == 500);
}

TEST_CASE_METHOD(Fixture, "async jobs are cancelled after the drain timeout") {
  monsoon::workers::TaskRegistry builtins;
  monsoon::workers::register_builtin_tasks(builtins, {"unused.sqlite3"});
  config.tasks = {"sleep"};
  config.drain_timeout = milliseconds{100};
  RunningWorker worker(config, builtins);
  expect_ready();
  broker.send(identity, job("sleep", 7, {{"ms", 60'000}}));
  REQUIRE(eventually([&] { return worker->counters().jobs_received == 1; }));
  CHECK(worker.stops_within(seconds{5}));
  expect(Command::Disconnect);
  const auto done = expect_done();
  CHECK(done.meta.id == 7);
  CHECK(done.meta.code == error_code::kInternal);
}

TEST_CASE_METHOD(Fixture,
                 "thread tasks and async tasks are two default pools of one "
                 "registration") {
  monsoon::workers::TaskRegistry builtins;
  monsoon::workers::register_builtin_tasks(builtins, {"unused.sqlite3"});
  config.tasks = {"echo", "hash"};
  config.slots = 2;
  config.async_slots = 5;
  RunningWorker worker(config, builtins);
  const auto info = expect_ready();
  CHECK(info.tasks == std::vector<std::string>{"echo", "hash"});
  REQUIRE(info.pools.size() == 2);
  CHECK(info.pools[0] == protocol::Pool{{"hash"}, 2, 2});
  CHECK(info.pools[1] == protocol::Pool{{"echo"}, 5, 5});
  CHECK(info.slots == 7);
  CHECK(info.free == 7u);

  // An async task's pool starts no thread; a thread task's starts one.
  broker.send(identity, job("echo", 1, "async"));
  auto done = expect_done();
  CHECK(decode(done.result) == "async");
  CHECK(worker->counters().threads_started == 0);
  broker.send(identity, job("hash", 2, {{"data", "x"}, {"rounds", 1}}));
  done = expect_done();
  CHECK(done.meta.id == 2);
  CHECK(done.meta.ok);
  CHECK(worker->counters().threads_started == 1);
}

TEST_CASE_METHOD(Fixture, "a worker's pools bound the jobs of their queues") {
  config.tasks = {"echo", "hold"};
  config.pools = {{{"fast"}, 2}, {{"slow"}, 1}};
  config.drain_timeout = milliseconds{100};
  RunningWorker worker(config, tasks);
  const auto info = expect_ready();
  CHECK(info.tasks == std::vector<std::string>{"echo", "hold"});
  CHECK(info.pools ==
        std::vector<protocol::Pool>{{{"fast"}, 2, 2}, {{"slow"}, 1, 1}});
  CHECK(info.slots == 3);
  CHECK(info.free == 3u);
  const std::uint32_t minor = GENERATE(2u, 3u);
  INFO("broker of protocol 1." << minor);
  broker.send(identity, welcome(minor));

  // Pool slow is full after one job; pool fast still takes its own.
  broker.send(identity, queued_job("hold", 1, "slow 1", "slow"));
  broker.send(identity, queued_job("hold", 2, "slow 2", "slow"));
  auto done = expect_done();
  CHECK(done.meta.id == 2);
  CHECK(done.meta.code == error_code::kRefused);
  for (const std::uint64_t id : {3, 4}) {
    broker.send(identity, queued_job("echo", id, "fast", "fast"));
    done = expect_done();
    CHECK(done.meta.id == id);
    CHECK(done.meta.ok);
  }
  CHECK(worker->counters().jobs_refused == 1);

  // Its slot freed, pool slow is granted to the broker it refused: to a
  // broker of 1.3 its own free slot, naming the pool; to one of 1.2, which
  // keeps one credit for all pools, the slots free in all of them (else its
  // refusal by pool slow would leave pool fast idle for it).
  gate.open();
  done = expect_done();
  CHECK(done.meta.id == 1);
  CHECK(decode(done.result) == "slow 1");
  const Value credit = expect_credit();
  if (minor >= 3) {
    CHECK(credit.at("free") == 1);
    CHECK(credit.at("pool") == 1);
  } else {
    CHECK(credit.at("free") == 3);
    CHECK_FALSE(credit.contains("pool"));
  }
}

TEST_CASE_METHOD(Fixture,
                 "a JOB without a queue goes to the pool of its task's name, "
                 "else to pool 0") {
  config.tasks = {"echo", "hold", "sleep"};
  config.pools = {{{"hold"}, 1}, {{"echo"}, 1}};
  config.drain_timeout = milliseconds{100};
  RunningWorker worker(config, tasks);
  expect_ready();
  broker.send(identity, welcome(3));
  broker.send(identity, job("hold", 1, "held"));  // pool 0 (hold): full
  broker.send(identity, job("echo", 2, "echo"));  // pool 1 (echo)
  auto done = expect_done();
  CHECK(done.meta.id == 2);
  CHECK(done.meta.ok);
  broker.send(identity, job("sleep", 3, {{"ms", 1}}));  // no pool: pool 0
  done = expect_done();
  CHECK(done.meta.id == 3);
  CHECK(done.meta.code == error_code::kRefused);
  // A queue no pool lists counts as none (a broker bug).
  broker.send(identity, queued_job("echo", 4, "echo", "elsewhere"));
  done = expect_done();
  CHECK(done.meta.id == 4);
  CHECK(done.meta.ok);
  gate.open();
  CHECK(expect_done().meta.id == 1);
}

TEST_CASE_METHOD(Fixture, "READY's free leaves out each pool's owed DONEs") {
  config.tasks = {"echo", "hold"};
  config.pools = {{{"echo"}, 2}, {{"hold"}, 3}};
  config.heartbeat = {milliseconds{1000}, 1000};  // no silence-based reconnect
  config.drain_timeout = milliseconds{100};
  RunningWorker worker(config, tasks);
  expect_ready();
  broker.send(identity, job("hold", 1, "one"));
  broker.send(identity, job("hold", 2, "two"));
  REQUIRE(eventually([&] { return worker->counters().jobs_received == 2; }));
  broker.send(identity, protocol::encode_control(Command::Disconnect));

  const auto info = expect_ready();
  CHECK(info.pools ==
        std::vector<protocol::Pool>{{{"echo"}, 2, 2}, {{"hold"}, 3, 1}});
  CHECK(info.free == 3u);
  gate.open();
  CHECK(expect_done().meta.ok);
  CHECK(expect_done().meta.ok);
}

TEST_CASE_METHOD(Fixture, "worker heartbeats while the broker is heard") {
  config.heartbeat = {milliseconds{20}, 50};
  RunningWorker worker(config, tasks);
  expect_ready();
  CHECK(broker.await_heartbeats(5));
  CHECK(worker->counters().reconnects == 0);
}

TEST_CASE_METHOD(Fixture, "worker reconnects when the broker falls silent") {
  config.heartbeat = {milliseconds{30}, 2};
  RunningWorker worker(config, tasks);
  expect_ready();
  const std::string first = identity;
  expect_ready();  // after 60 ms of silence and a back-off
  CHECK(identity != first);
  CHECK(worker->counters().reconnects >= 1);
}

TEST_CASE_METHOD(Fixture, "worker re-registers at once after DISCONNECT") {
  config.heartbeat = {milliseconds{1000}, 1000};  // no silence-based reconnect
  RunningWorker worker(config, tasks);
  expect_ready();
  const std::string first = identity;

  broker.send(identity, job("sleep", 5, {{"ms", 300}}));
  REQUIRE(eventually([&] { return worker->counters().jobs_received == 1; }));
  broker.send(identity, protocol::encode_control(Command::Disconnect));

  const auto info = expect_ready();
  CHECK(identity != first);
  CHECK(info.slots == 2);
  REQUIRE(info.free);
  CHECK(*info.free == 1);             // one slot is still busy with job 5
  CHECK(info.name == "test-worker");  // so the broker moves job 5 over
  CHECK(info.pid == static_cast<std::uint32_t>(getpid()));
  CHECK(worker->counters().reconnects == 1);

  auto done = expect_done();  // on the new connection
  CHECK(done.meta.id == 5);
  CHECK(done.meta.ok);
}

TEST_CASE_METHOD(Fixture, "worker counts and drops malformed messages") {
  RunningWorker worker(config, tasks);
  expect_ready();
  auto send_raw = [&](std::vector<std::string> parts) {
    Frames frames;
    for (const auto& part : parts)
      frames.emplace_back(part.data(), part.size());
    broker.send(identity, std::move(frames));
  };
  const std::string sig(protocol::kSignature);
  send_raw({"MNS\x02", "\x06"});                     // other version
  send_raw({sig, std::string("\x09", 1)});           // unknown command
  send_raw({sig, std::string("\x06", 1), "extra"});  // wrong frame count
  send_raw({sig, std::string("\x03", 1), "echo", "not msgpack", "\xc0"});
  send_raw({sig, std::string("\x05", 1), "echo",  // wrong direction
            monsoon::to_msgpack({{"id", 1}, {"status", "ok"}}), "\xc0"});
  send_raw({"x"});
  REQUIRE(
      eventually([&] { return worker->counters().malformed_dropped == 6; }));

  broker.send(identity, job("echo", 9, "still alive"));
  auto done = expect_done();
  CHECK(done.meta.id == 9);
  CHECK(decode(done.result) == "still alive");
}

TEST_CASE_METHOD(Fixture,
                 "stop lets running jobs finish and sends their DONEs") {
  config.drain_timeout = seconds{10};
  RunningWorker worker(config, tasks);
  expect_ready();
  broker.send(identity, job("sleep", 11, {{"ms", 200}}));
  REQUIRE(eventually([&] { return worker->counters().jobs_received == 1; }));

  const auto start = Clock::now();
  CHECK(worker.stops_within(seconds{5}));
  CHECK(Clock::now() - start >= milliseconds{150});
  CHECK(expect(Command::Disconnect).identity == identity);
  auto done = expect_done();
  CHECK(done.meta.id == 11);
  CHECK(done.meta.ok);
}

TEST_CASE_METHOD(Fixture, "stop cancels jobs still running after the drain") {
  config.drain_timeout = milliseconds{50};
  RunningWorker worker(config, tasks);
  expect_ready();
  broker.send(identity, job("sleep", 12, {{"ms", 60'000}}));
  REQUIRE(eventually([&] { return worker->counters().jobs_received == 1; }));
  CHECK(worker.stops_within(seconds{5}));
}

TEST_CASE_METHOD(Fixture, "a stopping worker heartbeats while it drains") {
  config.heartbeat = {milliseconds{20}, 1000};
  RunningWorker worker(config, tasks);
  expect_ready();
  broker.send(identity, job("sleep", 13, {{"ms", 400}}));
  REQUIRE(eventually([&] { return worker->counters().jobs_received == 1; }));

  worker->stop();
  CHECK(expect(Command::Disconnect).identity == identity);
  const int before = broker.heartbeats();
  auto done = expect_done();  // next() counts the heartbeats on the way
  CHECK(done.meta.id == 13);
  CHECK(broker.heartbeats() - before >= 5);
}

TEST_CASE_METHOD(Fixture, "a job that crosses DISCONNECT still runs") {
  RunningWorker worker(config, tasks);
  expect_ready();
  broker.send(identity, job("sleep", 14, {{"ms", 300}}));
  REQUIRE(eventually([&] { return worker->counters().jobs_received == 1; }));
  worker->stop();
  CHECK(expect(Command::Disconnect).identity == identity);

  // Sent by the broker before it saw the DISCONNECT: it holds it for us.
  broker.send(identity, job("echo", 15, "late"));
  auto done = expect_done();
  CHECK(done.meta.id == 15);
  CHECK(done.meta.ok);
  CHECK(decode(done.result) == "late");
  CHECK(expect_done().meta.id == 14);
}

TEST_CASE_METHOD(Fixture,
                 "a refused READY is tried again after the broker's delay, "
                 "on a new connection") {
  config.tasks = {"echo"};
  config.heartbeat = {milliseconds{50}, 3};
  RunningWorker worker(config, tasks);
  expect_ready();
  const std::string refused = identity;
  const auto refused_at = Clock::now();
  broker.send(refused, protocol::encode_welcome(protocol::Welcome::refusal(
                           error_code::kOverloaded, "full", 400)));

  // Nothing more on the refused connection (its heartbeats would only be
  // answered DISCONNECT); then a READY on a new one, not before the delay.
  auto again = broker.next();
  REQUIRE(again);
  CHECK(again->command == Command::Ready);
  CHECK(again->identity != refused);
  CHECK(Clock::now() - refused_at >= milliseconds{400});
  CHECK(worker->counters().reconnects == 1);

  // Welcomed, it takes jobs.
  broker.send(again->identity, protocol::encode_welcome({}));
  broker.send(again->identity, job("echo", 5, "after"));
  auto done = broker.next();
  REQUIRE(done);
  REQUIRE(done->command == Command::Done);
  CHECK(protocol::decode_outcome(Command::Done, done->frames).meta.ok);
}

// A HEARTBEAT parked on a socket not yet connected would reach a broker
// that comes back before the READY: the broker answers DISCONNECT, and the
// worker drops the connection the broker has just registered, with the JOBs
// sent to it.
TEST_CASE("a new connection opens with READY, never a parked HEARTBEAT") {
  auto broker = std::make_optional<FakeBroker>();
  const std::string endpoint = broker->endpoint();
  broker.reset();  // down when the worker starts
  monsoon::workers::TaskRegistry tasks;
  add_thread_tasks(tasks);
  WorkerConfig config;
  config.broker_endpoints = {endpoint};
  config.slots = 1;
  // Heartbeats every 20 ms on a socket that lives 1 s without a broker.
  config.heartbeat = {milliseconds{20}, 50};
  RunningWorker worker(config, tasks);
  // The outage is the scenario: ten heartbeat intervals without a broker.
  std::this_thread::sleep_for(milliseconds{200});

  broker.emplace(endpoint);
  auto ready = broker->next();
  REQUIRE(ready);
  CHECK(ready->command == Command::Ready);
  CHECK(broker->heartbeats() == 0);
}

TEST_CASE("a DONE finished while the broker is away follows the new READY") {
  auto broker = std::make_optional<FakeBroker>();
  const std::string endpoint = broker->endpoint();
  monsoon::workers::TaskRegistry tasks;
  add_thread_tasks(tasks);
  WorkerConfig config;
  config.broker_endpoints = {endpoint};
  config.slots = 2;
  config.heartbeat = {milliseconds{100}, 3};
  RunningWorker worker(config, tasks);
  auto ready = broker->next();
  REQUIRE(ready);
  REQUIRE(ready->command == Command::Ready);
  broker->send(ready->identity, job("sleep", 21, {{"ms", 50}}));
  REQUIRE(eventually([&] { return worker->counters().jobs_received == 1; }));

  // The job ends while no broker listens, then the worker gives up on its
  // connection; the broker comes back after that.
  broker.reset();
  REQUIRE(eventually([&] { return worker->counters().reconnects >= 1; }));
  broker.emplace(endpoint);

  ready = broker->next();
  REQUIRE(ready);
  REQUIRE(ready->command == Command::Ready);
  const auto info = protocol::decode_ready(ready->frames);
  CHECK(info.slots == 2);
  REQUIRE(info.free);
  CHECK(*info.free == 1);  // the DONE still owed returns the other one
  auto done = broker->next();
  REQUIRE(done);
  REQUIRE(done->command == Command::Done);
  CHECK(done->identity == ready->identity);
  CHECK(protocol::decode_outcome(Command::Done, done->frames).meta.id == 21);
}

// Run by the next test in a child process (hidden from normal runs): the
// worker must end the process when a task ignores cancellation.
TEST_CASE_METHOD(Fixture, "stubborn task helper", "[.]") {
  tasks.add("stubborn",
            [](const Value&, const monsoon::workers::TaskContext&) -> Value {
              std::this_thread::sleep_for(seconds{60});
              return nullptr;
            });
  config.drain_timeout = milliseconds{50};
  config.cancel_grace = milliseconds{200};
  RunningWorker worker(config, tasks);
  expect_ready();
  broker.send(identity, job("stubborn", 1, nullptr));
  REQUIRE(eventually([&] { return worker->counters().jobs_received == 1; }));
  worker->stop();
  std::this_thread::sleep_for(seconds{20});  // the worker exits first
}

TEST_CASE("a task that ignores cancellation cannot hang the worker") {
  const auto self = std::filesystem::read_symlink("/proc/self/exe");
  const auto log =
      std::filesystem::temp_directory_path() /
      ("monsoon-stubborn-task-" + std::to_string(getpid()) + ".log");
  std::filesystem::remove(log);
  monsoon::test::ChildProcess child(self.string(), {"stubborn task helper"},
                                    log.string());
  const auto status = child.wait_exit(seconds{15});
  const std::string output = child.log();
  std::filesystem::remove(log);
  INFO(output);
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == EXIT_FAILURE);
  CHECK(output.find("exiting without waiting for them") != std::string::npos);
}

TEST_CASE("stop before run makes run return at once") {
  FakeBroker broker;
  monsoon::workers::TaskRegistry tasks;
  add_thread_tasks(tasks);
  WorkerConfig config;
  config.broker_endpoints = {broker.endpoint()};
  Worker worker(config, tasks);
  worker.stop();
  auto finished = std::async(std::launch::async, [&worker] { worker.run(); });
  CHECK(finished.wait_for(seconds{5}) == std::future_status::ready);
  CHECK_FALSE(broker.next(milliseconds{100}));
}

namespace {

// run_worker_main with these arguments after the program name.
int run_main(std::vector<std::string> args) {
  args.insert(args.begin(), "monsoon-worker");
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  monsoon::workers::TaskRegistry tasks;
  monsoon::workers::register_builtin_tasks(tasks);
  return monsoon::workers::run_worker_main(static_cast<int>(argv.size()),
                                           argv.data(), std::move(tasks));
}

}  // namespace

TEST_CASE("parse_queue_option: NAME=SLOTS is a pool of one queue") {
  using monsoon::workers::parse_queue_option;
  CHECK(parse_queue_option("fast=16") == PoolConfig{{"fast"}, 16});
  CHECK(parse_queue_option("images.resize:v2=65536") ==
        PoolConfig{{"images.resize:v2"}, protocol::kMaxSlots});
  const auto rejected = [](std::string_view text, const std::string& reason) {
    INFO(text);
    try {
      (void)parse_queue_option(text);
      FAIL("expected std::invalid_argument");
    } catch (const std::invalid_argument& e) {
      CHECK_THAT(e.what(), Catch::Contains(reason));
    }
  };
  rejected("fast", "'fast' is not NAME=SLOTS");
  rejected("=2", "invalid queue name ''");
  rejected("two words=2", "invalid queue name 'two words'");
  for (const char* slots :
       {"fast=", "fast=0", "fast=65537", "fast=2x", "fast=-1", "fast=+1",
        "fast= 2", "fast=2=3", "fast=99999999999"}) {
    rejected(slots, "SLOTS must be a number from 1 to 65536");
  }
}

namespace {

// run_main's exit code, and what it wrote to stderr.
std::pair<int, std::string> run_main_stderr(std::vector<std::string> args) {
  std::FILE* file = std::tmpfile();
  REQUIRE(file != nullptr);
  const int saved = dup(STDERR_FILENO);
  REQUIRE(dup2(fileno(file), STDERR_FILENO) == STDERR_FILENO);
  const int code = run_main(std::move(args));
  std::cerr.flush();
  dup2(saved, STDERR_FILENO);
  close(saved);
  std::rewind(file);
  std::string output;
  char buffer[4096];
  for (std::size_t read;
       (read = std::fread(buffer, 1, sizeof buffer, file)) > 0;) {
    output.append(buffer, read);
  }
  std::fclose(file);
  return {code, output};
}

}  // namespace

TEST_CASE("run_worker_main rejects --queue beside the default pools' sizes") {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--queue", "fast=2", "-c", "2"},
           {"--queue", "fast=2", "--async-concurrency", "10"}}) {
    const auto [code, output] = run_main_stderr(args);
    INFO(args[2]);
    CHECK(code == 2);
    CHECK_THAT(output,
               Catch::Contains("not with --concurrency or "
                               "--async-concurrency (on the command line") &&
                   Catch::Contains("those size the default pools"));
  }
  auto [code, output] = run_main_stderr({"--queue", "fast"});
  CHECK(code == 2);
  CHECK_THAT(output, Catch::Contains("'fast' is not NAME=SLOTS"));
  std::tie(code, output) = run_main_stderr({"--queue", "fast=2,fast=3"});
  CHECK(code == 2);
  CHECK_THAT(output, Catch::Contains("queue 'fast' is in more than one pool"));
  std::tie(code, output) =
      run_main_stderr({"--queue", "fast=65536", "--queue", "slow=1"});
  CHECK(code == 2);
  CHECK_THAT(output, Catch::Contains("65537 slots in all"));
}

TEST_CASE("run_worker_main answers --help and rejects invalid flags") {
  CHECK(run_main({"--help"}) == 0);
  // Invalid options: 2.
  CHECK(run_main({"--concurrency", "0"}) == 2);
  CHECK(run_main({"-c", "many"}) == 2);
  CHECK(run_main({"--heartbeat-ms", "0"}) == 2);
  CHECK(run_main({"--log-level", "loud"}) == 2);
  CHECK(run_main({"--no-such-flag"}) == 2);
  CHECK(run_main({"--config", "/nonexistent/worker.toml"}) == 2);
  // Valid options that cannot be set up: 1.
  CHECK(run_main({"--tasks", "echo,nope"}) == 1);
  CHECK(run_main({"--broker", "not an endpoint"}) == 1);
}

TEST_CASE("run_worker_main serves until SIGTERM") {
  // As in a worker process: the stop signal must reach only the watcher.
  monsoon::block_stop_signals();
  std::string dir_pattern =
      (std::filesystem::temp_directory_path() / "monsoon-worker-main-XXXXXX")
          .string();
  REQUIRE(mkdtemp(dir_pattern.data()) != nullptr);
  const std::filesystem::path dir = dir_pattern;
  const auto db_path = dir / "demo.sqlite3";

  // The default pools, or pools of one's own: one registration.
  const bool queues = GENERATE(false, true);
  INFO((queues ? "--queue" : "default pools"));
  const std::vector<std::string> sizes =
      queues ? std::vector<std::string>{"--queue", "echo=5", "--queue",
                                        "db.query=3"}
             : std::vector<std::string>{"-c", "3"};
  const std::vector<protocol::Pool> pools =
      queues
          ? std::vector<protocol::Pool>{{{"echo"}, 5, 5}, {{"db.query"}, 3, 3}}
          : std::vector<protocol::Pool>{{{"db.query"}, 3, 3},
                                        {{"echo"}, 1000, 1000}};
  FakeBroker broker;
  auto exit_code = std::async(std::launch::async, [&] {
    std::vector<std::string> args = {"--broker",       broker.endpoint(),
                                     "--tasks",        "db.query,echo",
                                     "--name",         "main-test",
                                     "--db-path",      db_path.string(),
                                     "--heartbeat-ms", "100"};
    args.insert(args.end(), sizes.begin(), sizes.end());
    return run_main(args);
  });

  auto ready = broker.next();
  REQUIRE(ready);
  REQUIRE(ready->command == Command::Ready);
  const auto info = protocol::decode_ready(ready->frames);
  const std::string identity = ready->identity;
  CHECK(info.heartbeat_ms == 100);
  CHECK(info.name == "main-test");
  CHECK(info.tasks == std::vector<std::string>{"db.query", "echo"});
  CHECK(info.pools == pools);
  CHECK(info.slots == pools[0].slots + pools[1].slots);

  broker.send(identity, job("db.query", 1, {{"flag", 2}}));
  auto done = broker.next();
  REQUIRE(done);
  REQUIRE(done->command == Command::Done);
  auto outcome = protocol::decode_outcome(Command::Done, done->frames);
  CHECK(outcome.meta.ok);
  CHECK(decode(outcome.result).size() == 100);
  CHECK(std::filesystem::exists(db_path));  // --db-path was used

  broker.send(identity, job("echo", 2, "async"));
  done = broker.next();
  REQUIRE(done);
  REQUIRE(done->command == Command::Done);
  outcome = protocol::decode_outcome(Command::Done, done->frames);
  CHECK(decode(outcome.result) == "async");

  REQUIRE(kill(getpid(), SIGTERM) == 0);
  REQUIRE(exit_code.wait_for(seconds{5}) == std::future_status::ready);
  CHECK(exit_code.get() == 0);
  auto disconnect = broker.next();
  REQUIRE(disconnect);
  CHECK(disconnect->command == Command::Disconnect);
  CHECK_FALSE(broker.next(milliseconds{200}));  // one registration only
  std::filesystem::remove_all(dir);
}
