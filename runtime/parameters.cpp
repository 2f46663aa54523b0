// The trainable parameters of a model or of a pipeline stage.
#include "runtime/parameters.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "ir/diagnostic.h"
#include "runtime/random.h"
#include "runtime/safetensors.h"

namespace pf {

namespace {

// (fan_in, fan_out) of a weight in Pipeforge's layouts.
std::pair<double, double> fans(const Shape& shape) {
  if (shape.empty()) return {1, 1};
  if (shape.size() == 1) return {static_cast<double>(shape[0]), static_cast<double>(shape[0])};
  double receptive = 1;
  for (size_t i = 2; i < shape.size(); ++i) receptive *= static_cast<double>(shape[i]);
  if (shape.size() == 2) return {static_cast<double>(shape[0]), static_cast<double>(shape[1])};
  return {static_cast<double>(shape[1]) * receptive, static_cast<double>(shape[0]) * receptive};
}

}  // namespace

void initialize_tensor(const Init& init, const TensorType& type, uint64_t seed, float* out) {
  int64_t n = type.numel();
  std::mt19937_64 rng(seed);
  auto [fan_in, fan_out] = fans(type.shape);
  auto uniform = [&](double a, double b) {
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(a + (b - a) * uniform01(rng));
  };
  auto normal = [&](double stddev) {
    fill_normal(rng, out, n);
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(out[i] * stddev);
  };
  switch (init.kind) {
    case Init::Kind::zeros:
      std::fill(out, out + n, 0.0f);
      break;
    case Init::Kind::ones:
      std::fill(out, out + n, 1.0f);
      break;
    case Init::Kind::normal:
      normal(init.args[0]);
      break;
    case Init::Kind::uniform:
      uniform(init.args[0], init.args[1]);
      break;
    case Init::Kind::xavier: {
      double limit = std::sqrt(6.0 / (fan_in + fan_out));
      uniform(-limit, limit);
      break;
    }
    case Init::Kind::kaiming:
      normal(std::sqrt(2.0 / fan_in));
      break;
  }
}

ParameterSet::Entry& ParameterSet::add(const std::string& name, const TensorType& type, const Init& init,
                                       const std::optional<ParamPiece>& piece) {
  if (type.dtype != DType::f32)
    throw Error(fmt::format("parameter {} is {}; parameters are trained in f32", name, type.str()));
  if (Entry* e = find(name)) {
    if (e->type != type || !(e->init == init) || e->piece != piece)
      throw Error(fmt::format("parameter {} is declared twice, as {} init={} and as {} init={}", name, e->type.str(),
                              e->init.str(), type.str(), init.str()));
    return *e;
  }
  Entry& e = entries_.emplace_back();
  e.name = name;
  e.type = type;
  e.init = init;
  e.piece = piece;
  e.value.assign(static_cast<size_t>(type.numel()), 0.0f);
  e.grad.assign(static_cast<size_t>(type.numel()), 0.0f);
  return e;
}

ParameterSet::Entry& ParameterSet::add_declared(const Function& graph, const Op& param) {
  const ValueId v = param.results[0];
  return add(graph.values[v].name, graph.type_of(v), param.attr("init")->init, param_piece(param));
}

ParameterSet::Entry* ParameterSet::find(std::string_view name) {
  for (Entry& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

const ParameterSet::Entry* ParameterSet::find(std::string_view name) const {
  return const_cast<ParameterSet*>(this)->find(name);
}

ParameterSet::Entry& ParameterSet::at(std::string_view name) {
  Entry* e = find(name);
  if (!e) throw Error(fmt::format("no parameter named {}", name));
  return *e;
}

int64_t ParameterSet::numel() const {
  int64_t n = 0;
  for (const Entry& e : entries_) n += e.type.numel();
  return n;
}

void ParameterSet::initialize(uint64_t seed) {
  std::vector<float> whole;
  for (Entry& e : entries_) {
    if (!e.piece) {
      initialize_tensor(e.init, e.type, splitmix64(seed ^ fnv1a(e.name)), e.value.data());
      continue;
    }
    const TensorType type = e.piece->whole_type(e.type);
    whole.resize(static_cast<size_t>(type.numel()));
    initialize_tensor(e.init, type, splitmix64(seed ^ fnv1a(e.piece->whole)), whole.data());
    e.piece->cut(e.type, reinterpret_cast<const std::byte*>(whole.data()), reinterpret_cast<std::byte*>(e.value.data()),
                 sizeof(float));
  }
}

void ParameterSet::zero_grads() {
  for (Entry& e : entries_) std::fill(e.grad.begin(), e.grad.end(), 0.0f);
}

void ParameterSet::load_values(const SafeTensors& file, const std::string& what, bool allow_unexpected) {
  std::vector<std::pair<std::string, TensorType>> expected;
  for (const Entry& e : entries_) expected.emplace_back(e.name, e.type);
  check_tensors(file, expected, what, allow_unexpected);
  for (Entry& e : entries_) {
    const TensorData& t = file.at(e.name);
    std::memcpy(e.value.data(), t.bytes.data(), t.bytes.size());
  }
}

void ParameterSet::save_values(SafeTensors& file) const {
  for (const Entry& e : entries_) file.add(e.name, e.type, e.value.data());
}

void ParameterSet::save_grads(SafeTensors& file) const {
  for (const Entry& e : entries_) file.add(e.name, e.type, e.grad.data());
}

std::vector<Param> ParameterSet::optimizer_params() {
  std::vector<Param> out;
  for (Entry& e : entries_) out.push_back({e.name, e.type.shape, e.value.data(), e.grad.data(), e.type.rank() >= 2});
  return out;
}

}  // namespace pf
