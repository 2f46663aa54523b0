// JSON files: located syntax errors, typed fields, readable formatting.
#include "support/json.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include <nlohmann/json.hpp>

#include "ir/diagnostic.h"

namespace pf {

using Json = nlohmann::ordered_json;

Json parse_json_document(const std::string& text, const std::string& path) {
  try {
    return Json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    // what() reads "[json.exception.parse_error.101] parse error at line 3,
    // column 5: syntax error while parsing ..."; keep only the reason, since
    // the location is given the way every other Pipeforge error gives it.
    std::string what = e.what();
    size_t start = what.find("parse error");
    size_t colon = what.find(": ", start == std::string::npos ? 0 : start);
    std::string reason = colon == std::string::npos ? what : what.substr(colon + 2);
    // e.byte counts the characters read, the offending one included.
    size_t offset = std::min<size_t>(e.byte > 0 ? e.byte - 1 : 0, text.size());
    // That is the token's last character; the caret goes under its first.
    auto token_char = [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '+' || c == '-';
    };
    if (offset < text.size() && text[offset] == '"') {
      while (offset > 0 && !(text[offset - 1] == '"' && (offset < 2 || text[offset - 2] != '\\'))) --offset;
      if (offset > 0) --offset;
    } else if (offset < text.size() && token_char(text[offset])) {
      while (offset > 0 && token_char(text[offset - 1])) --offset;
    }
    int line = 1;
    size_t line_start = 0;
    for (size_t i = 0; i < offset; ++i)
      if (text[i] == '\n') {
        ++line;
        line_start = i + 1;
      }
    auto file = std::make_shared<SourceFile>(path, text);
    throw Error("not valid JSON: " + reason, Location{file, line, static_cast<int>(offset - line_start) + 1});
  } catch (const nlohmann::json::out_of_range& e) {
    // A number beyond a double or a 64-bit integer: "[json.exception.
    // out_of_range.406] number overflow parsing '1e999'". The library gives
    // no position: the number's first occurrence is it.
    const std::string what = e.what();
    const size_t tag = what.find("] ");
    const std::string reason = tag == std::string::npos ? what : what.substr(tag + 2);
    const size_t open = reason.find('\''), close = reason.rfind('\'');
    const size_t at = open < close ? text.find(reason.substr(open + 1, close - open - 1)) : std::string::npos;
    if (at == std::string::npos) throw Error(fmt::format("{}: not valid JSON: {}", path, reason));
    const size_t line_start = text.rfind('\n', at) == std::string::npos ? 0 : text.rfind('\n', at) + 1;
    const int line = 1 + static_cast<int>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(at), '\n'));
    throw Error("not valid JSON: " + reason, Location{std::make_shared<SourceFile>(path, text), line,
                                                      static_cast<int>(at - line_start) + 1});
  }
}

void JsonReader::fail(const std::string& what) const { throw Error(path_ + ": " + what); }

std::string JsonReader::at(std::string_view where, std::string_view key) {
  return where.empty() ? std::string(key) : fmt::format("{}.{}", where, key);
}

std::string JsonReader::at(std::string_view where, size_t index) { return fmt::format("{}[{}]", where, index); }

void JsonReader::expect_keys(const Json& object, std::string_view where, std::initializer_list<std::string_view> keys,
                             std::initializer_list<std::string_view> optional) const {
  if (!object.is_object())
    fail(where.empty() ? "the document must be a JSON object" : fmt::format("{} must be an object", where));
  for (std::string_view key : keys) member(object, where, key);
  for (const auto& item : object.items()) {
    if (std::find(keys.begin(), keys.end(), item.key()) != keys.end()) continue;
    if (std::find(optional.begin(), optional.end(), item.key()) != optional.end()) continue;
    fail(where.empty() ? fmt::format("unknown field \"{}\"", item.key())
                       : fmt::format("{} has an unknown field \"{}\"", where, item.key()));
  }
}

const Json& JsonReader::member(const Json& object, std::string_view where, std::string_view key) const {
  if (!object.is_object())
    fail(where.empty() ? "the document must be a JSON object" : fmt::format("{} must be an object", where));
  auto it = object.find(key);
  if (it == object.end())
    fail(where.empty() ? fmt::format("no \"{}\"", key) : fmt::format("{} has no \"{}\"", where, key));
  return *it;
}

