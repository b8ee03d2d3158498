#include "monsoon/frontend/routes.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <nlohmann/json.hpp>
#include <utility>

#include "monsoon/common/protocol.hpp"
#include "monsoon/common/value.hpp"
#include "monsoon/frontend/broker_link.hpp"

namespace monsoon::frontend {
namespace {

constexpr std::string_view kJobsPrefix = "/jobs/";
constexpr std::string_view kQueryPrefix = "/query/";
constexpr std::string_view kQueryTask = "db.query";
constexpr std::string_view kTimeoutParameter = "timeout_ms";
constexpr std::string_view kMsgpack = "application/msgpack";
constexpr std::string_view kMsgpackLegacy = "application/x-msgpack";

Route error_route(int status, std::string_view code, std::string message,
                  std::string allow = {}) {
  Route route;
  route.kind = Route::Kind::error;
  route.error = {status, std::string(code), std::move(message),
                 std::move(allow)};
  return route;
}

Route bad_request(std::string message) {
  return error_route(400, protocol::error_code::kBadRequest,
                     std::move(message));
}

Route method_not_allowed(std::string_view allowed) {
  return error_route(405, http_error_code::kMethodNotAllowed,
                     "use " + std::string(allowed) + " for this path",
                     std::string(allowed));
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes %XX escapes of one path segment; nullopt on a malformed escape.
std::optional<std::string> percent_decode(std::string_view text) {
  std::string decoded;
  decoded.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      decoded.push_back(text[i]);
      continue;
    }
    if (i + 2 >= text.size()) return std::nullopt;
    int high = hex_digit(text[i + 1]);
    int low = hex_digit(text[i + 2]);
    if (high < 0 || low < 0) return std::nullopt;
    decoded.push_back(static_cast<char>(high * 16 + low));
    i += 2;
  }
  return decoded;
}

// The value of the first `key=value` pair of a query string.
std::optional<std::string_view> query_parameter(std::string_view query,
                                                std::string_view key) {
  while (!query.empty()) {
    auto end = query.find('&');
    std::string_view pair = query.substr(0, end);
    auto equals = pair.find('=');
    if (pair.substr(0, equals) == key) {
      return equals == std::string_view::npos ? std::string_view{}
                                              : pair.substr(equals + 1);
    }
    if (end == std::string_view::npos) break;
    query.remove_prefix(end + 1);
  }
  return std::nullopt;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) {
    text.remove_prefix(1);
  }
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) {
    text.remove_suffix(1);
  }
  return text;
}

// Parses the whole of `text` as an integer; nullopt when it is not one or
// does not fit.
template <typename Integer>
std::optional<Integer> parse_integer(std::string_view text) {
  Integer value{};
  auto [end, error] =
      std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc{} ||
      end != text.data() + text.size()) {
    return std::nullopt;
  }
  return value;
}

Route job_route(std::string task, std::optional<std::string> fixed_args,
                std::string_view query, const RequestHead& head,
                const TimeoutPolicy& policy) {
  Route route;
  route.kind = Route::Kind::job;
  route.task = std::move(task);
  route.fixed_args = std::move(fixed_args);
  route.timeout = policy.default_timeout;

  auto requested = query_parameter(query, kTimeoutParameter);
  if (!requested && !head.timeout_header.empty()) {
    requested = trim(head.timeout_header);
  }
  if (requested) {
    auto value = parse_integer<std::uint64_t>(*requested);
    auto max = static_cast<std::uint64_t>(policy.max_timeout.count());
    if (!value || *value < 1 || *value > max) {
      return bad_request("timeout_ms must be an integer from 1 to " +
                         std::to_string(max));
    }
    route.timeout = std::chrono::milliseconds(*value);
  }
  return route;
}

Route jobs_route(std::string_view segment, std::string_view query,
                 const RequestHead& head, const TimeoutPolicy& policy) {
  if (head.method != "POST") return method_not_allowed("POST");
  auto task = percent_decode(segment);
  if (!task || !protocol::is_valid_task_name(*task)) {
    return bad_request(
        "invalid task name: use 1 to 128 letters, digits, '.', '_', '-' or "
        "':'");
  }
  return job_route(std::move(*task), std::nullopt, query, head, policy);
}

Route query_route(std::string_view segment, std::string_view query,
                  const RequestHead& head, const TimeoutPolicy& policy) {
  if (head.method != "GET") return method_not_allowed("GET");
  auto flag = parse_integer<std::int64_t>(segment);
  if (!flag) return bad_request("the flag must be a 64-bit signed integer");
  return job_route(std::string(kQueryTask), to_msgpack(Value{{"flag", *flag}}),
                   query, head, policy);
}

Route fixed_route(Route::Kind kind, const RequestHead& head) {
  if (head.method != "GET") return method_not_allowed("GET");
  Route route;
  route.kind = kind;
  return route;
}

std::string lowercase(std::string_view text) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](char c) {
    return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  });
  return lower;
}

