// The importer's values, names and IR lines.
#include "importer/import_context.h"

#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <regex>

#include "ir/diagnostic.h"

namespace pf::onnx_import {

using onnx::TensorProto;

bool Known::is_real() const {
  return type == TensorProto::FLOAT || type == TensorProto::DOUBLE || type == TensorProto::FLOAT16 ||
         type == TensorProto::BFLOAT16;
}

int64_t Known::size() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::optional<double> Known::scalar() const {
  if (size() != 1) return std::nullopt;
  if (is_real()) return reals.at(0);
  if (!ints.at(0).is_number()) return std::nullopt;
  return static_cast<double>(ints[0].coef);
}

std::optional<DType> dtype_of(int32_t t) {
  switch (t) {
    case TensorProto::FLOAT:
    case TensorProto::DOUBLE:
    case TensorProto::FLOAT16:
    case TensorProto::BFLOAT16:
      return DType::f32;
    case TensorProto::INT64:
    case TensorProto::INT32:
    case TensorProto::INT16:
    case TensorProto::INT8:
    case TensorProto::UINT8:
      return DType::i32;
    case TensorProto::BOOL:
      return DType::boolean;
    default:
      return std::nullopt;
  }
}

namespace {

/// A tensor's elements: its raw bytes (little-endian, as ONNX stores them)
/// when it has them, else its typed field.
template <class T, class Field>
std::vector<T> values_of(const TensorProto& t, const Field& typed, size_t n, const std::string& where) {
  std::vector<T> out;
  if (!t.has_raw_data()) {
    out.assign(typed.begin(), typed.end());
    return out;
  }
  const std::string& raw = t.raw_data();
  if (raw.size() != n * sizeof(T))
    throw Error(fmt::format("{}: {} bytes of data for {} elements of {} bytes", where, raw.size(), n, sizeof(T)));
  out.resize(n);
  std::memcpy(out.data(), raw.data(), raw.size());
  return out;
}

}  // namespace

Known read_tensor(const TensorProto& t, const std::string& where) {
  if (t.data_location() == TensorProto::EXTERNAL)
    throw Error(fmt::format("{}: its data lives in an external file, which the importer does not read; export "
                            "the model into one file (a model under 2 GiB)",
                            where));
  Known k;
  k.type = t.data_type();
  for (int64_t d : t.dims()) {
    if (d < 0) throw Error(fmt::format("{}: a negative dimension {}", where, d));
    k.shape.push_back(d);
  }
  const auto n = static_cast<size_t>(k.size());
  switch (t.data_type()) {
    case TensorProto::FLOAT: {
      const std::vector<float> v = values_of<float>(t, t.float_data(), n, where);
      k.reals.assign(v.begin(), v.end());
      break;
    }
    case TensorProto::DOUBLE:
      k.reals = values_of<double>(t, t.double_data(), n, where);
      break;
    case TensorProto::INT64:
      for (int64_t x : values_of<int64_t>(t, t.int64_data(), n, where)) k.ints.push_back(SymDim::of(x));
      break;
    case TensorProto::INT32:
      for (int32_t x : values_of<int32_t>(t, t.int32_data(), n, where)) k.ints.push_back(SymDim::of(x));
      break;
    case TensorProto::BOOL:
    case TensorProto::UINT8:
      for (uint8_t x : values_of<uint8_t>(t, t.int32_data(), n, where))
        k.ints.push_back(SymDim::of(x != 0 && t.data_type() == TensorProto::BOOL ? 1 : x));
      break;
    default:
      throw Error(fmt::format("{}: element type {} is not supported (float, double, int64, int32, bool are)", where,
                              TensorProto::DataType_Name(static_cast<TensorProto::DataType>(t.data_type()))));
  }
  if (k.ints.size() + k.reals.size() != n)
    throw Error(fmt::format("{}: {} values for a shape of {} elements", where, k.ints.size() + k.reals.size(), n));
  return k;
}

std::string layer_of(const std::string& node_name) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= node_name.size()) {
    size_t end = node_name.find('/', start);
    if (end == std::string::npos) end = node_name.size();
    if (end > start) parts.push_back(node_name.substr(start, end - start));
    start = end + 1;
  }
  if (parts.size() < 2) return "";
  parts.pop_back();  // the node itself
  static const std::regex index(R"((^|.*\.)[0-9]+$)");
  std::string layer;
  for (const std::string& p : parts) {
    if (!layer.empty()) layer += '.';
    layer += p;
    if (std::regex_match(p, index)) return layer;
  }
  return parts.front();
}

