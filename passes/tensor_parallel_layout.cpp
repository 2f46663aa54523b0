// Megatron's split, found by following the shares of each column-parallel
// product forward until row-parallel products make them whole again. A
// region (the column products whose shares meet, and everything between
// them and their row products) is kept or left whole as one: a round that
// finds a region it cannot split leaves its column products whole and runs
// again, until a round splits every region it starts.
#include "passes/tensor_parallel_layout.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <optional>

namespace pf {

namespace {

/// A dimension attribute in numbers; the split reads shapes, so the graph
/// must have been through the shape pass.
const Attr* numeric_attr(const Op& op, std::string_view name) {
  const Attr* a = op.attr(name);
  if (a == nullptr) return nullptr;
  bool constant = a->kind != AttrKind::dim || a->dim.is_constant();
  if (a->kind == AttrKind::dims)
    for (const DimExpr& d : a->dims) constant = constant && d.is_constant();
  if (!constant)
    throw Error(fmt::format("{}: tensor parallelism needs shapes in numbers; run the shape pass first",
                            op_name(op.kind)),
                op.loc);
  return a;
}

int64_t int_attr(const Op& op, std::string_view name, int64_t fallback) {
  const Attr* a = numeric_attr(op, name);
  return a ? a->dim.constant() : fallback;
}

std::vector<int64_t> ints_attr(const Op& op, std::string_view name) {
  std::vector<int64_t> out;
  if (const Attr* a = numeric_attr(op, name))
    for (const DimExpr& d : a->dims) out.push_back(d.constant());
  return out;
}

bool bool_attr(const Op& op, std::string_view name) {
  const Attr* a = op.attr(name);
  return a != nullptr && a->boolean;
}

int normalized(int64_t axis, int rank) { return static_cast<int>(axis < 0 ? axis + rank : axis); }

struct Request {
  ValueId param;
  ShardLayout layout;
};

/// One round of the split, with the products in `whole_products` left whole.
class Round {
 public:
  Round(const Function& g, int degree, int whole_results, const std::vector<std::string>& whole_params,
        const std::vector<bool>& whole_products)
      : g_(g),
        degree_(degree),
        whole_results_(whole_results),
        whole_params_(whole_params),
        whole_products_(whole_products),
        users_(g.users()) {
    layout_.assign(g.values.size(), ShardLayout{});
    region_.assign(g.values.size(), -1);
    requests_.assign(g.values.size(), 0);
    uses_.assign(g.values.size(), 0);
    roles_.assign(g.ops.size(), ShardRole::whole);
    parent_.resize(g.ops.size());
    std::iota(parent_.begin(), parent_.end(), 0);
    failed_.assign(g.ops.size(), false);
    why_.assign(g.ops.size(), std::string());
    for (const Op& op : g.ops)
      for (ValueId u : op.operands) ++uses_[u];
  }

  /// Splits the graph; returns the column-parallel products of the regions
  /// that could not be split, and why (none: the layout is final).
  std::vector<KeptWhole> run() {
    for (size_t i = 0; i < g_.ops.size(); ++i) visit(static_cast<int>(i));
    // A parameter cut for some readers must be cut for all of them.
    for (size_t v = 0; v < g_.values.size(); ++v)
      if (layout_[v].sharded() && is_param(static_cast<ValueId>(v)) && requests_[v] != uses_[v])
        fail(region_[v], fmt::format("%{} is also read whole", name(static_cast<ValueId>(v))));
    for (size_t k = 0; k < g_.returns.size(); ++k)
      if ((whole_results_ < 0 || static_cast<int>(k) < whole_results_) && layout_[g_.returns[k]].sharded())
        fail(region_[g_.returns[k]], fmt::format("its shares would reach the result %{}", name(g_.returns[k])));
    std::vector<KeptWhole> undone;
    for (size_t i = 0; i < g_.ops.size(); ++i) {
      const int root = find(static_cast<int>(i));
      if (starts_region(static_cast<int>(i)) && failed_[root]) undone.push_back({static_cast<int>(i), why_[root]});
    }
    return undone;
  }

