// Tokens of the textual IR.
#include "ir/lexer.h"

#include <fmt/format.h>

namespace pf {

namespace {
bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_char(char c) { return is_name_start(c) || is_digit(c) || c == '.'; }
constexpr size_t kMaxTokenLength = 4096;
}  // namespace

std::string_view tok_spelling(Tok t) {
  switch (t) {
    case Tok::eof: return "end of file";
    case Tok::ident: return "a name";
    case Tok::value_name: return "a value (%name)";
    case Tok::func_name: return "a function name (@name)";
    case Tok::integer: return "an integer";
    case Tok::real: return "a number";
    case Tok::string: return "a string";
    case Tok::lparen: return "'('";
    case Tok::rparen: return "')'";
    case Tok::lbracket: return "'['";
    case Tok::rbracket: return "']'";
    case Tok::lbrace: return "'{'";
    case Tok::rbrace: return "'}'";
    case Tok::comma: return "','";
    case Tok::colon: return "':'";
    case Tok::equal: return "'='";
    case Tok::arrow: return "'->'";
    case Tok::plus: return "'+'";
    case Tok::minus: return "'-'";
    case Tok::star: return "'*'";
    case Tok::slash: return "'/'";
  }
  return "?";
}

char Lexer::peek(size_t ahead) const {
  const std::string& t = file_->text();
  return pos_ + ahead < t.size() ? t[pos_ + ahead] : '\0';
}

void Lexer::advance() {
  if (peek() == '\n') {
    ++line_;
    col_ = 1;
  } else {
    ++col_;
  }
  ++pos_;
}

void Lexer::fail(const std::string& message, int line, int col) const {
  throw Error(message, location(line, col));
}

Token Lexer::next() {
  const std::string& text = file_->text();
  // Skip blanks and comments.
  for (;;) {
    char c = peek();
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      advance();
    } else if (c == '/' && peek(1) == '/') {
      while (pos_ < text.size() && peek() != '\n') advance();
    } else {
      break;
    }
  }
  Token tok;
  tok.line = line_;
  tok.col = col_;
  if (pos_ >= text.size()) return tok;

  char c = peek();
  auto take_name = [&] {
    std::string s;
    while (is_name_char(peek())) {
      s += peek();
      advance();
      if (s.size() > kMaxTokenLength) fail("name is longer than 4096 characters", tok.line, tok.col);
    }
    return s;
  };

  if (c == '%' || c == '@') {
    advance();
    if (!is_name_char(peek()))
      fail(fmt::format("expected a name after '{}'", c), tok.line, tok.col);
    tok.kind = c == '%' ? Tok::value_name : Tok::func_name;
    tok.text = take_name();
    return tok;
  }
  if (is_name_start(c)) {
    tok.kind = Tok::ident;
    tok.text = take_name();
    return tok;
  }
  if (is_digit(c)) {
    tok.kind = Tok::integer;
    while (is_digit(peek())) {
      tok.text += peek();
      advance();
    }
    if (peek() == '.' && is_digit(peek(1))) {
      tok.kind = Tok::real;
      tok.text += '.';
      advance();
      while (is_digit(peek())) {
        tok.text += peek();
        advance();
      }
    }
    if ((peek() == 'e' || peek() == 'E') &&
        (is_digit(peek(1)) || ((peek(1) == '-' || peek(1) == '+') && is_digit(peek(2))))) {
      tok.kind = Tok::real;
      tok.text += peek();
      advance();
      if (peek() == '-' || peek() == '+') {
        tok.text += peek();
        advance();
      }
      while (is_digit(peek())) {
        tok.text += peek();
        advance();
      }
    }
    if (tok.text.size() > kMaxTokenLength) fail("number is longer than 4096 characters", tok.line, tok.col);
    if (is_name_start(peek())) fail(fmt::format("unexpected '{}' after number '{}'", peek(), tok.text), line_, col_);
    return tok;
  }
  if (c == '"') {
    advance();
    tok.kind = Tok::string;
    for (;;) {
      char s = peek();
      if (pos_ >= text.size() || s == '\n') fail("unterminated string; close it with '\"'", tok.line, tok.col);
      advance();
      if (s == '"') break;
      if (s == '\\') {
        char e = peek();
        if (e == '"' || e == '\\') {
          tok.text += e;
          advance();
        } else if (e == 'x' && std::isxdigit(static_cast<unsigned char>(peek(1))) &&
                   std::isxdigit(static_cast<unsigned char>(peek(2)))) {
          tok.text += static_cast<char>(std::stoi(std::string{peek(1), peek(2)}, nullptr, 16));
          advance();
          advance();
          advance();
        } else {
          fail("unknown escape in string; use \\\", \\\\ or \\xNN", line_, col_ - 1);
        }
      } else {
        tok.text += s;
      }
      if (tok.text.size() > kMaxTokenLength) fail("string is longer than 4096 characters", tok.line, tok.col);
    }
    return tok;
  }

  struct Punct {
    char c;
    Tok kind;
  };
  static constexpr Punct kPunct[] = {
      {'(', Tok::lparen}, {')', Tok::rparen}, {'[', Tok::lbracket}, {']', Tok::rbracket},
      {'{', Tok::lbrace}, {'}', Tok::rbrace}, {',', Tok::comma},    {':', Tok::colon},
      {'=', Tok::equal},  {'+', Tok::plus},   {'*', Tok::star},     {'/', Tok::slash},
  };
  if (c == '-') {
    advance();
    if (peek() == '>') {
      advance();
      tok.kind = Tok::arrow;
    } else {
      tok.kind = Tok::minus;
    }
    return tok;
  }
  for (const Punct& p : kPunct)
    if (c == p.c) {
      advance();
      tok.kind = p.kind;
      return tok;
    }
  unsigned char u = static_cast<unsigned char>(c);
  if (u >= 0x21 && u < 0x7f) fail(fmt::format("unexpected character '{}'", c), tok.line, tok.col);
  fail(fmt::format("unexpected byte 0x{:02x}; IR text is ASCII outside strings and comments", u), tok.line,
       tok.col);
}

}  // namespace pf
