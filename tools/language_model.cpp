// A trained language model run forward on one CPU device for sampling.
#include "tools/language_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "backends/cpu/executor.h"
#include "ir/verifier.h"
#include "passes/pipeline.h"
#include "runtime/checkpoint.h"
#include "runtime/safetensors.h"

namespace pf::tools {

namespace {

/// The value the graph's loss takes its logits from: the first operand of
/// the cross_entropy that computes the loss.
ValueId logits_of_loss(const Function& g) {
  const Value& loss = g.values[static_cast<size_t>(g.returns.at(0))];
  const Op* op = loss.def_op >= 0 ? &g.ops[static_cast<size_t>(loss.def_op)] : nullptr;
  if (!op || op->kind != OpKind::cross_entropy)
    throw Error(fmt::format("@{} is not a language model: its loss %{} is {}, not the cross_entropy of logits over a "
                            "vocabulary",
                            g.name, loss.name, op ? std::string(op_name(op->kind)) : "an input"));
  return op->operands[0];
}

}  // namespace

struct LanguageModel::Impl {
  std::string name;
  int64_t context = 0, vocabulary = 0;
  std::vector<std::vector<float>> weights;  // bound to the executor's parameters
  std::vector<int32_t> tokens;              // its first input, [1, T]
  std::vector<std::vector<std::byte>> unread_inputs;  // the targets: bound, never read
  std::unique_ptr<cpu::Executor> forward;

  const float* run(std::span<const int32_t> ids, int32_t padding) {
    std::fill(tokens.begin(), tokens.end(), padding);
    std::copy(ids.begin(), ids.end(), tokens.begin());
    forward->run();
    return static_cast<const float*>(forward->output(0));
  }

  /// The logits at position 0 must not change with the tokens after it.
  void check_causal() {
    if (context < 2) return;
    const int32_t first[] = {0};
    const float* row = run(first, 0);
    const std::vector<float> with_zeros(row, row + vocabulary);
    row = run(first, static_cast<int32_t>(vocabulary - 1));
    float scale = 0, change = 0;
    for (int64_t v = 0; v < vocabulary; ++v) {
      scale = std::max(scale, std::abs(with_zeros[static_cast<size_t>(v)]));
      change = std::max(change, std::abs(row[v] - with_zeros[static_cast<size_t>(v)]));
    }
    if (!(change <= 1e-5f * std::max(scale, 1.0f)))
      throw Error(fmt::format("@{} is not causal: the logits at a position change with the tokens after it (by "
                              "{:.3g}), and sampling reads a shorter sequence with padding after it; mask the "
                              "attention with causal_mask, as examples/gpt.pf does",
                              name, change));
  }
};

LanguageModel::LanguageModel(LoadedModel model, const std::string& weights) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  {
    const Function& g = model.module.graph();
    if (g.args.size() < 2 || g.arg_types[0].dtype != DType::i32 || g.arg_types[0].dims.size() != 2)
      throw Error(fmt::format("@{} does not read tokens: {}, not i32[B,T] beside its targets", g.name,
                              g.args.empty() ? "it has no input"
                                             : fmt::format("its first input %{} is {}",
                                                           g.values[static_cast<size_t>(g.args[0])].name,
                                                           g.arg_types[0].str())));
    if (g.arg_types[0].dims[0].kind() != DimExpr::Kind::symbol)
      throw Error(fmt::format("@{} reads a batch of {} sequences: declare its batch as a dimension (dim B = ...), "
                              "which sampling binds to one sequence",
                              g.name, g.arg_types[0].dims[0].str()));
  }
  bind_batch(model, 1);
  PassContext ctx{model.binding};
  run_pipeline(model.module, PassPipeline::model, ctx);
  Function& g = model.module.graph();
  m.name = g.name;
  m.context = g.type_of(g.args[0]).shape[1];
  const ValueId logits = logits_of_loss(g);
  const TensorType& logits_type = g.type_of(logits);
  m.vocabulary = logits_type.rank() > 0 ? logits_type.shape.back() : 0;
  if (logits_type.dtype != DType::f32 || m.vocabulary <= 0 || logits_type.numel() != m.context * m.vocabulary)
    throw Error(fmt::format("@{}'s logits %{} are {}: sampling reads f32 logits of every one of its {} positions",
                            g.name, g.values[static_cast<size_t>(logits)].name, logits_type.str(), m.context));

