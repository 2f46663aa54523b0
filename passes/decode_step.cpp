// decode-step: a causal language model's graph into one step of incremental
// decoding with a cache of keys and values (a "KV cache"), so that a token
// drawn after n others costs one position's work instead of n + 1.
//
// The graph, typed for N new tokens (its sequence dimension bound to N),
//   graph @lm(%tokens: i32[B,N], %targets: i32[B,N]) -> f32[]   (the loss: cross_entropy of %logits)
// becomes
//   graph @lm(%tokens: i32[B,N], %positions: i32[B,N],
//             %<k>.cache: [B,S,H,D], %<v>.cache: [B,S,H,D], ...)   (per attention; S = the cache's length)
//       -> (%logits, %<k>, %<v>, ...)                                 (the new positions' keys and values)
// where
//   - each causal `attention %q, %k, %v` becomes `cached_attention %q, %k,
//     %v, %<k>.cache, %<v>.cache, %positions`: the new queries of sequence b
//     see the first positions[b, 0] cached rows and the new keys up to their
//     own;
//   - a slice of the rows [0, N) of a table computed from parameters alone
//     (a learned position embedding: `slice %wpe axis=0 start=0 end=T`)
//     becomes `embedding %wpe, %positions`, the rows at the new positions;
//   - each `rope %x` turns its rows by the new positions: `rope %x, %positions`.
// Each sequence has positions of its own, so that sequences of different
// lengths decode side by side, where every rotation and attention leads with
// the batch; otherwise %positions is i32[N], one row for all sequences.
// The caller keeps the caches: it writes each step's new keys and values at
// their positions before the next step.
//
// Every other op must treat each position on its own (norms over features,
// products with weights, elementwise ops), as in a GPT. The pass does not
// prove it; the language model that runs these steps compares their logits
// with the whole graph's before it relies on them.
#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "passes/pass.h"
#include "passes/rewrite.h"

namespace pf {

namespace {

class DecodeStepPass final : public Pass {
 public:
  std::string_view name() const override { return "decode-step"; }
  std::string_view summary() const override {
    return "rewrite a causal language model into one step of incremental decoding over a cache of keys and values";
  }

  bool run(Module& m, PassContext& ctx) override {
    if (ctx.decode_context <= 0)
      throw Error("decode-step: the cache's length is not set (opt --decode-context N: the positions it holds)");
    Function& g = m.graph();
    if (g.args.empty() || g.type_of(g.args[0]).dtype != DType::i32 || g.type_of(g.args[0]).rank() != 2)
      throw Error(fmt::format("decode-step: @{} does not read tokens: its first input must be i32[B,N]", g.name),
                  g.loc);
    const int64_t fresh = g.type_of(g.args[0]).shape[1];
    if (fresh > ctx.decode_context)
      throw Error(fmt::format("decode-step: @{} reads {} tokens at once, more than the cache's {} positions", g.name,
                              fresh, ctx.decode_context),
                  g.loc);
    cut_at_logits(g);
    make_dce_pass()->run(m, ctx);
    keep_tokens_only(g);
    FreshNames fresh_name(g);
    const SymType& tokens = g.arg_types[0];
    const ValueId positions =
        add_arg(g, fresh_name("positions"),
                {DType::i32, batch_leads(g, g.type_of(g.args[0]).shape[0], ctx.binding)
                                 ? std::vector<DimExpr>{tokens.dims.at(0), tokens.dims.at(1)}
                                 : std::vector<DimExpr>{tokens.dims.at(1)}},
                ctx.binding);
    read_position_rows(g, positions, fresh, ctx.decode_context, ctx.binding);
    rotate_at_positions(g, positions, fresh, ctx.binding);
    attend_to_caches(g, positions, ctx.decode_context, fresh_name, ctx.binding);
    compact_values(g);
    return true;
  }

 private:
  // A value's type as written (its dimensions' names kept), or in numbers.
  static SymType written_type(const Function& g, ValueId v) {
    for (size_t i = 0; i < g.args.size(); ++i)
      if (g.args[i] == v) return g.arg_types[i];
    const int def = g.values[static_cast<size_t>(v)].def_op;
    if (def >= 0) {
      const Op& op = g.ops[static_cast<size_t>(def)];
      for (size_t r = 0; r < op.results.size() && r < op.declared.size(); ++r)
        if (op.results[r] == v) return op.declared[r];
    }
    return SymType::from(g.type_of(v));
  }

