#include "monsoon/frontend/broker_link.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <stdexcept>
#include <thread>

#include "child_process.hpp"
#include "fake_broker.hpp"
#include "monsoon/common/value.hpp"
#include "test_support.hpp"

using namespace monsoon::frontend;
using namespace monsoon::frontend::test;
namespace codes = monsoon::protocol::error_code;
namespace protocol = monsoon::protocol;

namespace {

BrokerLinkConfig fast_config(const std::string& endpoint) {
  BrokerLinkConfig config;
  config.endpoints = {endpoint};
  config.heartbeat.interval = 50ms;
  config.heartbeat.liveness = 3;
  return config;
}

// Waits for the first heartbeat answer, as a front end would before serving.
void require_reachable(const BrokerLink& link) {
  REQUIRE(eventually([&] { return link.reachable(); }, 5s));
}

std::string args_of(const monsoon::Value& value) {
  return monsoon::to_msgpack(value);
}

}  // namespace

TEST_CASE("a job's completion runs exactly once, with the broker's result") {
  FakeBroker broker(/*echo_jobs=*/true);
  broker.set_worker_name("w1");
  BrokerLink link(fast_config(broker.endpoint()));
  require_reachable(link);

  OutcomeRecorder recorder;
  std::string args = args_of({{"x", 1}});
  link.submit("echo", args, 5000ms, recorder.completion());
  REQUIRE(recorder.wait_for(1, 5s));

  auto job = broker.wait_for_job(0, 1s);
  REQUIRE(job);
  CHECK(job->task == "echo");
  CHECK(job->args == args);
  // The broker's budget leaves a margin (100 ms at most) for its own error.
  CHECK(job->meta.timeout_ms <= 4900);
  CHECK(job->meta.timeout_ms >= 4000);

  link.stop();  // joins the link thread: no completion can still be running
  auto outcomes = recorder.outcomes();
  REQUIRE(outcomes.size() == 1);
  CHECK(outcomes[0].meta.ok);
  CHECK(outcomes[0].result == args);
  CHECK(outcomes[0].meta.worker == "w1");
  auto stats = link.stats();
  CHECK(stats.submitted == 1);
  CHECK(stats.completed == 1);
  CHECK(stats.pending == 0);
}

TEST_CASE("results are matched to their jobs by id") {
  FakeBroker broker(/*echo_jobs=*/false);
  BrokerLink link(fast_config(broker.endpoint()));
  require_reachable(link);

  OutcomeRecorder first;
  OutcomeRecorder second;
  link.submit("echo", args_of(1), 5000ms, first.completion());
  link.submit("echo", args_of(2), 5000ms, second.completion());
  auto job1 = broker.wait_for_job(0, 5s);
  auto job2 = broker.wait_for_job(1, 5s);
  REQUIRE(job1);
  REQUIRE(job2);
  CHECK(job1->meta.id != job2->meta.id);

  // Answered in the opposite order.
  broker.reply(*job2, monsoon::protocol::OutcomeMeta::success(job2->meta.id),
               job2->args);
  broker.reply(*job1,
               monsoon::protocol::OutcomeMeta::failure(
                   job1->meta.id, codes::kNoWorker, "nobody serves echo"),
               std::string("\xc0", 1));
  REQUIRE(first.wait_for(1, 5s));
  REQUIRE(second.wait_for(1, 5s));
  auto failed = first.outcomes().at(0);
  CHECK_FALSE(failed.meta.ok);
  CHECK(failed.meta.code == codes::kNoWorker);
  CHECK(failed.meta.message == "nobody serves echo");
  auto succeeded = second.outcomes().at(0);
  CHECK(succeeded.meta.ok);
  CHECK(succeeded.result == args_of(2));
}

TEST_CASE("a job the broker never answers times out exactly once") {
  FakeBroker broker(/*echo_jobs=*/false);
  BrokerLink link(fast_config(broker.endpoint()));
  require_reachable(link);

  OutcomeRecorder recorder;
  auto started = std::chrono::steady_clock::now();
  link.submit("echo", args_of(nullptr), 200ms, recorder.completion());
  REQUIRE(recorder.wait_for(1, 5s));
  auto took = std::chrono::steady_clock::now() - started;
  CHECK(took >= 200ms);
  CHECK(took < 2s);

  auto outcome = recorder.outcomes().at(0);
  CHECK_FALSE(outcome.meta.ok);
  CHECK(outcome.meta.code == codes::kDeadlineExceeded);

  // A RESULT arriving afterwards is dropped.
  auto job = broker.wait_for_job(0, 1s);
  REQUIRE(job);
  broker.reply(*job, monsoon::protocol::OutcomeMeta::success(job->meta.id),
               job->args);
  CHECK(eventually([&] { return link.stats().late_results_dropped == 1; }, 5s));

  link.stop();
  CHECK(recorder.outcomes().size() == 1);
  CHECK(link.stats().timed_out == 1);
  CHECK(link.stats().completed == 0);
}

