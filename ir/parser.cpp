// Reads the textual IR into a Module.
//
//   module    := (dim | func | graph)*
//   dim       := 'dim' NAME '=' INT
//   function  := ('func' | 'graph') @NAME '(' [%arg ':' type {',' ...}] ')'
//                '->' (type | '(' [type {',' type}] ')') '{' op* 'return' [%v {',' %v}] '}'
//   op        := %r {',' %r} '=' OPNAME [operands] {NAME '=' attr} [':' type {',' type}]
//   operands  := %v {',' %v}            (call: @NAME '(' [%v {',' %v}] ')')
//   type      := DTYPE '[' [dimexpr {',' dimexpr}] ']'
#include "ir/parser.h"

#include <fmt/format.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <map>

#include "ir/lexer.h"

namespace pf {

namespace {

constexpr int kMaxNesting = 64;

struct NameRef {
  std::string name;
  Location loc;
};

struct RawOp {
  std::vector<NameRef> results;
  OpKind kind;
  std::vector<NameRef> operands;
  std::vector<NamedAttr> attrs;
  std::vector<SymType> declared;
  std::string callee;
  Location loc;
};

class Parser {
 public:
  explicit Parser(std::shared_ptr<const SourceFile> file) : source_(file), lexer_(std::move(file)) {
    tok_ = lexer_.next();
  }

  Module parse() {
    Module m;
    m.source = source_;
    while (tok_.kind != Tok::eof) {
      if (is_keyword("dim")) {
        parse_dim(m);
      } else if (is_keyword("func") || is_keyword("graph")) {
        m.functions.push_back(parse_function());
        const Function& f = m.functions.back();
        for (size_t i = 0; i + 1 < m.functions.size(); ++i)
          if (m.functions[i].name == f.name)
            fail(fmt::format("redefinition of @{}; the first definition is at line {}", f.name,
                             m.functions[i].loc.line),
                 f.loc);
        if (f.is_graph)
          for (size_t i = 0; i + 1 < m.functions.size(); ++i)
            if (m.functions[i].is_graph)
              fail(fmt::format("a module has one graph; @{} is already the graph (line {})",
                               m.functions[i].name, m.functions[i].loc.line),
                   f.loc);
      } else {
        fail_here("expected 'dim', 'func' or 'graph' at the top level");
      }
    }
    return m;
  }

 private:
  // ---- tokens ----
  Location here() const { return lexer_.location(tok_.line, tok_.col); }
  bool is_keyword(std::string_view kw) const { return tok_.kind == Tok::ident && tok_.text == kw; }
  Token take() {
    Token t = std::move(tok_);
    tok_ = lexer_.next();
    return t;
  }
  [[noreturn]] void fail(const std::string& message, const Location& loc) const { throw Error(message, loc); }
  [[noreturn]] void fail_here(const std::string& message) const { fail(message, here()); }
  std::string found() const {
    switch (tok_.kind) {
      case Tok::eof: return "end of file";
      case Tok::ident: return "'" + tok_.text + "'";
      case Tok::value_name: return "'%" + tok_.text + "'";
      case Tok::func_name: return "'@" + tok_.text + "'";
      case Tok::integer:
      case Tok::real: return "'" + tok_.text + "'";
      case Tok::string: return quote(tok_.text);
      default: return std::string(tok_spelling(tok_.kind));
    }
  }
  Token expect(Tok kind, std::string_view what = {}) {
    if (tok_.kind != kind)
      fail_here(fmt::format("expected {}, found {}", what.empty() ? tok_spelling(kind) : what, found()));
    return take();
  }
  void expect_keyword(std::string_view kw) {
    if (!is_keyword(kw)) fail_here(fmt::format("expected '{}', found {}", kw, found()));
    take();
  }
  int64_t parse_int_literal(const Token& t) {
    int64_t v = 0;
    auto [end, ec] = std::from_chars(t.text.data(), t.text.data() + t.text.size(), v);
    if (ec != std::errc() || end != t.text.data() + t.text.size())
      fail(fmt::format("integer '{}' is too large (the limit is 2^63-1)", t.text), lexer_.location(t.line, t.col));
    return v;
  }

