// fuse-attention: rewrites the attention that a model spells out op by op,
//   %s = matmul %q, %k transpose_b=true          (q, k, v: one type [..., T, D])
//   %s2 = mul %s, %scale   (or mul %scale, %s; or div %s, %root; or absent)
//   %s3 = where %mask, %s2, %minus_inf           (causal_mask, constant -inf; or absent)
//   %p = softmax %s3 axis=-1
//   %y = matmul %p, %v
// into `%y, %y.lse = attention %q, %k, %v causal=true scale=...`. k may
// also come transposed, `%kt = transpose %x perm=[...]` (single use) read by
// `matmul %q, %kt` as the ONNX importer writes it: the transpose's last two
// axes are then swapped back so that it makes k itself. The scale
// must be known when compiling: a constant, or (r)sqrt of a constant or a
// dim_value. Only chains whose intermediate values have no other user (and
// are not returned) are fused; the mask, -inf and scale ops that nothing
// else reads go with them.
//
// Then an attention whose q, k and v are each made by a transpose that swaps
// the heads and rows axes ([..., T, H, D] -> [..., H, T, D], perm [0,2,1,3]
// at rank 4) and whose o is read only by the transpose back, as a model
// splits a qkv projection into heads, reads and writes [..., T, H, D]
// directly (`layout="bthd"`), and the four transposes go: o becomes the
// value the transpose back made. Each transposed value must have no other
// user and not be returned; otherwise nothing changes.
#include <algorithm>
#include <cmath>
#include <functional>
#include <optional>

#include "ir/verifier.h"
#include "passes/pass.h"
#include "passes/rewrite.h"

namespace pf {

namespace {

class FuseAttentionPass final : public Pass {
 public:
  std::string_view name() const override { return "fuse-attention"; }
  std::string_view summary() const override {
    return "rewrite matmul, scale, causal mask, softmax and matmul into one attention op";
  }

  bool run(Module& m, PassContext& ctx) override {
    verify_module(m, ctx.binding);  // every value typed under the binding
    bool changed = false;
    for (Function& f : m.functions) changed |= run_on(f, ctx.binding);
    return changed;
  }

 private:
  struct Match {
    ValueId q, k, v;
    int k_transpose = -1;  // the op making k^T, to turn into one making k
    double scale;
    bool causal;
    std::vector<int> chain;    // the ops replaced (the final matmul's index is the last)
    std::vector<int> sources;  // ops feeding the chain that may die with it (mask, -inf, scale)
  };

  const Function* f_ = nullptr;
  std::vector<std::vector<int>> users_;
  std::vector<bool> returned_;

  // Reads `f`'s ops and who uses each value.
  void index_uses(const Function& f) {
    f_ = &f;
    users_ = f.users();
    returned_.assign(f.values.size(), false);
    for (ValueId r : f.returns) returned_[r] = true;
  }

  const Op* def(ValueId v) const {
    const int i = f_->values[v].def_op;
    return i < 0 ? nullptr : &f_->ops[i];
  }
  // Used by exactly one op and not returned.
  bool single_use(ValueId v) const { return users_[v].size() == 1 && !returned_[v]; }
  bool is_scalar(ValueId v) const { return f_->values[v].type && f_->values[v].type->rank() == 0; }

  // The value of a scalar known when compiling, with the op indices that make it.
  std::optional<double> known_scalar(ValueId v, const DimBinding& binding, std::vector<int>& ops) const {
    const Op* op = def(v);
    if (!op || !is_scalar(v)) return std::nullopt;
    const int index = f_->values[v].def_op;
    std::optional<double> value;
    if (op->kind == OpKind::constant) {
      value = op->attr("value")->real;
    } else if (op->kind == OpKind::dim_value) {
      if (auto d = op->attr("value")->dim.evaluate(binding)) value = static_cast<double>(*d);
    } else if (op->kind == OpKind::sqrt || op->kind == OpKind::rsqrt) {
      if (auto x = known_scalar(op->operands[0], binding, ops))
        value = op->kind == OpKind::sqrt ? std::sqrt(*x) : 1 / std::sqrt(*x);
    }
    if (value) ops.push_back(index);
    return value;
  }