TEST_CASE("a full pending table refuses jobs at once") {
  FakeBroker broker(/*echo_jobs=*/false);
  auto config = fast_config(broker.endpoint());
  config.max_pending = 2;
  BrokerLink link(config);
  require_reachable(link);

  OutcomeRecorder held;
  link.submit("echo", args_of(1), 10s, held.completion());
  link.submit("echo", args_of(2), 10s, held.completion());
  OutcomeRecorder refused;
  link.submit("echo", args_of(3), 10s, refused.completion());
  // Refused inside submit(): the outcome is there without waiting.
  auto outcomes = refused.outcomes();
  REQUIRE(outcomes.size() == 1);
  CHECK(outcomes[0].meta.code == codes::kOverloaded);
  CHECK(outcomes[0].meta.retry_after_ms > 0);
  CHECK(link.stats().rejected_full == 1);
  CHECK(link.stats().pending == 2);

  // Stopping completes the pending jobs with shutting_down.
  link.stop();
  auto stopped = held.outcomes();
  REQUIRE(stopped.size() == 2);
  for (const auto& outcome : stopped) {
    CHECK(outcome.meta.code == link_error_code::kShuttingDown);
  }
  OutcomeRecorder late;
  link.submit("echo", args_of(4), 10s, late.completion());
  REQUIRE(late.outcomes().size() == 1);
  CHECK(late.outcomes()[0].meta.code == link_error_code::kShuttingDown);
  CHECK(link.stats().pending == 0);
}

TEST_CASE("a broker that went away fails new jobs fast") {
  std::optional<FakeBroker> broker(std::in_place, /*echo_jobs=*/true);
  BrokerLink link(fast_config(broker->endpoint()));
  require_reachable(link);
  OutcomeRecorder before;
  link.submit("echo", args_of(0), 10s, before.completion());
  REQUIRE(before.wait_for(1, 5s));
  REQUIRE(before.outcomes()[0].meta.ok);

  broker.reset();  // its socket closes: no more heartbeat answers
  REQUIRE(eventually([&] { return !link.reachable(); }, 5s));

  // Refused inside submit(): the outcome is there without waiting.
  OutcomeRecorder recorder;
  link.submit("echo", args_of(1), 10s, recorder.completion());
  auto outcomes = recorder.outcomes();
  REQUIRE(outcomes.size() == 1);
  CHECK(outcomes[0].meta.code == link_error_code::kBrokerUnavailable);
  CHECK(outcomes[0].meta.retry_after_ms > 0);
  auto stats = link.stats();
  CHECK(stats.rejected_unreachable == 1);
  CHECK(stats.submitted == 1);  // only the job from before
  CHECK(stats.pending == 0);
}