  TensorParallelLayout layout() const { return {degree_, layout_, roles_, uneven_, {}}; }

  /// Per op: whether a region grows from it in this round.
  std::vector<bool> starters() const {
    std::vector<bool> out(g_.ops.size());
    for (size_t i = 0; i < g_.ops.size(); ++i) out[i] = starts_region(static_cast<int>(i));
    return out;
  }

 private:
  bool is_param(ValueId v) const {
    const int def = g_.values[v].def_op;
    return def >= 0 && g_.ops[def].kind == OpKind::param;
  }
  int rank(ValueId v) const { return g_.type_of(v).rank(); }
  const std::string& name(ValueId v) const { return g_.values[v].name; }
  int64_t dim(ValueId v, int axis) const { return g_.type_of(v).shape.at(static_cast<size_t>(axis)); }
  bool sharded_value(ValueId v) const { return !is_param(v) && layout_[v].sharded(); }
  /// Whether `n` falls into `segments` blocks that each cut into the group's parts.
  bool divides(int64_t n, int64_t segments) const { return n % (segments * degree_) == 0; }
  /// Whether a product's `n` columns (or a table's rows) in `segments` blocks
  /// can be cut over the group: one block cuts into parts of sizes that
  /// differ by one at most (a vocabulary of 50257 over 2 ranks), several
  /// blocks must divide evenly (each rank's heads of q, k and v).
  bool cuts(int64_t n, int64_t segments) const { return segments == 1 ? n >= degree_ : divides(n, segments); }

  int find(int i) const {
    while (parent_[i] != i) i = parent_[i] = parent_[parent_[i]];
    return i;
  }
  int unite(int a, int b) {
    if (a < 0 || b < 0) return a < 0 ? b : a;
    a = find(a);
    b = find(b);
    if (a != b) {
      parent_[b] = a;
      failed_[a] = failed_[a] || failed_[b];
      if (why_[a].empty()) why_[a] = why_[b];
    }
    return a;
  }
  /// Leaves `region` whole, for the first reason given.
  void fail(int region, const std::string& why) {
    if (region < 0) return;
    region = find(region);
    failed_[region] = true;
    if (why_[region].empty()) why_[region] = why;
  }

  /// The ops a region grows from: column-parallel products, lookups in a
  /// table cut by vocabulary rows, and routes to a block of the experts.
  bool starts_region(int i) const {
    const OpKind kind = g_.ops[i].kind;
    return (roles_[i] == ShardRole::column && kind == OpKind::matmul) ||
           (roles_[i] == ShardRole::row && kind == OpKind::embedding) || roles_[i] == ShardRole::experts;
  }

  /// A product by a whole 2-D parameter: the candidates for column and row
  /// parallelism. Pieces (of a product already split between stages) stay.
  bool is_weight_product(const Op& op) const {
    if (op.kind != OpKind::matmul || bool_attr(op, "transpose_a") || !is_param(op.operands[1])) return false;
    const Op& w = g_.ops[g_.values[op.operands[1]].def_op];
    return rank(op.operands[1]) == 2 && rank(op.operands[0]) >= 1 && w.attr("piece_of") == nullptr;
  }

  /// How many blocks a column product's output falls into: the parts of an
  /// equal split of its last axis, reached through elementwise ops (its bias).
  int64_t segments_of(ValueId v) const {
    for (;;) {
      for (int u : users_[v]) {
        const Op& op = g_.ops[u];
        if (op.kind != OpKind::split || normalized(int_attr(op, "axis", 0), rank(v)) != rank(v) - 1) continue;
        const std::vector<int64_t> sizes = ints_attr(op, "sizes");
        if (sizes.size() > 1 && std::all_of(sizes.begin(), sizes.end(), [&](int64_t s) { return s == sizes[0]; }))
          return static_cast<int64_t>(sizes.size());
      }
      if (users_[v].size() != 1 || !is_elementwise(g_.ops[users_[v][0]].kind)) return 1;
      v = g_.ops[users_[v][0]].results[0];
    }
  }

