// Located errors and the source text they quote.
#include "ir/diagnostic.h"

#include <fstream>
#include <sstream>

namespace pf {

SourceFile::SourceFile(std::string name, std::string text)
    : name_(std::move(name)), text_(std::move(text)) {
  line_starts_.push_back(0);
  for (size_t i = 0; i < text_.size(); ++i)
    if (text_[i] == '\n') line_starts_.push_back(i + 1);
}

std::string_view SourceFile::line(int line) const {
  if (line < 1 || static_cast<size_t>(line) > line_starts_.size()) return {};
  size_t begin = line_starts_[line - 1];
  size_t end = text_.find('\n', begin);
  if (end == std::string::npos) end = text_.size();
  if (end > begin && text_[end - 1] == '\r') --end;
  return std::string_view(text_).substr(begin, end - begin);
}

std::string Error::render() const {
  std::string out;
  if (!loc_.known()) return "error: " + message_ + "\n";
  out += loc_.file->name() + ":" + std::to_string(loc_.line) + ":" + std::to_string(loc_.col) +
         ": error: " + message_ + "\n";
  // Quote the line with control bytes made visible, so binary junk cannot
  // scramble the terminal, and keep the caret aligned with tabs.
  std::string_view src = loc_.file->line(loc_.line);
  std::string shown, caret;
  for (size_t i = 0; i < src.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(src[i]);
    bool before_col = static_cast<int>(i) < loc_.col - 1;
    if (c == '\t') {
      shown += '\t';
      if (before_col) caret += '\t';
    } else if (c < 0x20 || c == 0x7f) {
      shown += '?';
      if (before_col) caret += ' ';
    } else {
      shown += static_cast<char>(c);
      // Continuation bytes of UTF-8 take no column on a terminal.
      if (before_col && (c & 0xC0) != 0x80) caret += ' ';
    }
  }
  out += shown + "\n" + caret + "^\n";
  return out;
}

std::shared_ptr<const SourceFile> read_source_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open '" + path + "'");
  std::ostringstream buf;
  buf << in.rdbuf();
  return std::make_shared<SourceFile>(path, buf.str());
}

}  // namespace pf
