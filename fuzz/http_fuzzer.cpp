// libFuzzer target: what the front end does with the bytes a client sends,
// short of running jobs. The input is one connection's byte stream, sent at
// once and then closed; no splitting. Like a Session, it reads a request's
// header, then its body, with the server's own parser setup and checks
// (request_parsing.hpp), classifies it (routes.hpp) and turns its body into
// job args, then goes on with the next pipelined request while the
// connection is kept alive.
//
// Beyond "no crash": every request parsed or rejected gets exactly one
// answer (a route, a job or an HTTP error), every error is a 4xx/5xx with a
// valid JSON body (error_body), every job's result format is one the server
// offers (or none: 406), and every job's args are valid MessagePack within
// the args limit. Limits are small so that the fuzzer reaches them.
#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "monsoon/common/value.hpp"
#include "monsoon/frontend/responses.hpp"
#include "monsoon/frontend/routes.hpp"
#include "request_parsing.hpp"

namespace {

namespace http = boost::beast::http;
using namespace monsoon::frontend;

constexpr std::size_t kMaxArgsBytes = 1024;

FrontendConfig small_limits() {
  FrontendConfig config;
  config.max_body_bytes = 1024;
  config.max_header_bytes = 1024;
  return config;
}

void check(bool condition) {
  if (!condition) std::abort();
}

void check_error(const HttpError& error) {
  check(error.status >= 400 && error.status <= 599);
  monsoon::Value body =
      monsoon::parse_json(error_body(error.code, error.message));
  check(body.at("error").at("code").is_string());
  check(body.at("error").at("message").is_string());
}

void check_args(const std::string& args) {
  monsoon::validate_msgpack(args);
  check(args.size() <= kMaxArgsBytes);
}

// Reads the next request's header (or, with `whole`, the rest of it too)
// from what is left of the stream, the way Beast's http::read_header (or
// http::read) does when the client has sent everything and closed: what the
// parser cannot use up is followed by the end of the stream. Consumes what
// the parser used.
boost::beast::error_code parse(RequestParser& parser, std::string_view& rest,
                               bool whole) {
  boost::beast::error_code ec;
  while (!(whole ? parser.is_done() : parser.is_header_done())) {
    if (!rest.empty()) {
      std::size_t used =
          parser.put(boost::asio::buffer(rest.data(), rest.size()), ec);
      rest.remove_prefix(used);
      if (ec != http::error::need_more) {
        if (ec) return ec;
        continue;
      }
    }
    if (!parser.got_some()) return http::error::end_of_stream;
    parser.put_eof(ec);
    if (!ec) check(parser.is_done());
    return ec;
  }
  return ec;
}

// Answers one parsed request; true when the connection stays open for the
// next one (as in Session::handle_request, also after an error response).
bool handle(Request& request, const FrontendConfig& config) {
  Route route = classify(request_head(request), config.timeouts);
  switch (route.kind) {
    case Route::Kind::now:
    case Route::Kind::healthz:
    case Route::Kind::metrics:
      break;
    case Route::Kind::error:
      check_error(route.error);
      break;
    case Route::Kind::job: {
      check(route.timeout.count() >= 1 &&
            route.timeout <= config.timeouts.max_timeout);
      // As Session::start_job: a 406 before anything else.
      auto format = negotiate_result_format(field_values(request, "Accept"));
      if (!format) break;
      const std::string_view type = format->content_type;
      check(format->msgpack ? type == "application/msgpack" ||
                                  type == "application/x-msgpack"
                            : type == "application/json");
      if (route.fixed_args) {
        check_args(*route.fixed_args);
        break;
      }
      auto args = job_args(to_std(request[http::field::content_type]),
                           std::move(request.body()), kMaxArgsBytes);
      if (auto* error = std::get_if<HttpError>(&args)) {
        check_error(*error);
      } else {
        check_args(std::get<std::string>(args));
      }
      break;
    }
  }
  return request.version() >= 11 && request.keep_alive();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  static const FrontendConfig config = small_limits();
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  std::optional<RequestParser> parser;
  bool open = true;
  while (open) {
    // As Session::read_request, on_header and on_read do: a refused header
    // or a failed read is answered, then the connection closes.
    reset_request_parser(parser, config);
    auto ec = parse(*parser, rest, /*whole=*/false);
    if (!ec) {
      if (auto error = header_error(*parser)) {
        check_error(*error);
        return 0;
      }
      ec = parse(*parser, rest, /*whole=*/true);
    }
    if (ec) {
      if (auto error = read_error(ec, config)) check_error(*error);
      return 0;
    }
    open = handle(parser->get(), config);
  }
  return 0;
}
