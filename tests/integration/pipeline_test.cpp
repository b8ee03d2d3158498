// End to end through real processes: HTTP -> front end -> broker -> worker,
// and HTTP -> front end hosting the dispatcher -> worker (brokerless).
#include <httplib.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "each_topology.hpp"
#include "monsoon/common/value.hpp"
#include "stack.hpp"

using monsoon::test::HttpRequest;
using monsoon::test::HttpResponse;
using monsoon::test::Stack;
using monsoon::test::StackOptions;
using monsoon::test::Topology;
using Json = nlohmann::json;

namespace {

StackOptions pipeline_options(Topology topology) {
  StackOptions options = StackOptions::pool(1, 4, topology);
  options.frontend_args = {"--max-body-bytes", "65536"};
  options.worker_executable = MONSOON_TEST_WORKER_BIN;
  return options;
}

// One stack per topology, started on first use, shared by the test cases
// here: each runs in both.
Stack& shared_stack(Topology topology) {
  if (topology == Topology::broker) {
    static Stack stack(pipeline_options(Topology::broker));
    return stack;
  }
  static Stack stack(pipeline_options(Topology::brokerless));
  return stack;
}

Json error_of(const HttpResponse& response) {
  INFO(response.body);
  Json body = Json::parse(response.body);
  REQUIRE(body.contains("error"));
  REQUIRE(body["error"]["code"].is_string());
  REQUIRE(body["error"]["message"].is_string());
  return body["error"];
}

}  // namespace

TEST_CASE("echo returns its JSON args unchanged", "[integration]") {
  MONSOON_EACH_TOPOLOGY(topology);
  Stack& stack = shared_stack(topology);
  const char* args =
      R"({"n":[1,-2,3.25,18446744073709551615],"s":"天气 🌧️","nested":{"a":{"b":[null,true]}}})";
  HttpResponse response = stack.post_json("/jobs/echo", args);
  INFO(response.body << response.error);
  REQUIRE(response.status == 200);
  CHECK(response.header("content-type").find("application/json") == 0);
  CHECK(Json::parse(response.body) == Json::parse(args));
  CHECK_FALSE(response.header("x-monsoon-worker").empty());
}

TEST_CASE("a body sent the way curl -d sends it is read as JSON",
          "[integration]") {
  MONSOON_EACH_TOPOLOGY(topology);
  HttpResponse response = shared_stack(topology).request(
      {.method = "POST",
       .target = "/jobs/echo",
       .body = R"({"ms": 1})",
       .headers = {{"Content-Type", "application/x-www-form-urlencoded"}}});
  REQUIRE(response.status == 200);
  CHECK(Json::parse(response.body) == Json{{"ms", 1}});
}

TEST_CASE("an empty body means null args", "[integration]") {
  MONSOON_EACH_TOPOLOGY(topology);
  HttpResponse response = shared_stack(topology).post_json("/jobs/echo", "");
  REQUIRE(response.status == 200);
  CHECK(Json::parse(response.body).is_null());
}

TEST_CASE("msgpack in and out when the client asks for it", "[integration]") {
  MONSOON_EACH_TOPOLOGY(topology);
  Stack& stack = shared_stack(topology);
  Json args = {{"bytes", Json::binary({0, 1, 2, 255})}, {"k", 1}};
  HttpResponse response =
      stack.request({.method = "POST",
                     .target = "/jobs/echo",
                     .body = monsoon::to_msgpack(args),
                     .headers = {{"Content-Type", "application/msgpack"},
                                 {"Accept", "application/msgpack"}}});
  REQUIRE(response.status == 200);
  CHECK(response.header("content-type") == "application/msgpack");
  CHECK(monsoon::from_msgpack(response.body) == args);

  // The same binary value rendered for a JSON client is base64.
  HttpResponse as_json =
      stack.request({.method = "POST",
                     .target = "/jobs/echo",
                     .body = monsoon::to_msgpack(args),
                     .headers = {{"Content-Type", "application/msgpack"}}});
  REQUIRE(as_json.status == 200);
  CHECK(Json::parse(as_json.body) == Json{{"bytes", "AAEC/w=="}, {"k", 1}});
}

