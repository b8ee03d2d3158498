#include "monsoon/common/value.hpp"

#include <catch2/catch.hpp>
#include <cmath>
#include <initializer_list>
#include <nlohmann/json.hpp>

using Catch::Contains;
using monsoon::NotRepresentable;
using monsoon::Value;
using monsoon::ValueError;

namespace {

Value json_round_trip(std::string_view text) {
  return monsoon::from_msgpack(monsoon::json_to_msgpack(text));
}

std::string bytes(std::initializer_list<unsigned char> list) {
  return std::string(list.begin(), list.end());
}

// The message of the NotRepresentable that `convert` throws; the check fails
// when it throws nothing or something else.
template <typename Convert>
std::string refusal(Convert convert) {
  try {
    convert();
  } catch (const NotRepresentable& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL_CHECK("threw another exception: " << e.what());
    return {};
  }
  FAIL_CHECK("accepted");
  return {};
}

// Eight bytes of a MessagePack float 64 / uint 64 / int 64 after its type.
const std::string kNaN = bytes({0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0});
const std::string kUint64Max =
    bytes({0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff});
const std::string kInt64Min = bytes({0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0});

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

TEST_CASE("JSON integers beyond 64 bits are refused, naming number and range") {
  const std::string thirty_digits = "123456789012345678901234567890";
  const std::string four_hundred_digits = "1" + std::string(399, '0');
  struct Case {
    std::string text;
    std::string number;  // what the message quotes
    std::string where;
  };
  for (const Case& c : std::vector<Case>{
           {"18446744073709551616", "18446744073709551616", ""},
           {thirty_digits, thirty_digits, ""},
           {"-9223372036854775809", "-9223372036854775809", ""},
           {"[-9223372036854775809]", "-9223372036854775809", "/0"},
           {R"({"a":[1,{"b":18446744073709551616}]})", "18446744073709551616",
            "/a/1/b"},
           {"[" + thirty_digits + ", 1]", thirty_digits, "/0"},
           {four_hundred_digits, "10000000000000000000", ""},
           {"-" + four_hundred_digits, "-10000000000000000000", ""}}) {
    INFO(c.text);
    std::string why = refusal([&] { monsoon::parse_json(c.text); });
    CHECK_THAT(why, Contains(c.number));
    CHECK_THAT(why, Contains("-9223372036854775808"));
    CHECK_THAT(why, Contains("18446744073709551615"));
    if (!c.where.empty()) CHECK_THAT(why, Contains("at " + c.where));
    CHECK(why.size() < 300);  // a long number is shortened
    refusal([&] { monsoon::json_to_msgpack(c.text); });
  }
}

TEST_CASE("JSON numbers beyond binary64 are refused") {
  for (std::string_view text : {"1e400", "-1E400", "[0, 1.5e999]"}) {
    INFO(text);
    std::string why = refusal([&] { monsoon::parse_json(text); });
    CHECK_THAT(why, Contains("binary64"));
  }
  CHECK_THAT(refusal([] { monsoon::parse_json("1e400"); }), Contains("1e400"));
}

TEST_CASE("other JSON numbers are IEEE-754 binary64, as RFC 8259 allows") {
  CHECK(monsoon::parse_json("0.1").get<double>() == 0.1);
  CHECK(monsoon::parse_json("1e2").is_number_float());
  Value tiny = monsoon::parse_json("1e-400");  // rounds to the nearest: 0
  CHECK(tiny.is_number_float());
  CHECK(tiny.get<double>() == 0.0);
  CHECK(monsoon::to_json(monsoon::parse_json("1.0")) == "1.0");
  Value negative_zero = monsoon::parse_json("-0.0");
  CHECK(std::signbit(negative_zero.get<double>()));
  CHECK(monsoon::to_json(negative_zero) == "-0.0");
  // The shortest text that reads back as the same double.
  CHECK(monsoon::to_json(monsoon::parse_json("0.1000000000000000055511151231"
                                             "257827")) == "0.1");
}

TEST_CASE("duplicate keys in JSON objects are refused") {
  struct Case {
    std::string text;
    std::string key;
    std::string where;
  };
  for (const Case& c :
       std::vector<Case>{{R"({"a":1,"a":2})", R"("a")", ""},
                         {R"({"a":1,"a":1})", R"("a")", ""},
                         {R"({"a":{},"b":1,"a":[]})", R"("a")", ""},
                         {R"({"a":1,"\u0061":2})", R"("a")", ""},
                         {R"([{"x":{"k":1,"k":1}}])", R"("k")", "/0/x"}}) {
    INFO(c.text);
    std::string why = refusal([&] { monsoon::parse_json(c.text); });
    CHECK_THAT(why, Contains("duplicate key " + c.key));
    if (!c.where.empty()) CHECK_THAT(why, Contains("at " + c.where));
  }
  // The same key in different objects is fine.
  CHECK(monsoon::parse_json(R"({"a":{"a":1}})") == Value{{"a", {{"a", 1}}}});
}

TEST_CASE("MessagePack maps with duplicate or non-string keys are refused") {
  struct Case {
    std::string name;
    std::string packed;
    std::string why;
  };
  const std::vector<Case> cases = {
      {"duplicate key", bytes({0x82, 0xa1, 'a', 1, 0xa1, 'a', 2}),
       R"(duplicate key "a")"},
      {"duplicate key, same value", bytes({0x82, 0xa1, 'a', 1, 0xa1, 'a', 1}),
       R"(duplicate key "a")"},
      {"nested duplicate key",
       bytes({0x81, 0xa1, 'x', 0x91, 0x82, 0xa1, 'k', 1, 0xa1, 'k', 1}),
       "at /x/0"},
      {"integer key", bytes({0x81, 0x01, 0x02}), "not a string"},
      {"nil key", bytes({0x81, 0xc0, 0x02}), "not a string"},
      {"bin key", bytes({0x81, 0xc4, 0x01, 'a', 0x02}), "not a string"},
      {"array key", bytes({0x81, 0x90, 0x02}), "not a string"},
      {"map key", bytes({0x81, 0x80, 0x02}), "not a string"},
      {"integer key after a string key",
       bytes({0x81, 0xa1, 'x', 0x82, 0xa1, 'a', 1, 0x07, 2}), "at /x"},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    // Well-formed: passed on as it is where it is not decoded...
    CHECK_NOTHROW(monsoon::validate_msgpack(c.packed));
    // ...but no Value holds it exactly, so neither a task nor JSON gets it.
    CHECK_THAT(refusal([&] { monsoon::from_msgpack(c.packed); }),
               Contains(c.why));
    CHECK_THAT(refusal([&] { monsoon::msgpack_to_json(c.packed); }),
               Contains(c.why));
  }
  // Malformed and duplicated: malformed is what is reported.
  const std::string truncated = bytes({0x83, 0xa1, 'a', 1, 0xa1, 'a', 2});
  try {
    monsoon::from_msgpack(truncated);
    FAIL_CHECK("accepted");
  } catch (const NotRepresentable& e) {
    FAIL_CHECK("reported as not representable: " << e.what());
  } catch (const ValueError&) {
  }
}

TEST_CASE("values JSON cannot carry exactly are NotRepresentable") {
  struct Case {
    std::string name;
    std::string packed;
    std::vector<std::string> why;
  };
  const std::vector<Case> cases = {
      {"NaN", kNaN, {"NaN"}},
      {"float32 NaN", bytes({0xca, 0x7f, 0xc0, 0, 0}), {"NaN"}},
      {"Infinity", bytes({0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0}), {"Infinity"}},
      {"-Infinity", bytes({0xcb, 0xff, 0xf0, 0, 0, 0, 0, 0, 0}), {"-Infinity"}},
      {"nested NaN",
       bytes({0x81, 0xa1, 'a', 0x92, 0x01}) + kNaN,
       {"NaN", "at /a/1"}},
      {"string that is not UTF-8", bytes({0xa2, 0xff, 0xfe}), {"UTF-8"}},
      {"nested string that is not UTF-8",
       bytes({0x91, 0x81, 0xa1, 'k', 0xa1, 0xc3}),
       {"UTF-8", "at /0/k"}},
      {"key that is not UTF-8", bytes({0x81, 0xa1, 0xff, 0x01}), {"UTF-8"}},
      {"ext", bytes({0xd4, 0x05, 0x01}), {"ext", "5"}},
      {"timestamp ext",
       bytes({0x81, 0xa1, 't', 0xd6, 0xff, 0, 0, 0, 1}),
       {"ext", "-1", "at /t"}},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    Value value = monsoon::from_msgpack(c.packed);
    CHECK(monsoon::to_msgpack(value).size() > 0);
    std::string why = refusal([&] { monsoon::to_json(value); });
    for (const auto& part : c.why) CHECK_THAT(why, Contains(part));
    CHECK(refusal([&] { monsoon::msgpack_to_json(c.packed); }) == why);
  }
  CHECK_THROWS_AS(monsoon::to_json(Value(std::nan(""))), NotRepresentable);
  CHECK_THROWS_AS(monsoon::to_json(Value::binary({1}, 5)), NotRepresentable);
  // Bin (no ext type) has its documented form: base64.
  CHECK(monsoon::to_json(Value::binary({1})) == R"("AQ==")");
}

TEST_CASE("64-bit extremes are exact in all four directions") {
  const std::string packed = bytes({0x92}) + kUint64Max + kInt64Min;
  const std::string text = "[18446744073709551615,-9223372036854775808]";
  CHECK(monsoon::json_to_msgpack(text) == packed);  // JSON in
  Value value = monsoon::from_msgpack(packed);      // MessagePack in
  CHECK(value[0].get<std::uint64_t>() == UINT64_MAX);
  CHECK(value[1].get<std::int64_t>() == INT64_MIN);
  CHECK(monsoon::to_msgpack(value) == packed);      // MessagePack out
  CHECK(monsoon::msgpack_to_json(packed) == text);  // JSON out
  // Any integer encoding whose value fits reads as that value.
  CHECK(monsoon::msgpack_to_json(bytes({0xd3, 0, 0, 0, 0, 0, 0, 0, 5})) == "5");
  CHECK(monsoon::msgpack_to_json(bytes({0xd0, 0x80})) == "-128");
}

TEST_CASE("float32 from MessagePack becomes the same number as a double") {
  const std::string packed = bytes({0xca, 0x3d, 0xcc, 0xcc, 0xcd});  // 0.1f
  Value value = monsoon::from_msgpack(packed);
  CHECK(value.get<double>() == static_cast<double>(0.1f));
  CHECK(monsoon::to_msgpack(value) == packed);
  std::string text = monsoon::msgpack_to_json(packed);
  CHECK(text == "0.10000000149011612");
  CHECK(monsoon::parse_json(text) == value);
}
