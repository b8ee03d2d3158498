// Several brokers sharing workers' slots (docs/protocol.md, "Several
// brokers: shared slots"), simulated in virtual time: real Dispatchers, and
// workers that decide with the real SlotLedger, exchanging real encoded MNS
// messages over links with a latency (in order per link). No sockets, no
// threads, no sleeps: a run of seconds takes milliseconds.
//
// Checked at every step: (I1) no worker holds more jobs than slots, and a
// refused job never runs; (I3) after a refusal, its broker sends that worker
// no JOB before a DONE or CREDIT from it. At every quiescent point (no
// message in flight): (I2) no broker has a queued job while a worker has a
// free slot. At the end: every job answered exactly once, and ok.
// Throughput is compared across one broker, two brokers with all load
// through one, and load split across both; a control run without CREDIT
// shows that the checks catch stranded slots.
#include <spdlog/spdlog.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "monsoon/broker/dispatcher.hpp"
#include "monsoon/workers/slot_ledger.hpp"

using namespace monsoon;
using broker::Dispatcher;
using broker::Outbox;
using broker::Outgoing;
using protocol::Command;
using std::chrono::milliseconds;
using workers::SlotLedger;

namespace {

constexpr std::string_view kTask = "work";
constexpr std::string_view kClient = "front";  // the clients' identity

struct Scenario {
  std::size_t brokers = 2;
  std::size_t workers = 4;
  std::uint32_t slots = 10;
  Clock::duration service = milliseconds(100);
  Clock::duration service_jitter{0};          // plus up to this much, uniformly
  Clock::duration latency = milliseconds(1);  // each message, each link
  Clock::duration jitter{0};  // plus up to this much, uniformly (in order)
  // Closed loop: `concurrency` clients start at random times within
  // `spread`, and each submits again as soon as it is answered. Open loop
  // (concurrency 0): jobs arrive at random (Poisson) at `rate` per second.
  std::size_t concurrency = 400;
  Clock::duration spread = milliseconds(100);
  double rate = 0;
  // The broker a job is submitted to: by client (or arrival) number and time.
  std::function<std::size_t(std::size_t, Clock::duration)> route =
      [](std::size_t, Clock::duration) { return std::size_t{0}; };
  // RESULTs received in [window_start, window_end) are counted; no job is
  // submitted from window_end on, and the run ends when all are answered.
  Clock::duration window_start = milliseconds(1000);
  Clock::duration window_end = milliseconds(11'000);
  std::uint64_t seed = 1;
  // A control: workers that never send CREDIT (what the checks must catch).
  bool send_credit = true;
};

struct Figures {
  std::uint64_t completed = 0;   // in the window
  std::uint64_t answered = 0;    // in all
  std::uint64_t failed = 0;      // answered with an error
  std::uint64_t unanswered = 0;  // at the end
  std::uint64_t refused = 0;     // brokers' `refused` counters, summed
  std::uint64_t credit_updates = 0;
  std::uint64_t messages = 0;
  std::uint64_t quiescent_points = 0;
  std::uint64_t stranded = 0;  // quiescent points that broke I2
  // JOBs a broker sent a worker after its refusal and before a DONE or
  // CREDIT from it (I3: each refusal zeroes that credit).
  std::uint64_t sent_after_refusal = 0;
  std::uint32_t max_held = 0;
};

struct Address {
  enum class Kind : std::uint8_t { broker, worker, clients } kind;
  std::size_t index = 0;
  auto operator<=>(const Address&) const = default;
};

struct Event {
  enum class Type : std::uint8_t { deliver, finish, arrive } type;
  Address from{};  // deliver
  Address to{};
  protocol::Frames frames{};
  std::size_t broker = 0;  // finish: the job's broker
  std::uint64_t job = 0;   // finish: its broker's id
  std::size_t worker = 0;  // finish
  std::size_t client = 0;  // arrive
};

struct SimWorker {
  SimWorker(std::uint32_t slots, std::size_t brokers)
      : ledger(slots, brokers), minor(brokers, 0) {}

