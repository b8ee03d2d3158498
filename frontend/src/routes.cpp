#include "monsoon/frontend/routes.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "monsoon/common/protocol.hpp"
#include "monsoon/common/value.hpp"
#include "monsoon/frontend/broker_link.hpp"

namespace monsoon::frontend {
namespace {

constexpr std::string_view kJobsPrefix = "/jobs/";
constexpr std::string_view kQueryPrefix = "/query/";
constexpr std::string_view kQueryTask = "db.query";
constexpr std::string_view kTimeoutParameter = "timeout_ms";
constexpr std::string_view kJson = "application/json";
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

// `allowed` is the Allow header's value, e.g. "GET, HEAD".
Route method_not_allowed(std::string_view allowed) {
  std::string methods(allowed);
  if (auto comma = methods.find(", "); comma != std::string::npos) {
    methods.replace(comma, 2, " or ");
  }
  return error_route(405, http_error_code::kMethodNotAllowed,
                     "use " + methods + " for this path", std::string(allowed));
}

constexpr std::string_view kGetMethods = "GET, HEAD";

// HEAD is GET without the content (RFC 9110 section 9.3.2).
bool is_get(std::string_view method) {
  return method == "GET" || method == "HEAD";
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
  if (!is_get(head.method)) return method_not_allowed(kGetMethods);
  auto flag = parse_integer<std::int64_t>(segment);
  if (!flag) return bad_request("the flag must be a 64-bit signed integer");
  return job_route(std::string(kQueryTask), to_msgpack(Value{{"flag", *flag}}),
                   query, head, policy);
}

Route fixed_route(Route::Kind kind, const RequestHead& head) {
  if (!is_get(head.method)) return method_not_allowed(kGetMethods);
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
  return type.empty() || type == kJson || type.ends_with("+json") ||
         type == "application/x-www-form-urlencoded";
}

char ascii_lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return ascii_lower(x) == ascii_lower(y);
         });
}

bool is_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// RFC 3986 section 2.
bool is_unreserved(char c) {
  return is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_' ||
         c == '~';
}
bool is_sub_delim(char c) {
  return std::string_view("!$&'()*+,;=").find(c) != std::string_view::npos;
}

// reg-name or IPv4address: unreserved, sub-delims and %XX escapes.
bool is_reg_name(std::string_view text) {
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '%') {
      if (i + 2 >= text.size() || hex_digit(text[i + 1]) < 0 ||
          hex_digit(text[i + 2]) < 0) {
        return false;
      }
      i += 2;
    } else if (!is_unreserved(c) && !is_sub_delim(c)) {
      return false;
    }
  }
  return true;
}

// The inside of an IP-literal: IPv6address or IPvFuture, checked for their
// alphabet only (the address itself is never used).
bool is_ip_literal(std::string_view text) {
  if (text.empty()) return false;
  return std::all_of(text.begin(), text.end(), [](char c) {
    return is_unreserved(c) || is_sub_delim(c) || c == ':';
  });
}

// uri-host [ ":" port ] with a non-empty host (RFC 3986 section 3.2.2).
bool is_host_and_port(std::string_view text) {
  std::string_view rest;
  if (text.starts_with('[')) {
    auto close = text.find(']');
    if (close == std::string_view::npos ||
        !is_ip_literal(text.substr(1, close - 1))) {
      return false;
    }
    rest = text.substr(close + 1);
  } else {
    auto colon = text.find(':');
    std::string_view name = text.substr(0, colon);
    if (name.empty() || !is_reg_name(name)) return false;
    rest = colon == std::string_view::npos ? std::string_view{}
                                           : text.substr(colon);
  }
  if (rest.empty()) return true;
  return rest.front() == ':' &&
         std::all_of(rest.begin() + 1, rest.end(), is_digit);
}

// The path and query a request target addresses; the error route when it
// addresses nothing Monsoon serves. RFC 9112 section 3.2.
struct Target {
  std::string_view path;
  std::string_view query;
};

