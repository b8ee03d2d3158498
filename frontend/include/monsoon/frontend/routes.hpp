// Request classification for the HTTP front end: which endpoint a request
// addresses, with which task, arguments and time budget, or which HTTP error
// answers it. Also the mapping from MNS/1 error codes to HTTP statuses
// (docs/protocol.md section 6). Pure functions of their inputs, callable from
// any thread; nothing here knows about sockets or Beast.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace monsoon::frontend {

// HTTP-level error codes that the front end produces itself (the error body's
// "code"), in addition to the protocol's codes.
namespace http_error_code {
inline constexpr std::string_view kNotFound = "not_found";
inline constexpr std::string_view kMethodNotAllowed = "method_not_allowed";
inline constexpr std::string_view kNotAcceptable = "not_acceptable";
inline constexpr std::string_view kPayloadTooLarge = "payload_too_large";
inline constexpr std::string_view kHeadersTooLarge = "headers_too_large";
inline constexpr std::string_view kUnsupportedMediaType =
    "unsupported_media_type";
inline constexpr std::string_view kNotImplemented = "not_implemented";
}  // namespace http_error_code

struct TimeoutPolicy {
  std::chrono::milliseconds default_timeout{30'000};
  std::chrono::milliseconds max_timeout{300'000};
};

// The parts of a request that decide its route. Views into the caller's
// request, valid for the duration of the classify() call.
struct RequestHead {
  std::string_view method;  // e.g. "GET", case-sensitive
  // As received (RFC 9112 section 3.2): origin-form ("/now?x=1"),
  // absolute-form ("http://host:port/now?x=1"), authority-form or "*".
  std::string_view target;
  std::string_view timeout_header;  // X-Timeout-Ms; empty when absent
};

struct HttpError {
  int status = 500;
  std::string code;
  std::string message;
  std::string allow;  // the Allow header of a 405; empty otherwise
};

struct Route {
  enum class Kind { now, healthz, metrics, job, error };
  Kind kind = Kind::error;

  // kind == job: run `task` within `timeout`. `fixed_args` holds MessagePack
  // args implied by the URL (GET /query/{flag}); nullopt = take the body.
  std::string task;
  std::optional<std::string> fixed_args;
  std::chrono::milliseconds timeout{0};

  HttpError error;  // kind == error
};

// GET /now, GET /healthz, GET /metrics, POST /jobs/{task},
// GET /query/{flag} (task "db.query" with args {"flag": flag}); HEAD is
// routed like GET wherever GET is (the server then sends no body). Job
// routes take their timeout from the `timeout_ms` query parameter, else the
// X-Timeout-Ms header, else the policy's default; it must be 1..max.
// Unknown paths give 404, known paths with another method 405 + Allow.
// Targets: origin-form as it is; absolute-form (http or https, with a host
// and no userinfo) by its path and query, ignoring its authority; "*"
// (OPTIONS) and authority-form (CONNECT) are 501, as Monsoon is no proxy and
// has no OPTIONS; any other form, or those with another method, is 400.
Route classify(const RequestHead& head, const TimeoutPolicy& policy);

// RFC 9112 section 3.2: the 400 owed for a request's Host field lines, or
// nullopt when they are acceptable. `count` is how many Host field lines the
// request has, `value` the first one's value. HTTP/1.1 (and later) needs
// exactly one, HTTP/1.0 at most one; a value must be empty or a uri-host
// with an optional port (RFC 3986 section 3.2.2). `version` as Beast has it
// (11 for HTTP/1.1).
std::optional<HttpError> host_error(unsigned version, std::size_t count,
                                    std::string_view value);

// The MessagePack args of a job request whose args come from its body.
// JSON (also +json types, no Content-Type, and curl's default
// application/x-www-form-urlencoded) is converted; MessagePack is validated
// and passed on as it is; an empty (for JSON: blank) body is nil. Otherwise
// the error to answer: 400 for an invalid body, 413 for args over
// max_args_bytes, 415 for other media types.
std::variant<std::string, HttpError> job_args(std::string_view content_type,
                                              std::string body,
                                              std::size_t max_args_bytes);

// How a job's result is sent: as JSON, or as the MessagePack the worker
// produced, labelled `content_type`.
struct ResultFormat {
  bool msgpack = false;
  std::string_view content_type = "application/json";  // static storage
};

// Content negotiation for a job's result (RFC 9110 section 12.5.1) among
// application/json, application/msgpack and its alias application/x-msgpack.
// `accept` is the request's Accept field values joined with commas, empty
// when it has none. Media ranges are matched case-insensitively; a range
// applies to an offer when its type and subtype match ("*" matching any),
// the most specific one deciding the offer's q (type/subtype with
// parameters, then type/subtype, type/*, */*; the highest q among equally
// specific ones); parameters other than q are not compared (Monsoon's JSON
// is always UTF-8). The offer with the highest q wins, ties going to JSON
// and then to application/msgpack. An element that is not a valid media
// range with an optional valid q ("0" to "1" with up to three decimals) is
// ignored; an Accept with no valid element is treated as absent, which
// means JSON. nullopt when every offer has q = 0: answer 406.
std::optional<ResultFormat> negotiate_result_format(std::string_view accept);

// The body of the 200 answering a job whose task succeeded with `result`
// (MessagePack, from the worker): for a client that accepts MessagePack the
// bytes as they are, once validated; else the result as JSON. Otherwise the
// error to answer: 406 (not_acceptable) for a result JSON cannot carry
// exactly (NaN, invalid UTF-8, ...: see value.hpp), 502 for a result that is
// not valid MessagePack.
std::variant<std::string, HttpError> job_result(std::string result,
                                                bool as_msgpack);

// HTTP status for an error code of a RESULT or of a local failure; unknown
// codes map like "internal" (502).
int http_status_for_error(std::string_view code) noexcept;

// The Retry-After value (whole seconds, at least 1) for a 503.
std::uint32_t retry_after_seconds(std::uint32_t retry_after_ms) noexcept;

}  // namespace monsoon::frontend