  static ValueId add_arg(Function& g, const std::string& name, SymType written, const DimBinding& binding) {
    const ValueId v = g.add_value(name, g.loc);
    g.values[static_cast<size_t>(v)].type = written.bind(binding);
    g.args.push_back(v);
    g.arg_types.push_back(std::move(written));
    return v;
  }

  // The position axis of a rope (its `axis`) or of an attention's queries.
  static int64_t position_axis(const Function& g, const Op& op, const DimBinding& binding) {
    const TensorType& x = g.type_of(op.operands[0]);
    int64_t axis = 0;
    if (op.kind == OpKind::rope) {
      const Attr* a = op.attr("axis");
      axis = a ? a->dim.evaluate(binding).value_or(-2) : -2;
    } else {
      const Attr* layout = op.attr("layout");
      axis = layout && layout->string == "bthd" ? -3 : -2;
    }
    return axis < 0 ? axis + x.rank() : axis;
  }

  // Whether every rope and attention leads with the batch of `batch`
  // sequences, ahead of its positions' axis: then each sequence can read
  // positions of its own.
  static bool batch_leads(const Function& g, int64_t batch, const DimBinding& binding) {
    for (const Op& op : g.ops) {
      if (!(op.kind == OpKind::rope && op.operands.size() == 1) && op.kind != OpKind::attention) continue;
      if (position_axis(g, op, binding) < 1 || g.type_of(op.operands[0]).shape[0] != batch) return false;
    }
    return true;
  }

  static void set_returns(Function& g, std::vector<ValueId> values) {
    g.returns = std::move(values);
    g.result_types.clear();
    for (ValueId v : g.returns) g.result_types.push_back(written_type(g, v));
  }

  // The graph returns the logits its loss reads (or, without a loss, its
  // first result) in place of the loss.
  static void cut_at_logits(Function& g) {
    if (g.returns.empty()) throw Error(fmt::format("decode-step: @{} returns nothing", g.name), g.loc);
    ValueId logits = g.returns[0];
    const Value& result = g.values[static_cast<size_t>(logits)];
    if (result.def_op >= 0 && g.ops[static_cast<size_t>(result.def_op)].kind == OpKind::cross_entropy)
      logits = g.ops[static_cast<size_t>(result.def_op)].operands[0];
    set_returns(g, {logits});
  }

  // Inputs besides the tokens go (the targets only the loss read); one that
  // the logits still read cannot be given at each step.
  static void keep_tokens_only(Function& g) {
    const std::vector<std::vector<int>> users = g.users();
    for (size_t i = 1; i < g.args.size(); ++i)
      if (!users[static_cast<size_t>(g.args[i])].empty())
        throw Error(fmt::format("decode-step: @{} reads %{} besides its tokens on the way to its logits", g.name,
                                g.values[static_cast<size_t>(g.args[i])].name),
                    g.values[static_cast<size_t>(g.args[i])].loc);
    g.args.resize(1);
    g.arg_types.resize(1);
  }