  // ---- top level ----
  void parse_dim(Module& m) {
    Location loc = here();
    take();
    Token name = expect(Tok::ident, "a dimension name");
    Location name_loc = lexer_.location(name.line, name.col);
    for (const DimDecl& d : m.dims)
      if (d.name == name.text)
        fail(fmt::format("redefinition of dimension '{}'; the first definition is at line {}", name.text,
                         d.loc.line),
             name_loc);
    if (name.text.find('.') != std::string::npos)
      fail(fmt::format("dimension name '{}' may not contain '.'", name.text), name_loc);
    expect(Tok::equal);
    Token value = expect(Tok::integer, "a positive integer");
    int64_t v = parse_int_literal(value);
    if (v <= 0) fail(fmt::format("dimension '{}' must be positive", name.text), lexer_.location(value.line, value.col));
    m.dims.push_back({name.text, v, loc});
  }

  Function parse_function() {
    Function f;
    f.is_graph = tok_.text == "graph";
    take();
    Token name = expect(Tok::func_name, "a function name (@name)");
    f.name = name.text;
    f.loc = lexer_.location(name.line, name.col);
    std::map<std::string, Location, std::less<>> defined;

    expect(Tok::lparen);
    if (tok_.kind != Tok::rparen) {
      for (;;) {
        Token arg = expect(Tok::value_name, "an argument (%name)");
        Location loc = lexer_.location(arg.line, arg.col);
        define(defined, arg.text, loc);
        expect(Tok::colon);
        f.arg_types.push_back(parse_type());
        ValueId id = f.add_value(arg.text, loc);
        f.args.push_back(id);
        if (tok_.kind != Tok::comma) break;
        take();
      }
    }
    expect(Tok::rparen);
    expect(Tok::arrow);
    if (tok_.kind == Tok::lparen) {
      take();
      if (tok_.kind != Tok::rparen) {
        f.result_types.push_back(parse_type());
        while (tok_.kind == Tok::comma) {
          take();
          f.result_types.push_back(parse_type());
        }
      }
      expect(Tok::rparen);
    } else {
      f.result_types.push_back(parse_type());
    }
    expect(Tok::lbrace);

    std::vector<RawOp> raw;
    while (!is_keyword("return")) {
      if (tok_.kind == Tok::rbrace || tok_.kind == Tok::eof) fail_here(fmt::format("@{} ends without 'return'", f.name));
      raw.push_back(parse_op());
      for (const NameRef& r : raw.back().results) define(defined, r.name, r.loc);
    }
    f.return_loc = here();
    take();
    std::vector<NameRef> returned;
    if (tok_.kind == Tok::value_name) {
      returned.push_back(take_value_ref());
      while (tok_.kind == Tok::comma) {
        take();
        returned.push_back(take_value_ref());
      }
    }
    expect(Tok::rbrace, "'}' after return");

    // Resolve names now that every definition is known, so that a use before
    // its definition can be told from a name that is never defined.
    std::map<std::string, ValueId, std::less<>> ids;
    for (ValueId a : f.args) ids[f.values[a].name] = a;
    auto resolve = [&](const NameRef& ref) {
      auto it = ids.find(ref.name);
      if (it != ids.end()) return it->second;
      auto later = defined.find(ref.name);
      if (later != defined.end())
        fail(fmt::format("%{} is used before its definition at line {}", ref.name, later->second.line), ref.loc);
      fail(fmt::format("use of undefined value %{}", ref.name), ref.loc);
    };
    for (RawOp& r : raw) {
      Op op;
      op.kind = r.kind;
      for (const NameRef& ref : r.operands) op.operands.push_back(resolve(ref));
      int index = static_cast<int>(f.ops.size());
      for (const NameRef& res : r.results) {
        ValueId id = f.add_value(res.name, res.loc);
        f.values[id].def_op = index;
        ids[res.name] = id;
        op.results.push_back(id);
      }
      op.attrs = std::move(r.attrs);
      op.declared = std::move(r.declared);
      op.callee = std::move(r.callee);
      op.loc = r.loc;
      f.ops.push_back(std::move(op));
    }
    for (const NameRef& ref : returned) f.returns.push_back(resolve(ref));
    return f;
  }

  void define(std::map<std::string, Location, std::less<>>& defined, const std::string& name, const Location& loc) {
    auto [it, fresh] = defined.emplace(name, loc);
    if (!fresh)
      fail(fmt::format("redefinition of %{}; the first definition is at line {}", name, it->second.line), loc);
  }

  NameRef take_value_ref() {
    Token t = expect(Tok::value_name, "a value (%name)");
    return {t.text, lexer_.location(t.line, t.col)};
  }