std::string number_text(double v) {
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  std::string s = fmt::format("{}", v);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

Importer::Importer(const onnx::GraphProto& graph, std::string source) : graph_(graph), source_(std::move(source)) {
  for (const onnx::NodeProto& n : graph.node()) {
    for (const std::string& out : n.output()) producers_[out] = &n;
    for (int i = 0; i < n.input_size(); ++i)
      if (!n.input(i).empty()) {
        uses_[n.input(i)] += 1;
        readers_[n.input(i)].emplace_back(&n, i);
      }
  }
  for (const onnx::ValueInfoProto& out : graph.output()) uses_[out.name()] += 1;
  std::set<std::string> inputs;
  for (const onnx::ValueInfoProto& in : graph.input()) inputs.insert(in.name());
  for (const TensorProto& init : graph.initializer()) {
    const std::string where = fmt::format("{}: initializer '{}'", source_, init.name());
    // Trainable: the floating-point ones. Integer and boolean buffers
    // (masks, indices) are constants the importer folds.
    if (init.data_type() == TensorProto::FLOAT || init.data_type() == TensorProto::DOUBLE)
      pending_params_[init.name()] = &init;
    else
      known_[init.name()] = read_tensor(init, where);
  }
}

const onnx::NodeProto* Importer::producer(const std::string& value) const {
  auto it = producers_.find(value);
  return it == producers_.end() ? nullptr : it->second;
}

int Importer::uses(const std::string& value) const {
  auto it = uses_.find(value);
  return it == uses_.end() ? 0 : it->second;
}

std::optional<double> Importer::constant_number(const std::string& value) const {
  if (const Known* k = known(value)) return k->scalar();
  const onnx::NodeProto* p = producer(value);
  if (!p || p->op_type() != "Constant") return std::nullopt;
  for (const onnx::AttributeProto& a : p->attribute()) {
    if (a.name() == "value") return read_tensor(a.t(), value).scalar();
    if (a.name() == "value_float") return a.f();
    if (a.name() == "value_int") return static_cast<double>(a.i());
  }
  return std::nullopt;
}

const std::vector<std::pair<const onnx::NodeProto*, int>>& Importer::readers(const std::string& value) const {
  static const std::vector<std::pair<const onnx::NodeProto*, int>> none;
  auto it = readers_.find(value);
  return it == readers_.end() ? none : it->second;
}

const Known* Importer::known(const std::string& value) const {
  auto it = known_.find(value);
  return it == known_.end() ? nullptr : &it->second;
}

Tensor Importer::tensor(const std::string& value) {
  if (auto it = tensors_.find(value); it != tensors_.end()) return it->second;
  if (auto it = pending_params_.find(value); it != pending_params_.end()) {
    const Known k = read_tensor(*it->second, fmt::format("{}: initializer '{}'", source_, value));
    SymShape shape;
    for (int64_t d : k.shape) shape.push_back(SymDim::of(d));
    Tensor t{ir_name(value, true), DType::f32, shape};
    // The values come from the weights file; the initializer is only what a
    // run without one starts from.
    const char* init = shape.size() >= 2 ? "normal(0.02)" : value.ends_with("weight") ? "ones" : "zeros";
    lines_.push_back(fmt::format("  %{} = param init={}{} : f32{}", t.name, init,
                                 layer_.empty() ? "" : fmt::format(" layer=\"{}\"", layer_), shape_text(shape)));
    ImportedWeight w{t.name, TensorType{DType::f32, k.shape}, {}};
    w.values.assign(k.reals.begin(), k.reals.end());
    weights_.push_back(std::move(w));
    tensors_[value] = t;
    pending_params_.erase(it);
    return t;
  }
  if (const Known* k = known(value)) {
    // Only a single number has an IR form of its own; a constant tensor
    // used as data has none (masks are recognised where they are used).
    const std::optional<double> v = k->scalar();
    if (!v)
      fail(fmt::format("input '{}' is a constant tensor of shape {} used as data: the IR has no constant tensors "
                       "(only single numbers, causal masks and index ranges are translated)",
                       value, shape_str(k->shape)));
    if (std::isnan(*v)) fail(fmt::format("input '{}' is NaN", value));
    Tensor t{ir_name(value.empty() ? "c" : value, true), DType::f32, {}};
    lines_.push_back(fmt::format("  %{} = constant value={}{} : f32[]", t.name, number_text(*v),
                                 layer_.empty() ? "" : fmt::format(" layer=\"{}\"", layer_)));
    tensors_[value] = t;
    return t;
  }
  fail(fmt::format("input '{}' is not defined before this node", value));
}

bool Importer::has_input(int i) const { return i < node_->input_size() && !node_->input(i).empty(); }

Tensor Importer::input(int i) {
  if (!has_input(i)) fail(fmt::format("input {} is missing", i));
  return tensor(node_->input(i));
}

const Known& Importer::known_input(int i, const char* what) {
  if (!has_input(i)) fail(fmt::format("{} (input {}) is missing", what, i));
  const Known* k = known(node_->input(i));
  if (!k)
    fail(fmt::format("{} (input '{}') must be known when importing (a constant, or computed from shapes); it is "
                     "computed from data",
                     what, node_->input(i)));
  return *k;
}

void Importer::set(const std::string& value, Known k) {
  tensors_.erase(value);
  known_[value] = std::move(k);
}

void Importer::set(const std::string& value, Tensor t) {
  known_.erase(value);
  tensors_[value] = std::move(t);
}

std::string Importer::ir_name(const std::string& text, bool unique) {
  std::string s;
  for (char c : text) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
    s += ok ? c : c == '/' || c == ':' ? '.' : '_';
  }
  while (!s.empty() && s.front() == '.') s.erase(s.begin());
  if (s.ends_with("_output_0")) s.resize(s.size() - 9);
  if (s.empty() || (s[0] >= '0' && s[0] <= '9')) s = "v" + s;
  if (!unique) return s;
  std::string name = s;
  for (int k = 1; names_.count(name); ++k) name = fmt::format("{}.{}", s, k);
  names_.insert(name);
  return name;
}