  /// Asks for `q.param` to be cut as `q.layout` by an op of `region`;
  /// returns the region, joined with the parameter's other readers'.
  int request(const Request& q, int region) {
    ShardLayout& have = layout_[q.param];
    const bool kept_whole = std::find(whole_params_.begin(), whole_params_.end(), g_.values[q.param].name) !=
                            whole_params_.end();
    const bool piece = g_.ops[g_.values[q.param].def_op].attr("piece_of") != nullptr;
    if (kept_whole || piece || (have.sharded() && have != q.layout)) {
      const std::string why = kept_whole ? fmt::format("%{} is tied to a stage that cuts it otherwise", name(q.param))
                              : piece    ? fmt::format("%{} is split between stages already", name(q.param))
                                         : fmt::format("%{} would be cut two ways", name(q.param));
      fail(region, why);
      fail(region_[q.param], why);
      return region;
    }
    region = unite(region, region_[q.param]);
    have = q.layout;
    region_[q.param] = region;
    ++requests_[q.param];
    return region;
  }

  void visit(int i) {
    const Op& op = g_.ops[i];
    if (op.kind == OpKind::param) return;
    if (is_weight_product(op) && !whole_products_[i]) return product(i);
    if (op.kind == OpKind::embedding && !whole_products_[i]) return lookup(i);
    if (op.kind == OpKind::moe_route && !whole_products_[i] && !sharded_value(op.operands[0])) return route(i);
    int region = -1;
    bool any = false;
    for (size_t k = 0; k < op.operands.size(); ++k) {
      const ValueId u = op.operands[k];
      if (!sharded_value(u)) continue;
      if (reads_shared_keys(op, k)) {
        fail(region_[u], fmt::format("%{} is one key or value head shared by every rank's query heads",  name(u)));
        continue;
      }
      region = unite(region, region_[u]);
      any = true;
    }
    if (!any) return;
    if (is_expert_op(op)) return expert_op(i, region);
    std::vector<Request> requests;
    const std::optional<std::vector<ShardLayout>> results = follow(op, requests);
    for (const Request& q : requests) region = request(q, region);
    if (!results)
      return fail(region, op.kind == OpKind::reshape
                              ? fmt::format("%{} = reshape cannot keep the shares: its axes do not divide over {} ranks",
                                            name(op.results[0]), degree_)
                              : fmt::format("%{} = {} needs its operands whole", name(op.results[0]),
                                            op_name(op.kind)));
    roles_[i] = ShardRole::sharded;
    for (size_t k = 0; k < op.results.size(); ++k) {
      layout_[op.results[k]] = (*results)[k];
      region_[op.results[k]] = region;
    }
  }

  void product(int i) {
    const Op& op = g_.ops[i];
    const ValueId x = op.operands[0], w = op.operands[1], y = op.results[0];
    // A router's logits: every rank routes every token (what is cut is the experts).
    if (std::any_of(users_[y].begin(), users_[y].end(), [&](int u) { return g_.ops[u].kind == OpKind::moe_route; }))
      return;
    const bool transposed = bool_attr(op, "transpose_b");
    const ShardLayout in = is_param(x) ? ShardLayout{} : layout_[x];
    if (!in.sharded()) {
      const int64_t segments = segments_of(y);
      if (!cuts(dim(y, rank(y) - 1), segments)) {
        const int64_t columns = dim(y, rank(y) - 1);
        uneven_.push_back(
            {i, segments == 1
                    ? fmt::format("its {} columns are fewer than the {} ranks", columns, degree_)
                    : fmt::format("its {} columns in {} blocks do not divide over {} ranks (pad each block to a "
                                  "multiple of {})",
                                  columns, segments, degree_, degree_)});
        return;
      }
      roles_[i] = ShardRole::column;
      layout_[y] = {rank(y) - 1, segments};
      region_[y] = request({w, {transposed ? 0 : 1, segments}}, i);
      return;
    }
    if (in.axis != rank(x) - 1)
      return fail(region_[x], fmt::format("%{} is read by a product along an axis it does not contract", name(x)));
    roles_[i] = ShardRole::row;
    request({w, {transposed ? 1 : 0, in.segments}}, region_[x]);
  }

