#include "monsoon/common/value.hpp"

#include <cmath>
#include <cstdint>
#include <msgpack.hpp>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace monsoon {
namespace {

constexpr auto kStrict = Value::error_handler_t::strict;
constexpr std::size_t kShownChars = 40;

// `text`, cut short (and saying so) when it would swamp a message.
std::string shown(std::string_view text) {
  if (text.size() <= kShownChars) return std::string(text);
  return std::string(text.substr(0, kShownChars)) + "... (" +
         std::to_string(text.size()) + " characters)";
}

// One step of a JSON Pointer (RFC 6901).
std::string pointer_step(std::string_view key) {
  std::string step = "/";
  for (char c : shown(key)) {
    if (c == '~') {
      step += "~0";
    } else if (c == '/') {
      step += "~1";
    } else {
      step += c;
    }
  }
  return step;
}

std::string at(const std::string& pointer) {
  return pointer.empty() ? "at the top level" : "at " + pointer;
}

// Whether a JSON number's text has neither fraction nor exponent.
bool is_integer_lexeme(std::string_view lexeme) {
  return lexeme.find_first_not_of("-0123456789") == std::string_view::npos;
}

std::string integer_range_error(std::string_view lexeme,
                                const std::string& pointer) {
  return "integer " + shown(lexeme) + " " + at(pointer) +
         " is outside the 64-bit range [-9223372036854775808, "
         "18446744073709551615] and would change as a floating-point number; "
         "send it as a string";
}

// Builds a Value from nlohmann's SAX events, for JSON text or MessagePack,
// and refuses what a Value cannot hold exactly: a duplicate key (a Value
// keeps one), a non-string map key, a JSON integer beyond 64 bits (which
// nlohmann reads as a double). Also refuses nesting deeper than max_depth:
// nlohmann's own parsers keep one bit (JSON) or one stack frame (MessagePack)
// per level, so stopping at the limit bounds them too.
class ValueBuilder {
 public:
  ValueBuilder(std::string_view format, std::size_t max_depth)
      : format_(format), max_depth_(max_depth) {}

  bool null() { return add(nullptr); }
  bool boolean(bool value) { return add(value); }
  bool number_integer(Value::number_integer_t value) { return add(value); }
  bool number_unsigned(Value::number_unsigned_t value) { return add(value); }
  bool number_float(Value::number_float_t value, const std::string& lexeme) {
    // Only JSON has a lexeme. nlohmann reads an integer that overflows
    // 64 bits as the nearest double.
    if (!lexeme.empty() && is_integer_lexeme(lexeme)) {
      return refuse(integer_range_error(lexeme, next_pointer()));
    }
    return add(value);
  }
  bool string(std::string& value) { return add(std::move(value)); }
  bool binary(Value::binary_t& value) { return add(std::move(value)); }
  bool start_object(std::size_t) { return enter(Value::object()); }
  bool key(std::string& key) {
    Value& object = *open_.back();
    if (object.contains(key)) {
      return refuse("duplicate key \"" + shown(key) + "\" in the " +
                    (format_ == "JSON" ? "object " : "map ") +
                    at(pointer(open_.size())) +
                    ": only one of its values could be kept");
    }
    slot_ = &object[std::move(key)];
    return true;
  }
  bool end_object() { return leave(); }
  bool start_array(std::size_t) { return enter(Value::array()); }
  bool end_array() { return leave(); }

  bool parse_error(std::size_t position, const std::string& last_token,
                   const Value::exception& error) {
    constexpr int kNumberOverflow = 406;  // nlohmann's out_of_range.406
    if (format_ == "JSON" && error.id == kNumberOverflow) {
      std::string where = next_pointer();
      return refuse(
          is_integer_lexeme(last_token)
              ? integer_range_error(last_token, where)
              : "number " + shown(last_token) + " " + at(where) +
                    " is beyond the range of IEEE-754 binary64 (about "
                    "±1.8e308)");
    }
    // MessagePack that passed validate_msgpack fails here only where a map
    // key is not a string.
    if (format_ == "MessagePack" && !open_.empty() &&
        open_.back()->is_object()) {
      return refuse("a key of the map " + at(pointer(open_.size())) +
                    " is not a string (MessagePack type byte 0x" + last_token +
                    " at offset " + std::to_string(position - 1) +
                    "); only string keys can be represented");
    }
    error_ = error.what();
    return false;
  }

  Value take() { return std::move(root_); }
  const std::string& error() const { return error_; }
  // The input was well-formed but cannot be held exactly.
  bool refused() const { return refused_; }

