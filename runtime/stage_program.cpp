// A differentiated program compiled for the CPU.
#include "runtime/stage_program.h"

#include <fmt/format.h>

#include <cstring>

#include "backends/cpu/parallel.h"
#include "ir/diagnostic.h"

namespace pf {

StageProgram::StageProgram(Module module, const DimBinding& binding, GradientProgram gradients, ParameterSet& params,
                           int slots, bool caller_results, bool split)
    : module_(std::move(module)), gradients_(std::move(gradients)) {
  const Function& graph = module_.graph();
  const Function* backward = module_.find_function(gradients_.backward);
  if (!backward) throw Error(fmt::format("@{} has no backward function @{}", graph.name, gradients_.backward));

  for (const Op& op : graph.ops)
    if (op.kind == OpKind::param)
      params.add(graph.values[op.results[0]].name, graph.type_of(op.results[0]), op.attr("init")->init);

  // The stash goes straight from the forward's kernels into the slot's buffer.
  cpu::ExecutorOptions fwd_options;
  if (caller_results)
    for (int r = 0; r < gradients_.original_results; ++r) fwd_options.caller_outputs.push_back(r);
  for (size_t s = 0; s < gradients_.stash.size(); ++s) {
    fwd_options.caller_outputs.push_back(gradients_.original_results + static_cast<int>(s));
    const TensorType& t = graph.type_of(graph.returns[gradients_.original_results + s]);
    stash_offsets_.push_back(stash_bytes_);
    stash_bytes_ += (t.bytes() + 63) / 64 * 64;
  }
  forward_ = std::make_unique<cpu::Executor>(graph, binding, DType::f32, fwd_options);
  std::vector<cpu::Executor*> readers_of_params = {forward_.get()};
  if (split) {
    split_ = split_backward(module_, gradients_, binding);
    const Function& input_fn = *module_.find_function(split_->input);
    const Function& weight_fn = *module_.find_function(split_->weight);
    // The deferred values go straight from the input part's kernels into the slot.
    cpu::ExecutorOptions input_options;
    const int first_deferred = static_cast<int>(gradients_.input_grads.size());
    for (size_t d = 0; d < split_->deferred.size(); ++d) {
      input_options.caller_outputs.push_back(first_deferred + static_cast<int>(d));
      const TensorType& t = input_fn.type_of(input_fn.returns[static_cast<size_t>(first_deferred) + d]);
      deferred_offsets_.push_back(stash_bytes_ + deferred_bytes_);
      deferred_bytes_ += (t.bytes() + 63) / 64 * 64;
    }
    if (!input_fn.returns.empty()) {
      input_part_ = std::make_unique<cpu::Executor>(input_fn, binding, DType::f32, input_options);
      readers_of_params.push_back(input_part_.get());
    }
    weight_part_ = std::make_unique<cpu::Executor>(weight_fn, binding, DType::f32);
    readers_of_params.push_back(weight_part_.get());
  } else {
    backward_ = std::make_unique<cpu::Executor>(*backward, binding, DType::f32);
    readers_of_params.push_back(backward_.get());
  }
  for (cpu::Executor* e : readers_of_params)
    for (const std::string& name : e->param_names()) e->bind_param(name, params.at(name).value.data());
  for (const std::string& name : gradients_.params) grad_targets_.push_back(&params.at(name));

  // Slots are allocated and touched once: first touch is slow on these machines.
  stash_.resize(static_cast<size_t>(std::max(1, slots)));
  for (auto& slot : stash_) slot.assign(static_cast<size_t>(stash_bytes_ + deferred_bytes_), std::byte{0});
  seeds_.resize(stash_.size());
}

StageProgram::~StageProgram() = default;

const Function& StageProgram::graph() const { return module_.graph(); }

void StageProgram::forward(int slot, std::span<const void* const> inputs, std::span<void* const> results) {
  for (size_t i = 0; i < inputs.size(); ++i) forward_->bind_input(static_cast<int>(i), inputs[i]);
  for (size_t r = 0; r < results.size(); ++r) forward_->bind_output(static_cast<int>(r), results[r]);
  std::byte* base = stash_.at(static_cast<size_t>(slot)).data();
  for (size_t s = 0; s < stash_offsets_.size(); ++s)
    forward_->bind_output(gradients_.original_results + static_cast<int>(s), base + stash_offsets_[s]);
  forward_->run();
}

const void* StageProgram::result(int i) const { return forward_->output(i); }
const TensorType& StageProgram::result_type(int i) const { return forward_->output_type(i); }

int StageProgram::bind_backward_args(cpu::Executor& e, int slot, std::span<const void* const> seeds) {
  int arg = 0;
  for (const void* seed : seeds) e.bind_input(arg++, seed);
  const std::byte* base = stash_.at(static_cast<size_t>(slot)).data();
  for (int64_t offset : stash_offsets_) e.bind_input(arg++, base + offset);
  return arg;
}

void StageProgram::run_into_grads(cpu::Executor& e, int first_param, bool overwrite_grads) {
  // Rebinding moves a kernel's writes (not only a final copy), so it is done
  // only when the mode changes, not per micro-batch.
  if (overwrite_grads != grads_bound_) {
    for (size_t p = 0; p < grad_targets_.size(); ++p) {
      float* target = overwrite_grads ? grad_targets_[p]->grad.data() : nullptr;
      e.bind_output(first_param + static_cast<int>(p), target);
    }
    grads_bound_ = overwrite_grads;
  }
  e.run();
  if (overwrite_grads) return;
  for (size_t p = 0; p < grad_targets_.size(); ++p) {
    const float* g = static_cast<const float*>(e.output(first_param + static_cast<int>(p)));
    float* acc = grad_targets_[p]->grad.data();
    const auto n = static_cast<int64_t>(grad_targets_[p]->grad.size());
    cpu::parallel_for(n, cpu::kElementwiseGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) acc[i] += g[i];
    });
  }
}

