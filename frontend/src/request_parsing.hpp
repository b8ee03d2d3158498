// How the HTTP server reads a request with Beast: the parser's limits, the
// routing view of a parsed request, and the answers to a header it refuses
// and to a read that failed. Callable from any thread.
//
// Defined in http_server.cpp; shared with fuzz/http_fuzzer.cpp so that the
// fuzzer runs the server's own parsing. It includes Beast, so it is private
// to frontend/src: include it nowhere else.
#pragma once

#include <boost/beast/core/error.hpp>
#include <boost/beast/core/string_type.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "monsoon/frontend/http_server.hpp"
#include "monsoon/frontend/routes.hpp"

namespace monsoon::frontend {

using RequestParser =
    boost::beast::http::request_parser<boost::beast::http::string_body>;
using Request = RequestParser::value_type;

inline std::string_view to_std(boost::beast::string_view text) {
  return {text.data(), text.size()};
}

// Replaces `parser` with a fresh one for the next request on a connection,
// holding it to config's body and header limits.
void reset_request_parser(std::optional<RequestParser>& parser,
                          const FrontendConfig& config);

// Method, target and X-Timeout-Ms of `request`, viewed while it lives.
RequestHead request_head(const Request& request);

// The values of every field line named `name` (case-insensitive), joined
// with ", " as RFC 9110 section 5.3 allows for list fields such as Accept;
// empty when there is none.
std::string field_values(const Request& request, std::string_view name);

// The error response owed for a request whose header Beast accepted but the
// server refuses (the connection then closes), checked before the body is
// read; nullopt when reading may go on: a Transfer-Encoding that does not
// end with chunked, and the Host rules of host_error().
std::optional<HttpError> header_error(const RequestParser& parser);

// The error response owed for a read that failed with `ec`: 413, 431 or 400
// for a request Beast rejected; nullopt when there is no one to answer (the
// client closed, went silent or the connection broke).
std::optional<HttpError> read_error(const boost::beast::error_code& ec,
                                    const FrontendConfig& config);

}  // namespace monsoon::frontend