Tensor Importer::emit(const std::string& value, const std::string& op_text, DType dtype, const SymShape& shape) {
  return emit_many({value}, op_text, dtype, {shape}).front();
}

std::vector<Tensor> Importer::emit_many(const std::vector<std::string>& values, const std::string& op_text,
                                        DType dtype, const std::vector<SymShape>& shapes) {
  std::vector<Tensor> out;
  std::string names, types;
  for (size_t i = 0; i < values.size(); ++i) {
    Tensor t{ir_name(values[i].empty() ? node_->name() : values[i], true), dtype, shapes[i]};
    names.append(i ? ", %" : "%").append(t.name);
    types.append(i ? ", " : "").append(fmt::format("{}{}", dtype_name(dtype), shape_text(t.shape)));
    if (!values[i].empty()) set(values[i], t);
    out.push_back(std::move(t));
  }
  lines_.push_back(fmt::format("  {} = {}{} : {}", names, op_text,
                               layer_.empty() ? "" : fmt::format(" layer=\"{}\"", layer_), types));
  return out;
}

std::string Importer::operands(const std::vector<Tensor>& ts) {
  std::string out;
  for (size_t i = 0; i < ts.size(); ++i) out.append(i ? ", %" : "%").append(ts[i].name);
  return out;
}

void Importer::begin(const onnx::NodeProto& node, int index) {
  node_ = &node;
  node_index_ = index;
  const std::string layer = layer_of(node.name());
  // An op outside every module (a residual add, the head's matmul) joins
  // the layer before it.
  if (!layer.empty()) layer_ = layer;
}

namespace {
const onnx::AttributeProto* find_attr(const onnx::NodeProto& n, const char* name) {
  for (const onnx::AttributeProto& a : n.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}
}  // namespace

int64_t Importer::int_attr(const char* name, int64_t fallback) const {
  const onnx::AttributeProto* a = find_attr(*node_, name);
  return a ? a->i() : fallback;
}

double Importer::real_attr(const char* name, double fallback) const {
  const onnx::AttributeProto* a = find_attr(*node_, name);
  return a ? a->f() : fallback;
}

std::optional<std::vector<int64_t>> Importer::ints_attr(const char* name) const {
  const onnx::AttributeProto* a = find_attr(*node_, name);
  if (!a) return std::nullopt;
  return std::vector<int64_t>(a->ints().begin(), a->ints().end());
}

void Importer::fail(const std::string& message) const {
  throw Error(fmt::format("{}: node {} '{}' ({}): {}", source_, node_index_, node_->name(), node_->op_type(),
                          message));
}

}  // namespace pf::onnx_import