std::variant<Target, Route> split_target(const RequestHead& head) {
  std::string_view target = head.target;
  if (!target.starts_with('/')) {
    // asterisk-form (OPTIONS) and authority-form (CONNECT) are valid for
    // their methods only, and ask for what Monsoon does not do.
    if ((target == "*" && head.method == "OPTIONS") ||
        head.method == "CONNECT") {
      return error_route(501, http_error_code::kNotImplemented,
                         "Monsoon is not a proxy and serves no " +
                             std::string(head.method) + " request");
    }
    // absolute-form: http(s)://authority[/path][?query]
    auto colon = target.find(':');
    std::string_view scheme = target.substr(0, colon);
    if (colon == std::string_view::npos ||
        !(iequals(scheme, "http") || iequals(scheme, "https")) ||
        target.substr(colon + 1, 2) != "//") {
      return bad_request(
          "the request target must be a path (/...) or an absolute http "
          "URI");
    }
    target.remove_prefix(colon + 3);
    auto authority_end = target.find_first_of("/?#");
    std::string_view authority = target.substr(0, authority_end);
    // RFC 9110 section 4.2.1 and 4.2.4: an http URI has a host, no
    // userinfo.
    if (!is_host_and_port(authority)) {
      return bad_request("invalid authority in the request target: " +
                         std::string(authority));
    }
    target = authority_end == std::string_view::npos
                 ? std::string_view{}
                 : target.substr(authority_end);
    if (target.empty() || target.front() == '?') {
      // An empty path is "/" (RFC 9112 section 3.2.1).
      Target result{"/", target.empty() ? target : target.substr(1)};
      return result;
    }
  }
  auto question = target.find('?');
  return Target{target.substr(0, question), question == std::string_view::npos
                                                ? std::string_view{}
                                                : target.substr(question + 1)};
}

// ---- Accept -----------------------------------------------------------------

// RFC 9110 section 5.6.2.
bool is_tchar(char c) {
  return is_alpha(c) || is_digit(c) ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}
bool is_token(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), is_tchar);
}

bool is_quoted_string(std::string_view text) {
  if (text.size() < 2 || text.front() != '"' || text.back() != '"') {
    return false;
  }
  for (std::size_t i = 1; i + 1 < text.size(); ++i) {
    if (text[i] == '\\') {
      ++i;
      if (i + 1 >= text.size()) return false;
    } else if (text[i] == '"') {
      return false;
    }
  }
  return true;
}