TEST_CASE("JSON a value cannot carry exactly gets 400 saying why",
          "[integration]") {
  MONSOON_EACH_TOPOLOGY(topology);
  Stack& stack = shared_stack(topology);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"18446744073709551616", "18446744073709551616"},
      {"123456789012345678901234567890", "123456789012345678901234567890"},
      {"-9223372036854775809", "-9223372036854775809"},
      {R"({"a":[1,{"b":18446744073709551616}]})", "/a/1/b"},
      {R"({"a":1,"a":2})", R"(duplicate key "a")"},
      {R"([{"x":{"k":1,"k":1}}])", "/0/x"},
      {"1e400", "binary64"}};
  for (const auto& [body, why] : cases) {
    HttpResponse response = stack.post_json("/jobs/echo", body);
    INFO(body << " -> " << response.status << " " << response.body);
    CHECK(response.status == 400);
    CHECK(response.error_code() == "bad_request");
    if (response.status == 400) {
      CHECK_THAT(error_of(response)["message"].get<std::string>(),
                 Catch::Contains(why));
    }
  }
  // The 64-bit extremes themselves arrive exactly.
  const std::string extremes = "[18446744073709551615,-9223372036854775808]";
  HttpResponse exact = stack.post_json("/jobs/echo", extremes);
  CHECK(exact.status == 200);
  CHECK(exact.body == extremes);
}

TEST_CASE("MessagePack comes back as its bytes or exact JSON or a 406",
          "[integration]") {
  MONSOON_EACH_TOPOLOGY(topology);
  Stack& stack = shared_stack(topology);
  const std::string nan("\xcb\x7f\xf8\0\0\0\0\0\0", 9);
  struct Case {
    std::string name;
    std::string packed;  // as the reference worker encodes it
    std::string json;    // empty: JSON cannot carry it (406)
  };
  const std::vector<Case> cases = {
      {"uint64 max", monsoon::to_msgpack(UINT64_MAX), "18446744073709551615"},
      {"int64 min", monsoon::to_msgpack(INT64_MIN), "-9223372036854775808"},
      {"big nested values",
       monsoon::to_msgpack(
           Json{{"a", {UINT64_MAX, INT64_MIN, {{"b", -1.5}}}}, {"s", "天气"}}),
       R"({"a":[18446744073709551615,-9223372036854775808,{"b":-1.5}],"s":"天气"})"},
      {"NaN", nan, ""},
      {"nested NaN", "\x81\xa1n\x91" + nan, ""},
      {"invalid UTF-8", "\xa2\xff\xfe", ""},
      {"ext", "\xd4\x05\x01", ""}};
  for (const Case& c : cases) {
    INFO(c.name);
    HttpResponse as_json =
        stack.request({.method = "POST",
                       .target = "/jobs/echo",
                       .body = c.packed,
                       .headers = {{"Content-Type", "application/msgpack"}}});
    INFO(as_json.status << " " << as_json.body);
    if (c.json.empty()) {
      CHECK(as_json.status == 406);
      CHECK(as_json.error_code() == "not_acceptable");
      if (as_json.status == 406) {
        CHECK_THAT(error_of(as_json)["message"].get<std::string>(),
                   Catch::Contains("Accept: application/msgpack"));
      }
    } else {
      CHECK(as_json.status == 200);
      CHECK(as_json.body == c.json);
    }

    HttpResponse as_msgpack =
        stack.request({.method = "POST",
                       .target = "/jobs/echo",
                       .body = c.packed,
                       .headers = {{"Content-Type", "application/msgpack"},
                                   {"Accept", "application/msgpack"}}});
    CHECK(as_msgpack.status == 200);
    CHECK(as_msgpack.body == c.packed);
  }
}

