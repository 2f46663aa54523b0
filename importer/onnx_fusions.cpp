// Subgraphs that several ONNX nodes spell out and the IR has as one op:
// GELU (its erf and tanh forms), layer norm decomposed (exports before opset
// 17), RMSNorm and SiLU (x * sigmoid(x)) as PyTorch exports them.
// Each is matched on the ONNX graph before the walk; unmatched, the same
// nodes still translate one by one into the IR's elementwise ops.
#include <fmt/format.h>

#include <cmath>

#include "importer/import_context.h"

namespace pf::onnx_import {

namespace {

using onnx::NodeProto;

class Matcher {
 public:
  explicit Matcher(const Importer& im) : im_(im) {
    const auto& nodes = im.graph().node();
    for (int i = 0; i < nodes.size(); ++i) index_[&nodes[i]] = i;
  }

  /// The node of type `op` producing `value`, or null.
  const NodeProto* made_by(const std::string& value, const char* op) const {
    const NodeProto* p = im_.producer(value);
    return p && p->op_type() == op ? p : nullptr;
  }
  /// The only node reading `value` when it is of type `op`, or null.
  const NodeProto* only_user(const std::string& value, const char* op) const {
    const auto& readers = im_.readers(value);
    if (readers.size() != 1 || im_.uses(value) != 1) return nullptr;
    return readers.front().first->op_type() == op ? readers.front().first : nullptr;
  }
  bool near(const std::string& value, double c) const {
    const std::optional<double> v = im_.constant_number(value);
    return v && std::abs(*v - c) <= 1e-4 * std::abs(c);
  }
  /// Of a binary node, the input that is not `one`; "" when neither is.
  static std::string other(const NodeProto& n, const std::string& one) {
    if (n.input_size() != 2) return "";
    if (n.input(0) == one) return n.input(1);
    if (n.input(1) == one) return n.input(0);
    return "";
  }
  /// Of a binary node with a constant near `c`, the other input; "" when none.
  std::string beside(const NodeProto& n, double c) const {
    if (n.input_size() != 2) return "";
    if (near(n.input(0), c)) return n.input(1);
    if (near(n.input(1), c)) return n.input(0);
    return "";
  }
  int index(const NodeProto* n) const { return index_.at(n); }
  bool single_use(const std::string& value) const { return im_.uses(value) == 1; }
  const Importer& importer() const { return im_; }

