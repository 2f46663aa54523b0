// Tokens of the textual IR.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "ir/diagnostic.h"

namespace pf {

enum class Tok : uint8_t {
  eof,
  ident,       // dim, func, f32, init, h.0 ...
  value_name,  // %x  (text holds the name without '%')
  func_name,   // @block
  integer,     // 42
  real,        // 0.02, 1e-5
  string,      // "h.0" (text holds the unescaped contents)
  lparen, rparen, lbracket, rbracket, lbrace, rbrace,
  comma, colon, equal, arrow, plus, minus, star, slash,
};

std::string_view tok_spelling(Tok t);

struct Token {
  Tok kind = Tok::eof;
  std::string text;
  int line = 1;
  int col = 1;
};

/// Splits IR text into tokens; `//` starts a comment to the end of the line.
/// Bad bytes, unterminated strings and runaway literals are located errors.
class Lexer {
 public:
  explicit Lexer(std::shared_ptr<const SourceFile> file) : file_(std::move(file)) {}
  Token next();
  Location location(int line, int col) const { return {file_, line, col}; }

 private:
  [[noreturn]] void fail(const std::string& message, int line, int col) const;
  char peek(size_t ahead = 0) const;
  void advance();

  std::shared_ptr<const SourceFile> file_;
  size_t pos_ = 0;
  int line_ = 1;
  int col_ = 1;
};

}  // namespace pf