  // Slices of the first `fresh` rows of a parameter table read the rows at
  // the new positions instead.
  static void read_position_rows(Function& g, ValueId positions, int64_t fresh, int64_t context,
                                 const DimBinding& binding) {
    std::vector<bool> from_inputs(g.values.size(), false);
    for (ValueId a : g.args) from_inputs[static_cast<size_t>(a)] = true;
    for (Op& op : g.ops) {
      bool reads_input = false;
      for (ValueId v : op.operands) reads_input = reads_input || from_inputs[static_cast<size_t>(v)];
      for (ValueId r : op.results) from_inputs[static_cast<size_t>(r)] = reads_input;
      if (op.kind != OpKind::slice || reads_input) continue;
      const TensorType& table = g.type_of(op.operands[0]);
      const auto attr = [&](const char* name) {
        const Attr* a = op.attr(name);
        return a ? a->dim.evaluate(binding).value_or(-1) : -1;
      };
      if (table.rank() != 2 || attr("axis") != 0 || attr("start") != 0 || attr("end") != fresh) continue;
      if (table.shape[0] < context)
        throw Error(fmt::format("decode-step: the position table %{} has {} rows, fewer than the cache's {} positions",
                                g.values[static_cast<size_t>(op.operands[0])].name, table.shape[0], context),
                    op.loc);
      op.kind = OpKind::embedding;
      op.operands = {op.operands[0], positions};
      std::erase_if(op.attrs, [](const NamedAttr& a) { return a.name != "layer"; });
      // Each sequence's own rows, [B, N, C], where the positions are per sequence.
      const SymType at = written_type(g, positions);
      if (at.dims.size() == 2) {
        const TensorType& p = g.type_of(positions);
        g.values[static_cast<size_t>(op.results[0])].type = {table.dtype, {p.shape[0], p.shape[1], table.shape[1]}};
        if (!op.declared.empty()) op.declared[0].dims.insert(op.declared[0].dims.begin(), at.dims[0]);
      }
    }
  }

  // Rotary embeddings turn each new row by its position in the sequence,
  // not by its index among the new rows.
  static void rotate_at_positions(Function& g, ValueId positions, int64_t fresh, const DimBinding& binding) {
    for (Op& op : g.ops) {
      if (op.kind != OpKind::rope || op.operands.size() != 1) continue;
      const TensorType& x = g.type_of(op.operands[0]);
      const int64_t axis = position_axis(g, op, binding);
      if (x.shape[static_cast<size_t>(axis)] != fresh)
        throw Error(fmt::format("decode-step: %{} turns along axis {} of {} rows, which are not the {} new positions",
                                g.values[static_cast<size_t>(op.results[0])].name, axis,
                                x.shape[static_cast<size_t>(axis)], fresh),
                    op.loc);
      op.operands.push_back(positions);
    }
  }

  // Each causal attention reads its keys and values from caches of
  // `context` positions and returns the new ones.
  static void attend_to_caches(Function& g, ValueId positions, int64_t context, FreshNames& fresh_name,
                               const DimBinding& binding) {
    const std::vector<std::vector<int>> users = g.users();
    std::vector<ValueId> returns = g.returns;
    for (size_t i = 0; i < g.ops.size(); ++i) {
      if (g.ops[i].kind != OpKind::attention) continue;
      const Op& att = g.ops[i];
      const std::string out = g.values[static_cast<size_t>(att.results[0])].name;  // add_arg grows g.values
      const Attr* causal = att.attr("causal");
      if (!causal || !causal->boolean)
        throw Error(fmt::format("decode-step: %{} attends without a causal mask: decoding step by step needs each "
                                "position to see only those before it",
                                out),
                    att.loc);
      if (!users[static_cast<size_t>(att.results[1])].empty())
        throw Error(fmt::format("decode-step: the log-sum-exp of %{} is read; a cached attention has none", out),
                    att.loc);
      const Attr* layout = att.attr("layout");
      const bool bthd = layout && layout->string == "bthd";
      std::vector<ValueId> operands = att.operands;
      for (int kv = 1; kv <= 2; ++kv) {
        const ValueId fresh_rows = att.operands[static_cast<size_t>(kv)];
        SymType cache = written_type(g, fresh_rows);
        cache.dims[cache.dims.size() - (bthd ? 3 : 2)] = context;
        operands.push_back(
            add_arg(g, fresh_name(g.values[static_cast<size_t>(fresh_rows)].name + ".cache"), cache, binding));
        returns.push_back(fresh_rows);
      }
      operands.push_back(positions);
      Op& op = g.ops[i];
      op.kind = OpKind::cached_attention;
      op.operands = std::move(operands);
      op.results.resize(1);
      if (!op.declared.empty()) op.declared.resize(1);
      op.erase_attr("causal");
    }
    set_returns(g, std::move(returns));
  }
};

}  // namespace

std::unique_ptr<Pass> make_decode_step_pass() { return std::make_unique<DecodeStepPass>(); }

}  // namespace pf