  /// Megatron's vocabulary-parallel embedding: each rank holds a block of
  /// the table's rows, looks up the ids it holds (zeros for the others), and
  /// the ranks' lookups sum to the whole one, as a row-parallel product's
  /// partial sums do. A table tied to the vocabulary projection is cut by
  /// the same rows there, which is what that column-parallel product asks.
  void lookup(int i) {
    const Op& op = g_.ops[i];
    const ValueId table = op.operands[0];
    if (!is_param(table)) return;
    if (!cuts(dim(table, 0), 1)) {
      uneven_.push_back(
          {i, fmt::format("the {} rows of %{} are fewer than the {} ranks", dim(table, 0), name(table), degree_)});
      return;
    }
    roles_[i] = ShardRole::row;
    request({table, {0, 1}}, i);
  }

  /// Experts cut over the group (Megatron-LM's expert parallelism with its
  /// all-gather dispatcher): each rank holds a block of the experts, the
  /// route's rows for them, and so their slots. It sends every token to its
  /// experts among them and sums its part of each token's output; the group
  /// sums the parts, as a row-parallel product's. The router runs whole.
  void route(int i) {
    const Op& op = g_.ops[i];
    const int64_t experts = dim(op.operands[0], 1);
    if (!cuts(experts, 1)) {
      uneven_.push_back({i, fmt::format("its {} experts are fewer than the {} ranks", experts, degree_)});
      return;
    }
    roles_[i] = ShardRole::experts;
    layout_[op.results[0]] = kExperts;
    region_[op.results[0]] = i;
  }

  /// An op over the slots of a route (moe_gates_grad is a backward op,
  /// which this pass never sees).
  static bool is_expert_op(const Op& op) { return route_operand(op.kind, op.operands.size()) >= 0; }

  /// An op over the slots of a route cut by experts. The gates and the
  /// dispatch read whole logits and tokens, whose gradients sum the ranks'
  /// (column-parallel products' inputs as well); an expert's product takes
  /// the rank's experts' weights, as does a swiglu over their slots; the
  /// combine gives a partial sum.
  void expert_op(int i, int region) {
    const Op& op = g_.ops[i];
    auto held = [&](ValueId v) { return sharded_value(v) && layout_[v] == kExperts; };
    bool fits = std::all_of(op.operands.begin() + 1, op.operands.end(), held);
    if (op.kind == OpKind::moe_gates || op.kind == OpKind::moe_dispatch) {
      fits = fits && !sharded_value(op.operands[0]);
      roles_[i] = ShardRole::column;
    } else if (op.kind == OpKind::moe_matmul) {
      const ValueId a = op.operands[0], b = op.operands[1];
      fits = held(a) && (held(b) || is_param(b)) && held(op.operands[2]);
      if (fits && is_param(b)) region = request({b, kExperts}, region);
      roles_[i] = ShardRole::sharded;
    } else if (op.kind == OpKind::swiglu) {
      fits = fits && held(op.operands[0]);
      roles_[i] = ShardRole::sharded;
    } else {
      fits = fits && held(op.operands[0]);
      roles_[i] = ShardRole::row;  // moe_combine: the rank's part of each token's sum
    }
    if (!fits) {
      roles_[i] = ShardRole::whole;
      return fail(region, fmt::format("%{} = {} needs the experts' values cut alike", name(op.results[0]),
                                      op_name(op.kind)));
    }
    if (roles_[i] == ShardRole::row) return;
    layout_[op.results[0]] = kExperts;
    region_[op.results[0]] = region;
  }