  SlotLedger ledger;
  std::vector<std::uint32_t> minor;  // per broker, from its WELCOME
  // (broker, job id) of the jobs running now: the independent count of I1.
  std::set<std::pair<std::size_t, std::uint64_t>> running;
};

class Simulation {
 public:
  explicit Simulation(Scenario scenario)
      : s_(std::move(scenario)), random_(s_.seed) {
    spdlog::set_level(spdlog::level::warn);  // workers registering, often
    broker::DispatcherConfig config;
    // Liveness is not under test: no heartbeat falls due in a run.
    config.heartbeat.interval = std::chrono::hours(1);
    config.max_queued_per_queue = 100'000;
    config.first_job_id = 1'000'000;
    for (std::size_t b = 0; b < s_.brokers; ++b) {
      dispatchers_.push_back(std::make_unique<Dispatcher>(config));
    }
    for (std::size_t w = 0; w < s_.workers; ++w) {
      workers_.emplace_back(s_.slots, s_.brokers);
    }
    refused_by_.assign(s_.brokers, std::vector<bool>(s_.workers, false));
  }

  Figures run() {
    for (std::size_t w = 0; w < s_.workers; ++w) {
      for (std::size_t b = 0; b < s_.brokers; ++b) {
        protocol::WorkerInfo info;
        info.tasks = {std::string(kTask)};
        info.slots = s_.slots;
        info.free = s_.slots;  // slots minus DONEs owed to this broker
        info.name = worker_identity(w);
        info.pid = static_cast<std::uint32_t>(100 + w);
        send({Address::Kind::worker, w}, {Address::Kind::broker, b},
             protocol::encode_ready(info));
      }
    }
    if (s_.concurrency > 0) {
      std::uniform_int_distribution<Clock::rep> start(0, s_.spread.count());
      for (std::size_t c = 0; c < s_.concurrency; ++c) {
        schedule(origin_ + Clock::duration(start(random_)),
                 {.type = Event::Type::arrive, .client = c});
      }
    } else {
      schedule_arrival(origin_, 0);
    }
    loop();
    for (const auto& dispatcher : dispatchers_) {
      const broker::DispatcherStats stats = dispatcher->stats();
      figures_.refused += stats.refused;
      figures_.credit_updates += stats.credit_updates;
    }
    figures_.unanswered = pending_.size();
    REQUIRE(figures_.answered + figures_.unanswered == next_id_ - 1);
    return figures_;
  }

 private:
  static std::string worker_identity(std::size_t w) {
    return "w" + std::to_string(w);
  }

  Clock::duration elapsed() const { return now_ - origin_; }

  void schedule(Clock::time_point at, Event event) {
    if (event.type == Event::Type::deliver) ++in_flight_;
    events_.emplace(std::make_pair(at, next_seq_++), std::move(event));
  }

  // In order per link: never before the link's previous message.
  void send(Address from, Address to, protocol::Frames frames) {
    Clock::duration delay = s_.latency;
    if (s_.jitter.count() > 0) {
      delay += Clock::duration(std::uniform_int_distribution<Clock::rep>(
          0, s_.jitter.count())(random_));
    }
    Clock::time_point& last = link_last_[{from, to}];
    last = std::max(last, now_ + delay);
    schedule(last, {.type = Event::Type::deliver,
                    .from = from,
                    .to = to,
                    .frames = std::move(frames)});
  }

  void flush(std::size_t b, Outbox& out) {
    for (Outgoing& message : out) {
      if (message.peer == Outgoing::Peer::client) {
        REQUIRE(message.identity == kClient);
        send({Address::Kind::broker, b}, {Address::Kind::clients, 0},
             std::move(message.frames));
      } else {
        REQUIRE(message.identity.starts_with("w"));
        const std::size_t w = std::stoul(message.identity.substr(1));
        if (message.command == Command::Job && refused_by_[b][w]) {
          ++figures_.sent_after_refusal;
        }
        send({Address::Kind::broker, b}, {Address::Kind::worker, w},
             std::move(message.frames));
      }
    }
    out.clear();
  }

  void loop() {
    Outbox out;
    while (!events_.empty()) {
      const Clock::time_point next = events_.begin()->first.first;
      // Dispatcher timers due first (none in a normal run: deadlines are
      // far, heartbeats hourly).
      bool ticked = false;
      for (std::size_t b = 0; b < dispatchers_.size(); ++b) {
        if (dispatchers_[b]->next_deadline() <= next) {
          now_ = std::max(now_, dispatchers_[b]->next_deadline());
          dispatchers_[b]->on_tick(now_, out);
          flush(b, out);
          REQUIRE(dispatchers_[b]->next_deadline() > now_);
          ticked = true;
        }
      }
      if (ticked) continue;
      auto node = events_.extract(events_.begin());
      now_ = node.key().first;
      handle(node.mapped(), out);
      if (in_flight_ == 0) check_quiescent();
    }
  }

