// Reading and writing JSON files: shared by every JSON file Pipeforge reads
// and writes (plans, device profiles, clusters, checkpoint indexes), so that
// all of them report errors alike.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace pf {

/// Parses a JSON document read from `path`. A syntax error is a pf::Error
/// located in `text` (line, column, the line quoted).
nlohmann::ordered_json parse_json_document(const std::string& text, const std::string& path);

/// Typed access to the fields of a parsed JSON file. Every failure is a
/// pf::Error that names the file and the field by its path in the document,
/// e.g. "plan.json: stages[1].device must be an integer". `where` is the
/// path of the object read from: "" for the document itself, "stages[1]"...
class JsonReader {
 public:
  using Json = nlohmann::ordered_json;

  explicit JsonReader(std::string path) : path_(std::move(path)) {}
  const std::string& path() const { return path_; }

  /// Throws pf::Error("<path>: <what>").
  [[noreturn]] void fail(const std::string& what) const;

  /// `object` must be an object holding exactly `keys`, and any of
  /// `optional`: a missing key and an unknown one (a misspelt field) are both
  /// errors.
  void expect_keys(const Json& object, std::string_view where, std::initializer_list<std::string_view> keys,
                   std::initializer_list<std::string_view> optional = {}) const;
  const Json& member(const Json& object, std::string_view where, std::string_view key) const;
  std::string string(const Json& object, std::string_view where, std::string_view key) const;
  bool boolean(const Json& object, std::string_view where, std::string_view key) const;
  int64_t integer(const Json& object, std::string_view where, std::string_view key,
                  int64_t min = std::numeric_limits<int64_t>::min(),
                  int64_t max = std::numeric_limits<int64_t>::max()) const;
  double number(const Json& object, std::string_view where, std::string_view key,
                double min = -std::numeric_limits<double>::infinity()) const;
  const Json& array(const Json& object, std::string_view where, std::string_view key) const;
  const Json& object(const Json& object, std::string_view where, std::string_view key) const;

  /// "stages[1]" + "device" -> "stages[1].device"; "" + "stages" -> "stages".
  static std::string at(std::string_view where, std::string_view key);
  /// "stages" + 1 -> "stages[1]".
  static std::string at(std::string_view where, size_t index);

 private:
  std::string path_;
};

/// `value` pretty-printed with two-space indentation. An array or object is
/// kept on one line when it fits in 100 columns and holds none of the keys
/// in `expanded`, whose arrays always get one element per line (programs:
/// one line of IR per line).
std::string format_json(const nlohmann::ordered_json& value, const std::vector<std::string>& expanded = {});

}  // namespace pf