  static constexpr ShardLayout kExperts{0, 1};  // a block of the experts on each rank

  /// The shares of an op's results, given its operands' (at least one
  /// sharded), and the parameters it needs cut alike; nullopt where the op
  /// needs a whole value.
  std::optional<std::vector<ShardLayout>> follow(const Op& op, std::vector<Request>& requests) const {
    if (is_elementwise(op.kind)) {
      std::optional<ShardLayout> out = elementwise(op, requests);
      if (!out) return std::nullopt;
      return std::vector<ShardLayout>{*out};
    }
    const ValueId x = op.operands[0];
    const ShardLayout in = layout_[x];
    const int r = rank(x);
    if (op.kind == OpKind::attention) return attention(op);
    if (op.kind == OpKind::matmul) {
      // Products of two shares along a batch axis (q k^T, p v by heads), or
      // of shares with one head they all read (a multi-query k or v).
      const ValueId b = op.operands[1];
      if (reads_shared_keys(op, 1)) return std::vector<ShardLayout>{in};
      if (!sharded_value(x) || !sharded_value(b) || layout_[b] != in || rank(b) != r || in.axis >= r - 2)
        return std::nullopt;
      return std::vector<ShardLayout>{in};
    }
    if (op.kind == OpKind::concat) {
      for (ValueId u : op.operands)
        if (!sharded_value(u) || layout_[u] != in) return std::nullopt;
      if (normalized(int_attr(op, "axis", 0), r) == in.axis) return std::nullopt;
      return std::vector<ShardLayout>{in};
    }
    // The rest read one share, operand 0 (a norm's weights are whole).
    if (!sharded_value(x)) return std::nullopt;
    for (size_t k = 1; k < op.operands.size(); ++k)
      if (sharded_value(op.operands[k])) return std::nullopt;
    std::optional<ShardLayout> out;
    switch (op.kind) {
      case OpKind::softmax:
      case OpKind::log_softmax:
        if (normalized(int_attr(op, "axis", -1), r) != in.axis) out = in;
        break;
      case OpKind::layernorm:
      case OpKind::rmsnorm:
        if (in.axis != r - 1) out = in;
        break;
      case OpKind::rope:
        // Each position's pairs turn alike on every head: shares of heads stay shares.
        if (in.axis != r - 1 && in.axis != normalized(int_attr(op, "axis", -2), r)) out = in;
        break;
      case OpKind::cross_entropy:
        // Over the classes each rank holds, in parts the group sums (Megatron's vocabulary-parallel loss).
        if (in.axis == r - 1 && in.segments == 1) out = ShardLayout{};
        break;
      case OpKind::slice:
        if (normalized(int_attr(op, "axis", 0), r) != in.axis) out = in;
        break;
      case OpKind::transpose: {
        const std::vector<int64_t> perm = ints_attr(op, "perm");
        const auto at = std::find(perm.begin(), perm.end(), in.axis);
        if (at != perm.end()) out = ShardLayout{static_cast<int>(at - perm.begin()), in.segments};
        break;
      }
      case OpKind::reshape:
        ints_attr(op, "shape");  // the rank's program divides it: it must be in numbers
        out = reshaped(x, op.results[0]);
        break;
      case OpKind::reduce_sum:
      case OpKind::reduce_mean:
      case OpKind::reduce_max: {
        int before = 0;
        for (int64_t a : ints_attr(op, "axes")) {
          const int axis = normalized(a, r);
          if (axis == in.axis) return std::nullopt;
          before += axis < in.axis;
        }
        out = ShardLayout{bool_attr(op, "keepdims") ? in.axis : in.axis - before, in.segments};
        break;
      }
      case OpKind::split: {
        const std::vector<int64_t> sizes = ints_attr(op, "sizes");
        if (normalized(int_attr(op, "axis", 0), r) != in.axis)
          return std::vector<ShardLayout>(op.results.size(), in);
        // Each block of the split is one of the segments: each rank keeps its part of every one.
        if (static_cast<int64_t>(sizes.size()) != in.segments ||
            std::any_of(sizes.begin(), sizes.end(), [&](int64_t s) { return s != sizes[0]; }))
          return std::nullopt;
        return std::vector<ShardLayout>(op.results.size(), ShardLayout{in.axis, 1});
      }
      default:
        break;
    }
    if (!out) return std::nullopt;
    return std::vector<ShardLayout>{*out};
  }