 private:
  template <typename T>
  bool add(T&& value) {
    place(Value(std::forward<T>(value)));
    return true;
  }

  Value& place(Value value) {
    if (open_.empty()) {
      root_ = std::move(value);
      return root_;
    }
    Value& parent = *open_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(value));
      return parent.back();
    }
    *slot_ = std::move(value);
    return *slot_;
  }

  bool enter(Value container) {
    if (open_.size() >= max_depth_) {
      error_ = std::string(format_) + " nesting deeper than " +
               std::to_string(max_depth_);
      return false;
    }
    open_.push_back(&place(std::move(container)));
    return true;
  }

  bool leave() {
    open_.pop_back();
    return true;
  }

  bool refuse(std::string why) {
    error_ = std::move(why);
    refused_ = true;
    return false;
  }

  // The JSON Pointer of the innermost `depth` open containers. Only for
  // messages: it searches each object for the child being built.
  std::string pointer(std::size_t depth) const {
    std::string out;
    for (std::size_t i = 1; i < depth; ++i) {
      out += step_to(*open_[i - 1], open_[i]);
    }
    return out;
  }

  // The JSON Pointer of the value being read.
  std::string next_pointer() const {
    if (open_.empty()) return {};
    const Value& parent = *open_.back();
    return pointer(open_.size()) + (parent.is_array()
                                        ? "/" + std::to_string(parent.size())
                                        : step_to(parent, slot_));
  }

  static std::string step_to(const Value& parent, const Value* child) {
    if (parent.is_array()) return "/" + std::to_string(parent.size() - 1);
    for (const auto& [key, value] : parent.items()) {
      if (&value == child) return pointer_step(key);
    }
    return {};
  }

  std::string_view format_;
  std::size_t max_depth_;
  Value root_;
  std::vector<Value*> open_;  // the containers being built, outermost first
  Value* slot_ = nullptr;     // the member of open_.back() whose key came last
  std::string error_;
  bool refused_ = false;
};

// Validating visitor: accepts every MessagePack value, refuses depth beyond
// the limit, and remembers why parsing stopped.
class DepthLimitedVisitor : public msgpack::null_visitor {
 public:
  explicit DepthLimitedVisitor(std::size_t max_depth) : max_depth_(max_depth) {}

  bool start_array(uint32_t) { return enter(); }
  bool end_array() { return leave(); }
  bool start_map(uint32_t) { return enter(); }
  bool end_map() { return leave(); }
  void parse_error(size_t, size_t offset) {
    error_ = "malformed MessagePack at byte " + std::to_string(offset);
  }
  void insufficient_bytes(size_t, size_t) { error_ = "truncated MessagePack"; }

  bool too_deep() const { return too_deep_; }
  const std::string& error() const { return error_; }

 private:
  bool enter() {
    if (++depth_ > max_depth_) {
      too_deep_ = true;
      return false;
    }
    return true;
  }
  bool leave() {
    --depth_;
    return true;
  }

  std::size_t max_depth_;
  std::size_t depth_ = 0;
  bool too_deep_ = false;
  std::string error_;
};

std::string base64(const Value::binary_t& bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    std::uint32_t n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += kAlphabet[(n >> 6) & 63];
    out += kAlphabet[n & 63];
  }
  if (i + 1 == bytes.size()) {
    std::uint32_t n = bytes[i] << 16;
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += "==";
  } else if (i + 2 == bytes.size()) {
    std::uint32_t n = (bytes[i] << 16) | (bytes[i + 1] << 8);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += kAlphabet[(n >> 6) & 63];
    out += '=';
  }
  return out;
}

bool contains_binary(const Value& value) {
  if (value.is_binary()) return true;
  if (value.is_structured()) {
    for (const auto& element : value) {
      if (contains_binary(element)) return true;
    }
  }
  return false;
}

Value with_binary_as_base64(const Value& value) {
  if (value.is_binary()) return base64(value.get_binary());
  if (value.is_array()) {
    Value out = Value::array();
    for (const auto& element : value)
      out.push_back(with_binary_as_base64(element));
    return out;
  }
  if (value.is_object()) {
    Value out = Value::object();
    for (const auto& [key, element] : value.items()) {
      out[key] = with_binary_as_base64(element);
    }
    return out;
  }
  return value;
}

bool is_utf8(const std::string& text) {
  try {
    Value(text).dump(-1, ' ', false, kStrict);
    return true;
  } catch (const Value::type_error&) {
    return false;
  }
}

// What JSON cannot carry in `value`, and where.
struct JsonGap {
  std::string what;
  std::string pointer;
};

