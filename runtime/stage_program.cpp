// A differentiated program compiled for the CPU.
#include "runtime/stage_program.h"

#include <fmt/format.h>

#include <cstring>

#include "backends/cpu/parallel.h"
#include "ir/diagnostic.h"

namespace pf {

StageProgram::StageProgram(Module module, const DimBinding& binding, GradientProgram gradients, ParameterSet& params,
                           int slots, bool caller_results)
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
  backward_ = std::make_unique<cpu::Executor>(*backward, binding, DType::f32);
  for (const std::string& name : forward_->param_names()) forward_->bind_param(name, params.at(name).value.data());
  for (const std::string& name : backward_->param_names()) backward_->bind_param(name, params.at(name).value.data());
  for (const std::string& name : gradients_.params) grad_targets_.push_back(&params.at(name));

  // Slots are allocated and touched once: first touch is slow on these machines.
  stash_.resize(static_cast<size_t>(std::max(1, slots)));
  for (auto& slot : stash_) slot.assign(static_cast<size_t>(stash_bytes_), std::byte{0});
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

void StageProgram::backward(int slot, std::span<const void* const> seeds, bool overwrite_grads) {
  int arg = 0;
  for (const void* seed : seeds) backward_->bind_input(arg++, seed);
  const std::byte* base = stash_.at(static_cast<size_t>(slot)).data();
  for (int64_t offset : stash_offsets_) backward_->bind_input(arg++, base + offset);
  const int first_param = static_cast<int>(gradients_.input_grads.size());
  // Rebinding moves a kernel's writes (not only a final copy), so it is done
  // only when the mode changes, not per micro-batch.
  if (overwrite_grads != grads_bound_) {
    for (size_t p = 0; p < grad_targets_.size(); ++p) {
      float* target = overwrite_grads ? grad_targets_[p]->grad.data() : nullptr;
      backward_->bind_output(first_param + static_cast<int>(p), target);
    }
    grads_bound_ = overwrite_grads;
  }
  backward_->run();
  if (overwrite_grads) return;
  for (size_t p = 0; p < grad_targets_.size(); ++p) {
    const float* g = static_cast<const float*>(backward_->output(first_param + static_cast<int>(p)));
    float* acc = grad_targets_[p]->grad.data();
    const auto n = static_cast<int64_t>(grad_targets_[p]->grad.size());
    cpu::parallel_for(n, cpu::kElementwiseGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) acc[i] += g[i];
    });
  }
}

void StageProgram::set_profile(bool on) {
  forward_->set_profile(on);
  backward_->set_profile(on);
}

cpu::OpSeconds StageProgram::op_seconds() const {
  cpu::OpSeconds total = forward_->op_seconds();
  const cpu::OpSeconds& b = backward_->op_seconds();
  for (size_t k = 0; k < total.size(); ++k) total[k] += b[k];
  return total;
}

void StageProgram::reset_profile() {
  forward_->reset_profile();
  backward_->reset_profile();
}

const void* StageProgram::input_grad(int i) const { return backward_->output(i); }

int64_t StageProgram::arena_bytes() const { return forward_->arena_bytes() + backward_->arena_bytes(); }

}  // namespace pf