  /// Elementwise ops broadcast: every share must sit on the same axis of the
  /// result, and an operand that spans that axis whole must be a parameter,
  /// which is then cut like the shares (a bias).
  std::optional<ShardLayout> elementwise(const Op& op, std::vector<Request>& requests) const {
    const int out = rank(op.results[0]);
    std::optional<ShardLayout> at;
    for (ValueId u : op.operands) {
      if (!sharded_value(u)) continue;
      const ShardLayout mapped{layout_[u].axis + out - rank(u), layout_[u].segments};
      if ((at && *at != mapped) || dim(u, layout_[u].axis) != dim(op.results[0], mapped.axis)) return std::nullopt;
      at = mapped;
    }
    for (ValueId u : op.operands) {
      if (sharded_value(u)) continue;
      const int axis = at->axis - (out - rank(u));
      if (axis < 0 || dim(u, axis) == 1) continue;  // broadcast over the shares
      if (!is_param(u)) return std::nullopt;        // a whole activation beside shares
      requests.push_back({u, {axis, at->segments}});
    }
    return at;
  }

  /// Whether operand `k` of `op` is a grouped attention's key or value head
  /// that q's shares all read (size 1 on the axis q is cut along), in the
  /// fused op or in its products (q k^T, p v): it is read whole on every
  /// rank, through tp_copy (its gradient the sum of the ranks'), as Megatron
  /// shares a multi-query head.
  bool reads_shared_keys(const Op& op, size_t k) const {
    if (k == 0 || !(op.kind == OpKind::attention || (op.kind == OpKind::matmul && !is_weight_product(op))))
      return false;
    const ValueId q = op.operands[0], u = op.operands[k];
    if (!sharded_value(q) || rank(u) != rank(q)) return false;
    const int axis = layout_[q].axis;
    return axis < rank(q) - 2 && dim(u, axis) == 1 && dim(q, axis) > 1;
  }

  /// Attention runs head by head (or batch by batch): q, k and v must hold
  /// the same heads, or k and v one head that every rank reads whole.
  std::optional<std::vector<ShardLayout>> attention(const Op& op) const {
    const ShardLayout in = layout_[op.operands[0]];
    if (!sharded_value(op.operands[0])) return std::nullopt;
    for (size_t k = 1; k < op.operands.size(); ++k) {
      const ValueId u = op.operands[k];
      // A shared head cut this round fails its own region, and is whole in the next.
      if (!reads_shared_keys(op, k) && (!sharded_value(u) || layout_[u] != in)) return std::nullopt;
    }
    const int r = rank(op.operands[0]);
    const Attr* layout = op.attr("layout");
    const bool bthd = layout != nullptr && layout->string == "bthd";
    // lse is [..., T] (or [..., H, T] under bthd, its heads before T).
    int lse_axis = -1;
    if (bthd && in.axis == r - 2) lse_axis = r - 3;
    if (in.axis < (bthd ? r - 3 : r - 2)) lse_axis = in.axis;
    if (lse_axis < 0) return std::nullopt;
    return std::vector<ShardLayout>{in, {lse_axis, in.segments}};
  }