std::string JsonReader::string(const Json& object, std::string_view where, std::string_view key) const {
  const Json& v = member(object, where, key);
  if (!v.is_string()) fail(at(where, key) + " must be a string");
  return v.get<std::string>();
}

bool JsonReader::boolean(const Json& object, std::string_view where, std::string_view key) const {
  const Json& v = member(object, where, key);
  if (!v.is_boolean()) fail(at(where, key) + " must be true or false");
  return v.get<bool>();
}

int64_t JsonReader::integer(const Json& object, std::string_view where, std::string_view key, int64_t min,
                            int64_t max) const {
  const Json& v = member(object, where, key);
  if (!v.is_number_integer() ||
      (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())))
    fail(at(where, key) + " must be an integer");
  int64_t value = v.get<int64_t>();
  if (value < min) fail(fmt::format("{} must be at least {}, got {}", at(where, key), min, value));
  if (value > max) fail(fmt::format("{} must be at most {}, got {}", at(where, key), max, value));
  return value;
}

double JsonReader::number(const Json& object, std::string_view where, std::string_view key, double min) const {
  const Json& v = member(object, where, key);
  if (!v.is_number() || !std::isfinite(v.get<double>())) fail(at(where, key) + " must be a finite number");
  double value = v.get<double>();
  if (value < min) fail(fmt::format("{} must be at least {}, got {}", at(where, key), min, value));
  return value;
}

const Json& JsonReader::array(const Json& object, std::string_view where, std::string_view key) const {
  const Json& v = member(object, where, key);
  if (!v.is_array()) fail(at(where, key) + " must be an array");
  return v;
}

const Json& JsonReader::object(const Json& object, std::string_view where, std::string_view key) const {
  const Json& v = member(object, where, key);
  if (!v.is_object()) fail(at(where, key) + " must be an object");
  return v;
}

namespace {

bool holds_key(const Json& value, const std::vector<std::string>& keys) {
  if (value.is_object())
    for (const auto& item : value.items())
      if (std::find(keys.begin(), keys.end(), item.key()) != keys.end() || holds_key(item.value(), keys)) return true;
  if (value.is_array())
    for (const Json& element : value)
      if (holds_key(element, keys)) return true;
  return false;
}

// One line: `{"name": "h.3", "peer": 1}`, `[1, 2]`. Bytes that are not
// UTF-8 are replaced rather than thrown over: a name is text for people.
std::string inline_json(const Json& value) {
  if (!value.is_structured()) return value.dump(-1, ' ', false, Json::error_handler_t::replace);
  std::string out = value.is_object() ? "{" : "[";
  bool first = true;
  for (const auto& item : value.items()) {
    if (!first) out += ", ";
    first = false;
    if (value.is_object()) out += inline_json(Json(item.key())) + ": ";
    out += inline_json(item.value());
  }
  return out + (value.is_object() ? "}" : "]");
}

void write_json(const Json& value, int indent, size_t column, bool expand, const std::vector<std::string>& expanded,
                std::string& out) {
  if (!value.is_structured() || value.empty()) {
    out += inline_json(value);
    return;
  }
  if (!expand && !holds_key(value, expanded)) {
    std::string line = inline_json(value);
    if (column + line.size() <= 100) {
      out += line;
      return;
    }
  }
  std::string pad(indent + 2, ' ');
  out += value.is_object() ? "{\n" : "[\n";
  size_t i = 0;
  for (const auto& item : value.items()) {
    out += pad;
    size_t start = out.size() - pad.size();
    bool expand_child = false;
    if (value.is_object()) {
      out += inline_json(Json(item.key())) + ": ";
      expand_child = std::find(expanded.begin(), expanded.end(), item.key()) != expanded.end();
    }
    // Room for the comma after the element.
    write_json(item.value(), indent + 2, out.size() - start + 1, expand_child, expanded, out);
    out += ++i < value.size() ? ",\n" : "\n";
  }
  out += std::string(indent, ' ') + (value.is_object() ? "}" : "]");
}

}  // namespace

std::string format_json(const Json& value, const std::vector<std::string>& expanded) {
  std::string out;
  write_json(value, 0, 0, false, expanded, out);
  return out + "\n";
}

}  // namespace pf