void StageProgram::backward(int slot, std::span<const void* const> seeds, bool overwrite_grads) {
  if (split_) throw Error("this stage program runs its backward in two parts: backward_input, then backward_weight");
  bind_backward_args(*backward_, slot, seeds);
  run_into_grads(*backward_, static_cast<int>(gradients_.input_grads.size()), overwrite_grads);
  last_input_grads_ = backward_.get();
}

void StageProgram::backward_input(int slot, std::span<const void* const> seeds) {
  if (!split_) throw Error("backward_input: this stage program runs its backward in one part");
  seeds_.at(static_cast<size_t>(slot)).assign(seeds.begin(), seeds.end());
  if (!input_part_) return;  // no input gradient to send: everything waits for the weight part
  bind_backward_args(*input_part_, slot, seeds);
  std::byte* base = stash_.at(static_cast<size_t>(slot)).data();
  const int first_deferred = static_cast<int>(gradients_.input_grads.size());
  for (size_t d = 0; d < deferred_offsets_.size(); ++d)
    input_part_->bind_output(first_deferred + static_cast<int>(d), base + deferred_offsets_[d]);
  input_part_->run();
  last_input_grads_ = input_part_.get();
}

void StageProgram::backward_weight(int slot, bool overwrite_grads) {
  if (!split_) throw Error("backward_weight: this stage program runs its backward in one part");
  int arg = bind_backward_args(*weight_part_, slot, seeds_.at(static_cast<size_t>(slot)));
  const std::byte* base = stash_.at(static_cast<size_t>(slot)).data();
  for (int64_t offset : deferred_offsets_) weight_part_->bind_input(arg++, base + offset);
  run_into_grads(*weight_part_, 0, overwrite_grads);
}

std::vector<cpu::Executor*> StageProgram::executors() const {
  std::vector<cpu::Executor*> out;
  for (cpu::Executor* e : {forward_.get(), backward_.get(), input_part_.get(), weight_part_.get()})
    if (e) out.push_back(e);
  return out;
}

void StageProgram::set_profile(bool on) {
  for (cpu::Executor* e : executors()) e->set_profile(on);
}

cpu::OpSeconds StageProgram::op_seconds() const {
  cpu::OpSeconds total{};
  for (const cpu::Executor* e : executors()) {
    const cpu::OpSeconds& part = e->op_seconds();
    for (size_t k = 0; k < total.size(); ++k) total[k] += part[k];
  }
  return total;
}

void StageProgram::reset_profile() {
  for (cpu::Executor* e : executors()) e->reset_profile();
}

const void* StageProgram::input_grad(int i) const {
  if (!last_input_grads_) throw Error("input_grad: no backward has run yet");
  return last_input_grads_->output(i);
}

int64_t StageProgram::arena_bytes() const {
  int64_t total = 0;
  for (const cpu::Executor* e : executors()) total += e->arena_bytes();
  return total;
}

}  // namespace pf
