// The broker stopped and started again on the same endpoints many times in a
// row, gracefully (SIGTERM) and not (SIGKILL), with jobs pending and while
// jobs are being submitted. The front end and the workers must find every new
// broker on their own: /healthz recovers within a bound each time, and every
// request gets exactly one clear answer.
//
// A front end that closed its socket monitor before the socket it watched
// (issue 8) left libzmq's I/O thread blocked in the monitor's send: it never
// heard a new broker again, and every later job got 503. A worker that
// queued a HEARTBEAT on a socket not yet connected lost its registration,
// and the JOBs sent with it, to a broker back after a longer outage.
#include <signal.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cctype>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "stack.hpp"

using monsoon::test::eventually;
using monsoon::test::HttpBatch;
using monsoon::test::HttpRequest;
using monsoon::test::HttpResponse;
using monsoon::test::sleep_requests;
using monsoon::test::slept;
using monsoon::test::Stack;
using monsoon::test::StackOptions;
using Json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

constexpr int kCycles = 10;
constexpr int kJobs = 300;
constexpr auto kJobTimeout = 10s;
// From the new broker's start to /healthz 200: the loss noticed (at once on
// DISCONNECT or a dropped connection, else after 3 x 200 ms of silence) plus
// the reconnect back-off (at most 32 x 50 ms), with room for a loaded
// machine.
constexpr auto kRecoveryBound = 10s;
// Long enough for every peer to give the broker up (3 x 200 ms of silence)
// and to hold a new socket, not yet connected, for several heartbeat
// intervals.
constexpr auto kLongOutage = 2s;
// Request i of a cycle sleeps kFirstMs + i ms.
constexpr int kFirstMs = 100;

// The answers a client may get while the broker restarts: its own result,
// a 503 it may retry (with Retry-After) or a 504 once its deadline passed.
bool clear_answer(const HttpResponse& response, int i) {
  const std::string code = response.error_code();
  if (response.status == 200) return slept(response, kFirstMs + i);
  if (response.status == 503) {
    const std::string retry_after = response.header("retry-after");
    return !retry_after.empty() &&
           std::all_of(retry_after.begin(), retry_after.end(), ::isdigit) &&
           (code == "broker_unavailable" || code == "overloaded");
  }
  return response.status == 504 &&
         (code == "deadline_exceeded" || code == "no_worker");
}

// Sends the cycle's requests and receives every answer by the deadline.
struct Cycle {
  explicit Cycle(std::uint16_t port)
      : requests(sleep_requests(kJobs, kFirstMs, kJobTimeout)),
        sent_at(std::chrono::steady_clock::now()),
        batch(port, requests) {}

  // Drives the batch until every answer arrived or the last deadline (plus
  // a margin for a loaded machine) passed.
  bool answer_all() {
    const auto answer_by = sent_at + kJobTimeout + 3s;
    if (!batch.send_all(10s)) return false;
    return batch.receive_all(std::chrono::ceil<std::chrono::milliseconds>(
        answer_by - std::chrono::steady_clock::now()));
  }

  // How many answers are not clear, each reported.
  int unclear() const {
    int count = 0;
    for (int i = 0; i < kJobs; ++i) {
      const HttpResponse& response = batch.responses()[i];
      if (!clear_answer(response, i)) {
        ++count;
        UNSCOPED_INFO("request " << i << ": " << response.status << " "
                                 << response.error << " " << response.body);
      }
    }
    return count;
  }

  std::string summary() const {
    std::map<std::string, int> by_outcome;
    for (const auto& r : batch.responses()) {
      ++by_outcome[std::to_string(r.status) + " " + r.error_code() + r.error];
    }
    return Json(by_outcome).dump();
  }

  const std::vector<HttpRequest> requests;
  const std::chrono::steady_clock::time_point sent_at;
  HttpBatch batch;
};

}  // namespace

TEST_CASE("ten broker restarts in a row lose no request and always recover",
          "[integration][fault]") {
  monsoon::test::raise_open_files_limit();
  // 100 slots: of 300 jobs of 100-400 ms, most are pending (running or
  // queued in the broker) when it stops.
  Stack stack(StackOptions::pool(2, 50));
  REQUIRE(stack.all_workers_serving(20s));

  for (int cycle = 1; cycle <= kCycles; ++cycle) {
    const bool graceful = cycle % 2 == 1;
    // Every third cycle the broker stops while requests are still arriving
    // and being submitted; the others once all are submitted.
    const bool while_submitting = cycle % 3 == 0;
    // Twice the broker stays away a while: then every job, sent again once
    // it is back, must succeed well within its 10 s budget.
    const bool long_outage = cycle == 4 || cycle == 7;
    INFO("cycle " << cycle << (graceful ? ", SIGTERM" : ", SIGKILL")
                  << (while_submitting ? ", while submitting" : "")
                  << (long_outage ? ", long outage" : ""));

    const std::uint64_t submitted_before =
        stack.frontend_metrics()["jobs_submitted_total"];
    Cycle jobs(stack.http_port());
    std::thread client;
    if (while_submitting) {
      client = std::thread([&jobs] { jobs.answer_all(); });
      REQUIRE(eventually(
          [&] {
            return stack.frontend_metrics()["jobs_submitted_total"] >=
                   submitted_before + kJobs / 10;
          },
          20s));
    } else {
      REQUIRE(jobs.batch.send_all(10s));
      REQUIRE(eventually(
          [&] {
            return stack.frontend_metrics()["jobs_submitted_total"] >=
                   submitted_before + kJobs;
          },
          20s));
    }

    stack.broker().signal(graceful ? SIGTERM : SIGKILL);
    REQUIRE(stack.broker().wait_exit(15s));
    if (long_outage) {
      REQUIRE(
          eventually([&] { return stack.get("/healthz").status == 503; }, 10s));
      // The outage itself is the scenario, not a wait for some event.
      std::this_thread::sleep_for(kLongOutage);
    }
    stack.start_broker();
    const auto restarted_at = std::chrono::steady_clock::now();
    const bool recovered = eventually(
        [&] { return stack.get("/healthz").status == 200; }, kRecoveryBound);
    INFO("healthz 200 after "
         << std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::steady_clock::now() - restarted_at)
                .count()
         << " ms");
    if (!recovered) FAIL_CHECK("healthz did not recover\n" << stack.logs());

    bool answered = false;
    if (while_submitting) {
      client.join();
      answered = std::all_of(
          jobs.batch.responses().begin(), jobs.batch.responses().end(),
          [](const HttpResponse& response) { return response.status != 0; });
    } else {
      answered = jobs.answer_all();
    }
    INFO(jobs.summary());
    REQUIRE(answered);
    CHECK(jobs.unclear() == 0);
    if (long_outage) {
      CHECK(std::all_of(
          jobs.batch.responses().begin(), jobs.batch.responses().end(),
          [](const HttpResponse& response) { return response.status == 200; }));
    }
    CHECK(jobs.batch.connections_with_extra_data(100ms) == 0);
    REQUIRE(recovered);
  }

  // The last broker serves new jobs, and nothing crashed on the way.
  CHECK(stack.post_json("/jobs/echo", "\"after\"").status == 200);
  CHECK(stack.frontend().running());
  for (auto& worker : stack.workers()) {
    INFO(worker.log());
    CHECK(worker.running());
  }
}