  static bool flag(const Op& op, std::string_view name) {
    const Attr* a = op.attr(name);
    return a && a->boolean;
  }

  std::optional<Match> match(int pv_index, const DimBinding& binding) const {
    const Op& pv = f_->ops[pv_index];
    if (pv.kind != OpKind::matmul || flag(pv, "transpose_a") || flag(pv, "transpose_b")) return std::nullopt;
    Match mt{};
    mt.v = pv.operands[1];
    // softmax over the last axis.
    ValueId probs = pv.operands[0];
    const Op* softmax = def(probs);
    if (!softmax || softmax->kind != OpKind::softmax || !single_use(probs)) return std::nullopt;
    const TensorType& p_type = f_->type_of(probs);
    if (const Attr* axis = softmax->attr("axis")) {
      auto a = axis->dim.evaluate(binding);
      if (!a || (*a != -1 && *a != p_type.rank() - 1)) return std::nullopt;
    }
    mt.chain.push_back(f_->values[probs].def_op);
    // An optional causal mask.
    ValueId scores = softmax->operands[0];
    const Op* where = def(scores);
    if (where && where->kind == OpKind::where) {
      if (!single_use(scores)) return std::nullopt;
      const Op* mask = def(where->operands[0]);
      std::vector<int> fill_ops;
      auto fill = known_scalar(where->operands[2], binding, fill_ops);
      if (!mask || mask->kind != OpKind::causal_mask || !fill || !std::isinf(*fill) || *fill > 0 ||
          fill_ops.size() != 1)
        return std::nullopt;
      const TensorType& m_type = f_->type_of(where->operands[0]);
      if (m_type.rank() != 2 || m_type.shape[0] != p_type.shape[p_type.rank() - 2] ||
          m_type.shape[1] != p_type.shape.back())
        return std::nullopt;
      mt.causal = true;
      mt.chain.push_back(f_->values[scores].def_op);
      mt.sources.push_back(f_->values[where->operands[0]].def_op);
      mt.sources.push_back(fill_ops[0]);
      scores = where->operands[1];
    }
    // An optional scale.
    ValueId raw = scores;
    mt.scale = 1;
    const Op* scaling = def(scores);
    if (scaling && (scaling->kind == OpKind::mul || scaling->kind == OpKind::div)) {
      if (!single_use(scores)) return std::nullopt;
      const ValueId a = scaling->operands[0], b = scaling->operands[1];
      std::vector<int> scale_ops;
      std::optional<double> s;
      if (scaling->kind == OpKind::div) {
        raw = a;
        if (auto root = known_scalar(b, binding, scale_ops)) s = 1 / *root;
      } else if (auto sb = known_scalar(b, binding, scale_ops)) {
        raw = a;
        s = sb;
      } else if (auto sa = known_scalar(a, binding, scale_ops)) {
        raw = b;
        s = sa;
      }
      if (!s || !(*s > 0) || !std::isfinite(*s)) return std::nullopt;
      mt.scale = *s;
      mt.chain.push_back(f_->values[scores].def_op);
      mt.sources.insert(mt.sources.end(), scale_ops.begin(), scale_ops.end());
    }
    // q k^T.
    const Op* qk = def(raw);
    if (!qk || qk->kind != OpKind::matmul || flag(*qk, "transpose_a") || !single_use(raw)) return std::nullopt;
    mt.q = qk->operands[0];
    mt.k = qk->operands[1];
    TensorType k_type = f_->type_of(mt.k);
    if (!flag(*qk, "transpose_b")) {
      const Op* kt = def(mt.k);
      if (!kt || kt->kind != OpKind::transpose || !single_use(mt.k) || k_type.rank() < 2) return std::nullopt;
      mt.k_transpose = f_->values[mt.k].def_op;
      std::swap(k_type.shape[k_type.rank() - 1], k_type.shape[k_type.rank() - 2]);
    }
    // k and v of q's type, or with size 1 on heads axes of q that share them
    // (grouped-query attention, the products broadcasting over those axes).
    const TensorType& q_type = f_->type_of(mt.q);
    if (!is_float(q_type.dtype) || q_type.rank() < 2 || f_->type_of(mt.v) != k_type ||
        (k_type != q_type && !attention_groups_keys(q_type, k_type)))
      return std::nullopt;
    // No other broadcasting in the chain: every score tensor is q's [..., T, T].
    for (ValueId s : {raw, scores, softmax->operands[0], probs})
      if (f_->type_of(s) != f_->type_of(raw)) return std::nullopt;
    mt.chain.push_back(f_->values[raw].def_op);
    mt.chain.insert(mt.chain.begin(), pv_index);
    return mt;
  }

