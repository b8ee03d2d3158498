#include "monsoon/common/value.hpp"

#include <msgpack.hpp>
#include <nlohmann/json.hpp>

namespace monsoon {
namespace {

// Rejects nesting deeper than max_depth before nlohmann builds anything, so a
// hostile "[[[[..." costs one linear scan and no allocation.
void check_json_depth(std::string_view text, std::size_t max_depth) {
  std::size_t depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) {
        throw ValueError("JSON nesting deeper than " +
                         std::to_string(max_depth));
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
}

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

}  // namespace

Value parse_json(std::string_view text, std::size_t max_depth) {
  check_json_depth(text, max_depth);
  try {
    return Value::parse(text);
  } catch (const Value::exception& e) {
    throw ValueError(e.what());
  }
}

std::string to_json(const Value& value) {
  constexpr auto kReplace = Value::error_handler_t::replace;
  if (contains_binary(value)) {
    return with_binary_as_base64(value).dump(-1, ' ', false, kReplace);
  }
  return value.dump(-1, ' ', false, kReplace);
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
  validate_msgpack(bytes, max_depth);
  try {
    return Value::from_msgpack(bytes.begin(), bytes.end());
  } catch (const Value::exception& e) {
    throw ValueError(e.what());
  }
}

std::string msgpack_to_json(std::string_view bytes) {
  return to_json(from_msgpack(bytes));
}

std::string json_to_msgpack(std::string_view text) {
  return to_msgpack(parse_json(text));
}

}  // namespace monsoon