  // ---- ops ----
  RawOp parse_op() {
    RawOp op;
    op.results.push_back(take_value_ref());
    while (tok_.kind == Tok::comma) {
      take();
      op.results.push_back(take_value_ref());
    }
    expect(Tok::equal);
    op.loc = here();
    Token name = expect(Tok::ident, "an op name");
    auto kind = find_op(name.text);
    if (!kind) fail(fmt::format("unknown op '{}'", name.text), op.loc);
    op.kind = *kind;

    if (op.kind == OpKind::call) {
      Token callee = expect(Tok::func_name, "a function name (@name)");
      op.callee = callee.text;
      expect(Tok::lparen);
      if (tok_.kind != Tok::rparen) {
        op.operands.push_back(take_value_ref());
        while (tok_.kind == Tok::comma) {
          take();
          op.operands.push_back(take_value_ref());
        }
      }
      expect(Tok::rparen);
    } else if (tok_.kind == Tok::value_name) {
      op.operands.push_back(take_value_ref());
      while (tok_.kind == Tok::comma) {
        take();
        op.operands.push_back(take_value_ref());
      }
    }

    // An op without a written type may be followed directly by `return`.
    while (tok_.kind == Tok::ident && tok_.text != "return") {
      Location loc = here();
      Token attr = take();
      const AttrSpec* spec = find_attr_spec(op.kind, attr.text);
      if (!spec) {
        std::string known;
        for (const AttrSpec& s : op_info(op.kind).attrs) known += (known.empty() ? "" : ", ") + std::string(s.name);
        fail(fmt::format("unknown attribute '{}' for op '{}'{}", attr.text, name.text,
                         known.empty() ? "; it takes none" : "; it takes: " + known),
             loc);
      }
      for (const NamedAttr& a : op.attrs)
        if (a.name == attr.text) fail(fmt::format("attribute '{}' is given twice", attr.text), loc);
      expect(Tok::equal, fmt::format("'=' after attribute '{}'", attr.text));
      op.attrs.push_back({attr.text, parse_attr_value(*spec), loc});
    }

    if (tok_.kind == Tok::colon) {
      take();
      op.declared.push_back(parse_type());
      while (tok_.kind == Tok::comma) {
        take();
        op.declared.push_back(parse_type());
      }
    }
    return op;
  }

  Attr parse_attr_value(const AttrSpec& spec) {
    switch (spec.kind) {
      case AttrKind::dim:
        return Attr::of_dim(parse_dim_expr(0));
      case AttrKind::dims:
        return Attr::of_dims(parse_dim_list());
      case AttrKind::real:
        return Attr::of_real(parse_real());
      case AttrKind::boolean:
        if (is_keyword("true") || is_keyword("false")) return Attr::of_bool(take().text == "true");
        fail_here(fmt::format("attribute '{}' takes true or false, found {}", spec.name, found()));
      case AttrKind::string:
        return Attr::of_string(expect(Tok::string, "a string").text);
      case AttrKind::dtype: {
        Location loc = here();
        Token t = expect(Tok::ident, "a dtype");
        auto dt = parse_dtype(t.text);
        if (!dt) fail(fmt::format("unknown dtype '{}'; use f32, f16, bf16, f64, i32, i64 or bool", t.text), loc);
        return Attr::of_dtype(*dt);
      }
      case AttrKind::init:
        return Attr::of_init(parse_init());
    }
    fail_here("unreachable attribute kind");
  }

  Init parse_init() {
    Location loc = here();
    Token t = expect(Tok::ident, "an initializer");
    Init init;
    if (!parse_init_kind(t.text, &init.kind))
      fail(fmt::format("unknown initializer '{}'; use zeros, ones, normal(std), uniform(a,b), xavier or kaiming",
                       t.text),
           loc);
    if (tok_.kind == Tok::lparen) {
      take();
      if (tok_.kind != Tok::rparen) {
        init.args.push_back(parse_real());
        while (tok_.kind == Tok::comma) {
          take();
          init.args.push_back(parse_real());
        }
      }
      expect(Tok::rparen);
    }
    int arity = init_arity(init.kind);
    if (static_cast<int>(init.args.size()) != arity)
      fail(fmt::format("initializer '{}' takes {} argument{}, got {}", t.text, arity, arity == 1 ? "" : "s",
                       init.args.size()),
           loc);
    return init;
  }

