#include "monsoon/common/value.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

using monsoon::Value;
using monsoon::ValueError;

namespace {

Value json_round_trip(std::string_view text) {
  return monsoon::from_msgpack(monsoon::json_to_msgpack(text));
}

}  // namespace

TEST_CASE("JSON -> msgpack -> JSON preserves nested values") {
  const char* text =
      R"({"a":[1,-2,3.5,true,false,null,"s"],"b":{"c":{"d":[[],{}]}},"e":""})";
  CHECK(json_round_trip(text) == Value::parse(text));
  CHECK(monsoon::msgpack_to_json(monsoon::json_to_msgpack(text)) ==
        Value::parse(text).dump());
}

TEST_CASE("unicode strings survive both encodings") {
  const char* text =
      R"(["héllo", "天气", "🌧️", "\u0000nul", "\ud83d\ude00"])";
  Value value = json_round_trip(text);
  CHECK(value == Value::parse(text));
  CHECK(value[1].get<std::string>() == "天气");
  CHECK(value[3].get<std::string>().size() == 4);
}

TEST_CASE("big integers stay exact to 64 bits") {
  Value value = json_round_trip(
      R"([9223372036854775807, -9223372036854775808, 18446744073709551615])");
  CHECK(value[0].get<std::int64_t>() == INT64_MAX);
  CHECK(value[1].get<std::int64_t>() == INT64_MIN);
  CHECK(value[2].get<std::uint64_t>() == UINT64_MAX);
  CHECK(monsoon::to_json(value) ==
        "[9223372036854775807,-9223372036854775808,18446744073709551615]");
  // Beyond 64 bits JSON numbers become doubles, as documented.
  Value huge = json_round_trip("[123456789012345678901234567890]");
  CHECK(huge[0].is_number_float());
}

TEST_CASE("binary values round-trip in msgpack and render as base64 in JSON") {
  Value value = {{"blob", Value::binary({0x00, 0xff, 0x10, 0x80})},
                 {"list", {Value::binary({'M'}), Value::binary({'M', 'a'})}}};
  std::string packed = monsoon::to_msgpack(value);
  Value back = monsoon::from_msgpack(packed);
  REQUIRE(back["blob"].is_binary());
  const std::vector<std::uint8_t>& blob = back["blob"].get_binary();
  CHECK(blob == std::vector<std::uint8_t>{0x00, 0xff, 0x10, 0x80});
  CHECK(monsoon::to_json(back) ==
        R"({"blob":"AP8QgA==","list":["TQ==","TWE="]})");
}

TEST_CASE("invalid UTF-8 from msgpack is replaced, not fatal") {
  // fixstr of 2 bytes: 0xff 0xfe is not UTF-8.
  std::string packed = "\xa2\xff\xfe";
  CHECK(monsoon::msgpack_to_json(packed) == "\"\xEF\xBF\xBD\xEF\xBF\xBD\"");
}

TEST_CASE("malformed JSON is rejected with a message") {
  for (const char* bad : {"", "{", "[1,]", "{\"a\":}", "nul", "\"unterminated",
                          "[1] [2]", "\xff"}) {
    CHECK_THROWS_AS(monsoon::parse_json(bad), ValueError);
  }
}

TEST_CASE("nesting beyond the limit is rejected without recursion") {
  std::string deep_json = std::string(100000, '[') + std::string(100000, ']');
  CHECK_THROWS_AS(monsoon::parse_json(deep_json), ValueError);
  CHECK_NOTHROW(
      monsoon::parse_json(std::string(128, '[') + std::string(128, ']')));
  // Brackets inside strings do not count.
  CHECK_NOTHROW(monsoon::parse_json("\"" + std::string(1000, '[') + "\""));

  std::string deep_msgpack(100000, '\x91');  // array of 1, nested
  deep_msgpack += '\xc0';
  CHECK_THROWS_AS(monsoon::validate_msgpack(deep_msgpack), ValueError);
  CHECK_THROWS_AS(monsoon::from_msgpack(deep_msgpack), ValueError);
}

TEST_CASE("malformed msgpack is rejected") {
  CHECK_THROWS_AS(monsoon::validate_msgpack(""), ValueError);
  CHECK_THROWS_AS(monsoon::validate_msgpack("\xc1"), ValueError);  // never used
  CHECK_THROWS_AS(monsoon::validate_msgpack("\x92\x01"),
                  ValueError);  // truncated
  CHECK_THROWS_AS(monsoon::validate_msgpack("\x01\x02"),
                  ValueError);  // trailing
  // array32 claiming 4 billion elements: rejected, and nothing huge allocated.
  CHECK_THROWS_AS(
      monsoon::from_msgpack(std::string_view("\xdd\xff\xff\xff\xff", 5)),
      ValueError);
  // str32 claiming 4 GiB.
  CHECK_THROWS_AS(
      monsoon::from_msgpack(std::string_view("\xdb\xff\xff\xff\xff", 5)),
      ValueError);
  CHECK_NOTHROW(monsoon::validate_msgpack("\x92\x01\xc0"));
}