// "Application/JSON; charset=utf-8" -> "application/json"
std::string media_type(std::string_view content_type) {
  std::string_view type = content_type.substr(0, content_type.find(';'));
  while (!type.empty() && type.back() == ' ') type.remove_suffix(1);
  while (!type.empty() && type.front() == ' ') type.remove_prefix(1);
  return lowercase(type);
}

bool is_msgpack_type(std::string_view type) {
  return type == kMsgpack || type == kMsgpackLegacy;
}

// JSON, a +json type, or none. curl -d labels every body
// application/x-www-form-urlencoded; since /jobs takes no form data, such a
// body is read as the JSON it almost always is.
bool is_json_type(std::string_view type) {
  return type.empty() || type == "application/json" ||
         type.ends_with("+json") || type == "application/x-www-form-urlencoded";
}

bool is_blank(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
  });
}

}  // namespace

Route classify(const RequestHead& head, const TimeoutPolicy& policy) {
  auto question = head.target.find('?');
  std::string_view path = head.target.substr(0, question);
  std::string_view query = question == std::string_view::npos
                               ? std::string_view{}
                               : head.target.substr(question + 1);

  if (path == "/now") return fixed_route(Route::Kind::now, head);
  if (path == "/healthz") return fixed_route(Route::Kind::healthz, head);
  if (path == "/metrics") return fixed_route(Route::Kind::metrics, head);
  if (path.starts_with(kJobsPrefix)) {
    return jobs_route(path.substr(kJobsPrefix.size()), query, head, policy);
  }
  if (path.starts_with(kQueryPrefix)) {
    return query_route(path.substr(kQueryPrefix.size()), query, head, policy);
  }
  return error_route(404, http_error_code::kNotFound,
                     "no such path: " + std::string(path));
}

std::variant<std::string, HttpError> job_args(std::string_view content_type,
                                              std::string body,
                                              std::size_t max_args_bytes) {
  std::string type = media_type(content_type);
  std::string args;
  try {
    if (is_json_type(type)) {
      args = is_blank(body) ? std::string(protocol::kMsgpackNil)
                            : json_to_msgpack(body);
    } else if (is_msgpack_type(type)) {
      if (!body.empty()) validate_msgpack(body);
      args =
          body.empty() ? std::string(protocol::kMsgpackNil) : std::move(body);
    } else {
      return HttpError{415,
                       std::string(http_error_code::kUnsupportedMediaType),
                       "send application/json or application/msgpack",
                       {}};
    }
  } catch (const ValueError& e) {
    return HttpError{400,
                     std::string(protocol::error_code::kBadRequest),
                     std::string("invalid body: ") + e.what(),
                     {}};
  }
  // MessagePack can be longer than the JSON it came from (0.1 takes 9
  // bytes), so the body limit alone does not keep the args in bounds.
  if (args.size() > max_args_bytes) {
    return HttpError{413,
                     std::string(http_error_code::kPayloadTooLarge),
                     "the body encodes to " + std::to_string(args.size()) +
                         " bytes of MessagePack, more than the " +
                         std::to_string(max_args_bytes) + " allowed",
                     {}};
  }
  return args;
}

bool accepts_msgpack(std::string_view accept) {
  std::string lower = lowercase(accept);
  return lower.find(kMsgpack) != std::string::npos ||
         lower.find(kMsgpackLegacy) != std::string::npos;
}

std::variant<std::string, HttpError> job_result(std::string result,
                                                bool as_msgpack) {
  try {
    if (as_msgpack) {
      validate_msgpack(result);
      return result;
    }
    return msgpack_to_json(result);
  } catch (const NotRepresentable& e) {
    return HttpError{406,
                     std::string(http_error_code::kNotAcceptable),
                     std::string("the result has no exact JSON form: ") +
                         e.what() +
                         "; send Accept: application/msgpack to receive it "
                         "exactly",
                     {}};
  } catch (const ValueError& e) {
    return HttpError{502,
                     std::string(protocol::error_code::kInternal),
                     std::string("the task's result is unusable: ") + e.what(),
                     {}};
  }
}

int http_status_for_error(std::string_view code) noexcept {
  namespace codes = protocol::error_code;
  if (code == codes::kBadRequest) return 400;
  if (code == codes::kTooLarge) return 413;
  if (code == codes::kUnknownTask) return 404;
  if (code == codes::kNoWorker || code == codes::kDeadlineExceeded) return 504;
  if (code == codes::kOverloaded ||
      code == link_error_code::kBrokerUnavailable ||
      code == link_error_code::kShuttingDown) {
    return 503;
  }
  if (code == codes::kTaskFailed) return 500;
  return 502;  // internal, and codes this version does not know
}

std::uint32_t retry_after_seconds(std::uint32_t retry_after_ms) noexcept {
  return std::max<std::uint32_t>(
      1, retry_after_ms / 1000 + (retry_after_ms % 1000 != 0 ? 1 : 0));
}

}  // namespace monsoon::frontend