TEST_CASE("sleep, hash and db.query run on the worker", "[integration]") {
  MONSOON_EACH_TOPOLOGY(topology);
  Stack& stack = shared_stack(topology);

  HttpResponse slept = stack.post_json("/jobs/sleep", R"({"ms": 50})");
  INFO(slept.body);
  REQUIRE(slept.status == 200);
  CHECK(Json::parse(slept.body)["slept_ms"] == 50);

  HttpResponse hashed =
      stack.post_json("/jobs/hash", R"({"rounds": 1, "data": "abc"})");
  INFO(hashed.body);
  REQUIRE(hashed.status == 200);
  CHECK(Json::parse(hashed.body) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  HttpResponse hashed_more =
      stack.post_json("/jobs/hash", R"({"rounds": 1000, "data": "abc"})");
  REQUIRE(hashed_more.status == 200);
  CHECK(Json::parse(hashed_more.body).get<std::string>().size() == 64);
  CHECK(hashed_more.body != hashed.body);

  HttpResponse rows = stack.get("/query/3");
  INFO(rows.body);
  REQUIRE(rows.status == 200);
  Json table = Json::parse(rows.body);
  REQUIRE(table.is_array());
  REQUIRE_FALSE(table.empty());
  for (const auto& row : table) CHECK(row["flag"] == 3);

  HttpResponse none = stack.get("/query/999");
  REQUIRE(none.status == 200);
  CHECK(Json::parse(none.body) == Json::array());
}

TEST_CASE("/now and /healthz answer from the front end", "[integration]") {
  MONSOON_EACH_TOPOLOGY(topology);
  Stack& stack = shared_stack(topology);
  HttpResponse now = stack.get("/now");
  REQUIRE(now.status == 200);
  CHECK(Json::parse(now.body)["now_unix_ms"].is_number_integer());
  HttpResponse health = stack.get("/healthz");
  REQUIRE(health.status == 200);
  const Json body = Json::parse(health.body);
  CHECK(body["broker"] == "reachable");
  // The dispatcher's own figures only where it runs in the front end.
  CHECK(body.contains("workers") == (topology == Topology::brokerless));
}

TEST_CASE("a front end hosting the dispatcher shows its queue and workers",
          "[integration]") {
  Stack& stack = shared_stack(Topology::brokerless);
  // 4 async slots: 4 jobs run, 2 wait.
  monsoon::test::HttpBatch batch(
      stack.http_port(),
      monsoon::test::sleep_requests(6, 1000, std::chrono::seconds(30)));
  REQUIRE(batch.send_all(std::chrono::seconds(10)));
  Json health;
  CHECK(monsoon::test::eventually([&] {
    health = Json::parse(stack.get("/healthz").body);
    return health["in_flight"] == 4 && health["queued"] == 2;
  }));
  INFO(health.dump());
  CHECK(health["pending"] == 6);
  // The test worker's one registration, for its thread and async pools.
  CHECK(health["workers"] == 1);
  monsoon::test::Counters metrics = stack.frontend_metrics();
  CHECK(metrics["broker_workers"] == 1);
  CHECK(metrics["broker_jobs_dispatched_total"] >= 4);

  REQUIRE(batch.receive_all(std::chrono::seconds(30)));
  for (int i = 0; i < 6; ++i) {
    CHECK(monsoon::test::slept(batch.responses()[i], 1000 + i));
  }
  CHECK(stack.frontend_metrics()["broker_jobs_in_flight"] == 0);
}

TEST_CASE("bad requests get clear errors", "[integration]") {
  MONSOON_EACH_TOPOLOGY(topology);
  Stack& stack = shared_stack(topology);

  HttpResponse malformed = stack.post_json("/jobs/echo", R"({"a": )");
  CHECK(malformed.status == 400);
  CHECK(error_of(malformed)["code"] == "bad_request");

  HttpResponse bad_msgpack =
      stack.request({.method = "POST",
                     .target = "/jobs/echo",
                     .body = "\x92\x01",
                     .headers = {{"Content-Type", "application/msgpack"}}});
  CHECK(bad_msgpack.status == 400);

  CHECK(stack.get("/no/such/route").status == 404);
  CHECK(stack.get("/jobs/echo").status == 405);
  CHECK(stack.post_json("/jobs/bad%20name", "1").status == 400);
  CHECK(stack.get("/query/not-a-number").status == 400);
  CHECK(stack.post_json("/jobs/echo?timeout_ms=0", "1").status == 400);
  CHECK(stack.post_json("/jobs/echo?timeout_ms=abc", "1").status == 400);

  HttpResponse too_large =
      stack.post_json("/jobs/echo", "\"" + std::string(70000, 'x') + "\"");
  CHECK(too_large.status == 413);

  HttpResponse bad_args = stack.post_json("/jobs/sleep", R"({"ms": "long"})");
  CHECK(bad_args.status == 400);
  CHECK(error_of(bad_args)["code"] == "bad_request");
}

TEST_CASE("a task that throws becomes a 500 with its message",
          "[integration]") {
  MONSOON_EACH_TOPOLOGY(topology);
  Stack& stack = shared_stack(topology);
  HttpResponse failed =
      stack.post_json("/jobs/test.fail", R"({"message": "disk on fire"})");
  REQUIRE(failed.status == 500);
  Json error = error_of(failed);
  CHECK(error["code"] == "task_failed");
  CHECK(error["message"].get<std::string>().find("disk on fire") !=
        std::string::npos);
  // The worker survived: the next job succeeds.
  CHECK(stack.post_json("/jobs/echo", "1").status == 200);
}

TEST_CASE("a task that asks to be retried runs again, up to max attempts",
          "[integration]") {
  MONSOON_EACH_TOPOLOGY(topology);
  Stack& stack = shared_stack(topology);
  // The broker's default: 3 attempts.
  HttpResponse third =
      stack.post_json("/jobs/test.flaky", R"({"succeed_on": 3})");
  REQUIRE(third.status == 200);
  CHECK(Json::parse(third.body) == Json{{"attempt", 3}});

  HttpResponse never =
      stack.post_json("/jobs/test.flaky", R"({"succeed_on": 4})");
  REQUIRE(never.status == 500);
  Json error = error_of(never);
  CHECK(error["code"] == "task_failed");
  CHECK(error["message"] == "flaky on attempt 3 (gave up after 3 attempts)");
}

TEST_CASE("a job past its deadline gets 504", "[integration]") {
  MONSOON_EACH_TOPOLOGY(topology);
  Stack& stack = shared_stack(topology);
  auto started = std::chrono::steady_clock::now();
  HttpResponse late =
      stack.post_json("/jobs/sleep?timeout_ms=300", R"({"ms": 5000})");
  auto took = std::chrono::steady_clock::now() - started;
  REQUIRE(late.status == 504);
  CHECK(error_of(late)["code"] == "deadline_exceeded");
  CHECK(took < std::chrono::seconds(4));

  HttpResponse by_header =
      stack.request({.method = "POST",
                     .target = "/jobs/sleep",
                     .body = R"({"ms": 5000})",
                     .headers = {{"X-Timeout-Ms", "200"}}});
  CHECK(by_header.status == 504);
}

TEST_CASE("a task no worker serves fails clearly at its deadline",
          "[integration]") {
  MONSOON_EACH_TOPOLOGY(topology);
  Stack& stack = shared_stack(topology);
  HttpResponse response =
      stack.post_json("/jobs/nobody.serves.this?timeout_ms=500", "{}");
  REQUIRE(response.status == 504);
  Json error = error_of(response);
  CHECK(error["code"] == "no_worker");
  CHECK(error["message"].get<std::string>().find("nobody.serves.this") !=
        std::string::npos);
}

TEST_CASE("a standard HTTP client keeps its connection alive",
          "[integration]") {
  MONSOON_EACH_TOPOLOGY(topology);
  Stack& stack = shared_stack(topology);
  httplib::Client client("127.0.0.1", stack.http_port());
  client.set_keep_alive(true);
  client.set_tcp_nodelay(true);
  for (int i = 0; i < 50; ++i) {
    auto result =
        client.Post("/jobs/echo", std::to_string(i), "application/json");
    REQUIRE(result);
    REQUIRE(result->status == 200);
    CHECK(result->body == std::to_string(i));
  }
}