  // A transpose made to write its last two axes the other way round: perm,
  // written type and value type.
  static void swap_last_axes(Function& f, Op& t) {
    std::vector<DimExpr> perm = t.attr("perm")->dims;
    std::swap(perm[perm.size() - 1], perm[perm.size() - 2]);
    t.set_attr("perm", Attr::of_dims(std::move(perm)));
    if (!t.declared.empty()) {
      std::vector<DimExpr>& dims = t.declared[0].dims;
      std::swap(dims[dims.size() - 1], dims[dims.size() - 2]);
    }
    Shape& shape = f.values[t.results[0]].type->shape;
    std::swap(shape[shape.size() - 1], shape[shape.size() - 2]);
  }

  // A transpose that swaps the two axes before the last and keeps the others:
  // [..., T, H, D] <-> [..., H, T, D].
  static bool swaps_heads_and_rows(const Op& t, const DimBinding& binding) {
    if (t.kind != OpKind::transpose) return false;
    const std::vector<DimExpr>& perm = t.attr("perm")->dims;
    const int64_t rank = static_cast<int64_t>(perm.size());
    if (rank < 3) return false;
    for (int64_t i = 0; i < rank; ++i) {
      std::optional<int64_t> p = perm[i].evaluate(binding);
      if (!p) return false;
      if (*p < 0) *p += rank;
      const int64_t want = i == rank - 3 ? rank - 2 : i == rank - 2 ? rank - 3 : i;
      if (*p != want) return false;
    }
    return true;
  }

  // The op index of the head transpose that makes `v` for op `reader` alone
  // (q, k and v may be one value), or -1.
  int head_transpose(ValueId v, int reader, const DimBinding& binding) const {
    const Op* t = def(v);
    if (!t || returned_[v] || !swaps_heads_and_rows(*t, binding)) return -1;
    for (int user : users_[v])
      if (user != reader) return -1;
    return f_->values[v].def_op;
  }

  // Folds the head transposes around each attention op of layout "bhtd"
  // into `layout="bthd"`; true when any were.
  bool fold_head_transposes(Function& f, const DimBinding& binding) {
    index_uses(f);
    std::vector<bool> dead(f.ops.size(), false);
    bool changed = false;
    for (size_t i = 0; i < f.ops.size(); ++i) {
      Op& att = f.ops[i];
      if (att.kind != OpKind::attention) continue;
      if (const Attr* layout = att.attr("layout"); layout && layout->string != "bhtd") continue;
      const ValueId o = att.results[0];
      if (users_[o].size() != 1 || returned_[o]) continue;
      const int back = users_[o][0];
      if (!swaps_heads_and_rows(f.ops[back], binding)) continue;
      if (f.type_of(att.operands[1]) != f.type_of(att.operands[0])) continue;  // grouped: "bhtd" only
      int ins[3];
      for (int x = 0; x < 3; ++x) ins[x] = head_transpose(att.operands[x], static_cast<int>(i), binding);
      if (ins[0] < 0 || ins[1] < 0 || ins[2] < 0) continue;
      for (int x = 0; x < 3; ++x) {
        att.operands[x] = f.ops[ins[x]].operands[0];
        dead[ins[x]] = true;
      }
      const Op& out = f.ops[back];
      att.results[0] = out.results[0];
      if (!att.declared.empty())
        att.declared[0] = out.declared.empty() ? SymType::from(*f.values[out.results[0]].type) : out.declared[0];
      att.set_attr("layout", Attr::of_string("bthd"));
      dead[back] = true;
      changed = true;
    }
    if (!changed) return false;
    erase_ops(f, dead);
    return true;
  }