// The first part of `value` that JSON cannot carry exactly: a NaN or
// infinite float, or an ext value (bin values have their base64 form). With
// `check_utf8`, also a string or key that is not UTF-8 (a copy of each: only
// once dump() has said there is one).
std::optional<JsonGap> json_gap(const Value& value, bool check_utf8) {
  auto inside = [](std::optional<JsonGap> gap, const std::string& step) {
    if (gap) gap->pointer.insert(0, step);
    return gap;
  };
  switch (value.type()) {
    case Value::value_t::number_float: {
      double number = value.get<double>();
      if (std::isnan(number)) return JsonGap{"NaN", {}};
      if (std::isinf(number)) {
        return JsonGap{number > 0 ? "Infinity" : "-Infinity", {}};
      }
      return std::nullopt;
    }
    case Value::value_t::binary:
      if (!value.get_binary().has_subtype()) return std::nullopt;
      return JsonGap{"a MessagePack ext value of type " +
                         std::to_string(static_cast<std::int8_t>(
                             value.get_binary().subtype())),
                     {}};
    case Value::value_t::string:
      if (check_utf8 && !is_utf8(value.get_ref<const std::string&>())) {
        return JsonGap{"a string that is not valid UTF-8", {}};
      }
      return std::nullopt;
    case Value::value_t::array:
      for (std::size_t i = 0; i < value.size(); ++i) {
        if (auto gap = json_gap(value[i], check_utf8)) {
          return inside(std::move(gap), "/" + std::to_string(i));
        }
      }
      return std::nullopt;
    case Value::value_t::object:
      for (const auto& [key, element] : value.items()) {
        if (check_utf8 && !is_utf8(key)) {
          return JsonGap{"a key that is not valid UTF-8", {}};
        }
        if (auto gap = json_gap(element, check_utf8)) {
          return inside(std::move(gap), pointer_step(key));
        }
      }
      return std::nullopt;
    default:
      return std::nullopt;
  }
}

[[noreturn]] void throw_gap(const JsonGap& gap) {
  throw NotRepresentable(gap.what + " " + at(gap.pointer) +
                         " has no exact form in JSON");
}

}  // namespace

Value parse_json(std::string_view text, std::size_t max_depth) {
  ValueBuilder builder("JSON", max_depth);
  if (Value::sax_parse(text.begin(), text.end(), &builder)) {
    return builder.take();
  }
  if (builder.refused()) throw NotRepresentable(builder.error());
  throw ValueError(builder.error());
}

std::string to_json(const Value& value) {
  if (auto gap = json_gap(value, false)) throw_gap(*gap);
  try {
    if (contains_binary(value)) {
      return with_binary_as_base64(value).dump(-1, ' ', false, kStrict);
    }
    return value.dump(-1, ' ', false, kStrict);
  } catch (const Value::type_error& e) {  // 316: a string is not UTF-8
    auto gap = json_gap(value, true);
    if (gap) throw_gap(*gap);
    throw NotRepresentable(e.what());
  }
}

std::string to_msgpack(const Value& value) {
  std::string out;
  Value::to_msgpack(value, nlohmann::detail::output_adapter<char>(out));
  return out;
}

void validate_msgpack(std::string_view bytes, std::size_t max_depth) {
  if (bytes.empty()) throw ValueError("empty MessagePack");
  DepthLimitedVisitor visitor(max_depth);
  std::size_t offset = 0;
  bool complete = msgpack::parse(bytes.data(), bytes.size(), offset, visitor);
  if (visitor.too_deep()) {
    throw ValueError("MessagePack nesting deeper than " +
                     std::to_string(max_depth));
  }
  if (!complete) {
    throw ValueError(visitor.error().empty() ? "malformed MessagePack"
                                             : visitor.error());
  }
  if (offset != bytes.size()) {
    throw ValueError("trailing bytes after MessagePack value");
  }
}

Value from_msgpack(std::string_view bytes, std::size_t max_depth) {
  // Malformed input must not be reported as merely not representable, so
  // validate the whole of it first.
  validate_msgpack(bytes, max_depth);
  ValueBuilder builder("MessagePack", max_depth);
  if (Value::sax_parse(bytes.begin(), bytes.end(), &builder,
                       Value::input_format_t::msgpack)) {
    return builder.take();
  }
  if (builder.refused()) throw NotRepresentable(builder.error());
  throw ValueError(builder.error());
}

std::string msgpack_to_json(std::string_view bytes) {
  return to_json(from_msgpack(bytes));
}

std::string json_to_msgpack(std::string_view text) {
  return to_msgpack(parse_json(text));
}

}  // namespace monsoon
