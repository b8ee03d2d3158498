// libFuzzer target: the JSON <-> MessagePack conversions of
// common/value.hpp, which the front end runs on every request body (JSON or
// MessagePack) and every task result.
//
// Input: the whole input is tried both as a JSON text and as MessagePack
// bytes (in that order); no splitting.
//
// Beyond "no crash" (and nothing thrown but ValueError), where the
// conversions must agree, since a value converts exactly or not at all:
// - a value parsed from JSON survives to_json -> parse_json and
//   to_msgpack -> from_msgpack unchanged (JSON has no bin, ext, NaN or
//   invalid UTF-8, the things only MessagePack can carry);
// - a value decoded from MessagePack re-encodes to bytes that decode again
//   and re-encode to the same bytes (bytes, not values: NaN != NaN); when
//   to_json does not refuse it (NotRepresentable), its JSON parses back to
//   the same value (bin values: to their base64 strings, so to JSON text
//   that serialises the same).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "monsoon/common/value.hpp"

namespace {

using monsoon::Value;

void check(bool condition) {
  if (!condition) std::abort();
}

// Runs a conversion on untrusted input: nullopt when it rejects it.
template <typename Convert>
std::optional<Value> converted(Convert convert) {
  try {
    return convert();
  } catch (const monsoon::ValueError&) {
    return std::nullopt;
  }
}

void check_json(std::string_view text) {
  auto value = converted([&] { return monsoon::parse_json(text); });
  if (!value) return;
  check(monsoon::parse_json(monsoon::to_json(*value)) == *value);
  std::string msgpack = monsoon::to_msgpack(*value);
  monsoon::validate_msgpack(msgpack);
  check(monsoon::from_msgpack(msgpack) == *value);
}

bool has_bin(const Value& value) {
  return value.is_binary() ||
         (value.is_structured() &&
          std::any_of(value.begin(), value.end(), has_bin));
}

void check_msgpack(std::string_view bytes) {
  auto value = converted([&] { return monsoon::from_msgpack(bytes); });
  if (!value) return;
  std::string encoded = monsoon::to_msgpack(*value);
  check(monsoon::to_msgpack(monsoon::from_msgpack(encoded)) == encoded);
  std::string json;
  try {
    json = monsoon::to_json(*value);
  } catch (const monsoon::NotRepresentable&) {
    return;
  }
  Value back = monsoon::parse_json(json);
  check(has_bin(*value) ? monsoon::to_json(back) == json : back == *value);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  check_json(input);
  check_msgpack(input);
  return 0;
}