  /// A reshape keeps the shares where the axes before the shared one hold
  /// as many elements in and out: then each rank's block of every outer
  /// index is the same run of elements on both sides ([B,T,C] -> [B,T,H,D]
  /// shares C as heads), provided both axes divide into the parts.
  std::optional<ShardLayout> reshaped(ValueId x, ValueId y) const {
    const ShardLayout in = layout_[x];
    const Shape& out = g_.type_of(y).shape;
    int64_t before = 1, prefix = 1;
    for (int a = 0; a < in.axis; ++a) before *= dim(x, a);
    for (size_t b = 0; b < out.size() && prefix <= before; prefix *= out[b], ++b) {
      if (prefix != before || out[b] == 1) continue;
      if (!divides(out[b], in.segments) || !divides(dim(x, in.axis), in.segments)) return std::nullopt;
      return ShardLayout{static_cast<int>(b), in.segments};
    }
    return std::nullopt;
  }

  const Function& g_;
  const int degree_;
  const int whole_results_;
  const std::vector<std::string>& whole_params_;
  const std::vector<bool>& whole_products_;
  const std::vector<std::vector<int>> users_;
  std::vector<ShardLayout> layout_;
  std::vector<int> region_;    // per value: a column product of its region, -1 if none
  std::vector<int> requests_;  // per parameter: the operands that ask for it cut
  std::vector<int> uses_;      // per value: the operands it is
  std::vector<ShardRole> roles_;
  mutable std::vector<int> parent_;  // regions: union-find over the column products
  std::vector<bool> failed_;
  std::vector<std::string> why_;     // per region: why it stays whole
  std::vector<KeptWhole> uneven_;    // products whose shape does not divide
};

}  // namespace

namespace {

/// The rounds of the split, with the products in `whole_products` left
/// whole from the start.
TensorParallelLayout split(const Function& graph, int degree, int whole_results,
                           const std::vector<std::string>& whole_params, bool sequence_parallel,
                           const std::vector<std::string>& hand_offs_in_parts, std::vector<bool> whole_products) {
  if (degree <= 1)
    return {1, std::vector<ShardLayout>(graph.values.size()),
            std::vector<ShardRole>(graph.ops.size(), ShardRole::whole), {},
            std::vector<bool>(graph.values.size(), false)};
  std::vector<KeptWhole> kept;
  // What a user expects split is what the first round cuts: a product that
  // only turns column-parallel once another is left whole (an output
  // projection whose input is now whole) is not worth a note.
  std::vector<bool> expected;
  for (;;) {
    Round round(graph, degree, whole_results, whole_params, whole_products);
    const std::vector<KeptWhole> undone = round.run();
    if (expected.empty()) expected = round.starters();
    if (undone.empty()) {
      TensorParallelLayout layout = round.layout();
      layout.kept_whole.insert(layout.kept_whole.end(), kept.begin(), kept.end());
      std::sort(layout.kept_whole.begin(), layout.kept_whole.end(),
                [](const KeptWhole& a, const KeptWhole& b) { return a.op < b.op; });
      if (sequence_parallel)
        split_tokens(graph, layout, hand_offs_in_parts);
      else
        layout.tokens.assign(graph.values.size(), false);
      return layout;
    }
    for (const KeptWhole& k : undone) {
      whole_products[static_cast<size_t>(k.op)] = true;
      if (expected[static_cast<size_t>(k.op)]) kept.push_back(k);
    }
  }
}

}  // namespace

TensorParallelLayout tensor_parallel_layout(const Function& graph, int degree, int whole_results,
                                            const std::vector<std::string>& whole_params, bool sequence_parallel,
                                            const std::vector<std::string>& hand_offs_in_parts) {
  return split(graph, degree, whole_results, whole_params, sequence_parallel, hand_offs_in_parts,
               std::vector<bool>(graph.ops.size(), false));
}

TensorParallelLayout expert_parallel_layout(const Function& graph, int degree, int whole_results) {
  std::vector<bool> whole_products(graph.ops.size());
  for (size_t i = 0; i < graph.ops.size(); ++i) whole_products[i] = graph.ops[i].kind != OpKind::moe_route;
  return split(graph, degree, whole_results, {}, false, {}, std::move(whole_products));
}

}  // namespace pf