 private:
  const Importer& im_;
  std::map<const NodeProto*, int> index_;
};

/// x * x * x, as Pow(x, 3) or two Muls.
bool is_cube(const Matcher& m, const std::string& value, const std::string& x, std::vector<const NodeProto*>& nodes) {
  if (const NodeProto* p = m.made_by(value, "Pow"); p && p->input(0) == x && m.near(p->input(1), 3)) {
    nodes.push_back(p);
    return true;
  }
  const NodeProto* outer = m.made_by(value, "Mul");
  if (!outer) return false;
  const std::string sq = Matcher::other(*outer, x);
  const NodeProto* inner = sq.empty() ? nullptr : m.made_by(sq, "Mul");
  if (!inner || inner->input(0) != x || inner->input(1) != x || !m.single_use(sq)) return false;
  nodes.push_back(outer);
  nodes.push_back(inner);
  return true;
}

/// The end both forms of GELU share: 0.5 * x * (1 + f(x)), f's node given,
/// in any grouping of the two products. Returns the last node, or null.
const NodeProto* gelu_tail(const Matcher& m, const std::string& x, const NodeProto& f,
                           std::vector<const NodeProto*>& found) {
  const NodeProto* one_plus = m.only_user(f.output(0), "Add");
  if (!one_plus || m.beside(*one_plus, 1.0) != f.output(0)) return nullptr;
  found.push_back(one_plus);
  const NodeProto* first = m.only_user(one_plus->output(0), "Mul");
  if (!first) return nullptr;
  found.push_back(first);
  const std::string partner = Matcher::other(*first, one_plus->output(0));
  if (partner == x || m.near(partner, 0.5)) {
    const NodeProto* last = m.only_user(first->output(0), "Mul");
    if (!last) return nullptr;
    const std::string rest = Matcher::other(*last, first->output(0));
    if (!(partner == x ? m.near(rest, 0.5) : rest == x)) return nullptr;
    found.push_back(last);
    return last;
  }
  if (const NodeProto* half = m.made_by(partner, "Mul"); half && m.single_use(partner) && m.beside(*half, 0.5) == x) {
    found.push_back(half);
    return first;
  }
  return nullptr;
}

// 0.5 * x * (1 + erf(x / sqrt(2))), anchored at erf: PyTorch's nn.GELU().
std::optional<std::pair<Fusion, std::vector<const NodeProto*>>> gelu_erf_at(const Matcher& m, const NodeProto& erf) {
  std::vector<const NodeProto*> found = {&erf};
  const std::string& scaled = erf.input(0);
  if (!m.single_use(scaled)) return std::nullopt;
  std::string x;
  if (const NodeProto* d = m.made_by(scaled, "Div"); d && m.near(d->input(1), 1.4142135623730951)) {
    x = d->input(0);
    found.push_back(d);
  } else if (const NodeProto* p = m.made_by(scaled, "Mul")) {
    x = m.beside(*p, 0.7071067811865476);
    found.push_back(p);
  }
  if (x.empty()) return std::nullopt;
  const NodeProto* last = gelu_tail(m, x, erf, found);
  if (!last) return std::nullopt;
  return std::make_pair(Fusion{"gelu_erf", {x}, last->output(0), 0}, found);
}

// 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))), anchored at tanh.
std::optional<std::pair<Fusion, std::vector<const NodeProto*>>> gelu_at(const Matcher& m, const NodeProto& tanh) {
  std::vector<const NodeProto*> nodes = {&tanh};
  const NodeProto* scale = m.made_by(tanh.input(0), "Mul");
  if (!scale || !m.single_use(tanh.input(0))) return std::nullopt;
  const std::string inner = m.beside(*scale, 0.7978845608028654);
  const NodeProto* sum = inner.empty() ? nullptr : m.made_by(inner, "Add");
  if (!sum || !m.single_use(inner)) return std::nullopt;
  nodes.insert(nodes.end(), {scale, sum});
  // x + 0.044715 * cube: x is the addend that is not that product.
  for (int k = 0; k < 2; ++k) {
    const std::string x = sum->input(k), term = sum->input(1 - k);
    const NodeProto* cubic = m.made_by(term, "Mul");
    if (!cubic || !m.single_use(term)) continue;
    const std::string cube = m.beside(*cubic, 0.044715);
    std::vector<const NodeProto*> found = nodes;
    found.push_back(cubic);
    if (cube.empty() || !m.single_use(cube) || !is_cube(m, cube, x, found)) continue;
    const NodeProto* last = gelu_tail(m, x, tanh, found);
    if (!last) return std::nullopt;
    return std::make_pair(Fusion{"gelu", {x}, last->output(0), 0}, found);
  }
  return std::nullopt;
}

bool mean_of_last_axis(const NodeProto& n) {
  for (const onnx::AttributeProto& a : n.attribute()) {
    if (a.name() == "axes") return a.ints_size() == 1 && a.ints(0) == -1;
    if (a.name() == "keepdims" && a.i() == 0) return false;
  }
  return false;
}

// (x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) * w + b, anchored at
// the first mean.
std::optional<std::pair<Fusion, std::vector<const NodeProto*>>> layer_norm_at(const Matcher& m,
                                                                              const NodeProto& mean) {
  if (!mean_of_last_axis(mean)) return std::nullopt;
  const std::string x = mean.input(0);
  const NodeProto* centre = m.only_user(mean.output(0), "Sub");
  if (!centre || centre->input(0) != x || centre->input(1) != mean.output(0)) return std::nullopt;
  const std::string d = centre->output(0);
  if (m.importer().uses(d) != 2) return std::nullopt;
  const NodeProto* square = nullptr;
  const NodeProto* divide = nullptr;
  for (const auto& [n, slot] : m.importer().readers(d)) {
    if (n->op_type() == "Pow" && slot == 0) square = n;
    if (n->op_type() == "Div" && n->input_size() == 2 && slot == 0) divide = n;
  }
  if (!square || !divide || !m.near(square->input(1), 2)) return std::nullopt;
  const NodeProto* variance = m.only_user(square->output(0), "ReduceMean");
  if (!variance || !mean_of_last_axis(*variance)) return std::nullopt;
  const NodeProto* plus_eps = m.only_user(variance->output(0), "Add");
  if (!plus_eps) return std::nullopt;
  const std::string eps_value = Matcher::other(*plus_eps, variance->output(0));
  const std::optional<double> eps = m.importer().constant_number(eps_value);
  const NodeProto* root = m.only_user(plus_eps->output(0), "Sqrt");
  if (!eps || !root || divide->input(1) != root->output(0) || !m.single_use(root->output(0))) return std::nullopt;
  const NodeProto* scale = m.only_user(divide->output(0), "Mul");
  if (!scale) return std::nullopt;
  const std::string w = Matcher::other(*scale, divide->output(0));
  const NodeProto* shift = m.only_user(scale->output(0), "Add");
  if (!shift || !m.importer().is_param(w)) return std::nullopt;
  const std::string b = Matcher::other(*shift, scale->output(0));
  if (!m.importer().is_param(b)) return std::nullopt;
  return std::make_pair(Fusion{"layernorm", {x, w, b}, shift->output(0), *eps},
                        std::vector<const NodeProto*>{&mean, centre, square, variance, plus_eps, root, divide, scale,
                                                      shift});
}

// x * sigmoid(x), anchored at the sigmoid: F.silu.
std::optional<std::pair<Fusion, std::vector<const NodeProto*>>> silu_at(const Matcher& m, const NodeProto& sigmoid) {
  const std::string& x = sigmoid.input(0);
  const NodeProto* product = m.only_user(sigmoid.output(0), "Mul");
  if (!product || Matcher::other(*product, sigmoid.output(0)) != x) return std::nullopt;
  return std::make_pair(Fusion{"silu", {x}, product->output(0), 0},
                        std::vector<const NodeProto*>{&sigmoid, product});
}

// w * (x * 1 / sqrt(mean(x^2) + eps)), anchored at the mean: Llama's RMSNorm
// (torch.rsqrt exported as a division of 1, or a Reciprocal, of a Sqrt).
std::optional<std::pair<Fusion, std::vector<const NodeProto*>>> rms_norm_at(const Matcher& m, const NodeProto& mean) {
  if (!mean_of_last_axis(mean)) return std::nullopt;
  const NodeProto* square = m.made_by(mean.input(0), "Pow");
  if (!square || !m.near(square->input(1), 2) || !m.single_use(mean.input(0))) return std::nullopt;
  const std::string x = square->input(0);
  const NodeProto* plus_eps = m.only_user(mean.output(0), "Add");
  if (!plus_eps) return std::nullopt;
  const std::optional<double> eps = m.importer().constant_number(Matcher::other(*plus_eps, mean.output(0)));
  const NodeProto* root = m.only_user(plus_eps->output(0), "Sqrt");
  if (!eps || !root) return std::nullopt;
  const NodeProto* inverse = m.only_user(root->output(0), "Reciprocal");
  if (!inverse) {
    inverse = m.only_user(root->output(0), "Div");
    if (!inverse || inverse->input(1) != root->output(0) || !m.near(inverse->input(0), 1)) return std::nullopt;
  }
  const NodeProto* normed = m.only_user(inverse->output(0), "Mul");
  if (!normed || Matcher::other(*normed, inverse->output(0)) != x) return std::nullopt;
  const NodeProto* scale = m.only_user(normed->output(0), "Mul");
  if (!scale) return std::nullopt;
  const std::string w = Matcher::other(*scale, normed->output(0));
  if (!m.importer().is_param(w)) return std::nullopt;
  return std::make_pair(Fusion{"rmsnorm", {x, w}, scale->output(0), *eps},
                        std::vector<const NodeProto*>{square, &mean, plus_eps, root, inverse, normed, scale});
}

}  // namespace

Fusions find_fusions(const Importer& im) {
  Matcher m(im);
  Fusions out;
  auto take = [&](const std::optional<std::pair<Fusion, std::vector<const NodeProto*>>>& found) {
    if (!found) return;
    int last = -1;
    for (const NodeProto* n : found->second) last = std::max(last, m.index(n));
    for (const NodeProto* n : found->second)
      if (m.index(n) != last) out.absorbed.insert(m.index(n));
    out.at[last] = found->first;
  };
  for (const onnx::NodeProto& n : im.graph().node()) {
    if (n.op_type() == "Tanh") take(gelu_at(m, n));
    if (n.op_type() == "Erf") take(gelu_erf_at(m, n));
    if (n.op_type() == "ReduceMean") {
      take(layer_norm_at(m, n));
      take(rms_norm_at(m, n));
    }
    if (n.op_type() == "Sigmoid") take(silu_at(m, n));
  }
  return out;
}

void translate_fusion(Importer& im, const Fusion& f) {
  std::vector<Tensor> args;
  for (const std::string& in : f.inputs) args.push_back(im.tensor(in));
  std::string text = fmt::format("{} {}", f.op, Importer::operands(args));
  if (f.op == "layernorm" || f.op == "rmsnorm") text += " eps=" + number_text(f.eps);
  im.emit(f.output, text, args.front().dtype, args.front().shape);
}

}  // namespace pf::onnx_import