  // The graph up to the logits: the loss and whatever only it read go.
  g.returns = {logits};
  g.result_types = {SymType::from(logits_type)};
  make_dce_pass()->run(model.module, ctx);
  verify_module(model.module, model.binding);
  const std::vector<std::vector<int>> users = g.users();
  for (size_t i = 1; i < g.args.size(); ++i)
    if (!users[static_cast<size_t>(g.args[i])].empty())
      throw Error(fmt::format("@{} reads %{} besides its tokens on the way to its logits: sampling gives a model its "
                              "tokens only",
                              g.name, g.values[static_cast<size_t>(g.args[i])].name));
  m.forward = std::make_unique<cpu::Executor>(g, model.binding, DType::f32);

  SafeTensors file = read_weights(weights);
  std::vector<std::pair<std::string, TensorType>> expected;
  for (const std::string& p : m.forward->param_names()) expected.emplace_back(p, m.forward->param_type(p));
  check_tensors(file, expected, weights, /*allow_unexpected=*/true);
  for (const auto& [p, type] : expected) {
    const std::span<const float> values = file.at(p).view<float>();
    m.weights.emplace_back(values.begin(), values.end());
    m.forward->bind_param(p, m.weights.back().data());
  }
  m.tokens.resize(static_cast<size_t>(m.context));
  m.forward->bind_input(0, m.tokens.data());
  for (int i = 1; i < static_cast<int>(g.args.size()); ++i) {
    m.unread_inputs.emplace_back(static_cast<size_t>(m.forward->input_type(i).bytes()));
    m.forward->bind_input(i, m.unread_inputs.back().data());
  }
  m.check_causal();
}

LanguageModel::~LanguageModel() = default;
LanguageModel::LanguageModel(LanguageModel&&) noexcept = default;
LanguageModel& LanguageModel::operator=(LanguageModel&&) noexcept = default;

const std::string& LanguageModel::name() const { return impl_->name; }
int64_t LanguageModel::context() const { return impl_->context; }
int64_t LanguageModel::vocabulary() const { return impl_->vocabulary; }

std::span<const float> LanguageModel::next(std::span<const int32_t> tokens) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n < 1 || n > impl_->context)
    throw Error(fmt::format("@{} reads 1 to {} tokens at once, not {}", impl_->name, impl_->context, n));
  for (int32_t t : tokens)
    if (t < 0 || t >= impl_->vocabulary)
      throw Error(fmt::format("token {} is not in @{}'s vocabulary of {} ids", t, impl_->name, impl_->vocabulary));
  const float* logits = impl_->run(tokens, 0);
  return {logits + (n - 1) * impl_->vocabulary, static_cast<size_t>(impl_->vocabulary)};
}

std::vector<int32_t> LanguageModel::generate(std::span<const int32_t> prompt, int64_t count, const Sampling& how,
                                             uint64_t seed, const std::function<void(int32_t)>& on_token) {
  if (prompt.empty()) throw Error("the prompt is empty: give the model at least one token to go on from");
  std::vector<int32_t> history(prompt.begin(), prompt.end());
  std::mt19937_64 rng(seed);
  for (int64_t n = 0; n < count; ++n) {
    // The model reads at most its context: the latest tokens.
    const size_t seen = std::min(history.size(), static_cast<size_t>(impl_->context));
    const auto token = static_cast<int32_t>(draw_token(next({history.data() + history.size() - seen, seen}), how, rng));
    history.push_back(token);
    if (on_token) on_token(token);
  }
  return {history.begin() + static_cast<std::ptrdiff_t>(prompt.size()), history.end()};
}

}  // namespace pf::tools