  bool run_on(Function& f, const DimBinding& binding) {
    const bool fused = fuse_chains(f, binding);
    return fold_head_transposes(f, binding) || fused;
  }

  // Fuses each matching op chain into one attention op; true when any was.
  bool fuse_chains(Function& f, const DimBinding& binding) {
    index_uses(f);
    std::vector<bool> dead(f.ops.size(), false);
    std::vector<int> sources;
    bool changed = false;
    FreshNames fresh_name(f);
    for (size_t i = 0; i < f.ops.size(); ++i) {
      std::optional<Match> mt = match(static_cast<int>(i), binding);
      if (!mt) continue;
      if (mt->k_transpose >= 0) swap_last_axes(f, f.ops[mt->k_transpose]);
      Op& pv = f.ops[i];
      const ValueId out = pv.results[0];
      const TensorType& q_type = f.type_of(mt->q);
      const TensorType lse_type{attention_lse_dtype(q_type.dtype), Shape(q_type.shape.begin(), q_type.shape.end() - 1)};
      const ValueId lse = f.add_value(fresh_name(f.values[out].name + ".lse"), pv.loc);
      f.values[lse].type = lse_type;
      f.values[lse].def_op = static_cast<int>(i);
      SymType o_sym = pv.declared.empty() ? SymType::from(*f.values[out].type) : pv.declared[0];
      SymType lse_sym = o_sym;
      lse_sym.dims.pop_back();
      lse_sym.dtype = lse_type.dtype;
      Op fused;
      fused.kind = OpKind::attention;
      fused.operands = {mt->q, mt->k, mt->v};
      fused.results = {out, lse};
      if (mt->causal) fused.set_attr("causal", Attr::of_bool(true));
      fused.set_attr("scale", Attr::of_real(mt->scale));
      if (const Attr* layer = pv.attr("layer")) fused.set_attr("layer", *layer);
      fused.declared = {o_sym, lse_sym};
      fused.loc = pv.loc;
      pv = std::move(fused);
      for (size_t c = 1; c < mt->chain.size(); ++c) dead[mt->chain[c]] = true;
      sources.insert(sources.end(), mt->sources.begin(), mt->sources.end());
      changed = true;
    }
    if (!changed) return false;
    // The mask, -inf and scale ops that only the fused chains read go too
    // (latest first, so that rsqrt dies before the dim_value it reads).
    std::vector<int> uses(f.values.size(), 0);
    for (size_t i = 0; i < f.ops.size(); ++i)
      if (!dead[i])
        for (ValueId v : f.ops[i].operands) ++uses[v];
    for (ValueId r : f.returns) ++uses[r];
    std::sort(sources.begin(), sources.end(), std::greater<>());
    sources.erase(std::unique(sources.begin(), sources.end()), sources.end());
    for (int s : sources) {
      const Op& op = f.ops[s];
      bool unused = true;
      for (ValueId r : op.results) unused = unused && uses[r] == 0;
      if (!unused || dead[s]) continue;
      dead[s] = true;
      for (ValueId v : op.operands) --uses[v];
    }
    erase_ops(f, dead);
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_attention_pass() { return std::make_unique<FuseAttentionPass>(); }

}  // namespace pf
