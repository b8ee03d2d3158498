#include "monsoon/broker/dispatcher.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <deque>
#include <map>
#include <optional>
#include <set>

using namespace monsoon;
using namespace monsoon::broker;
using protocol::Command;
using std::chrono::milliseconds;

namespace {

zmq::message_t bytes(std::string_view text) {
  return zmq::message_t(text.data(), text.size());
}

std::string text(const zmq::message_t& message) { return message.to_string(); }

std::string args_of(std::uint64_t client_id) {
  return "args-" + std::to_string(client_id);
}

struct SentJob {
  std::string worker;
  protocol::JobMessage job;
};

struct SentResult {
  std::string client;
  protocol::OutcomeMessage result;
};

struct SentControl {
  Outgoing::Peer peer;
  std::string identity;
  Command command;
};

struct SentWelcome {
  std::string worker;
  protocol::Welcome welcome;
};

// The messages of one Outbox, decoded and sorted by kind (each kind keeps
// its order).
struct Sent {
  std::vector<SentJob> jobs;
  std::vector<SentResult> results;
  std::vector<SentControl> controls;
  std::vector<SentWelcome> welcomes;
};

struct Harness {
  explicit Harness(DispatcherConfig config = {}) : dispatcher(config) {}

  Dispatcher dispatcher;
  Clock::time_point now = Clock::time_point() + std::chrono::hours(24);
  Outbox out;

  void ready(const std::string& worker, std::vector<std::string> tasks,
             std::uint32_t slots) {
    protocol::WorkerInfo info;
    info.tasks = std::move(tasks);
    info.slots = slots;
    info.name = worker;
    dispatcher.on_ready(worker, info, now, out);
  }

  // READY of worker process `name` (pid 42) over the connection `identity`.
  void ready_as(const std::string& identity, const std::string& name,
                std::uint32_t slots, std::optional<std::uint32_t> free) {
    protocol::WorkerInfo info;
    info.tasks = {"echo"};
    info.slots = slots;
    info.free = free;
    info.name = name;
    info.pid = 42;
    dispatcher.on_ready(identity, info, now, out);
  }

  void submit(const std::string& task, std::uint64_t client_id,
              std::uint32_t timeout_ms = 10'000,
              const std::string& client = "client") {
    dispatcher.on_submit(
        client, {task, {client_id, timeout_ms, 1}, bytes(args_of(client_id))},
        now, out);
  }

