#include "monsoon/frontend/routes.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <variant>

#include "monsoon/common/value.hpp"
#include "monsoon/frontend/broker_link.hpp"

using namespace monsoon::frontend;
using namespace std::chrono_literals;
using Kind = Route::Kind;

namespace {

const TimeoutPolicy kPolicy{30'000ms, 300'000ms};

Route route(std::string_view method, std::string_view target,
            std::string_view timeout_header = {}) {
  return classify({method, target, timeout_header}, kPolicy);
}

}  // namespace

TEST_CASE("the front end's own endpoints") {
  CHECK(route("GET", "/now").kind == Kind::now);
  CHECK(route("GET", "/healthz").kind == Kind::healthz);
  CHECK(route("GET", "/metrics").kind == Kind::metrics);
  CHECK(route("GET", "/now?pretty=1").kind == Kind::now);
}

TEST_CASE("POST /jobs/{task} runs the task with the body as args") {
  Route r = route("POST", "/jobs/images:resize");
  REQUIRE(r.kind == Kind::job);
  CHECK(r.task == "images:resize");
  CHECK_FALSE(r.fixed_args);
  CHECK(r.timeout == 30'000ms);

  CHECK(route("POST", "/jobs/db.query").task == "db.query");
  CHECK(route("POST", "/jobs/a_b-c").task == "a_b-c");
  CHECK(route("POST", "/jobs/images%3Aresize").task == "images:resize");
  CHECK(route("POST", "/jobs/" + std::string(128, 'x')).kind == Kind::job);
}

TEST_CASE("invalid task names are a 400") {
  for (const std::string& target : std::vector<std::string>{
           "/jobs/", "/jobs/bad%20name", "/jobs/a/b", "/jobs/caf%C3%A9",
           "/jobs/%zz", "/jobs/%4", "/jobs/x%00y",
           "/jobs/" + std::string(129, 'x')}) {
    INFO(target);
    Route r = route("POST", target);
    REQUIRE(r.kind == Kind::error);
    CHECK(r.error.status == 400);
    CHECK(r.error.code == "bad_request");
  }
}

TEST_CASE("GET /query/{flag} becomes db.query with the flag") {
  Route r = route("GET", "/query/42");
  REQUIRE(r.kind == Kind::job);
  CHECK(r.task == "db.query");
  REQUIRE(r.fixed_args);
  CHECK(monsoon::from_msgpack(*r.fixed_args) == monsoon::Value{{"flag", 42}});

  auto min = route("GET", "/query/-9223372036854775808");
  REQUIRE(min.kind == Kind::job);
  CHECK(monsoon::from_msgpack(*min.fixed_args)["flag"] ==
        std::numeric_limits<std::int64_t>::min());
  CHECK(route("GET", "/query/9223372036854775807").kind == Kind::job);
}

TEST_CASE("a flag that is not an int64 is a 400") {
  for (std::string_view target :
       {"/query/", "/query/abc", "/query/1.5", "/query/+1", "/query/ 1",
        "/query/1x", "/query/9223372036854775808",
        "/query/-9223372036854775809", "/query/1/2"}) {
    INFO(target);
    Route r = route("GET", target);
    REQUIRE(r.kind == Kind::error);
    CHECK(r.error.status == 400);
  }
}

TEST_CASE("unknown paths are 404, known paths with another method 405") {
  for (std::string_view target :
       {"/", "/nope", "/now/", "/jobs", "/query", "/NOW", "/jobsx/echo"}) {
    INFO(target);
    Route r = route("GET", target);
    REQUIRE(r.kind == Kind::error);
    CHECK(r.error.status == 404);
    CHECK(r.error.code == "not_found");
  }

  Route post_now = route("POST", "/now");
  REQUIRE(post_now.kind == Kind::error);
  CHECK(post_now.error.status == 405);
  CHECK(post_now.error.allow == "GET, HEAD");

  Route get_job = route("GET", "/jobs/echo");
  REQUIRE(get_job.kind == Kind::error);
  CHECK(get_job.error.status == 405);
  CHECK(get_job.error.allow == "POST");

  CHECK(route("DELETE", "/query/1").error.status == 405);
  CHECK(route("PUT", "/healthz").error.status == 405);
  CHECK(route("post", "/jobs/echo").error.status == 405);
}

TEST_CASE(
    "the timeout comes from the query, else the header, else the "
    "default") {
  CHECK(route("POST", "/jobs/echo?timeout_ms=250").timeout == 250ms);
  CHECK(route("POST", "/jobs/echo?a=1&timeout_ms=250&b").timeout == 250ms);
  CHECK(route("GET", "/query/1?timeout_ms=300000").timeout == 300'000ms);
  CHECK(route("POST", "/jobs/echo", "1200").timeout == 1200ms);
  CHECK(route("POST", "/jobs/echo", " 1200 ").timeout == 1200ms);
  CHECK(route("POST", "/jobs/echo?timeout_ms=7", "1200").timeout == 7ms);
  CHECK(route("POST", "/jobs/echo?xtimeout_ms=7").timeout == 30'000ms);
  CHECK(route("POST", "/jobs/echo").timeout == 30'000ms);
}

TEST_CASE("timeouts outside 1..max are a 400") {
  for (std::string_view target :
       {"/jobs/echo?timeout_ms=0", "/jobs/echo?timeout_ms=-1",
        "/jobs/echo?timeout_ms=abc", "/jobs/echo?timeout_ms=",
        "/jobs/echo?timeout_ms", "/jobs/echo?timeout_ms=300001",
        "/jobs/echo?timeout_ms=99999999999999999999999",
        "/jobs/echo?timeout_ms=1.5"}) {
    INFO(target);
    Route r = route("POST", target);
    REQUIRE(r.kind == Kind::error);
    CHECK(r.error.status == 400);
    CHECK(r.error.message.find("300000") != std::string::npos);
  }
  for (std::string_view header : {"0", "x", "300001", "-5"}) {
    INFO(header);
    CHECK(route("POST", "/jobs/echo", header).error.status == 400);
  }
}

TEST_CASE("error codes map to HTTP statuses") {
  CHECK(http_status_for_error("bad_request") == 400);
  CHECK(http_status_for_error("too_large") == 413);
  CHECK(http_status_for_error("unknown_task") == 404);
  CHECK(http_status_for_error("no_worker") == 504);
  CHECK(http_status_for_error("deadline_exceeded") == 504);
  CHECK(http_status_for_error("overloaded") == 503);
  CHECK(http_status_for_error("task_failed") == 500);
  CHECK(http_status_for_error("internal") == 502);
  CHECK(http_status_for_error("some_future_code") == 502);
  CHECK(http_status_for_error("") == 502);
  CHECK(http_status_for_error(link_error_code::kBrokerUnavailable) == 503);
  CHECK(http_status_for_error(link_error_code::kShuttingDown) == 503);
}

TEST_CASE("Retry-After is whole seconds, at least one") {
  CHECK(retry_after_seconds(0) == 1);
  CHECK(retry_after_seconds(1) == 1);
  CHECK(retry_after_seconds(1000) == 1);
  CHECK(retry_after_seconds(1001) == 2);
  CHECK(retry_after_seconds(2500) == 3);
}

TEST_CASE("a job's body becomes MessagePack args by its media type") {
  auto args = [](std::string_view type, std::string body) {
    auto result = job_args(type, std::move(body), 1024);
    REQUIRE(std::holds_alternative<std::string>(result));
    return std::get<std::string>(result);
  };
  auto packed = monsoon::to_msgpack(monsoon::Value{{"x", 1}});
  CHECK(args("application/json", R"({"x":1})") == packed);
  CHECK(args("Application/JSON; charset=utf-8", R"({"x":1})") == packed);
  CHECK(args("application/problem+json", R"({"x":1})") == packed);
  CHECK(args("", R"({"x":1})") == packed);
  CHECK(args("application/x-www-form-urlencoded", R"({"x":1})") == packed);
  CHECK(args("application/msgpack", packed) == packed);
  CHECK(args("application/x-msgpack", packed) == packed);
  CHECK(args("application/json", " \r\n") == "\xc0");
  CHECK(args("application/msgpack", "") == "\xc0");
}

TEST_CASE("a job's body that cannot become args is a 400, 413 or 415") {
  auto status = [](std::string_view type, std::string body,
                   std::size_t max_args_bytes = 1024) {
    auto result = job_args(type, std::move(body), max_args_bytes);
    REQUIRE(std::holds_alternative<HttpError>(result));
    return std::get<HttpError>(result).status;
  };
  CHECK(status("application/json", "{") == 400);
  CHECK(status("application/msgpack", "\x92\x01") == 400);
  CHECK(status("text/plain", "1") == 415);
  // Nine bytes of MessagePack from three of JSON.
  CHECK(status("application/json", "0.1", 8) == 413);
}

namespace {

// The content type negotiate_result_format() picks; "406" when none.
std::string negotiated(std::string_view accept) {
  auto format = negotiate_result_format(accept);
  if (!format) return "406";
  CHECK(format->msgpack == (format->content_type != "application/json"));
  return std::string(format->content_type);
}

}  // namespace

TEST_CASE("no Accept, or nothing valid in it, means JSON") {
  for (std::string_view accept : {"",
                                  " ",
                                  ",",
                                  " , ,",
                                  "json",
                                  "application",
                                  "application/",
                                  "/json",
                                  "*/json",
                                  "application/json;q=2",
                                  "application/msgpack;q=2",
                                  "application/msgpack;q=1.001",
                                  "application/msgpack;q=0.0001",
                                  "application/msgpack;q=.5",
                                  "application/msgpack;q=-1",
                                  "application/msgpack;q=",
                                  "application/msgpack;q",
                                  "application/msgpack;q=abc",
                                  "application/msgpack;q = 0.5",
                                  "application/msgpack;q=\"0.5\"",
                                  "application/msgpack;=1",
                                  "application/msgpack;a=b c",
                                  "application/msgpack;a=\"open",
                                  "appli cation/msgpack",
                                  "application/msg pack"}) {
    INFO(accept);
    CHECK(negotiated(accept) == "application/json");
  }
}

TEST_CASE("Accept picks the representation with the highest q") {
  CHECK(negotiated("application/json") == "application/json");
  CHECK(negotiated("application/msgpack") == "application/msgpack");
  CHECK(negotiated("application/x-msgpack") == "application/x-msgpack");
  CHECK(negotiated("application/json, application/msgpack;q=0") ==
        "application/json");
  CHECK(negotiated("application/msgpack;q=0.9, application/json;q=0.8") ==
        "application/msgpack");
  CHECK(negotiated("application/msgpack;q=1.000, application/json;q=0.999") ==
        "application/msgpack");
  CHECK(negotiated("application/msgpack;q=0.001") == "application/msgpack");
  CHECK(negotiated("application/msgpack;q=0.") == "406");
  CHECK(negotiated("application/msgpack;q=1.") == "application/msgpack");
  CHECK(negotiated("text/html, application/msgpack;q=0.1") ==
        "application/msgpack");
  CHECK(negotiated("application/x-msgpack;q=0.5, application/msgpack;q=0.4") ==
        "application/x-msgpack");
}

TEST_CASE("Accept ties go to JSON, then to application/msgpack") {
  CHECK(negotiated("*/*") == "application/json");
  CHECK(negotiated("application/*") == "application/json");
  CHECK(negotiated("application/json;q=0.5, application/msgpack;q=0.5") ==
        "application/json");
  CHECK(negotiated("application/x-msgpack, application/msgpack") ==
        "application/msgpack");
  CHECK(negotiated("application/json;q=0, */*") == "application/msgpack");
  CHECK(negotiated("application/json;q=0, application/msgpack;q=0, */*") ==
        "application/x-msgpack");
}

TEST_CASE("the most specific media range decides") {
  CHECK(negotiated("*/*;q=0.1, application/msgpack;q=0.2") ==
        "application/msgpack");
  CHECK(negotiated("application/*;q=0.9, application/json;q=0.1") ==
        "application/msgpack");
  CHECK(negotiated("application/*;q=0, */*") == "406");
  CHECK(negotiated("*/*;q=0, application/msgpack") == "application/msgpack");
  // Parameters make a range more specific; they are not compared.
  CHECK(negotiated("application/json;charset=utf-8;q=0.1, "
                   "application/json;q=1, application/msgpack;q=0.5") ==
        "application/msgpack");
  CHECK(negotiated("application/json;charset=\"utf-8\"") == "application/json");
  // Parameters after q are accept-ext: ignored, not more specific.
  CHECK(negotiated("application/json;q=0.1;ext=1, application/json;q=0.9") ==
        "application/json");
  CHECK(negotiated("application/json;q=0.3;ext=1, application/msgpack;q=0.5") ==
        "application/msgpack");
  // Equally specific ranges: the highest q counts.
  CHECK(negotiated("application/json;q=0, application/json;q=0.5, "
                   "application/msgpack;q=0.4") == "application/json");
}

TEST_CASE("Accept is case-insensitive and tolerant of whitespace") {
  CHECK(negotiated("APPLICATION/MSGPACK") == "application/msgpack");
  CHECK(negotiated("Application/MsgPack;Q=0.5, application/json;q=0.4") ==
        "application/msgpack");
  CHECK(negotiated(" application/msgpack ; q=0.8 ,\tapplication/json ; "
                   "q=0.7 ") == "application/msgpack");
  CHECK(negotiated("application/msgpack,,application/json;q=0.1") ==
        "application/msgpack");
  // A comma inside a quoted parameter value does not split the list.
  CHECK(negotiated("application/json;a=\"x,application/msgpack\";q=0.1, "
                   "text/plain") == "application/json");
}

TEST_CASE("nothing acceptable is a 406") {
  for (std::string_view accept :
       {"text/html", "text/*", "application/json;q=0",
        "application/msgpack;q=0", "application/*;q=0", "*/*;q=0",
        "text/*, application/json;q=0", "image/png, */*;q=0.000",
        "application/json;q=0, application/msgpack;q=abc",
        "application/json;q=0, application/msgpack;q=0, "
        "application/x-msgpack;q=0"}) {
    INFO(accept);
    CHECK(negotiated(accept) == "406");
  }
}

TEST_CASE("HEAD is routed like GET and listed with it in Allow") {
  CHECK(route("HEAD", "/now").kind == Kind::now);
  CHECK(route("HEAD", "/healthz").kind == Kind::healthz);
  CHECK(route("HEAD", "/metrics").kind == Kind::metrics);
  Route query = route("HEAD", "/query/5");
  REQUIRE(query.kind == Kind::job);
  CHECK(query.task == "db.query");
  for (std::string_view target : {"/now", "/healthz", "/metrics", "/query/1"}) {
    INFO(target);
    Route r = route("POST", target);
    CHECK(r.error.status == 405);
    CHECK(r.error.allow == "GET, HEAD");
  }
  Route head_job = route("HEAD", "/jobs/echo");
  CHECK(head_job.error.status == 405);
  CHECK(head_job.error.allow == "POST");
  CHECK(route("HEAD", "/nope").error.status == 404);
  CHECK(route("head", "/now").error.status == 405);
}

TEST_CASE("classify() takes an absolute-form target's path and query") {
  CHECK(route("GET", "http://example.com/now").kind == Kind::now);
  CHECK(route("GET", "http://127.0.0.1:8000/healthz").kind == Kind::healthz);
  CHECK(route("GET", "HTTPS://[::1]:443/metrics?x=1").kind == Kind::metrics);
  Route job = route("POST", "http://a.example/jobs/echo?timeout_ms=250");
  REQUIRE(job.kind == Kind::job);
  CHECK(job.task == "echo");
  CHECK(job.timeout == 250ms);
  Route query = route("GET", "http://x:1/query/9");
  REQUIRE(query.kind == Kind::job);
  CHECK(monsoon::from_msgpack(*query.fixed_args) ==
        monsoon::Value{{"flag", 9}});
  // An empty path is "/".
  CHECK(route("GET", "http://x").error.status == 404);
  CHECK(route("GET", "http://x?timeout_ms=1").error.status == 404);
  CHECK(route("GET", "http://x/now/").error.status == 404);
}

TEST_CASE("targets in other forms are a 400, or a 501 for their method") {
  for (std::string_view target :
       {"*", "x:80", "example.com", "http:/now", "http:now", "http:///now",
        "http://:80/now", "http://u@x/now", "http://u:p@x/now",
        "http://a b/now", "http://[::1/now", "http://x:8o/now", "ftp://x/now",
        "mailto:x@y", "now", "", "?x"}) {
    INFO(target);
    Route r = route("GET", target);
    REQUIRE(r.kind == Kind::error);
    CHECK(r.error.status == 400);
    CHECK(r.error.code == "bad_request");
  }
  Route options = route("OPTIONS", "*");
  CHECK(options.error.status == 501);
  CHECK(options.error.code == "not_implemented");
  CHECK(route("CONNECT", "example.com:443").error.status == 501);
  CHECK(route("OPTIONS", "example.com:443").error.status == 400);
  // OPTIONS and CONNECT with a path: a known path, another method.
  CHECK(route("OPTIONS", "/now").error.status == 405);
  CHECK(route("CONNECT", "/now").error.status == 405);
}

TEST_CASE("Host: exactly one for HTTP/1.1, at most one for HTTP/1.0") {
  CHECK_FALSE(host_error(11, 1, "example.com"));
  CHECK_FALSE(host_error(10, 0, ""));
  CHECK_FALSE(host_error(10, 1, "example.com"));
  for (auto [version, count] :
       {std::pair{11u, std::size_t{0}}, std::pair{11u, std::size_t{2}},
        std::pair{10u, std::size_t{2}}, std::pair{20u, std::size_t{0}}}) {
    INFO(version << " " << count);
    auto error = host_error(version, count, "example.com");
    REQUIRE(error);
    CHECK(error->status == 400);
    CHECK(error->code == "bad_request");
  }
}

TEST_CASE("a Host value is empty or a host with an optional port") {
  for (std::string_view host :
       {"", "example.com", "EXAMPLE.com:8000", "127.0.0.1",
        "127.0.0.1:", "[::1]", "[::1]:8000", "[v1.fe80::a+en1]", "a-b_c~d",
        "x%41y", "!$&'()*+,;="}) {
    INFO(host);
    CHECK_FALSE(host_error(11, 1, host));
  }
  for (std::string_view host :
       {"a b", "a/b", "a?b", "a#b", "u@a", ":80", "a:8x", "a:80:80", "[::1",
        "[]", "::1", "[::1]x", "a%4", "a%zz", "\x01", "caf\xc3\xa9"}) {
    INFO(host);
    CHECK(host_error(11, 1, host));
  }
}

TEST_CASE("a result goes out as it is for MessagePack and as JSON otherwise") {
  auto body = [](std::string result, bool as_msgpack) {
    auto answer = job_result(std::move(result), as_msgpack);
    REQUIRE(std::holds_alternative<std::string>(answer));
    return std::get<std::string>(answer);
  };
  std::string packed = monsoon::to_msgpack(monsoon::Value{{"x", {1, "y"}}});
  CHECK(body(packed, true) == packed);
  CHECK(body(packed, false) == R"({"x":[1,"y"]})");

  for (bool as_msgpack : {true, false}) {
    auto invalid = job_result("\xc1", as_msgpack);  // never valid MessagePack
    REQUIRE(std::holds_alternative<HttpError>(invalid));
    CHECK(std::get<HttpError>(invalid).status == 502);
    CHECK(std::get<HttpError>(invalid).code == "internal");
  }
}

TEST_CASE("a JSON body a value cannot carry exactly is a 400 saying why") {
  struct Case {
    std::string body;
    std::string why;
  };
  for (const Case& c : std::vector<Case>{
           {"18446744073709551616", "18446744073709551616"},
           {R"({"n":[-9223372036854775809]})", "-9223372036854775809"},
           {"123456789012345678901234567890", "18446744073709551615"},
           {R"({"a":1,"a":2})", R"(duplicate key "a")"},
           {"1e400", "binary64"}}) {
    INFO(c.body);
    auto result = job_args("application/json", c.body, 1024);
    REQUIRE(std::holds_alternative<HttpError>(result));
    const auto& error = std::get<HttpError>(result);
    CHECK(error.status == 400);
    CHECK(error.code == "bad_request");
    CHECK_THAT(error.message, Catch::Contains(c.why) &&
                                  Catch::Contains("cannot arrive exactly"));
  }
}

TEST_CASE("a MessagePack body is passed on exactly as it came") {
  // Duplicate keys, NaN and invalid UTF-8 are the worker's to judge.
  const std::string body("\x83\xa1k\x01\xa1k\x02\xa1n\xcb\x7f\xf8\0\0\0\0\0\0",
                         18);
  auto result = job_args("application/msgpack", body, 1024);
  REQUIRE(std::holds_alternative<std::string>(result));
  CHECK(std::get<std::string>(result) == body);
}

TEST_CASE("a result JSON cannot carry exactly is a 406 for JSON clients") {
  const std::string nan("\xcb\x7f\xf8\0\0\0\0\0\0", 9);
  const std::vector<std::pair<std::string, std::string>> results = {
      {"NaN", nan},
      {"nested NaN", "\x81\xa1x\x91" + nan},
      {"invalid UTF-8", "\xa2\xff\xfe"},
      {"ext", "\xd4\x05\x01"},
      {"duplicate key", "\x82\xa1k\x01\xa1k\x02"},
      {"integer key", "\x81\x01\x02"}};
  for (const auto& [name, result] : results) {
    INFO(name);
    auto as_json = job_result(result, false);
    REQUIRE(std::holds_alternative<HttpError>(as_json));
    const auto& error = std::get<HttpError>(as_json);
    CHECK(error.status == 406);
    CHECK(error.code == http_error_code::kNotAcceptable);
    CHECK(error.code == "not_acceptable");
    CHECK_THAT(error.message, Catch::Contains("Accept: application/msgpack"));

    auto as_msgpack = job_result(result, true);
    REQUIRE(std::holds_alternative<std::string>(as_msgpack));
    CHECK(std::get<std::string>(as_msgpack) == result);
  }
  auto nested = job_result("\x81\xa1x\x91" + nan, false);
  CHECK_THAT(std::get<HttpError>(nested).message, Catch::Contains("NaN"));
  CHECK_THAT(std::get<HttpError>(nested).message, Catch::Contains("/x/0"));
}
