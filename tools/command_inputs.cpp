// What the commands share about their inputs and outputs: files in parts, --bind, integer lists, output files.
#include <charconv>
#include <fstream>
#include <iostream>

#include "tools/command.h"

namespace pf::tools {

namespace {

// The parts of a file between `// -----` lines, each padded with newlines so
// that its line numbers are the file's.
std::vector<std::shared_ptr<const SourceFile>> split_parts(const SourceFile& file) {
  std::vector<std::shared_ptr<const SourceFile>> parts;
  std::string part;
  int line = 1, part_start = 1;
  size_t pos = 0;
  const std::string& text = file.text();
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view current(text.data() + pos, end - pos);
    if (current.starts_with("// -----")) {
      parts.push_back(std::make_shared<SourceFile>(file.name(), std::string(part_start - 1, '\n') + part));
      part.clear();
      part_start = line + 1;
    } else {
      part.append(current);
      part += '\n';
    }
    pos = end + 1;
    ++line;
  }
  parts.push_back(std::make_shared<SourceFile>(file.name(), std::string(part_start - 1, '\n') + part));
  return parts;
}

}  // namespace

std::string for_each_input(const std::string& path, bool split,
                           const std::function<std::string(std::shared_ptr<const SourceFile>)>& fn) {
  std::shared_ptr<const SourceFile> source = read_model_input(path);
  if (!split) return fn(source);
  std::string out;
  bool failed = false;
  bool first = true;
  for (auto& part : split_parts(*source)) {
    if (!first) out += "// -----\n";
    first = false;
    try {
      out += fn(part);
    } catch (const Error& e) {
      std::cerr << e.render();
      failed = true;
    }
  }
  if (failed) {
    std::cout << out;
    throw AlreadyReported{};
  }
  return out;
}

void add_split_option(CLI::App& cmd, bool& split) {
  cmd.add_flag("--split-input-file", split, "treat each part between '// -----' lines as a separate model");
}

std::vector<int> parse_int_list(std::string_view text, const char* option) {
  std::vector<int> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string_view::npos) comma = text.size();
    std::string_view item = text.substr(pos, comma - pos);
    int value = 0;
    auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), value);
    if (item.empty() || ec != std::errc() || end != item.data() + item.size())
      throw Error(std::string(option) + ": expected integers separated by commas, got '" + std::string(text) + "'");
    out.push_back(value);
    pos = comma + 1;
  }
  return out;
}

void write_output(const std::string& path, const std::string& text) {
  if (path.empty() || path == "-") {
    std::cout << text;
    return;
  }
  std::ofstream out(path, std::ios::binary);
  if (!out) throw Error("cannot write '" + path + "'");
  out << text;
  if (!out.flush()) throw Error("writing '" + path + "' failed");
}

void add_bind_option(CLI::App& cmd, std::string& bind) {
  cmd.add_option("--bind", bind, "override dimensions declared in the model, e.g. B=8,T=64");
}

}  // namespace pf::tools