// Splits `text` at each `separator` outside quoted strings.
std::vector<std::string_view> split_outside_quotes(std::string_view text,
                                                   char separator) {
  std::vector<std::string_view> parts;
  bool quoted = false;
  std::size_t start = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (quoted && text[i] == '\\') {
      ++i;
    } else if (text[i] == '"') {
      quoted = !quoted;
    } else if (!quoted && text[i] == separator) {
      parts.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  parts.push_back(text.substr(std::min(start, text.size())));
  return parts;
}

// qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ), in
// thousandths.
std::optional<int> parse_qvalue(std::string_view text) {
  if (text.empty() || (text[0] != '0' && text[0] != '1')) return std::nullopt;
  int whole = text[0] - '0';
  if (text.size() == 1) return whole * 1000;
  if (text[1] != '.' || text.size() > 5) return std::nullopt;
  int thousandths = 0;
  int scale = 100;
  for (char c : text.substr(2)) {
    if (!is_digit(c)) return std::nullopt;
    thousandths += (c - '0') * scale;
    scale /= 10;
  }
  if (whole == 1 && thousandths != 0) return std::nullopt;
  return whole * 1000 + thousandths;
}

struct MediaRange {
  std::string_view type;
  std::string_view subtype;
  bool has_parameters = false;  // before q: part of the range
  int q = 1000;                 // thousandths
};

// One element of an Accept list; nullopt when it is not valid.
std::optional<MediaRange> parse_media_range(std::string_view element) {
  auto parts = split_outside_quotes(element, ';');
  std::string_view range = trim(parts[0]);
  auto slash = range.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  MediaRange result{range.substr(0, slash), range.substr(slash + 1)};
  if (!is_token(result.type) || !is_token(result.subtype) ||
      (result.type == "*" && result.subtype != "*")) {
    return std::nullopt;
  }
  bool after_q = false;
  for (std::size_t i = 1; i < parts.size(); ++i) {
    std::string_view parameter = trim(parts[i]);
    auto equals = parameter.find('=');
    if (equals == std::string_view::npos) return std::nullopt;
    std::string_view name = parameter.substr(0, equals);
    std::string_view value = parameter.substr(equals + 1);
    if (!is_token(name) || !(is_token(value) || is_quoted_string(value))) {
      return std::nullopt;
    }
    if (after_q) continue;  // accept-ext, obsolete and ignored
    if (iequals(name, "q")) {
      auto q = parse_qvalue(value);
      if (!q) return std::nullopt;
      result.q = *q;
      after_q = true;
    } else {
      result.has_parameters = true;
    }
  }
  return result;
}

// How specifically `range` names `type`/`subtype`: -1 when it does not match
// it, then */* < type/* < type/subtype < type/subtype;parameters.
int specificity(const MediaRange& range, std::string_view type,
                std::string_view subtype) {
  if (range.type == "*") return 0;
  if (!iequals(range.type, type)) return -1;
  if (range.subtype == "*") return 1;
  if (!iequals(range.subtype, subtype)) return -1;
  return range.has_parameters ? 3 : 2;
}

bool is_blank(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
  });
}

}  // namespace

Route classify(const RequestHead& head, const TimeoutPolicy& policy) {
  auto target = split_target(head);
  if (auto* error = std::get_if<Route>(&target)) return std::move(*error);
  auto [path, query] = std::get<Target>(target);

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
  } catch (const NotRepresentable& e) {
    return HttpError{400,
                     std::string(protocol::error_code::kBadRequest),
                     std::string("the body cannot arrive exactly: ") + e.what(),
                     {}};
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

std::optional<HttpError> host_error(unsigned version, std::size_t count,
                                    std::string_view value) {
  auto error = [](std::string message) {
    return HttpError{400,
                     std::string(protocol::error_code::kBadRequest),
                     std::move(message),
                     {}};
  };
  if (count > 1) return error("more than one Host header field");
  if (count == 0) {
    if (version >= 11) return error("an HTTP/1.1 request needs a Host field");
    return std::nullopt;
  }
  if (!value.empty() && !is_host_and_port(value)) {
    return error("invalid Host: " + std::string(value.substr(0, 256)));
  }
  return std::nullopt;
}

std::optional<ResultFormat> negotiate_result_format(std::string_view accept) {
  struct Offer {
    ResultFormat format;
    std::string_view subtype;
  };
  // In order of preference, for ties.
  static constexpr std::array<Offer, 3> kOffers = {{
      {{false, kJson}, "json"},
      {{true, kMsgpack}, "msgpack"},
      {{true, kMsgpackLegacy}, "x-msgpack"},
  }};
  std::vector<MediaRange> ranges;
  for (std::string_view element : split_outside_quotes(accept, ',')) {
    if (auto range = parse_media_range(element)) ranges.push_back(*range);
  }
  if (ranges.empty()) return kOffers[0].format;
  std::optional<ResultFormat> best;
  int best_q = 0;
  for (const Offer& offer : kOffers) {
    int most_specific = -1;
    int q = 0;
    for (const MediaRange& range : ranges) {
      int level = specificity(range, "application", offer.subtype);
      if (level > most_specific) {
        most_specific = level;
        q = range.q;
      } else if (level == most_specific) {
        q = std::max(q, range.q);
      }
    }
    if (most_specific >= 0 && q > best_q) {
      best = offer.format;
      best_q = q;
    }
  }
  return best;
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
