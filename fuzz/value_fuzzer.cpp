// libFuzzer target: the JSON <-> MessagePack conversions of
// common/value.hpp, which the front end runs on every request body (JSON or
// MessagePack) and every task result.
//
// Input: the whole input is tried both as a JSON text and as MessagePack
// bytes (in that order); no splitting.
//
// Beyond "no crash" (and nothing thrown but ValueError), where the
// conversions must agree:
// - a value parsed from JSON survives to_json -> parse_json and
//   to_msgpack -> from_msgpack unchanged (JSON has no bin, NaN or invalid
//   UTF-8, the three things only MessagePack can carry);
// - a value decoded from MessagePack re-encodes to bytes that decode again
//   and re-encode to the same bytes (bytes, not values: NaN != NaN), and its
//   JSON form parses.
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

void check_msgpack(std::string_view bytes) {
  auto value = converted([&] { return monsoon::from_msgpack(bytes); });
  if (!value) return;
  std::string encoded = monsoon::to_msgpack(*value);
  check(monsoon::to_msgpack(monsoon::from_msgpack(encoded)) == encoded);
  monsoon::parse_json(monsoon::to_json(*value));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  check_json(input);
  check_msgpack(input);
  return 0;
}