TEST_CASE("pending jobs are sent again once the broker is back") {
  FakeBroker broker(/*echo_jobs=*/false);
  BrokerLink link(fast_config(broker.endpoint()));
  require_reachable(link);
  OutcomeRecorder recorder;
  link.submit("echo", args_of(1), 60s, recorder.completion());
  link.submit("echo", args_of(2), 60s, recorder.completion());
  const auto first = broker.wait_for_job(1, 5s);
  REQUIRE(first);

  SECTION("the broker says DISCONNECT (it is shutting down)") {
    auto client = broker.wait_for_client(1s);
    REQUIRE(client);
    broker.send_raw(*client, {std::string(monsoon::protocol::kSignature),
                              std::string(1, '\x07')});
  }
  SECTION("the broker goes silent, then answers again") {
    broker.set_answer_heartbeats(false);  // dead after 3 x 50 ms
    REQUIRE(eventually([&] { return link.stats().reconnects >= 1; }, 5s));
    broker.set_answer_heartbeats(true);
  }

  // Both jobs arrive again, from the link's new socket, and their results
  // complete the original requests.
  std::set<std::string> resent_args;
  for (std::size_t index : {2, 3}) {
    auto again = broker.wait_for_job(index, 5s);
    REQUIRE(again);
    CHECK(again->identity != first->identity);
    CHECK(again->meta.timeout_ms > 50'000);  // what is left of 60 s
    resent_args.insert(again->args);
    broker.reply(*again,
                 monsoon::protocol::OutcomeMeta::success(again->meta.id),
                 again->args);
  }
  CHECK(resent_args == std::set<std::string>{args_of(1), args_of(2)});
  REQUIRE(recorder.wait_for(2, 5s));
  std::set<std::string> results;
  for (const auto& outcome : recorder.outcomes()) {
    CHECK(outcome.meta.ok);
    results.insert(outcome.result);
  }
  CHECK(results == resent_args);
  auto stats = link.stats();
  CHECK(stats.resent == 2);
  CHECK(stats.failed_broker_lost == 0);
  CHECK(stats.pending == 0);
}

TEST_CASE("a pending job gets 503 if the broker is not back by its deadline") {
  std::optional<FakeBroker> broker(std::in_place, /*echo_jobs=*/false);
  BrokerLink link(fast_config(broker->endpoint()));
  require_reachable(link);
  OutcomeRecorder recorder;
  link.submit("echo", args_of(1), 1s, recorder.completion());
  REQUIRE(broker->wait_for_job(0, 5s));
  broker.reset();

  REQUIRE(recorder.wait_for(1, 5s));
  const auto outcome = recorder.outcomes()[0];
  CHECK(outcome.meta.code == link_error_code::kBrokerUnavailable);
  CHECK(outcome.meta.retry_after_ms > 0);
  auto stats = link.stats();
  CHECK(stats.failed_broker_lost == 1);
  CHECK(stats.timed_out == 0);
  CHECK(stats.pending == 0);
}

TEST_CASE("the link notices a silent broker and recovers when it answers") {
  FakeBroker broker(/*echo_jobs=*/true);
  BrokerLink link(fast_config(broker.endpoint()));
  require_reachable(link);

  broker.set_answer_heartbeats(false);
  // liveness x interval = 150 ms.
  REQUIRE(eventually([&] { return !link.reachable(); }, 5s));

  broker.set_answer_heartbeats(true);
  REQUIRE(eventually([&] { return link.reachable(); }, 5s));
  CHECK(link.stats().reconnects >= 1);

  OutcomeRecorder recorder;
  link.submit("echo", args_of("again"), 5s, recorder.completion());
  REQUIRE(recorder.wait_for(1, 5s));
  CHECK(recorder.outcomes()[0].meta.ok);
}

TEST_CASE("malformed messages from the broker are counted and dropped") {
  FakeBroker broker(/*echo_jobs=*/true);
  BrokerLink link(fast_config(broker.endpoint()));
  require_reachable(link);
  auto client = broker.wait_for_client(1s);
  REQUIRE(client);

  broker.send_raw(*client, {"junk"});
  broker.send_raw(*client, {"MNT\x01", "\x06"});  // wrong signature
  broker.send_raw(*client, {std::string("MNS\x01", 4), "\x02"});  // SUBMIT
  REQUIRE(eventually([&] { return link.stats().malformed_dropped == 3; }, 5s));

  // Still working.
  OutcomeRecorder recorder;
  link.submit("echo", args_of(7), 5s, recorder.completion());
  REQUIRE(recorder.wait_for(1, 5s));
  CHECK(recorder.outcomes()[0].meta.ok);
}

TEST_CASE("an invalid task name is refused without reaching the broker") {
  FakeBroker broker(/*echo_jobs=*/true);
  BrokerLink link(fast_config(broker.endpoint()));
  require_reachable(link);

  OutcomeRecorder recorder;
  link.submit("no spaces", args_of(1), 5s, recorder.completion());
  REQUIRE(recorder.outcomes().size() == 1);
  CHECK(recorder.outcomes()[0].meta.code == codes::kBadRequest);
  CHECK(link.stats().submitted == 0);
}

TEST_CASE("an unusable config is refused") {
  BrokerLinkConfig config = fast_config("tcp://127.0.0.1:1");
  SECTION("heartbeat interval under 1 ms") { config.heartbeat.interval = 0ms; }
  SECTION("liveness under 1") { config.heartbeat.liveness = 0; }
  SECTION("no room for args in a message") {
    config.max_message_bytes = kSubmitEnvelopeBytes;
  }
  CHECK_THROWS_AS(BrokerLink(config), std::invalid_argument);
}

TEST_CASE("a very short heartbeat interval still backs off") {
  // interval / 4 is 0 ms here; without a floor the link would reconnect in a
  // tight loop, once per liveness x interval = 2 ms.
  FakeBroker broker(/*echo_jobs=*/false);
  broker.set_answer_heartbeats(false);
  auto config = fast_config(broker.endpoint());
  config.heartbeat.interval = 2ms;
  config.heartbeat.liveness = 1;
  BrokerLink link(config);
  std::this_thread::sleep_for(1s);
  // Back-off 1, 2, 4 ... 32 ms: about 30 reconnects in a second.
  CHECK(link.stats().reconnects >= 5);
  CHECK(link.stats().reconnects < 100);
}

TEST_CASE("args larger than the broker's message limit are refused") {
  FakeBroker broker(/*echo_jobs=*/true);
  auto config = fast_config(broker.endpoint());
  config.max_message_bytes = kSubmitEnvelopeBytes + 16;
  BrokerLink link(config);
  REQUIRE(link.max_args_bytes() == 16);
  require_reachable(link);

  OutcomeRecorder refused;
  link.submit("echo", std::string(17, '\xc0'), 5s, refused.completion());
  REQUIRE(refused.outcomes().size() == 1);  // at once, inside submit()
  CHECK(refused.outcomes()[0].meta.code == codes::kTooLarge);

  OutcomeRecorder accepted;
  std::string largest = args_of(std::string(13, 'x'));  // 0xad + 13 bytes
  REQUIRE(largest.size() <= 16);
  link.submit("echo", largest, 5s, accepted.completion());
  REQUIRE(accepted.wait_for(1, 5s));
  CHECK(accepted.outcomes()[0].meta.ok);
  CHECK(link.stats().submitted == 1);
}

// Run by the next test in a child process (hidden from normal runs): a
// completion throws what it must not, on the link thread.
TEST_CASE("link thread fault helper", "[.]") {
  rlimit no_core_dump{0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core_dump);
  FakeBroker broker(/*echo_jobs=*/true);
  BrokerLink link(fast_config(broker.endpoint()));
  require_reachable(link);
  link.submit("echo", args_of(1), 5s, [](JobOutcome) { throw 42; });
  std::this_thread::sleep_for(10s);  // the link thread ends the process first
}

TEST_CASE("an unexpected exception on the link thread is logged, then aborts") {
  auto self = std::filesystem::read_symlink("/proc/self/exe");
  auto log = std::filesystem::temp_directory_path() /
             ("monsoon-link-fault-" + std::to_string(::getpid()) + ".log");
  std::filesystem::remove(log);
  monsoon::test::ChildProcess child(self.string(), {"link thread fault helper"},
                                    log.string());
  auto status = child.wait_exit(30s);
  std::string output = child.log();
  std::filesystem::remove(log);
  INFO(output);
  REQUIRE(status);
  CHECK(WIFSIGNALED(*status));
  CHECK(WTERMSIG(*status) == SIGABRT);
  CHECK(output.find("broker link thread failed") != std::string::npos);
}

TEST_CASE("the broker's WELCOME lowers the args limit to its frame limit") {
  FakeBroker broker(/*echo_jobs=*/true);
  auto config = fast_config(broker.endpoint());
  BrokerLink link(config);
  const std::size_t own_limit = link.max_args_bytes();
  require_reachable(link);
  auto client = broker.wait_for_client(5s);
  REQUIRE(client);

  protocol::Welcome welcome;
  welcome.max_message_bytes = 100;
  std::vector<std::string> frames;
  for (const auto& frame : protocol::encode_welcome(welcome)) {
    frames.push_back(frame.to_string());
  }
  broker.send_raw(*client, frames);
  REQUIRE(eventually([&] { return link.max_args_bytes() == 100; }));
  CHECK(own_limit > 100);

  OutcomeRecorder refused;
  link.submit("echo", std::string(101, '\xc0'), 5s, refused.completion());
  REQUIRE(refused.outcomes().size() == 1);
  CHECK(refused.outcomes()[0].meta.code == codes::kTooLarge);

  // SUBMITs tell the broker the largest result this front end accepts.
  OutcomeRecorder accepted;
  link.submit("echo", args_of("small"), 5s, accepted.completion());
  REQUIRE(accepted.wait_for(1, 5s));
  CHECK(accepted.outcomes()[0].meta.ok);
  auto job = broker.wait_for_job(0, 5s);
  REQUIRE(job);
  CHECK(job->meta.max_result_bytes == config.max_message_bytes);
}

// Several brokers (issue 9): jobs go through the live ones in turn; those
// pending through a broker that is lost go again through another, and a
// RESULT answers only the job whose id it carries.
TEST_CASE("jobs are spread over several brokers, in turn") {
  FakeBroker first(/*echo_jobs=*/true);
  FakeBroker second(/*echo_jobs=*/true);
  first.set_worker_name("via-first");
  second.set_worker_name("via-second");
  auto config = fast_config(first.endpoint());
  config.endpoints.push_back(second.endpoint());
  BrokerLink link(config);
  REQUIRE(eventually([&] { return link.stats().brokers_up == 2; }, 5s));

  OutcomeRecorder recorder;
  for (int i = 0; i < 10; ++i) {
    link.submit("echo", args_of(i), 5s, recorder.completion());
  }
  REQUIRE(recorder.wait_for(10, 5s));
  std::map<std::string, int> by_broker;
  for (const auto& outcome : recorder.outcomes()) {
    CHECK(outcome.meta.ok);
    ++by_broker[outcome.meta.worker];
  }
  CHECK(by_broker["via-first"] == 5);
  CHECK(by_broker["via-second"] == 5);
  CHECK(link.stats().brokers == 2);
}

TEST_CASE("jobs pending through a lost broker go again through another") {
  auto lost = std::make_optional<FakeBroker>(/*echo_jobs=*/false);
  FakeBroker survivor(/*echo_jobs=*/false);
  auto config = fast_config(lost->endpoint());
  config.endpoints.push_back(survivor.endpoint());
  BrokerLink link(config);
  REQUIRE(eventually([&] { return link.stats().brokers_up == 2; }, 5s));

  OutcomeRecorder recorder;
  link.submit("echo", args_of("a"), 10s, recorder.completion());
  link.submit("echo", args_of("b"), 10s, recorder.completion());
  // One went through each broker; neither answers yet.
  auto job_a = lost->wait_for_job(0, 5s);
  auto job_b = survivor.wait_for_job(0, 5s);
  REQUIRE(job_a);
  REQUIRE(job_b);

  lost.reset();  // its connection drops: the link notices at once
  auto again = survivor.wait_for_job(1, 5s);
  REQUIRE(again);
  CHECK(again->args == job_a->args);
  CHECK(again->meta.id == job_a->meta.id);  // the link's id, kept
  CHECK(eventually([&] { return link.stats().resent == 1; }, 5s));
  CHECK(link.reachable());

  // Each RESULT answers its own job: the one sent again gets "A".
  survivor.reply(*again, protocol::OutcomeMeta::success(again->meta.id),
                 args_of("A"));
  survivor.reply(*job_b, protocol::OutcomeMeta::success(job_b->meta.id),
                 args_of("B"));
  REQUIRE(recorder.wait_for(2, 5s));
  std::set<std::string> results;
  for (const auto& outcome : recorder.outcomes()) {
    CHECK(outcome.meta.ok);
    results.insert(outcome.result);
  }
  CHECK(results == std::set<std::string>{args_of("A"), args_of("B")});
  link.stop();
  CHECK(recorder.outcomes().size() == 2);  // exactly once each
}

TEST_CASE("a broker endpoint listed twice is refused") {
  auto config = fast_config("tcp://127.0.0.1:1");
  config.endpoints.push_back("tcp://127.0.0.1:1");
  CHECK_THROWS_AS(BrokerLink(config), std::invalid_argument);
}

// A frame must never exceed the limit its receiver announced
// (DEVELOPERS.md, docs/protocol.md section 7), or the broker drops the whole
// connection, and with it every job pending through it. A job accepted while
// only a broker with a large limit was live must not be sent again, when that
// broker is lost, through one whose WELCOME announced a smaller limit.
TEST_CASE(
    "a job is not sent again through a broker whose frame limit it exceeds") {
  FakeBroker small(/*echo_jobs=*/false);
  auto large = std::make_optional<FakeBroker>(/*echo_jobs=*/false);
  small.set_answer_heartbeats(false);  // not live yet
  auto config = fast_config(large->endpoint());
  config.endpoints.push_back(small.endpoint());
  BrokerLink link(config);
  REQUIRE(eventually([&] { return link.stats().brokers_up == 1; }, 5s));

  OutcomeRecorder recorder;
  const std::string args(500, '\xc0');
  link.submit("echo", args, 3s, recorder.completion());
  REQUIRE(large->wait_for_job(0, 5s));

  // The other broker comes up, announcing frames of at most 100 bytes.
  auto client = small.wait_for_client(5s);
  REQUIRE(client);
  protocol::Welcome welcome;
  welcome.max_message_bytes = 100;
  std::vector<std::string> frames;
  for (const auto& frame : protocol::encode_welcome(welcome)) {
    frames.push_back(frame.to_string());
  }
  small.send_raw(*client, frames);
  REQUIRE(eventually([&] { return link.stats().brokers_up == 2; }, 5s));

  large.reset();  // lost: its pending job goes again, but not through `small`
  REQUIRE(recorder.wait_for(1, 6s));
  auto sent = small.wait_for_job(0, 0ms);
  CHECK((!sent || sent->args.size() <= welcome.max_message_bytes));
  CHECK(recorder.outcomes().size() == 1);
}

// Run by the next test in a child process (hidden from normal runs): the
// link must open a new socket while the process is out of file descriptors
// (a flood of HTTP connections near `ulimit -n`).
TEST_CASE("link reconnect without file descriptors helper", "[.]") {
  rlimit no_core_dump{0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core_dump);
  FakeBroker broker(/*echo_jobs=*/false);
  broker.set_answer_heartbeats(false);  // silent: the link keeps reconnecting
  auto config = fast_config(broker.endpoint());
  config.heartbeat.interval = 10ms;
  config.heartbeat.liveness = 1;
  BrokerLink link(config);
  // Reconnecting (and logging why) once before the descriptors run out:
  // under UBSan, the vptr check of the first call on an object of a
  // polymorphic type opens a pipe, which it cannot while descriptors are
  // short, and it would then report a valid object as invalid.
  REQUIRE(eventually([&] { return link.stats().reconnects >= 2; }, 5s));
  const auto reconnects_before = link.stats().reconnects;

  std::size_t open_fds = 0;
  for ([[maybe_unused]] const auto& entry :
       std::filesystem::directory_iterator("/proc/self/fd")) {
    ++open_fds;
  }
  rlimit files{};
  ::getrlimit(RLIMIT_NOFILE, &files);
  files.rlim_cur = open_fds + 16;
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &files) == 0);
  std::vector<int> taken;
  for (int fd = ::open("/dev/null", O_RDONLY); fd >= 0;
       fd = ::open("/dev/null", O_RDONLY)) {
    taken.push_back(fd);
  }
  REQUIRE(errno == EMFILE);
  // Like a flood of HTTP connections, take every descriptor that frees up
  // (a socket closed to reconnect frees some), for long enough for several
  // reconnects (back-off at most 32 x 10 ms).
  const auto until = std::chrono::steady_clock::now() + 1s;
  while (std::chrono::steady_clock::now() < until) {
    const int fd = ::open("/dev/null", O_RDONLY);
    if (fd >= 0) {
      taken.push_back(fd);
    } else {
      std::this_thread::sleep_for(100us);
    }
  }
  for (int fd : taken) ::close(fd);
  INFO("sockets opened while descriptors ran short: "
       << link.stats().reconnects - reconnects_before);

  broker.set_answer_heartbeats(true);
  REQUIRE(eventually([&] { return link.reachable(); }, 10s));
}

// A socket that cannot be opened (out of file descriptors) is a passing
// shortage, tried again after the back-off: aborting would take every
// request in flight with it.
TEST_CASE("a socket that cannot be opened for a reconnect does not abort") {
  auto self = std::filesystem::read_symlink("/proc/self/exe");
  auto log = std::filesystem::temp_directory_path() /
             ("monsoon-link-emfile-" + std::to_string(::getpid()) + ".log");
  std::filesystem::remove(log);
  monsoon::test::ChildProcess child(
      self.string(), {"link reconnect without file descriptors helper"},
      log.string());
  auto status = child.wait_exit(30s);
  std::string output = child.log();
  std::filesystem::remove(log);
  INFO(output);
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK((WIFEXITED(*status) && WEXITSTATUS(*status) == 0));
}
