// Task arguments and results as values, and their two encodings: JSON (the
// HTTP API) and MessagePack (the wire). The in-memory model is
// nlohmann::json, which represents every MessagePack type including bin and
// ext (as binary with a subtype).
//
// A value converts exactly or not at all (docs/protocol.md, "Values"):
// integers from -2^63 to 2^64-1 stay exact, other JSON numbers are IEEE-754
// binary64 (RFC 8259 section 6), and what one side cannot hold exactly
// (a longer integer, a duplicate or non-string key; NaN, infinities, ext or
// invalid UTF-8 for JSON) is refused with NotRepresentable. Bin values are
// the one documented change of form: base64 strings in JSON.
//
// All functions are thread-safe and throw ValueError on invalid or hostile
// input; none allocates more than a small multiple of its input's size.
#pragma once

#include <cstddef>
#include <nlohmann/json_fwd.hpp>
#include <stdexcept>
#include <string>
#include <string_view>

namespace monsoon {

using Value = nlohmann::json;

class ValueError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Well-formed input holding a value the other side cannot hold exactly; its
// message says which and where (a JSON Pointer). Callers answer it apart from
// malformed input: the front end with 406 for a result a JSON client asked for.
class NotRepresentable : public ValueError {
 public:
  using ValueError::ValueError;
};

inline constexpr std::size_t kDefaultMaxDepth = 128;

// Parses exactly one JSON text. Throws NotRepresentable for an integer
// outside [-2^63, 2^64-1], a number beyond binary64 (1e400) and a duplicate
// key; ValueError for syntax errors, invalid UTF-8 and nesting deeper than
// max_depth.
Value parse_json(std::string_view text,
                 std::size_t max_depth = kDefaultMaxDepth);

// Serialises as compact JSON (keys sorted; floats as the shortest text that
// reads back as the same double). JSON has no bytes type, so MessagePack bin
// values become base64 strings (RFC 4648, with padding). Throws
// NotRepresentable for NaN, infinities, ext values and strings or keys that
// are not UTF-8.
std::string to_json(const Value& value);

std::string to_msgpack(const Value& value);

// Decodes exactly one MessagePack value occupying all of `bytes`. Throws
// ValueError when `bytes` are not that (validate_msgpack), else
// NotRepresentable for a map with a duplicate or non-string key.
Value from_msgpack(std::string_view bytes,
                   std::size_t max_depth = kDefaultMaxDepth);

// Validates that `bytes` holds exactly one well-formed MessagePack value no
// deeper than max_depth, without building it. Throws ValueError otherwise.
void validate_msgpack(std::string_view bytes,
                      std::size_t max_depth = kDefaultMaxDepth);

// from_msgpack + to_json, the reply path of the HTTP front end.
std::string msgpack_to_json(std::string_view bytes);
// parse_json + to_msgpack, the request path of the HTTP front end.
std::string json_to_msgpack(std::string_view text);

}  // namespace monsoon