  void handle(Event& event, Outbox& out) {
    switch (event.type) {
      case Event::Type::deliver:
        --in_flight_;
        ++figures_.messages;
        if (event.to.kind == Address::Kind::broker) {
          to_broker(event.to.index, event.from, event.frames, out);
        } else if (event.to.kind == Address::Kind::worker) {
          to_worker(event.to.index, event.from.index, event.frames);
        } else {
          to_client(event.frames);
        }
        return;
      case Event::Type::finish:
        finish(event.worker, event.broker, event.job);
        return;
      case Event::Type::arrive:
        submit(event.client);
        if (s_.concurrency == 0) schedule_arrival(now_, event.client + 1);
        return;
    }
  }

  // --- clients ---

  void schedule_arrival(Clock::time_point after, std::size_t number) {
    std::exponential_distribution<double> gap(s_.rate);
    const auto at = after + std::chrono::duration_cast<Clock::duration>(
                                std::chrono::duration<double>(gap(random_)));
    if (at - origin_ >= s_.window_end) return;
    schedule(at, {.type = Event::Type::arrive, .client = number});
  }

  void submit(std::size_t client) {
    const std::uint64_t id = next_id_++;
    pending_[id] = client;
    const std::size_t b = s_.route(client, elapsed());
    REQUIRE(b < s_.brokers);
    // A budget far beyond the run: no job may fail.
    send({Address::Kind::clients, 0}, {Address::Kind::broker, b},
         protocol::encode_job(Command::Submit, kTask, {id, 600'000, 1},
                              protocol::nil_payload()));
  }

  void to_client(protocol::Frames& frames) {
    REQUIRE(protocol::decode_command(frames) == Command::Result);
    const protocol::OutcomeMessage result =
        protocol::decode_outcome(Command::Result, frames);
    if (!result.meta.ok) ++figures_.failed;  // refusals are never relayed
    auto it = pending_.find(result.meta.id);
    REQUIRE(it != pending_.end());  // answered at most once
    const std::size_t client = it->second;
    pending_.erase(it);
    ++figures_.answered;
    if (elapsed() >= s_.window_start && elapsed() < s_.window_end) {
      ++figures_.completed;
    }
    if (s_.concurrency > 0 && elapsed() < s_.window_end) submit(client);
  }

  // --- brokers ---

  void to_broker(std::size_t b, Address from, protocol::Frames& frames,
                 Outbox& out) {
    Dispatcher& dispatcher = *dispatchers_[b];
    const Command command = protocol::decode_command(frames);
    if (from.kind == Address::Kind::clients) {
      REQUIRE(command == Command::Submit);
      dispatcher.on_submit(kClient, protocol::decode_job(command, frames), now_,
                           out);
    } else {
      const std::string identity = worker_identity(from.index);
      if (command == Command::Done || command == Command::Credit) {
        refused_by_[b][from.index] = is_refusal(frames);
      }
      switch (command) {
        case Command::Ready:
          dispatcher.on_ready(identity, protocol::decode_ready(frames), now_,
                              out);
          break;
        case Command::Done:
          dispatcher.on_done(
              identity, protocol::decode_outcome(command, frames), now_, out);
          break;
        case Command::Credit:
          dispatcher.on_credit(identity, protocol::decode_credit(frames), now_,
                               out);
          break;
        default:
          FAIL("unexpected " << protocol::command_name(command));
      }
    }
    flush(b, out);
  }

  static bool is_refusal(protocol::Frames& frames) {
    if (protocol::decode_command(frames) != Command::Done) return false;
    protocol::Frames copy;
    for (const zmq::message_t& frame : frames) {
      copy.emplace_back(frame.data(), frame.size());
    }
    const protocol::OutcomeMessage done =
        protocol::decode_outcome(Command::Done, copy);
    return done.meta.code == protocol::error_code::kRefused;
  }

  // --- workers ---

  void to_worker(std::size_t w, std::size_t b, protocol::Frames& frames) {
    SimWorker& worker = workers_[w];
    const Command command = protocol::decode_command(frames);
    if (command == Command::Welcome) {
      const protocol::Welcome welcome = protocol::decode_welcome(frames);
      REQUIRE(welcome.ok);
      worker.minor[b] = welcome.minor;
      return;
    }
    if (command == Command::Heartbeat) return;
    REQUIRE(command == Command::Job);  // never DISCONNECT: always registered
    const protocol::JobMessage job = protocol::decode_job(command, frames);
    const Address self{Address::Kind::worker, w};
    const Address broker{Address::Kind::broker, b};
    if (!worker.ledger.try_take(b)) {
      // Not run: it never enters `running`.
      const auto code = worker.minor[b] >= 2
                            ? protocol::error_code::kRefused
                            : protocol::error_code::kOverloaded;
      send(self, broker,
           protocol::encode_outcome(
               Command::Done, job.task,
               protocol::OutcomeMeta::failure(job.meta.id, code, "all held"),
               protocol::nil_payload()));
      return;
    }
    REQUIRE(worker.running.emplace(b, job.meta.id).second);
    check_held(worker);
    Clock::duration service = s_.service;
    if (s_.service_jitter.count() > 0) {
      service += Clock::duration(std::uniform_int_distribution<Clock::rep>(
          0, s_.service_jitter.count())(random_));
    }
    schedule(now_ + service, {.type = Event::Type::finish,
                              .broker = b,
                              .job = job.meta.id,
                              .worker = w});
  }

  void finish(std::size_t w, std::size_t b, std::uint64_t job) {
    SimWorker& worker = workers_[w];
    REQUIRE(worker.running.erase({b, job}) == 1);
    worker.ledger.release(b);
    check_held(worker);
    const Address self{Address::Kind::worker, w};
    // The DONE first, then the CREDITs (SlotLedger's contract).
    send(self, {Address::Kind::broker, b},
         protocol::encode_outcome(Command::Done, kTask,
                                  protocol::OutcomeMeta::success(job),
                                  protocol::nil_payload()));
    for (const auto& [to, free] : worker.ledger.take_credit_grants()) {
      REQUIRE(worker.minor[to] >= 2);
      if (!s_.send_credit) continue;
      send(self, {Address::Kind::broker, to},
           protocol::encode_credit({.free = free}));
    }
  }

  // --- invariants ---

  // I1: the ledger's count is the jobs actually running, within the slots.
  void check_held(const SimWorker& worker) {
    REQUIRE(worker.ledger.held() == worker.running.size());
    REQUIRE(worker.running.size() <= s_.slots);
    figures_.max_held = std::max(figures_.max_held, worker.ledger.held());
  }

  // I2: with every message delivered, no broker has a queued job while a
  // worker (all serve the task, all live) has a free slot.
  void check_quiescent() {
    ++figures_.quiescent_points;
    bool queued = false;
    for (const auto& dispatcher : dispatchers_) {
      queued = queued || dispatcher->stats().queued > 0;
    }
    if (!queued) return;
    for (const SimWorker& worker : workers_) {
      if (worker.ledger.free() > 0) {
        ++figures_.stranded;
        return;
      }
    }
  }

  Scenario s_;
  std::mt19937_64 random_;
  std::vector<std::unique_ptr<Dispatcher>> dispatchers_;
  std::vector<SimWorker> workers_;
  const Clock::time_point origin_ = Clock::time_point() + std::chrono::hours(1);
  Clock::time_point now_ = origin_;
  std::map<std::pair<Clock::time_point, std::uint64_t>, Event> events_;
  std::uint64_t next_seq_ = 0;
  std::uint64_t in_flight_ = 0;  // messages sent and not yet delivered
  std::map<std::pair<Address, Address>, Clock::time_point> link_last_;
  // [broker][worker]: its last DONE or CREDIT to that broker was a refusal.
  std::vector<std::vector<bool>> refused_by_;
  std::unordered_map<std::uint64_t, std::size_t> pending_;  // id -> client
  std::uint64_t next_id_ = 1;
  Figures figures_;
};

Figures simulate(const Scenario& scenario) {
  Figures figures = Simulation(scenario).run();
  CHECK(figures.stranded == 0);            // I2
  CHECK(figures.sent_after_refusal == 0);  // I3
  CHECK(figures.quiescent_points > 0);
  CHECK(figures.failed == 0);
  CHECK(figures.unanswered == 0);  // with the above: each answered once
  return figures;
}

std::size_t split(std::size_t client, Clock::duration) { return client % 2; }

void print(const char* name, const Figures& f, const Figures& baseline) {
  std::printf(
      "  %-34s %5llu jobs, %.3f of one broker; refused %.2f, CREDIT %.2f, "
      "messages %.2f per job\n",
      name, static_cast<unsigned long long>(f.completed),
      static_cast<double>(f.completed) /
          static_cast<double>(baseline.completed),
      static_cast<double>(f.refused) / static_cast<double>(f.answered),
      static_cast<double>(f.credit_updates) / static_cast<double>(f.answered),
      static_cast<double>(f.messages) / static_cast<double>(f.answered));
}

}  // namespace

TEST_CASE("two brokers sharing slots lose no throughput to one broker") {
  Scenario one;
  one.brokers = 1;
  const Figures single = simulate(one);

  Scenario via_one;  // two brokers, every job through broker 0
  const Figures through_one = simulate(via_one);
  CHECK(through_one.refused == 0);  // broker 1 never sends a JOB
  CHECK(through_one.max_held == one.slots);

  Scenario both;
  both.route = split;
  const Figures split_load = simulate(both);
  CHECK(split_load.max_held == both.slots);  // I1: full, never over

  std::printf(
      "shared credit: 4 workers x 10 slots, 400 jobs in a closed loop, "
      "100 ms each, 1 ms per message; completed in 10 s of virtual time:\n");
  print("1 broker", single, single);
  print("2 brokers, all load through one", through_one, single);
  print("2 brokers, load split", split_load, single);

  // Saturated: 40 slots x 10 jobs/s x 10 s is the ceiling.
  CHECK(single.completed > 3'800);
  CHECK(single.completed <= 4'000);
  CHECK(through_one.completed >= 0.9 * single.completed);
  CHECK(split_load.completed >= 0.9 * single.completed);
  CHECK(split_load.refused > 0);

  // Service times that vary: completions at a worker no longer coincide,
  // so fewer JOBs cross in flight (the figures, for comparison).
  Scenario varied = both;
  varied.service = milliseconds(50);
  varied.service_jitter = milliseconds(100);
  const Figures varied_split = simulate(varied);
  print("2 brokers, split, 50-150 ms jobs", varied_split, single);
  CHECK(varied_split.completed >= 0.9 * single.completed);
}

TEST_CASE("capacity follows the load from one broker to the other") {
  Scenario one;
  one.brokers = 1;
  one.window_start = milliseconds(4000);
  const Figures single = simulate(one);

  // Both brokers busy first (every worker refuses both at times), then all
  // load through broker 1 from 3 s on.
  Scenario shifted;
  shifted.window_start = milliseconds(4000);
  shifted.route = [](std::size_t client, Clock::duration at) {
    return at < milliseconds(3000) ? client % 2 : std::size_t{1};
  };
  const Figures after_shift = simulate(shifted);
  std::printf("shared credit, load moved to broker 1 at 3 s (7 s window):\n");
  print("1 broker", single, single);
  print("2 brokers, after the move", after_shift, single);
  CHECK(after_shift.refused > 0);
  CHECK(after_shift.completed >= 0.9 * single.completed);

  // The control: without CREDIT, a refused broker's credit stays 0 and
  // slots stand idle while its queue grows. The checks above must see it.
  shifted.send_credit = false;
  const Figures no_credit = Simulation(shifted).run();
  print("2 brokers, no CREDIT (control)", no_credit, single);
  CHECK(no_credit.stranded > 0);
  CHECK(no_credit.completed < 0.9 * single.completed);
}

TEST_CASE(
    "open-loop arrivals with jittered links: no job waits by a free slot") {
  for (std::uint64_t seed = 1; seed <= 5; ++seed) {
    Scenario open;
    open.concurrency = 0;
    open.rate = 300;  // per second: 75% of 40 slots x 10 jobs/s
    open.jitter = milliseconds(3);
    open.seed = seed;
    open.window_end = milliseconds(6000);
    open.route = [](std::size_t arrival, Clock::duration) {
      return arrival % 3 == 0 ? std::size_t{1} : std::size_t{0};
    };
    INFO("seed " << seed);
    const Figures figures = simulate(open);
    CHECK(figures.answered > 1500);
    CHECK(figures.quiescent_points > 100);
  }
}