  double parse_real() {
    Location loc = here();
    bool negative = false;
    if (tok_.kind == Tok::minus) {
      take();
      negative = true;
    }
    double v = 0;
    if (is_keyword("inf")) {
      take();
      v = INFINITY;
    } else if (is_keyword("nan")) {
      take();
      v = NAN;
    } else if (tok_.kind == Tok::integer || tok_.kind == Tok::real) {
      Token t = take();
      errno = 0;
      v = std::strtod(t.text.c_str(), nullptr);
      if (errno == ERANGE && std::isinf(v)) fail(fmt::format("number '{}' is out of range", t.text), loc);
    } else {
      fail_here(fmt::format("expected a number, found {}", found()));
    }
    return negative ? -v : v;
  }

  std::vector<DimExpr> parse_dim_list() {
    expect(Tok::lbracket);
    std::vector<DimExpr> dims;
    if (tok_.kind != Tok::rbracket) {
      dims.push_back(parse_dim_expr(0));
      while (tok_.kind == Tok::comma) {
        take();
        dims.push_back(parse_dim_expr(0));
      }
    }
    expect(Tok::rbracket, "',' or ']'");
    return dims;
  }

  // Precedence climbing: + - bind looser than * /, unary minus tightest.
  DimExpr parse_dim_expr(int depth) {
    if (depth > kMaxNesting) fail_here("dimension expression is nested too deeply");
    DimExpr lhs = parse_dim_term(depth);
    while (tok_.kind == Tok::plus || tok_.kind == Tok::minus) {
      auto kind = take().kind == Tok::plus ? DimExpr::Kind::add : DimExpr::Kind::sub;
      lhs = DimExpr::binary(kind, lhs, parse_dim_term(depth));
    }
    return lhs;
  }

  DimExpr parse_dim_term(int depth) {
    DimExpr lhs = parse_dim_factor(depth);
    while (tok_.kind == Tok::star || tok_.kind == Tok::slash) {
      auto kind = take().kind == Tok::star ? DimExpr::Kind::mul : DimExpr::Kind::div;
      lhs = DimExpr::binary(kind, lhs, parse_dim_factor(depth));
    }
    return lhs;
  }

  DimExpr parse_dim_factor(int depth) {
    if (depth > kMaxNesting) fail_here("dimension expression is nested too deeply");
    switch (tok_.kind) {
      case Tok::integer: {
        Token t = take();
        return DimExpr(parse_int_literal(t));
      }
      case Tok::minus: {
        take();
        // A negated literal is the literal itself, so that `-1` prints as typed.
        if (tok_.kind == Tok::integer) {
          Token t = take();
          return DimExpr(-parse_int_literal(t));
        }
        return DimExpr::negate(parse_dim_factor(depth + 1));
      }
      case Tok::ident:
        if (tok_.text.find('.') != std::string::npos) fail_here(fmt::format("'{}' is not a dimension name", tok_.text));
        return DimExpr::symbol(take().text);
      case Tok::lparen: {
        take();
        DimExpr e = parse_dim_expr(depth + 1);
        expect(Tok::rparen);
        return e;
      }
      default:
        fail_here(fmt::format("expected a dimension (an integer or a name), found {}", found()));
    }
  }

  SymType parse_type() {
    Location loc = here();
    Token t = expect(Tok::ident, "a type such as f32[B,T]");
    auto dt = parse_dtype(t.text);
    if (!dt) fail(fmt::format("unknown dtype '{}'; use f32, f16, bf16, f64, i32, i64 or bool", t.text), loc);
    SymType type;
    type.dtype = *dt;
    if (tok_.kind != Tok::lbracket)
      fail_here(fmt::format("expected '[' after '{}': a type is written {}[dims], {}[] for a scalar", t.text,
                            t.text, t.text));
    type.dims = parse_dim_list();
    return type;
  }

  std::shared_ptr<const SourceFile> source_;
  Lexer lexer_;
  Token tok_;
};

}  // namespace

namespace {
std::atomic<int64_t> parsed{0};
}  // namespace

Module parse_module(std::shared_ptr<const SourceFile> file) {
  parsed.fetch_add(1, std::memory_order_relaxed);
  return Parser(std::move(file)).parse();
}

int64_t modules_parsed() { return parsed.load(std::memory_order_relaxed); }

Module parse_module_text(std::string name, std::string text) {
  return parse_module(std::make_shared<SourceFile>(std::move(name), std::move(text)));
}

}  // namespace pf