  // A SUBMIT of echo with `args` and the client's result limit.
  void submit_sized(std::uint64_t client_id, const std::string& args,
                    std::uint64_t max_result_bytes) {
    dispatcher.on_submit(
        "client",
        {"echo", {client_id, 10'000, 1, max_result_bytes}, bytes(args)}, now,
        out);
  }

  void done(const std::string& worker, std::uint64_t broker_id,
            const std::string& result = "result") {
    dispatcher.on_done(
        worker,
        {"echo", protocol::OutcomeMeta::success(broker_id), bytes(result)}, now,
        out);
  }

  // A DONE naming the pool whose slot the job took (since 1.3).
  void done_in_pool(const std::string& worker, std::uint64_t broker_id,
                    std::uint32_t pool) {
    auto meta = protocol::OutcomeMeta::success(broker_id);
    meta.pool = pool;
    dispatcher.on_done(worker, {"echo", meta, bytes("result")}, now, out);
  }

  // DONE `refused`: the worker's slots were all held (several brokers).
  void refuse(const std::string& worker, std::uint64_t broker_id) {
    dispatcher.on_done(
        worker,
        {"echo",
         protocol::OutcomeMeta::failure(
             broker_id, protocol::error_code::kRefused, "all slots held"),
         protocol::nil_payload()},
        now, out);
  }

  void credit(const std::string& worker, std::uint32_t free) {
    dispatcher.on_credit(worker, {free}, now, out);
  }

  void tick() { dispatcher.on_tick(now, out); }

  Sent take() {
    Sent sent;
    for (Outgoing& message : out) {
      switch (message.command) {
        case Command::Job:
          REQUIRE(message.peer == Outgoing::Peer::worker);
          sent.jobs.push_back(
              {message.identity,
               protocol::decode_job(Command::Job, message.frames)});
          break;
        case Command::Result:
          REQUIRE(message.peer == Outgoing::Peer::client);
          sent.results.push_back(
              {message.identity,
               protocol::decode_outcome(Command::Result, message.frames)});
          break;
        case Command::Welcome:
          REQUIRE(message.peer == Outgoing::Peer::worker);
          sent.welcomes.push_back(
              {message.identity, protocol::decode_welcome(message.frames)});
          break;
        default:
          REQUIRE(protocol::decode_command(message.frames) == message.command);
          sent.controls.push_back(
              {message.peer, message.identity, message.command});
      }
    }
    out.clear();
    return sent;
  }

  // Expects exactly one JOB and returns it.
  SentJob take_job() {
    Sent sent = take();
    REQUIRE(sent.jobs.size() == 1);
    REQUIRE(sent.results.empty());
    return std::move(sent.jobs.front());
  }

  // Expects exactly one RESULT (and whatever else) and returns it.
  SentResult take_result() {
    Sent sent = take();
    REQUIRE(sent.results.size() == 1);
    return std::move(sent.results.front());
  }
};

}  // namespace

TEST_CASE("jobs go to the worker that became ready first") {
  Harness h;
  h.ready("A", {"echo"}, 1);
  h.ready("B", {"echo"}, 1);
  h.ready("C", {"echo"}, 1);
  std::map<std::string, std::uint64_t> held;
  for (std::uint64_t id = 1; id <= 3; ++id) {
    h.submit("echo", id);
    SentJob sent = h.take_job();
    held[sent.worker] = sent.job.meta.id;
    CHECK(text(sent.job.args) == args_of(id));
  }
  REQUIRE(held.size() == 3);

  h.done("C", held["C"]);
  h.done("A", held["A"]);
  CHECK(h.take().results.size() == 2);

  h.submit("echo", 4);
  CHECK(h.take_job().worker == "C");
  h.submit("echo", 5);
  CHECK(h.take_job().worker == "A");
}

TEST_CASE("multi-slot workers take turns and an idle worker beats a busy one") {
  SECTION("equal workers alternate") {
    Harness h;
    h.ready("A", {"echo"}, 2);
    h.ready("B", {"echo"}, 2);
    std::vector<std::string> order;
    for (std::uint64_t id = 1; id <= 4; ++id) {
      h.submit("echo", id);
      order.push_back(h.take_job().worker);
    }
    CHECK(order == std::vector<std::string>{"A", "B", "A", "B"});
  }
  SECTION("a big busy worker does not get work while a small one is idle") {
    Harness h;
    h.ready("big", {"echo"}, 4);
    h.ready("small", {"echo"}, 1);
    h.submit("echo", 1);
    CHECK(h.take_job().worker == "big");
    h.submit("echo", 2);
    SentJob to_small = h.take_job();
    CHECK(to_small.worker == "small");
    h.submit("echo", 3);
    CHECK(h.take_job().worker == "big");
    h.done("small", to_small.job.meta.id);
    CHECK(h.take().results.size() == 1);
    h.submit("echo", 4);
    CHECK(h.take_job().worker == "small");
  }
}

TEST_CASE("no job is dispatched without credit") {
  Harness h;
  h.ready("A", {"echo"}, 1);
  h.submit("echo", 1);
  CHECK(h.take_job().worker == "A");
  h.submit("echo", 2);
  h.now += milliseconds(100);
  h.tick();
  Sent sent = h.take();
  CHECK(sent.jobs.empty());
  CHECK(sent.results.empty());
  DispatcherStats stats = h.dispatcher.stats();
  CHECK(stats.queued == 1);
  CHECK(stats.in_flight == 1);
  CHECK(stats.free_credit == 0);
}

TEST_CASE("a waiting job goes to the first worker that returns credit") {
  Harness h;
  h.ready("A", {"echo"}, 1);
  h.ready("B", {"echo"}, 1);
  h.submit("echo", 1);
  SentJob to_a = h.take_job();
  h.submit("echo", 2);
  SentJob to_b = h.take_job();
  h.submit("echo", 3);
  CHECK(h.take().jobs.empty());

  h.done("B", to_b.job.meta.id, "two");
  Sent sent = h.take();
  REQUIRE(sent.results.size() == 1);
  CHECK(sent.results[0].client == "client");
  CHECK(sent.results[0].result.meta.id == 2);
  CHECK(sent.results[0].result.meta.ok);
  CHECK(text(sent.results[0].result.result) == "two");
  CHECK(sent.results[0].result.meta.worker == "B");
  REQUIRE(sent.jobs.size() == 1);
  CHECK(sent.jobs[0].worker == "B");
  CHECK(text(sent.jobs[0].job.args) == args_of(3));
  CHECK(h.dispatcher.stats().queued == 0);
  (void)to_a;
}

TEST_CASE("jobs only go to workers that serve their task") {
  Harness h;
  h.ready("A", {"echo"}, 4);
  h.submit("resize", 1);
  CHECK(h.take().jobs.empty());
  CHECK(h.dispatcher.stats().queued == 1);

  h.ready("B", {"resize"}, 1);
  SentJob sent = h.take_job();
  CHECK(sent.worker == "B");
  CHECK(sent.job.task == "resize");
}

TEST_CASE("a worker serving several tasks takes the oldest waiting job") {
  Harness h;
  h.ready("A", {"x", "y"}, 1);
  h.ready("B", {"y"}, 1);
  h.submit("x", 1);
  SentJob to_a = h.take_job();
  CHECK(to_a.worker == "A");
  h.submit("y", 2);
  SentJob to_b = h.take_job();
  CHECK(to_b.worker == "B");
  h.submit("x", 3);
  h.submit("y", 4);
  h.submit("x", 5);
  CHECK(h.take().jobs.empty());

  h.done("A", to_a.job.meta.id);
  SentJob next = std::move(h.take().jobs.at(0));
  CHECK(next.worker == "A");
  CHECK(next.job.task == "x");
  CHECK(text(next.job.args) == args_of(3));

  // B serves only y: it skips the older x job 5.
  h.done("B", to_b.job.meta.id);
  next = std::move(h.take().jobs.at(0));
  CHECK(next.worker == "B");
  CHECK(text(next.job.args) == args_of(4));
  CHECK(h.dispatcher.stats().queued == 1);
}

TEST_CASE("queues are bounded per task and in total") {
  DispatcherConfig config;
  config.max_queued_per_queue = 2;
  config.max_queued_total = 3;
  config.retry_after = milliseconds(250);
  Harness h(config);

  h.submit("x", 1);
  h.submit("x", 2);
  CHECK(h.take().results.empty());
  h.submit("x", 3);
  SentResult full = h.take_result();
  CHECK(full.result.meta.id == 3);
  CHECK_FALSE(full.result.meta.ok);
  CHECK(full.result.meta.code == protocol::error_code::kOverloaded);
  CHECK(full.result.meta.retry_after_ms == 250);
  CHECK_THAT(full.result.meta.message, Catch::Contains("queue 'x' is full"));

  h.submit("y", 4);
  CHECK(h.take().results.empty());
  h.submit("y", 5);
  SentResult broker_full = h.take_result();
  CHECK(broker_full.result.meta.id == 5);
  CHECK(broker_full.result.meta.code == protocol::error_code::kOverloaded);
  CHECK_THAT(broker_full.result.meta.message,
             Catch::Contains("broker is full"));

  DispatcherStats stats = h.dispatcher.stats();
  CHECK(stats.rejected_overloaded == 2);
  CHECK(stats.queued == 3);
  CHECK(stats.submitted == 5);
}

TEST_CASE(
    "a queued job past its deadline gets no_worker or deadline_exceeded") {
  SECTION("no worker serves the task") {
    Harness h;
    h.submit("echo", 1, 500);
    CHECK(h.dispatcher.next_deadline() <= h.now + milliseconds(500));
    h.now += milliseconds(499);
    h.tick();
    CHECK(h.take().results.empty());
    h.now += milliseconds(1);
    h.tick();
    SentResult expired = h.take_result();
    CHECK(expired.result.meta.id == 1);
    CHECK(expired.result.meta.code == protocol::error_code::kNoWorker);
    CHECK(expired.result.meta.message == "no worker serves task 'echo'");
    CHECK(h.dispatcher.stats().expired_in_queue == 1);
    CHECK(h.dispatcher.stats().queued == 0);
  }
  SECTION("the task's workers are all busy") {
    Harness h;
    h.ready("A", {"echo"}, 1);
    h.submit("echo", 1, 10'000);
    h.take_job();
    h.submit("echo", 2, 500);
    h.now += milliseconds(500);
    h.tick();
    SentResult expired = h.take_result();
    CHECK(expired.result.meta.id == 2);
    CHECK(expired.result.meta.code == protocol::error_code::kDeadlineExceeded);
    CHECK_THAT(expired.result.meta.message,
               Catch::Contains("waited 500 ms in queue 'echo'"));
    CHECK(h.dispatcher.stats().queued == 0);
    CHECK(h.dispatcher.stats().in_flight == 1);
  }
}

TEST_CASE("an in-flight job is answered after its deadline plus grace") {
  Harness h;  // grace 1000 ms
  h.ready("A", {"echo"}, 1);
  h.submit("echo", 1, 500);
  SentJob running = h.take_job();
  h.submit("echo", 2, 10'000);

  h.now += milliseconds(1499);
  h.tick();
  CHECK(h.take().results.empty());
  h.now += milliseconds(1);
  h.tick();
  Sent sent = h.take();
  REQUIRE(sent.results.size() == 1);
  CHECK(sent.results[0].result.meta.id == 1);
  CHECK(sent.results[0].result.meta.code ==
        protocol::error_code::kDeadlineExceeded);
  CHECK(sent.jobs.empty());  // the worker's slot is still busy
  CHECK(h.dispatcher.stats().expired_in_flight == 1);

  // Its late DONE is dropped but frees the slot for the waiting job.
  h.done("A", running.job.meta.id);
  sent = h.take();
  CHECK(sent.results.empty());
  REQUIRE(sent.jobs.size() == 1);
  CHECK(text(sent.jobs[0].job.args) == args_of(2));
  CHECK(h.dispatcher.stats().late_done_dropped == 1);
}

TEST_CASE("JOB carries the broker's id and the remaining budget") {
  Harness h;
  h.submit("echo", 7, 5000, "client-1");
  h.submit("echo", 7, 5000, "client-2");  // same client id, other client
  h.now += milliseconds(1200);
  h.ready("A", {"echo"}, 2);
  Sent sent = h.take();
  REQUIRE(sent.jobs.size() == 2);
  CHECK(sent.jobs[0].job.meta.timeout_ms == 3800);
  CHECK(sent.jobs[0].job.meta.attempt == 1);
  CHECK(sent.jobs[0].job.meta.id != sent.jobs[1].job.meta.id);

  h.done("A", sent.jobs[1].job.meta.id);
  SentResult second = h.take_result();
  CHECK(second.client == "client-2");
  CHECK(second.result.meta.id == 7);
  h.done("A", sent.jobs[0].job.meta.id);
  CHECK(h.take_result().client == "client-1");
}

TEST_CASE("a failed DONE keeps its code, message and result") {
  Harness h;
  h.ready("A", {"echo"}, 1);
  h.submit("echo", 9);
  SentJob job = h.take_job();
  h.dispatcher.on_done(
      "A",
      {"echo",
       protocol::OutcomeMeta::failure(
           job.job.meta.id, protocol::error_code::kTaskFailed, "boom"),
       bytes("details")},
      h.now, h.out);
  SentResult result = h.take_result();
  CHECK(result.result.meta.id == 9);
  CHECK_FALSE(result.result.meta.ok);
  CHECK(result.result.meta.code == protocol::error_code::kTaskFailed);
  CHECK(result.result.meta.message == "boom");
  CHECK(text(result.result.result) == "details");
}

TEST_CASE("a dead worker's jobs go back to the front of their queue") {
  Harness h;
  h.ready("A", {"echo"}, 2);
  h.submit("echo", 1);
  h.submit("echo", 2);
  CHECK(h.take().jobs.size() == 2);
  h.submit("echo", 3);

  h.dispatcher.on_worker_unreachable("A", h.now, h.out);
  CHECK(h.take().results.empty());
  CHECK_FALSE(h.dispatcher.knows_worker("A"));
  DispatcherStats stats = h.dispatcher.stats();
  CHECK(stats.requeued == 2);
  CHECK(stats.workers_lost == 1);
  CHECK(stats.queued == 3);
  CHECK(stats.in_flight == 0);

  h.ready("B", {"echo"}, 1);
  std::vector<std::pair<std::string, std::uint32_t>> order;
  for (int i = 0; i < 3; ++i) {
    Sent sent = h.take();  // the previous job's RESULT and the next JOB
    REQUIRE(sent.jobs.size() == 1);
    order.emplace_back(text(sent.jobs[0].job.args),
                       sent.jobs[0].job.meta.attempt);
    h.done("B", sent.jobs[0].job.meta.id);
  }
  CHECK(order == std::vector<std::pair<std::string, std::uint32_t>>{
                     {args_of(1), 2}, {args_of(2), 2}, {args_of(3), 1}});
}

TEST_CASE("no job of a dead worker goes to another dead worker") {
  DispatcherConfig config;
  config.max_attempts = 2;
  Harness h(config);
  // Each holds one job and still has credit for another.
  h.ready("A", {"echo"}, 2);
  h.ready("B", {"echo"}, 2);
  h.submit("echo", 1, 60'000);
  h.submit("echo", 2, 60'000);
  Sent first = h.take();
  REQUIRE(first.jobs.size() == 2);
  REQUIRE(first.jobs[0].worker != first.jobs[1].worker);

  // Both fall silent: one scan finds both dead.
  h.now += config.heartbeat.interval * config.heartbeat.liveness;
  h.tick();
  Sent sent = h.take();
  CHECK(sent.jobs.empty());
  CHECK(sent.results.empty());  // no attempt burned on a dead worker
  DispatcherStats stats = h.dispatcher.stats();
  CHECK(stats.workers_lost == 2);
  CHECK(stats.requeued == 2);
  CHECK(stats.failed_worker_lost == 0);
  CHECK(stats.dispatched == 2);
  CHECK(stats.queued == 2);

  h.ready("C", {"echo"}, 2);
  sent = h.take();
  REQUIRE(sent.jobs.size() == 2);
  for (const SentJob& job : sent.jobs) {
    CHECK(job.worker == "C");
    CHECK(job.job.meta.attempt == 2);
  }
  CHECK(text(sent.jobs[0].job.args) == args_of(1));  // oldest first
}

TEST_CASE("a stopping worker finishes its jobs and gets no new ones") {
  Harness h;
  h.ready("A", {"echo"}, 2);
  h.submit("echo", 1);
  h.submit("echo", 2);
  Sent running = h.take();
  REQUIRE(running.jobs.size() == 2);
  h.submit("echo", 3);

  h.dispatcher.on_disconnect("A", h.now, h.out);
  Sent sent = h.take();
  CHECK(sent.jobs.empty());
  CHECK(sent.results.empty());
  CHECK(sent.controls.empty());
  CHECK(h.dispatcher.knows_worker("A"));
  DispatcherStats stats = h.dispatcher.stats();
  CHECK(stats.requeued == 0);
  CHECK(stats.in_flight == 2);
  CHECK(stats.queued == 1);
  CHECK(stats.free_credit == 0);

  // Its DONEs are relayed; the credit they return is not used.
  h.done("A", running.jobs[0].job.meta.id);
  sent = h.take();
  REQUIRE(sent.results.size() == 1);
  CHECK(sent.results[0].result.meta.id == 1);
  CHECK(sent.jobs.empty());
  CHECK(h.dispatcher.knows_worker("A"));

  // Heartbeats keep it alive while it drains.
  h.now += milliseconds(2500);
  h.dispatcher.on_heartbeat("A", h.now, h.out);
  h.now += milliseconds(2500);
  h.tick();
  CHECK(h.take().jobs.empty());
  CHECK(h.dispatcher.knows_worker("A"));

  h.done("A", running.jobs[1].job.meta.id);
  sent = h.take();
  REQUIRE(sent.results.size() == 1);
  CHECK(sent.results[0].result.meta.id == 2);
  CHECK(sent.jobs.empty());
  CHECK_FALSE(h.dispatcher.knows_worker("A"));  // holds nothing: forgotten
  stats = h.dispatcher.stats();
  CHECK(stats.workers_stopped == 1);
  CHECK(stats.workers_lost == 0);
  CHECK(stats.completed == 2);
  CHECK(stats.workers == 0);
  CHECK(stats.queued == 1);

  h.ready("B", {"echo"}, 1);
  CHECK(text(h.take_job().job.args) == args_of(3));
}

TEST_CASE("an idle worker that disconnects is forgotten at once") {
  Harness h;
  h.ready("A", {"echo"}, 2);
  h.dispatcher.on_disconnect("A", h.now, h.out);
  CHECK(h.take().controls.empty());
  CHECK_FALSE(h.dispatcher.knows_worker("A"));
  CHECK(h.dispatcher.stats().workers_stopped == 1);
  CHECK(h.dispatcher.stats().free_credit == 0);
  h.submit("echo", 1);
  CHECK(h.take().jobs.empty());
}

TEST_CASE("a stopping worker that falls silent has its jobs requeued") {
  Harness h;
  h.ready("A", {"echo"}, 1);
  h.ready("B", {"echo"}, 1);
  h.submit("echo", 1);
  SentJob to_a = h.take_job();
  REQUIRE(to_a.worker == "A");
  h.dispatcher.on_disconnect("A", h.now, h.out);
  CHECK(h.take().jobs.empty());

  // B keeps talking, A does not.
  for (int second = 0; second < 3; ++second) {
    h.now += milliseconds(1000);
    h.dispatcher.on_heartbeat("B", h.now, h.out);
    h.tick();
  }
  Sent sent = h.take();
  REQUIRE(sent.jobs.size() == 1);
  CHECK(sent.jobs[0].worker == "B");
  CHECK(sent.jobs[0].job.meta.attempt == 2);
  CHECK_FALSE(h.dispatcher.knows_worker("A"));
  CHECK(h.dispatcher.stats().workers_lost == 1);
}

TEST_CASE("a stopping worker whose last job expires is forgotten") {
  Harness h;  // grace 1000 ms
  h.ready("A", {"echo"}, 1);
  h.submit("echo", 1, 500);
  h.take_job();
  h.dispatcher.on_disconnect("A", h.now, h.out);
  h.now += milliseconds(1500);
  h.dispatcher.on_heartbeat("A", h.now, h.out);
  h.tick();
  Sent sent = h.take();
  REQUIRE(sent.results.size() == 1);
  CHECK(sent.results[0].result.meta.code ==
        protocol::error_code::kDeadlineExceeded);
  CHECK_FALSE(h.dispatcher.knows_worker("A"));
  CHECK(h.dispatcher.stats().workers_stopped == 1);
}

TEST_CASE("a reconnected worker keeps its jobs under its new identity") {
  Harness h;
  h.ready_as("conn-1", "w@host", 2, std::nullopt);
  h.submit("echo", 1);
  h.submit("echo", 2);
  Sent running = h.take();
  REQUIRE(running.jobs.size() == 2);

  // Same process, new socket; job 1 finished meanwhile and its DONE is about
  // to follow the READY, job 2 still runs.
  h.ready_as("conn-2", "w@host", 2, 0);
  CHECK(h.take().jobs.empty());
  CHECK_FALSE(h.dispatcher.knows_worker("conn-1"));
  CHECK(h.dispatcher.knows_worker("conn-2"));
  DispatcherStats stats = h.dispatcher.stats();
  CHECK(stats.workers == 1);
  CHECK(stats.workers_reconnected == 1);
  CHECK(stats.workers_lost == 0);
  CHECK(stats.requeued == 0);
  CHECK(stats.in_flight == 2);
  CHECK(stats.free_credit == 0);

  h.done("conn-2", running.jobs[0].job.meta.id);
  SentResult result = h.take_result();
  CHECK(result.result.meta.id == 1);
  CHECK(result.result.meta.worker == "w@host");
  CHECK(h.dispatcher.stats().misrouted_done_dropped == 0);
  CHECK(h.dispatcher.stats().free_credit == 1);
  h.done("conn-2", running.jobs[1].job.meta.id);
  CHECK(h.take_result().result.meta.id == 2);
  CHECK(h.dispatcher.stats().free_credit == 2);
  CHECK(h.dispatcher.stats().completed == 2);

  // A late message on the old connection finds no registration.
  h.dispatcher.on_heartbeat("conn-1", h.now, h.out);
  CHECK(h.take().controls.size() == 1);
}

TEST_CASE("only the same name and pid take over a registration") {
  Harness h;
  h.ready_as("conn-1", "w@host", 1, std::nullopt);
  h.submit("echo", 1);
  h.take_job();

  protocol::WorkerInfo other_pid;
  other_pid.tasks = {"echo"};
  other_pid.slots = 1;
  other_pid.name = "w@host";
  other_pid.pid = 43;
  h.dispatcher.on_ready("conn-2", other_pid, h.now, h.out);
  protocol::WorkerInfo anonymous = other_pid;
  anonymous.name.clear();
  h.dispatcher.on_ready("conn-3", anonymous, h.now, h.out);
  h.dispatcher.on_ready("conn-4", anonymous, h.now, h.out);
  h.take();
  CHECK(h.dispatcher.stats().workers == 4);
  CHECK(h.dispatcher.stats().workers_reconnected == 0);
  CHECK(h.dispatcher.stats().in_flight == 1);
}

TEST_CASE("a reconnecting worker is accepted at max_workers") {
  DispatcherConfig config;
  config.max_workers = 1;
  Harness h(config);
  h.ready_as("conn-1", "w@host", 1, std::nullopt);
  h.ready_as("conn-2", "w@host", 1, std::nullopt);
  CHECK(h.dispatcher.knows_worker("conn-2"));
  CHECK_FALSE(h.dispatcher.knows_worker("conn-1"));
  CHECK(h.dispatcher.stats().workers_rejected == 0);
}

TEST_CASE("READY credit is the lesser of free and slots minus jobs held") {
  Harness h;
  h.ready_as("A", "w@host", 4, std::nullopt);
  h.submit("echo", 1);
  SentJob held = h.take_job();
  CHECK(h.dispatcher.stats().free_credit == 3);

  h.ready_as("A", "w@host", 4, 2);  // the worker knows better
  CHECK(h.dispatcher.stats().free_credit == 2);
  h.ready_as("A", "w@host", 4, 4);  // but the broker holds one job
  CHECK(h.dispatcher.stats().free_credit == 3);
  h.ready_as("A", "w@host", 4, 0);
  CHECK(h.dispatcher.stats().free_credit == 0);

  // A DONE returns one credit, up to slots.
  h.done("A", held.job.meta.id);
  CHECK(h.take_result().result.meta.id == 1);
  CHECK(h.dispatcher.stats().free_credit == 1);
  for (int i = 0; i < 5; ++i) h.done("A", 999);
  CHECK(h.dispatcher.stats().free_credit == 4);
}

TEST_CASE("a requeued job goes straight to another ready worker") {
  Harness h;
  h.ready("A", {"echo"}, 1);
  h.ready("B", {"echo"}, 1);
  h.submit("echo", 1);
  CHECK(h.take_job().worker == "A");
  h.dispatcher.on_worker_unreachable("A", h.now, h.out);
  SentJob retry = h.take_job();
  CHECK(retry.worker == "B");
  CHECK(retry.job.meta.attempt == 2);
  CHECK(text(retry.job.args) == args_of(1));
}

TEST_CASE("a job fails with internal after max_attempts worker deaths") {
  DispatcherConfig config;
  config.max_attempts = 2;
  Harness h(config);
  h.ready("A", {"echo"}, 1);
  h.submit("echo", 1, 60'000);
  h.take_job();
  h.dispatcher.on_worker_unreachable("A", h.now, h.out);
  CHECK(h.take().results.empty());

  h.ready("B", {"echo"}, 1);
  CHECK(h.take_job().job.meta.attempt == 2);
  // B falls silent: dead after liveness x interval.
  h.now += config.heartbeat.interval * config.heartbeat.liveness;
  h.tick();
  SentResult failed = h.take_result();
  CHECK(failed.result.meta.id == 1);
  CHECK(failed.result.meta.code == protocol::error_code::kInternal);
  CHECK(failed.result.meta.message ==
        "worker died while running the job (attempt 2 of 2)");
  CHECK(failed.result.meta.worker == "B");
  DispatcherStats stats = h.dispatcher.stats();
  CHECK(stats.workers_lost == 2);
  CHECK(stats.failed_worker_lost == 1);
  CHECK(stats.workers == 0);
  CHECK(stats.in_flight == 0);
}

TEST_CASE("idle workers get heartbeats and silent ones are forgotten") {
  Harness h;
  h.ready("A", {"echo"}, 1);
  h.ready("B", {"echo"}, 1);
  h.now += milliseconds(750);
  h.tick();
  CHECK(h.take().controls.empty());
  h.now += milliseconds(250);
  h.tick();
  Sent sent = h.take();
  REQUIRE(sent.controls.size() == 2);
  for (const SentControl& control : sent.controls) {
    CHECK(control.command == Command::Heartbeat);
    CHECK(control.peer == Outgoing::Peer::worker);
  }

  // A keeps talking, B does not.
  for (int second = 0; second < 5; ++second) {
    h.dispatcher.on_heartbeat("A", h.now, h.out);
    h.now += milliseconds(1000);
    h.tick();
  }
  h.take();
  CHECK(h.dispatcher.knows_worker("A"));
  CHECK_FALSE(h.dispatcher.knows_worker("B"));
  CHECK(h.dispatcher.stats().workers == 1);
  CHECK(h.dispatcher.next_deadline() <= h.now + milliseconds(1000));
}

// The worker's READY announces its own heartbeat interval (section 5).
void ready_with_heartbeat(Harness& h, const std::string& worker,
                          std::uint32_t heartbeat_ms) {
  protocol::WorkerInfo info;
  info.tasks = {"echo"};
  info.slots = 1;
  info.name = worker;
  info.heartbeat_ms = heartbeat_ms;
  h.dispatcher.on_ready(worker, info, h.now, h.out);
}

std::size_t heartbeats_to(const Sent& sent, const std::string& worker) {
  return static_cast<std::size_t>(std::count_if(
      sent.controls.begin(), sent.controls.end(), [&](const SentControl& c) {
        return c.identity == worker && c.command == Command::Heartbeat;
      }));
}

TEST_CASE(
    "a worker with a shorter heartbeat interval hears the broker in time") {
  Harness h;  // heartbeat 1000 ms, liveness 3
  ready_with_heartbeat(h, "fast", 200);
  // The worker gives up on a broker silent for 3 x 200 ms: it must hear a
  // heartbeat every 200 ms (plus the broker's check period) while idle.
  Clock::time_point last_heard = h.now;
  for (int step = 0; step < 40; ++step) {
    h.dispatcher.on_heartbeat("fast", h.now, h.out);  // the worker's own
    h.now = std::min(h.dispatcher.next_deadline(), h.now + milliseconds(50));
    h.tick();
    if (heartbeats_to(h.take(), "fast") > 0) last_heard = h.now;
    CHECK(h.now - last_heard < milliseconds(300));
  }
}

TEST_CASE("a worker with a longer heartbeat interval is not declared dead") {
  Harness h;  // heartbeat 1000 ms, liveness 3
  ready_with_heartbeat(h, "slow", 3000);
  ready_with_heartbeat(h, "silent", 3000);
  // "slow" heartbeats every 3 s, as its READY said; "silent" stops.
  for (int second = 1; second <= 12; ++second) {
    h.now += milliseconds(1000);
    if (second % 3 == 0) h.dispatcher.on_heartbeat("slow", h.now, h.out);
    h.tick();
    CHECK(h.dispatcher.knows_worker("slow"));
    // Dead after 3 x 3 s of silence, not before.
    CHECK(h.dispatcher.knows_worker("silent") == (second < 9));
  }
  // The broker still heartbeats it after its own, shorter interval.
  CHECK(heartbeats_to(h.take(), "slow") >= 9);
}

TEST_CASE("a late or duplicate DONE is dropped and counted once") {
  Harness h;
  h.ready("A", {"echo"}, 1);
  h.ready("B", {"echo"}, 1);
  h.submit("echo", 1);
  SentJob job = h.take_job();
  REQUIRE(job.worker == "A");

  h.done("B", job.job.meta.id);  // B does not hold it
  CHECK(h.take().results.empty());
  CHECK(h.dispatcher.stats().misrouted_done_dropped == 1);

  h.done("A", job.job.meta.id);
  CHECK(h.take_result().result.meta.id == 1);
  h.done("A", job.job.meta.id);
  CHECK(h.take().results.empty());
  DispatcherStats stats = h.dispatcher.stats();
  CHECK(stats.completed == 1);
  CHECK(stats.late_done_dropped == 1);
  CHECK(stats.free_credit == 2);  // credit never exceeds slots
}

TEST_CASE("READY again resets credit to slots minus the jobs held") {
  Harness h;
  h.ready("A", {"echo"}, 2);
  for (std::uint64_t id = 1; id <= 3; ++id) h.submit("echo", id);
  Sent first = h.take();
  REQUIRE(first.jobs.size() == 2);
  CHECK(h.dispatcher.stats().free_credit == 0);

  h.ready("A", {"echo"}, 3);
  SentJob third = h.take_job();
  CHECK(text(third.job.args) == args_of(3));
  CHECK(h.dispatcher.stats().free_credit == 0);

  h.ready("A", {"echo"}, 1);  // holds 3 > 1 slot: no credit, not negative
  CHECK(h.dispatcher.stats().free_credit == 0);
  CHECK(h.dispatcher.stats().workers == 1);
  h.done("A", third.job.meta.id);
  CHECK(h.take().results.size() == 1);
  CHECK(h.dispatcher.stats().free_credit == 1);
}

TEST_CASE("READY can change the tasks a worker serves") {
  Harness h;
  h.ready("A", {"x"}, 1);
  h.ready("A", {"y"}, 1);
  h.submit("x", 1);
  CHECK(h.take().jobs.empty());
  h.submit("y", 2);
  CHECK(h.take_job().job.task == "y");
}

TEST_CASE("messages from unknown workers are answered with DISCONNECT") {
  Harness h;
  h.done("ghost", 1);
  h.dispatcher.on_heartbeat("ghost", h.now, h.out);
  h.dispatcher.on_disconnect("ghost", h.now, h.out);  // needs no answer
  Sent sent = h.take();
  CHECK(sent.results.empty());
  REQUIRE(sent.controls.size() == 2);
  for (const SentControl& control : sent.controls) {
    CHECK(control.peer == Outgoing::Peer::worker);
    CHECK(control.identity == "ghost");
    CHECK(control.command == Command::Disconnect);
  }
  CHECK(h.dispatcher.stats().unknown_worker_messages == 2);
  CHECK(h.dispatcher.stats().workers == 0);
}

TEST_CASE("READY beyond max_workers is refused, told and counted") {
  DispatcherConfig config;
  config.max_workers = 1;
  config.retry_after = milliseconds(1500);
  Harness h(config);
  h.ready("A", {"echo"}, 1);
  h.take();
  h.ready("B", {"echo"}, 1);
  CHECK(h.dispatcher.knows_worker("A"));
  CHECK_FALSE(h.dispatcher.knows_worker("B"));
  CHECK(h.dispatcher.stats().workers_rejected == 1);
  Sent sent = h.take();
  REQUIRE(sent.welcomes.size() == 1);
  CHECK(sent.welcomes[0].worker == "B");
  const protocol::Welcome& refusal = sent.welcomes[0].welcome;
  CHECK_FALSE(refusal.ok);
  CHECK(refusal.code == protocol::error_code::kOverloaded);
  CHECK_THAT(refusal.message, Catch::Contains("limit of 1 workers"));
  CHECK(refusal.retry_after_ms == 1500);
  CHECK(refusal.minor == protocol::kProtocolMinor);
}

TEST_CASE("a READY is welcomed, before any JOB, with the broker's limits") {
  DispatcherConfig config;
  config.max_message_bytes = 4096;
  Harness h(config);
  h.submit("echo", 1);
  h.ready("A", {"echo"}, 1);
  REQUIRE(h.out.size() == 2);
  CHECK(h.out[0].command == Command::Welcome);
  CHECK(h.out[1].command == Command::Job);
  Sent sent = h.take();
  REQUIRE(sent.welcomes.size() == 1);
  CHECK(sent.welcomes[0].welcome.ok);
  CHECK(sent.welcomes[0].welcome.max_message_bytes == 4096);
  CHECK(sent.welcomes[0].welcome.heartbeat_ms == 1000);
  CHECK(sent.welcomes[0].welcome.minor == protocol::kProtocolMinor);
  CHECK(h.dispatcher.welcome().minor == 3);
}

TEST_CASE("args over a worker's frame limit fail alone with too_large") {
  Harness h;
  protocol::WorkerInfo info;
  info.tasks = {"echo"};
  info.slots = 1;
  info.name = "small";
  info.max_message_bytes = 100;
  h.dispatcher.on_ready("A", info, h.now, h.out);
  h.take();

  h.submit_sized(1, std::string(101, 'x'), 0);
  SentResult refused = h.take_result();
  CHECK_FALSE(refused.result.meta.ok);
  CHECK(refused.result.meta.id == 1);
  CHECK(refused.result.meta.code == protocol::error_code::kTooLarge);
  CHECK_THAT(refused.result.meta.message,
             Catch::Contains("101 bytes") && Catch::Contains("takes 100"));
  CHECK(h.dispatcher.stats().rejected_too_large == 1);

  // The worker kept its credit: the next job, at the limit, goes to it.
  CHECK(h.dispatcher.stats().free_credit == 1);
  h.submit_sized(2, std::string(100, 'y'), 0);
  SentJob sent = h.take_job();
  CHECK(sent.worker == "A");
  CHECK(sent.job.args.size() == 100);
  CHECK(h.dispatcher.stats().workers_lost == 0);

  // While it is busy too: no worker will ever take it, so it does not wait.
  h.submit_sized(3, std::string(500, 'z'), 0);
  SentResult busy = h.take_result();
  CHECK(busy.result.meta.id == 3);
  CHECK(busy.result.meta.code == protocol::error_code::kTooLarge);
  h.submit_sized(4, "small", 0);
  h.done("A", sent.job.meta.id);
  Sent after = h.take();
  REQUIRE(after.results.size() == 1);
  CHECK(after.results[0].result.meta.id == 2);
  REQUIRE(after.jobs.size() == 1);
  CHECK(text(after.jobs[0].job.args) == "small");
}

TEST_CASE(
    "a job goes to a worker whose frame limit takes it, even a busy one") {
  Harness h;
  auto ready = [&h](const std::string& name, std::uint64_t limit) {
    protocol::WorkerInfo info;
    info.tasks = {"echo"};
    info.slots = 1;
    info.name = name;
    info.max_message_bytes = limit;
    h.dispatcher.on_ready(name, info, h.now, h.out);
  };
  ready("small", 100);  // preferred: ready first
  ready("big", 0);      // no announced limit
  h.take();

  // Past the preferred small worker to the big one.
  h.submit_sized(1, std::string(200, 'b'), 0);
  SentJob first = h.take_job();
  CHECK(first.worker == "big");

  // The big worker is busy: the next large job waits for it, and a small
  // job behind it goes to the small worker meanwhile.
  h.submit_sized(2, std::string(300, 'b'), 0);
  CHECK(h.take().results.empty());
  h.submit_sized(3, "small", 0);
  SentJob small = h.take_job();
  CHECK(small.worker == "small");
  CHECK(h.dispatcher.stats().queued == 1);

  // Free again, the big worker takes the job that waited for it.
  h.done("big", first.job.meta.id);
  Sent after = h.take();
  REQUIRE(after.jobs.size() == 1);
  CHECK(after.jobs[0].worker == "big");
  CHECK(after.jobs[0].job.args.size() == 300);
  CHECK(h.dispatcher.stats().rejected_too_large == 0);

  // Once the small worker is free, it does not take what it cannot hold.
  h.submit_sized(4, std::string(400, 'b'), 0);
  h.done("small", small.job.meta.id);
  Sent later = h.take();
  CHECK(later.jobs.empty());
  CHECK(h.dispatcher.stats().queued == 1);
}

TEST_CASE("a JOB's result limit is the smaller of the client's and ours") {
  DispatcherConfig config;
  config.max_message_bytes = 1000;
  Harness h(config);
  h.ready("A", {"echo"}, 3);
  h.take();
  h.submit_sized(1, "a", 0);
  CHECK(h.take_job().job.meta.max_result_bytes == 1000);
  h.submit_sized(2, "b", 500);
  CHECK(h.take_job().job.meta.max_result_bytes == 500);
  h.submit_sized(3, "c", 5000);
  CHECK(h.take_job().job.meta.max_result_bytes == 1000);
}

TEST_CASE("a result over the client's limit is answered too_large") {
  Harness h;
  h.ready("A", {"echo"}, 1);
  h.take();
  h.submit_sized(1, "args", 10);
  SentJob job = h.take_job();
  // A worker that ignored the JOB's max_result_bytes.
  h.done("A", job.job.meta.id, std::string(11, 'r'));
  SentResult refused = h.take_result();
  CHECK(refused.result.meta.id == 1);
  CHECK_FALSE(refused.result.meta.ok);
  CHECK(refused.result.meta.code == protocol::error_code::kTooLarge);
  CHECK(refused.result.meta.worker == "A");
  CHECK(h.dispatcher.stats().rejected_too_large == 1);
  CHECK(h.dispatcher.stats().free_credit == 1);  // its credit came back

  h.submit_sized(2, "args", 10);
  h.done("A", h.take_job().job.meta.id, std::string(10, 'r'));
  SentResult fits = h.take_result();
  CHECK(fits.result.meta.ok);
  CHECK(fits.result.result.size() == 10);
}

TEST_CASE("shutdown disconnects workers and clients with unanswered jobs") {
  Harness h;
  h.ready("A", {"echo"}, 1);
  h.submit("echo", 1, 10'000, "c1");
  h.submit("echo", 2, 10'000, "c2");
  h.submit("echo", 3, 10'000, "c2");
  h.take();
  h.dispatcher.on_shutdown(h.out);
  Sent sent = h.take();
  std::set<std::pair<std::string, Outgoing::Peer>> told;
  for (const SentControl& control : sent.controls) {
    CHECK(control.command == Command::Disconnect);
    told.emplace(control.identity, control.peer);
  }
  CHECK(sent.controls.size() == 3);
  CHECK(told == std::set<std::pair<std::string, Outgoing::Peer>>{
                    {"A", Outgoing::Peer::worker},
                    {"c1", Outgoing::Peer::client},
                    {"c2", Outgoing::Peer::client}});
}

TEST_CASE("many jobs through several workers all complete exactly once") {
  Harness h;
  h.ready("A", {"echo"}, 3);
  h.ready("B", {"echo"}, 2);
  h.ready("C", {"echo"}, 1);
  std::deque<SentJob> running;
  std::set<std::uint64_t> answered;
  const std::uint64_t total = 20'000;
  for (std::uint64_t id = 1; id <= total; ++id) {
    if (id % 500 == 0) {  // simulated time passes: stay alive
      for (const char* worker : {"A", "B", "C"}) {
        h.dispatcher.on_heartbeat(worker, h.now, h.out);
      }
    }
    h.submit("echo", id);
    Sent sent = h.take();
    for (SentJob& job : sent.jobs) running.push_back(std::move(job));
    // Keep about four jobs in flight; finish the oldest.
    while (running.size() > 4 || (id == total && !running.empty())) {
      SentJob job = std::move(running.front());
      running.pop_front();
      h.done(job.worker, job.job.meta.id);
      Sent reply = h.take();
      REQUIRE(reply.results.size() == 1);
      CHECK(answered.insert(reply.results[0].result.meta.id).second);
      for (SentJob& next : reply.jobs) running.push_back(std::move(next));
      h.now += milliseconds(1);
      h.tick();
      h.take();
    }
  }
  CHECK(answered.size() == total);
  DispatcherStats stats = h.dispatcher.stats();
  CHECK(stats.completed == total);
  CHECK(stats.queued == 0);
  CHECK(stats.in_flight == 0);
  CHECK(stats.free_credit == 6);
}

TEST_CASE("Dispatcher rejects a configuration it cannot honour") {
  DispatcherConfig no_liveness;
  no_liveness.heartbeat.liveness = 0;
  CHECK_THROWS_AS(Dispatcher(no_liveness), std::invalid_argument);
  DispatcherConfig no_attempts;
  no_attempts.max_attempts = 0;
  CHECK_THROWS_AS(Dispatcher(no_attempts), std::invalid_argument);
  CHECK_NOTHROW(Dispatcher(DispatcherConfig{}));
}

TEST_CASE("job ids count up from first_job_id") {
  DispatcherConfig config;
  config.first_job_id = 1'000'000'007;
  Harness h(config);
  h.ready("w1", {"echo"}, 2);
  h.submit("echo", 1);
  h.submit("echo", 2);
  Sent sent = h.take();
  REQUIRE(sent.jobs.size() == 2);
  CHECK(sent.jobs[0].job.meta.id == 1'000'000'007);
  CHECK(sent.jobs[1].job.meta.id == 1'000'000'008);
  // A DONE with an id of a previous broker's numbering matches nothing.
  h.done("w1", 1);
  CHECK(h.take().results.empty());
  CHECK(h.dispatcher.stats().late_done_dropped == 1);
}

TEST_CASE("a broker's first job id is random and leaves room to count") {
  const auto a = monsoon::broker::random_first_job_id();
  const auto b = monsoon::broker::random_first_job_id();
  CHECK(a != b);  // 2^-62 odds of a false failure
  for (auto id : {a, b}) {
    CHECK(id >= 1);
    CHECK(id <= (std::uint64_t{1} << 62));
  }
}

namespace {

// A `retry` DONE from `worker` for broker job `id`, with a minimum delay.
void retry_done(Harness& h, const std::string& worker, std::uint64_t id,
                std::uint32_t after_ms = 0) {
  h.dispatcher.on_done(
      worker,
      {"echo",
       protocol::OutcomeMeta::failure(id, protocol::error_code::kRetry,
                                      "try again", after_ms),
       bytes(std::string(protocol::kMsgpackNil))},
      h.now, h.out);
}

}  // namespace

TEST_CASE("a retry waits out an exponential back-off with jitter") {
  DispatcherConfig config;
  config.max_attempts = 4;
  config.retry_backoff_base = milliseconds(100);
  Harness h(config);
  h.ready("A", {"echo"}, 1);
  h.submit("echo", 7, 60'000);
  std::uint64_t id = h.take_job().job.meta.id;

  // Attempt n waits between half and all of 100 ms x 2^(n-1).
  for (std::uint32_t attempt = 1; attempt <= 3; ++attempt) {
    const milliseconds full(100 << (attempt - 1));
    retry_done(h, "A", id);
    CHECK(h.take().results.empty());
    CHECK(h.dispatcher.stats().delayed == 1);
    CHECK(h.dispatcher.next_deadline() >= h.now + full / 2);
    CHECK(h.dispatcher.next_deadline() <= h.now + full);
    h.now += full / 2 - milliseconds(1);
    h.tick();
    CHECK(h.take().jobs.empty());  // not before half the back-off
    h.now += full / 2 + milliseconds(1);
    h.tick();
    SentJob again = h.take_job();
    CHECK(again.job.meta.attempt == attempt + 1);
    id = again.job.meta.id;
  }
  // Out of attempts: the client hears task_failed with the task's message.
  retry_done(h, "A", id);
  SentResult failed = h.take_result();
  CHECK(failed.result.meta.id == 7);
  CHECK(failed.result.meta.code == protocol::error_code::kTaskFailed);
  CHECK(failed.result.meta.message == "try again (gave up after 4 attempts)");
  DispatcherStats stats = h.dispatcher.stats();
  CHECK(stats.retries == 3);
  CHECK(stats.retries_given_up == 1);
  CHECK(stats.delayed == 0);
  CHECK(stats.in_flight == 0);
}

TEST_CASE("a retry honours the task's delay and never passes the deadline") {
  DispatcherConfig config;
  config.retry_backoff_base = milliseconds(10);
  Harness h(config);
  h.ready("A", {"echo"}, 1);
  h.ready("B", {"echo"}, 1);
  h.submit("echo", 1, 10'000);
  SentJob first = h.take_job();

  // The task asks for 2 s: the back-off (<= 10 ms) is not enough.
  retry_done(h, first.worker, first.job.meta.id, 2'000);
  CHECK(h.take().jobs.empty());
  h.now += milliseconds(1'999);
  h.tick();
  CHECK(h.take().jobs.empty());
  h.now += milliseconds(1);
  h.tick();
  SentJob second = h.take_job();  // to whichever worker is free: both are
  CHECK(second.job.meta.attempt == 2);
  CHECK(second.job.meta.timeout_ms == 8'000);

  // 9 s would end after the deadline (8 s left): fail now, not then.
  retry_done(h, second.worker, second.job.meta.id, 9'000);
  SentResult failed = h.take_result();
  CHECK(failed.result.meta.code == protocol::error_code::kTaskFailed);
  CHECK(failed.result.meta.message ==
        "try again (attempt 2; no time left for another before the deadline)");
}

TEST_CASE("a job of a no_retry task fails when its worker dies") {
  Harness h;
  protocol::WorkerInfo info;
  info.tasks = {"echo", "charge"};
  info.slots = 2;
  info.name = "A";
  info.no_retry = {"charge"};
  h.dispatcher.on_ready("A", info, h.now, h.out);
  h.submit("charge", 1);
  h.submit("echo", 2);
  CHECK(h.take().jobs.size() == 2);
  h.ready("B", {"echo", "charge"}, 2);
  h.take();

  h.dispatcher.on_worker_unreachable("A", h.now, h.out);
  Sent sent = h.take();
  // echo moves on to B; charge, at most once, fails.
  REQUIRE(sent.jobs.size() == 1);
  CHECK(sent.jobs[0].worker == "B");
  CHECK(sent.jobs[0].job.task == "echo");
  REQUIRE(sent.results.size() == 1);
  CHECK(sent.results[0].result.meta.id == 1);
  CHECK(sent.results[0].result.meta.code == protocol::error_code::kInternal);
  CHECK(sent.results[0].result.meta.message ==
        "worker died while running the job; task 'charge' is not retried (at "
        "most once)");
}

// --- Several brokers sharing a worker's slots (protocol 1.2) ---

TEST_CASE("a refused job goes at once to another worker, attempt unchanged") {
  Harness h;
  h.ready("A", {"echo"}, 1);
  h.ready("B", {"echo"}, 1);
  h.take();
  h.submit("echo", 1, 5000);
  SentJob first = h.take_job();
  REQUIRE(first.worker == "A");

  h.now += milliseconds(400);
  h.refuse("A", first.job.meta.id);
  Sent sent = h.take();
  CHECK(sent.results.empty());  // never relayed
  REQUIRE(sent.jobs.size() == 1);
  CHECK(sent.jobs[0].worker == "B");
  CHECK(sent.jobs[0].job.meta.id == first.job.meta.id);
  CHECK(sent.jobs[0].job.meta.attempt == 1);
  CHECK(sent.jobs[0].job.meta.timeout_ms == 4600);  // the same deadline
  CHECK(text(sent.jobs[0].job.args) == args_of(1));

  DispatcherStats stats = h.dispatcher.stats();
  CHECK(stats.refused == 1);
  CHECK(stats.requeued == 0);
  CHECK(stats.retries == 0);
  CHECK(stats.in_flight == 1);
  CHECK(stats.free_credit == 0);  // A's credit is 0, B is busy

  // A gets nothing until it says it has room.
  h.submit("echo", 2);
  CHECK(h.take().jobs.empty());
  h.done("B", first.job.meta.id);
  Sent answered = h.take();
  REQUIRE(answered.results.size() == 1);
  CHECK(answered.results[0].result.meta.ok);
  CHECK(answered.results[0].result.meta.worker == "B");
  REQUIRE(answered.jobs.size() == 1);
  CHECK(answered.jobs[0].worker == "B");
}

TEST_CASE("a refused job waits at the front of its queue") {
  Harness h;
  h.ready("A", {"echo"}, 2);
  h.submit("echo", 1);
  h.submit("echo", 2);
  Sent running = h.take();
  REQUIRE(running.jobs.size() == 2);
  h.submit("echo", 3);

  h.refuse("A", running.jobs[1].job.meta.id);
  Sent sent = h.take();
  CHECK(sent.jobs.empty());
  CHECK(sent.results.empty());
  DispatcherStats stats = h.dispatcher.stats();
  CHECK(stats.queued == 2);
  CHECK(stats.in_flight == 1);
  CHECK(stats.free_credit == 0);

  // A DONE returns one credit: the refused job goes first, not job 3.
  h.done("A", running.jobs[0].job.meta.id);
  sent = h.take();
  REQUIRE(sent.results.size() == 1);
  REQUIRE(sent.jobs.size() == 1);
  CHECK(text(sent.jobs[0].job.args) == args_of(2));
  CHECK(sent.jobs[0].job.meta.attempt == 1);
}

TEST_CASE("a refusal does not use up an attempt") {
  DispatcherConfig config;
  config.max_attempts = 1;
  Harness h(config);
  h.ready("A", {"echo"}, 1);
  h.ready("B", {"echo"}, 1);
  h.take();
  h.submit("echo", 1);
  SentJob job = h.take_job();
  h.refuse(job.worker, job.job.meta.id);
  SentJob again = h.take_job();
  CHECK(again.worker != job.worker);
  CHECK(again.job.meta.attempt == 1);
  h.done(again.worker, again.job.meta.id);
  SentResult result = h.take_result();
  CHECK(result.result.meta.ok);
  CHECK(h.dispatcher.stats().dispatched == 2);  // JOBs sent, both counted
}

TEST_CASE("a refused job past its deadline fails deadline_exceeded") {
  Harness h;
  h.ready("A", {"echo"}, 1);
  h.ready("B", {"echo"}, 1);
  h.take();
  h.submit("echo", 1, 1000);
  SentJob job = h.take_job();
  h.now += milliseconds(1200);  // past the deadline, within the grace
  h.refuse(job.worker, job.job.meta.id);
  Sent sent = h.take();
  CHECK(sent.jobs.empty());
  REQUIRE(sent.results.size() == 1);
  CHECK(sent.results[0].result.meta.code ==
        protocol::error_code::kDeadlineExceeded);
  CHECK(h.dispatcher.stats().in_flight == 0);
}

TEST_CASE("CREDIT sets credit to the lesser of free and slots minus held") {
  Harness h;
  h.ready("A", {"echo"}, 4);
  for (std::uint64_t id = 1; id <= 3; ++id) h.submit("echo", id);
  Sent running = h.take();
  REQUIRE(running.jobs.size() == 3);
  h.refuse("A", running.jobs[2].job.meta.id);
  CHECK(h.take().jobs.empty());
  CHECK(h.dispatcher.stats().free_credit == 0);

  // free 4, but the broker still counts 2 jobs held: credit 2.
  h.credit("A", 4);
  Sent sent = h.take();
  REQUIRE(sent.jobs.size() == 1);  // the refused job, at once
  CHECK(text(sent.jobs[0].job.args) == args_of(3));
  CHECK(h.dispatcher.stats().free_credit == 1);
  CHECK(h.dispatcher.stats().credit_updates == 1);

  // free is a cap too: CREDIT 0 leaves no credit.
  h.credit("A", 0);
  CHECK(h.dispatcher.stats().free_credit == 0);
  h.submit("echo", 4);
  CHECK(h.take().jobs.empty());
  h.credit("A", 1);
  CHECK(h.take_job().worker == "A");
  CHECK(h.dispatcher.stats().credit_updates == 3);
}

TEST_CASE("CREDIT from an unknown worker is answered with DISCONNECT") {
  Harness h;
  h.credit("ghost", 3);
  Sent sent = h.take();
  REQUIRE(sent.controls.size() == 1);
  CHECK(sent.controls[0].identity == "ghost");
  CHECK(sent.controls[0].command == Command::Disconnect);
  CHECK(h.dispatcher.stats().unknown_worker_messages == 1);
  CHECK(h.dispatcher.stats().credit_updates == 0);
  CHECK_FALSE(h.dispatcher.knows_worker("ghost"));
}

TEST_CASE("CREDIT from a stopping worker is ignored") {
  Harness h;
  h.ready("A", {"echo"}, 2);
  h.submit("echo", 1);
  SentJob running = h.take_job();
  h.dispatcher.on_disconnect("A", h.now, h.out);
  h.submit("echo", 2);
  h.credit("A", 2);
  Sent sent = h.take();
  CHECK(sent.jobs.empty());
  CHECK(sent.controls.empty());
  CHECK(h.dispatcher.stats().free_credit == 0);
  CHECK(h.dispatcher.stats().credit_updates == 0);
  h.done("A", running.job.meta.id);
  CHECK(h.take().results.size() == 1);
  CHECK_FALSE(h.dispatcher.knows_worker("A"));
}

TEST_CASE("a stopping worker's refused job goes to another worker") {
  Harness h;
  h.ready("A", {"echo"}, 1);
  h.submit("echo", 1);
  SentJob job = h.take_job();
  h.dispatcher.on_disconnect("A", h.now, h.out);
  h.ready("B", {"echo"}, 1);
  h.take();
  h.refuse("A", job.job.meta.id);
  SentJob again = h.take_job();
  CHECK(again.worker == "B");
  CHECK_FALSE(h.dispatcher.knows_worker("A"));  // held nothing more
  CHECK(h.dispatcher.stats().workers_stopped == 1);
}

TEST_CASE("a late refused DONE is dropped and counted, and zeroes credit") {
  Harness h;
  h.ready("A", {"echo"}, 2);
  h.ready("B", {"echo"}, 1);
  h.take();
  h.submit("echo", 1);
  SentJob job = h.take_job();
  REQUIRE(job.worker == "A");

  h.refuse("A", 999'999);          // an id the broker never gave out
  h.refuse("B", job.job.meta.id);  // held by A, not B
  Sent sent = h.take();
  CHECK(sent.jobs.empty());
  CHECK(sent.results.empty());
  DispatcherStats stats = h.dispatcher.stats();
  CHECK(stats.late_done_dropped == 1);
  CHECK(stats.misrouted_done_dropped == 1);
  CHECK(stats.refused == 0);
  CHECK(stats.in_flight == 1);
  CHECK(stats.free_credit == 0);  // both are full

  h.submit("echo", 2);
  CHECK(h.take().jobs.empty());
  h.credit("B", 1);
  CHECK(h.take_job().worker == "B");
  h.done("A", job.job.meta.id);  // A's job still completes normally
  CHECK(h.take_result().result.meta.id == 1);
}

// --- Named queues (protocol 1.3) ---

namespace {

protocol::Pool pool(std::vector<std::string> queues, std::uint32_t slots,
                    std::optional<std::uint32_t> free = std::nullopt) {
  return {std::move(queues), slots, free};
}

// READY of `worker` serving `tasks` with `pools`; slots are their sum.
void ready_pools(Harness& h, const std::string& worker,
                 std::vector<std::string> tasks,
                 std::vector<protocol::Pool> pools) {
  protocol::WorkerInfo info;
  info.tasks = std::move(tasks);
  info.name = worker;
  for (const protocol::Pool& p : pools) info.slots += p.slots;
  info.pools = std::move(pools);
  h.dispatcher.on_ready(worker, info, h.now, h.out);
}

void credit_pool(Harness& h, const std::string& worker, std::uint32_t free,
                 std::uint32_t pool_index) {
  h.dispatcher.on_credit(worker, {free, pool_index}, h.now, h.out);
}

// The stats entry of queue `name`, if it has one.
std::optional<QueueStats> queue_stats(const Harness& h,
                                      const std::string& name) {
  for (const QueueStats& queue : h.dispatcher.queue_stats()) {
    if (queue.name == name) return queue;
  }
  return std::nullopt;
}

}  // namespace

TEST_CASE("the routing table chooses each job's queue, and JOB names it") {
  DispatcherConfig config;
  config.routes = RoutingTable(
      {"images.thumb=fast", "images.*=slow", "echo=fast", "ech*=never"});
  Harness h(config);
  ready_pools(h, "A", {"images.thumb", "images.resize", "echo", "sleep"},
              {pool({"fast"}, 4), pool({"slow"}, 4), pool({"sleep"}, 4),
               pool({"never"}, 4)});
  h.take();
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"images.thumb", "fast"},  // exact, before the prefix rule
      {"images.resize", "slow"},
      {"echo", "fast"},     // the first of two matching rules
      {"sleep", "sleep"}};  // no rule: the queue named as the task
  std::uint64_t id = 0;
  for (const auto& [task, queue] : expected) {
    INFO(task);
    h.submit(task, ++id);
    SentJob sent = h.take_job();
    CHECK(sent.job.task == task);
    CHECK(sent.job.meta.queue == queue);
  }
  CHECK(queue_stats(h, "fast")->submitted == 2);
  CHECK(queue_stats(h, "never")->submitted == 0);

  SECTION("'*' alone routes every other task") {
    DispatcherConfig catch_all;
    catch_all.routes = RoutingTable({"echo=fast", "*=bulk"});
    Harness g(catch_all);
    ready_pools(g, "B", {"echo", "resize"},
                {pool({"fast"}, 1), pool({"bulk"}, 1)});
    g.take();
    g.submit("resize", 1);
    CHECK(g.take_job().job.meta.queue == "bulk");
    g.submit("echo", 2);
    CHECK(g.take_job().job.meta.queue == "fast");
  }
  SECTION("a worker without pools gets the task's own queue named") {
    Harness g;
    g.ready("C", {"echo"}, 1);
    g.take();
    g.submit("echo", 1);
    CHECK(g.take_job().job.meta.queue == "echo");
  }
  SECTION("a queue no pool lists is not served, even by a worker of the task") {
    // echo goes to queue fast; C serves task echo but only queue echo.
    Harness g(config);
    g.ready("C", {"echo"}, 1);
    g.take();
    g.submit("echo", 1, 500);
    CHECK(g.take().jobs.empty());
    g.now += milliseconds(500);
    g.tick();
    SentResult expired = g.take_result();
    CHECK(expired.result.meta.code == protocol::error_code::kNoWorker);
    CHECK(expired.result.meta.message ==
          "no worker serves task 'echo' in queue 'fast'");
  }
}

TEST_CASE("a queue's backlog does not hold up another pool of the worker") {
  Harness h;
  ready_pools(h, "A", {"fast", "slow"}, {pool({"fast"}, 4), pool({"slow"}, 1)});
  h.take();
  for (std::uint64_t id = 1; id <= 10; ++id) h.submit("slow", id);
  Sent sent = h.take();
  REQUIRE(sent.jobs.size() == 1);  // the slow pool's one slot
  const std::uint64_t first_slow = sent.jobs[0].job.meta.id;
  CHECK(sent.jobs[0].job.meta.queue == "slow");
  CHECK(queue_stats(h, "slow")->queued == 9);

  // Fast jobs submitted after the slow backlog go at once, to the same
  // worker, up to the fast pool's slots.
  std::vector<SentJob> fast;
  for (std::uint64_t id = 11; id <= 14; ++id) {
    h.submit("fast", id);
    fast.push_back(h.take_job());
    CHECK(fast.back().worker == "A");
    CHECK(fast.back().job.meta.queue == "fast");
  }
  h.submit("fast", 15);
  CHECK(h.take().jobs.empty());  // the fast pool is full now
  CHECK(queue_stats(h, "slow")->queued == 9);

  // A slow DONE frees a slow slot: the next slow job, not the older...
  h.done("A", first_slow);
  Sent after_slow = h.take();
  REQUIRE(after_slow.jobs.size() == 1);
  CHECK(after_slow.jobs[0].job.task == "slow");
  CHECK(text(after_slow.jobs[0].job.args) == args_of(2));
  // ...and a fast DONE the waiting fast job, though slow ones are older.
  h.done("A", fast[0].job.meta.id);
  Sent after_fast = h.take();
  REQUIRE(after_fast.jobs.size() == 1);
  CHECK(after_fast.jobs[0].job.task == "fast");
  CHECK(text(after_fast.jobs[0].job.args) == args_of(15));
}

TEST_CASE("a READY without pools shares its slots among its tasks") {
  Harness h;
  h.ready("A", {"x", "y"}, 2);
  h.take();
  h.submit("x", 1);
  h.submit("x", 2);
  CHECK(h.take().jobs.size() == 2);
  h.submit("y", 3);  // no slot left for y: one pool for both
  CHECK(h.take().jobs.empty());
  CHECK(h.dispatcher.stats().free_credit == 0);
  // CREDIT without a pool index is pool 0, the only one.
  h.credit("A", 2);
  CHECK(h.dispatcher.stats().free_credit == 0);  // both still held here
  h.dispatcher.on_worker_unreachable("A", h.now, h.out);
  h.take();
  CHECK(h.dispatcher.stats().queued == 3);
}

TEST_CASE("a refusal zeroes only the refused job's pool") {
  Harness h;
  ready_pools(h, "A", {"fast", "slow"}, {pool({"fast"}, 2), pool({"slow"}, 2)});
  h.take();
  h.submit("slow", 1);
  SentJob slow = h.take_job();
  h.refuse("A", slow.job.meta.id);
  CHECK(h.take().jobs.empty());  // no other pool serves slow
  CHECK(queue_stats(h, "slow")->credit == 0);
  CHECK(queue_stats(h, "slow")->queued == 1);
  CHECK(queue_stats(h, "fast")->credit == 2);

  h.submit("fast", 2);
  CHECK(h.take_job().job.meta.queue == "fast");
  h.submit("slow", 3);
  CHECK(h.take().jobs.empty());

  // The slow pool says it has room again: the refused job goes first.
  credit_pool(h, "A", 2, 1);
  Sent sent = h.take();
  REQUIRE(sent.jobs.size() == 2);
  CHECK(text(sent.jobs[0].job.args) == args_of(1));
  CHECK(sent.jobs[0].job.meta.attempt == 1);
  CHECK(text(sent.jobs[1].job.args) == args_of(3));
  CHECK(queue_stats(h, "fast")->credit == 1);
}

TEST_CASE("CREDIT sets the pool it names; an unknown pool index is dropped") {
  Harness h;
  ready_pools(h, "A", {"a", "b"}, {pool({"a"}, 2), pool({"b"}, 3)});
  h.take();
  h.submit("b", 1);
  h.take_job();

  // free 3 of b's 3 slots, but the broker counts one held: credit 2.
  credit_pool(h, "A", 3, 1);
  CHECK(queue_stats(h, "b")->credit == 2);
  credit_pool(h, "A", 0, 1);
  CHECK(queue_stats(h, "b")->credit == 0);
  CHECK(queue_stats(h, "a")->credit == 2);  // untouched
  CHECK(h.dispatcher.stats().credit_updates == 2);

  credit_pool(h, "A", 1, 0);
  CHECK(queue_stats(h, "a")->credit == 1);
  CHECK(queue_stats(h, "b")->credit == 0);

  credit_pool(h, "A", 3, 2);  // A has pools 0 and 1 only
  DispatcherStats stats = h.dispatcher.stats();
  CHECK(stats.malformed_dropped == 1);
  CHECK(stats.credit_updates == 3);
  CHECK(queue_stats(h, "a")->credit == 1);
  CHECK(queue_stats(h, "b")->credit == 0);
  CHECK(h.take().controls.empty());
}

TEST_CASE("a re-registration charges held jobs to the pool of their queue") {
  Harness h;
  ready_pools(h, "A", {"fast", "slow"}, {pool({"fast"}, 1), pool({"slow"}, 1)});
  h.take();
  h.submit("slow", 1);
  SentJob first = h.take_job();

  // The same worker, its slow pool now first and bigger: it holds job 1.
  ready_pools(h, "A", {"fast", "slow"},
              {pool({"slow"}, 3, 3), pool({"fast"}, 1)});
  h.take();
  CHECK(queue_stats(h, "slow")->slots == 3);
  CHECK(queue_stats(h, "slow")->credit == 2);
  for (std::uint64_t id = 2; id <= 4; ++id) h.submit("slow", id);
  Sent sent = h.take();
  REQUIRE(sent.jobs.size() == 2);
  h.done("A", first.job.meta.id);  // returns its credit to the slow pool
  Sent after = h.take();
  REQUIRE(after.jobs.size() == 1);
  CHECK(text(after.jobs[0].job.args) == args_of(4));

  // Re-registered without a slow pool: its slow jobs are charged to none.
  ready_pools(h, "A", {"fast", "slow"}, {pool({"fast"}, 2)});
  h.take();
  h.submit("fast", 5);
  h.take_job();
  CHECK(queue_stats(h, "fast")->credit == 1);
  h.done("A", sent.jobs[0].job.meta.id);
  CHECK(h.take_result().result.meta.id == 2);  // relayed as ever
  CHECK(queue_stats(h, "fast")->credit == 1);  // but returns nothing
  CHECK(queue_stats(h, "slow")->workers == 0);
  CHECK(queue_stats(h, "slow")->in_flight == 2);
}

TEST_CASE("a late DONE returns the credit of the pool it names") {
  Harness h;  // grace 1000 ms
  ready_pools(h, "A", {"a", "b"}, {pool({"a"}, 1), pool({"b"}, 1)});
  h.take();
  h.submit("a", 1, 500);
  SentJob running = h.take_job();
  h.now += milliseconds(1500);
  h.tick();
  CHECK(h.take_result().result.meta.code ==
        protocol::error_code::kDeadlineExceeded);
  h.submit("a", 2);
  CHECK(h.take().jobs.empty());  // the worker may still be running job 1

  h.done_in_pool("A", running.job.meta.id, 0);
  SentJob next = h.take_job();
  CHECK(text(next.job.args) == args_of(2));
  CHECK(h.dispatcher.stats().late_done_dropped == 1);
  CHECK(queue_stats(h, "b")->credit == 1);
  // A DONE from before a restart: the job was never known here.
  h.done_in_pool("A", 999'998, 1);
  CHECK(queue_stats(h, "b")->credit == 1);  // capped at the pool's slots
  h.done("A", next.job.meta.id);
  CHECK(h.take_result().result.meta.id == 2);
  CHECK(queue_stats(h, "a")->credit == 1);
  h.submit("b", 3);
  SentJob third = h.take_job();
  CHECK(queue_stats(h, "b")->credit == 0);
  h.done_in_pool("A", 999'999, 1);  // unknown id, pool b
  CHECK(queue_stats(h, "b")->credit == 1);
  CHECK(queue_stats(h, "a")->credit == 1);
  // An unknown id naming no pool, of a worker with several: nothing changes;
  // one naming a pool it does not have, neither.
  h.done_in_pool("A", third.job.meta.id, 1);
  CHECK(queue_stats(h, "b")->credit == 1);
  h.done("A", 1'000'000);
  h.done_in_pool("A", 1'000'001, 7);
  CHECK(queue_stats(h, "a")->credit == 1);
  CHECK(queue_stats(h, "b")->credit == 1);
}

TEST_CASE("per-queue stats: depth, flight, workers, slots, credit, counts") {
  DispatcherConfig config;
  config.routes = RoutingTable({"img.*=images"});
  config.retry_backoff_base = milliseconds(100);
  Harness h(config);
  ready_pools(h, "A", {"img.a", "echo"},
              {pool({"images"}, 2), pool({"echo"}, 1)});
  ready_pools(h, "B", {"img.a"}, {pool({"images"}, 3)});
  h.take();
  REQUIRE(h.dispatcher.queue_stats().size() == 2);
  CHECK(h.dispatcher.queue_stats()[0] ==
        QueueStats{"echo", 0, 0, 1, 1, 1, 0, 0});
  CHECK(h.dispatcher.queue_stats()[1] ==
        QueueStats{"images", 0, 0, 2, 5, 5, 0, 0});

  for (std::uint64_t id = 1; id <= 6; ++id) h.submit("img.a", id);
  Sent sent = h.take();
  REQUIRE(sent.jobs.size() == 5);
  CHECK(*queue_stats(h, "images") == QueueStats{"images", 1, 5, 2, 5, 0, 6, 0});

  h.done(sent.jobs[0].worker, sent.jobs[0].job.meta.id);
  CHECK(h.take().jobs.size() == 1);  // the waiting one
  CHECK(*queue_stats(h, "images") == QueueStats{"images", 0, 5, 2, 5, 0, 6, 1});

  // A retry waiting out its back-off counts as queued.
  retry_done(h, sent.jobs[1].worker, sent.jobs[1].job.meta.id);
  CHECK(h.take().jobs.empty());
  CHECK(queue_stats(h, "images")->queued == 1);
  CHECK(queue_stats(h, "images")->in_flight == 4);
  CHECK(h.dispatcher.stats().queued == 0);
  CHECK(h.dispatcher.stats().delayed == 1);

  // A stopping worker no longer serves the queue.
  h.dispatcher.on_disconnect("B", h.now, h.out);
  CHECK(queue_stats(h, "images")->workers == 1);
  CHECK(queue_stats(h, "images")->slots == 2);

  // An entry lives while its queue has jobs or workers.
  h.submit("nobody", 7, 500);
  CHECK(*queue_stats(h, "nobody") == QueueStats{"nobody", 1, 0, 0, 0, 0, 1, 0});
  h.now += milliseconds(500);
  h.tick();
  h.take();
  CHECK_FALSE(queue_stats(h, "nobody"));
  h.dispatcher.on_worker_unreachable("A", h.now, h.out);
  CHECK_FALSE(queue_stats(h, "echo"));
}

TEST_CASE("the queue report lists the queues that changed, with their rate") {
  const std::vector<QueueStats> before = {{"fast", 0, 2, 1, 4, 2, 100, 90},
                                          {"gone", 0, 0, 1, 1, 1, 0, 0},
                                          {"idle", 0, 0, 1, 2, 2, 5, 5}};
  const std::vector<QueueStats> after = {{"fast", 3, 4, 1, 4, 0, 150, 140},
                                         {"idle", 0, 0, 1, 2, 2, 5, 5},
                                         {"new", 1, 0, 0, 0, 0, 1, 0}};
  const std::vector<std::string> lines = queue_report(before, after, 10, 32);
  CHECK(lines == std::vector<std::string>{
                     "queue fast: 3 queued, 4 in flight, 1 workers, 4 slots, "
                     "0 credit, 150 submitted, 140 completed (5.0/s)",
                     "queue new: 1 queued, 0 in flight, 0 workers, 0 slots, 0 "
                     "credit, 1 submitted, 0 completed (0.0/s)",
                     "queue gone: gone (no jobs, no workers)"});
  CHECK(queue_report(after, after, 10, 32).empty());

  // Bounded: the rest is counted on one more line.
  const std::vector<std::string> short_report =
      queue_report(before, after, 10, 1);
  REQUIRE(short_report.size() == 2);
  CHECK_THAT(short_report[0], Catch::StartsWith("queue fast:"));
  CHECK(short_report[1] == "2 more queue(s) changed, not shown");
}

TEST_CASE("the per-queue report lists at most kMaxQueueStats queues") {
  Harness h;
  const std::size_t queues = kMaxQueueStats + 5;
  for (std::size_t i = 0; i < queues; ++i) {
    // Names that sort as they are numbered: q0000, q0001, ...
    std::string name = std::to_string(i);
    h.submit("q" + std::string(4 - name.size(), '0') + name, i + 1);
  }
  CHECK(h.dispatcher.stats().queues_total == queues);
  CHECK(h.dispatcher.stats().queues.empty());  // stats() stays cheap
  const auto listed = h.dispatcher.queue_stats();
  REQUIRE(listed.size() == kMaxQueueStats);
  CHECK(listed.front().name == "q0000");
  CHECK(listed.back().name == "q0999");
  CHECK(std::is_sorted(listed.begin(), listed.end(),
                       [](const QueueStats& a, const QueueStats& b) {
                         return a.name < b.name;
                       }));
}

TEST_CASE(
    "a refusal for a job the broker does not know zeroes the pool it "
    "names") {
  Harness h;
  ready_pools(h, "A", {"a", "b"}, {pool({"a"}, 2), pool({"b"}, 2)});
  h.take();
  auto refused = protocol::OutcomeMeta::failure(
      424242, protocol::error_code::kRefused, "all slots held");
  refused.pool = 1;
  h.dispatcher.on_done("A", {"b", refused, protocol::nil_payload()}, h.now,
                       h.out);
  CHECK(queue_stats(h, "a")->credit == 2);
  CHECK(queue_stats(h, "b")->credit == 0);
  CHECK(h.dispatcher.stats().late_done_dropped == 1);
}

TEST_CASE("a worker back on a new socket keeps its held jobs in their pools") {
  Harness h;
  auto ready_as = [&](const std::string& identity,
                      std::vector<protocol::Pool> pools) {
    protocol::WorkerInfo info;
    info.tasks = {"fast", "slow"};
    info.name = "w1";
    info.pid = 77;
    for (const protocol::Pool& p : pools) info.slots += p.slots;
    info.pools = std::move(pools);
    h.dispatcher.on_ready(identity, info, h.now, h.out);
  };
  ready_as("A", {pool({"fast"}, 2), pool({"slow"}, 1)});
  h.take();
  h.submit("slow", 1);
  SentJob held = h.take_job();

  // The same process (name and pid) on a new socket: job 1 moves with it,
  // and its READY leaves that DONE out of the slow pool's `free`.
  ready_as("A2", {pool({"fast"}, 2, 2), pool({"slow"}, 1, 0)});
  h.take();
  CHECK(h.dispatcher.stats().workers_reconnected == 1);
  CHECK(queue_stats(h, "slow")->workers == 1);
  CHECK(queue_stats(h, "slow")->credit == 0);
  CHECK(queue_stats(h, "slow")->in_flight == 1);
  CHECK(queue_stats(h, "fast")->credit == 2);
  h.submit("slow", 2);
  CHECK(h.take().jobs.empty());  // the slow pool is still full

  h.done("A2", held.job.meta.id);
  Sent sent = h.take();
  REQUIRE(sent.results.size() == 1);
  CHECK(sent.results[0].result.meta.id == 1);
  REQUIRE(sent.jobs.size() == 1);  // its slot went to the waiting job
  CHECK(sent.jobs[0].worker == "A2");
  CHECK(text(sent.jobs[0].job.args) == args_of(2));
  CHECK(queue_stats(h, "fast")->credit == 2);
}
