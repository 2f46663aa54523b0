// A differentiated program compiled for the CPU.
#include "runtime/stage_program.h"

#include <algorithm>
#include <cstring>
#include <iterator>

#include "backends/common/memory_plan.h"
#include "backends/cpu/parallel.h"
#include "ir/diagnostic.h"
#include "runtime/optimizer_shard.h"
#include "runtime/stage_executors.h"
#include "runtime/train_options.h"

namespace pf {

StageProgram::StageProgram(Module module, const DimBinding& binding, GradientProgram gradients,
                           std::optional<BackwardSplit> split, ParameterSet& params, int slots, bool caller_results,
                           backend::TensorParallelGroup* tensor_parallel, bool bf16_products,
                           backend::TensorParallelGroup* expert_parallel)
    : params_(&params), module_(std::move(module)), gradients_(std::move(gradients)) {
  const Function& graph = module_.graph();
  for (const Op& op : graph.ops)
    if (op.kind == OpKind::param)
      params.add_declared(graph, op);
  programs_ = std::make_unique<StageExecutors<cpu::Executor>>(
      module_, gradients_, split, slots, caller_results, /*caller_grads=*/false, backend::kArenaAlignment,
      [&](const Function& f, std::vector<int> caller_outputs) {
        cpu::ExecutorOptions options;
        options.caller_outputs = std::move(caller_outputs);
        options.tensor_parallel = tensor_parallel;
        options.expert_parallel = expert_parallel;
        options.bf16_products = bf16_products;
        return std::make_unique<cpu::Executor>(f, binding, DType::f32, options);
      });
  for (cpu::Executor* e : programs_->all())
    for (const std::string& name : e->param_names()) e->bind_param(name, params.at(name).value.data());
  for (const std::string& name : gradients_.params) grad_targets_.push_back(&params.at(name));

  // Slots are allocated and touched once: first touch is slow on these machines.
  stash_.resize(static_cast<size_t>(programs_->slots()));
  for (auto& s : stash_) s.assign(static_cast<size_t>(programs_->slot_bytes()), std::byte{0});
}

StageProgram::~StageProgram() = default;

const Function& StageProgram::graph() const { return module_.graph(); }
bool StageProgram::split() const { return programs_->split(); }
const BackwardSplit& StageProgram::backward_split() const { return programs_->backward_split(); }
int64_t StageProgram::stash_bytes() const { return programs_->slot_bytes(); }

const void* StageProgram::stashed_on_host(int slot_index, std::string_view name) const {
  const auto it = std::find(gradients_.stash.begin(), gradients_.stash.end(), name);
  if (it == gradients_.stash.end()) return nullptr;
  const auto s = static_cast<size_t>(it - gradients_.stash.begin());
  return stash_.at(static_cast<size_t>(slot_index)).data() + programs_->stash_offset(s);
}

void StageProgram::forward(int slot_index, std::span<const void* const> inputs, std::span<void* const> results) {
  programs_->run_forward(slot(slot_index), inputs, results);
}

const void* StageProgram::result(int i) const { return programs_->forward().output(i); }
TensorType StageProgram::result_type(int i) const { return programs_->forward().output_type(i); }

void StageProgram::run_into_grads(cpu::Executor& e, int first_param, bool overwrite_grads) {
  // The gradients are written straight into the parameter set's buffers: the
  // first micro-batch of a step overwrites them, later ones add (in the GEMM
  // itself where it can). Binding and mode change only between steps.
  GradMode& mode = grad_modes_[&e];
  if (!mode.bound) {
    for (size_t p = 0; p < grad_targets_.size(); ++p)
      e.bind_output(first_param + static_cast<int>(p), grad_targets_[p]->grad.data());
    mode.bound = true;
  }
  if (mode.accumulating == overwrite_grads) {
    for (size_t p = 0; p < grad_targets_.size(); ++p)
      e.accumulate_output(first_param + static_cast<int>(p), !overwrite_grads);
    mode.accumulating = !overwrite_grads;
  }
  e.run();
}

void StageProgram::backward(int slot_index, std::span<const void* const> seeds, bool overwrite_grads) {
  programs_->run_backward(slot(slot_index), seeds,
                          [&](cpu::Executor& e, int first_param) { run_into_grads(e, first_param, overwrite_grads); });
}

void StageProgram::backward_input(int slot_index, std::span<const void* const> seeds) {
  programs_->run_backward_input(slot_index, slot(slot_index), seeds);
}

void StageProgram::backward_weight(int slot_index, bool overwrite_grads) {
  programs_->run_backward_weight(slot_index, slot(slot_index), [&](cpu::Executor& e, int first_param) {
    run_into_grads(e, first_param, overwrite_grads);
  });
}

void StageProgram::set_profile(bool on) { programs_->set_profile(on); }

backend::OpSeconds StageProgram::op_seconds() const {
  backend::OpSeconds total{};
  for (const cpu::Executor* e : programs_->all()) {
    const backend::OpSeconds& part = e->op_seconds();
    for (size_t k = 0; k < total.size(); ++k) total[k] += part[k];
  }
  return total;
}

std::vector<backend::OpTime> StageProgram::op_times() const { return programs_->op_times(); }

void StageProgram::reset_profile() { programs_->reset_profile(); }

const void* StageProgram::input_grad(int i) const { return programs_->last_input_grads().output(i); }

void StageProgram::copy_input_grad(int i, void* dst, int64_t bytes) {
  std::memcpy(dst, input_grad(i), static_cast<size_t>(bytes));
}

void* StageProgram::allocate(int64_t bytes) {
  // Touched once here: first touch of fresh memory is slow on these machines.
  return buffers_.emplace_back(static_cast<size_t>(bytes), std::byte{0}).data();
}

const void* StageProgram::scalar(float value) { return &scalars_.emplace_back(value); }

void StageProgram::read_floats(const void* src, float* dst, int64_t n) {
  if (src != dst) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}

void StageProgram::receive(StageRunner& sender, HandOff kind, int mb, std::span<const HandOffCopy> copies) {
  sender.copy_to_host(kind, mb, copies);
}

void StageProgram::copy_to_host(HandOff, int, std::span<const HandOffCopy> copies) {
  for (const HandOffCopy& c : copies)
    if (c.dst != c.src) std::memcpy(c.dst, c.src, static_cast<size_t>(c.bytes));
}

std::unique_ptr<Optimizer> StageProgram::make_optimizer(const TrainingOptions& options,
                                                        const OptimizerShare& share) {
  return pf::make_optimizer(options.optimizer, share_params(params_->optimizer_params(), share),
                            options.momentum, options.weight_decay);
}

void StageProgram::read_grad(std::string_view name, float* host) {
  const std::vector<float>& g = params_->at(name).grad;
  std::copy(g.begin(), g.end(), host);
}

void StageProgram::write_grad(std::string_view name, const float* host) {
  std::vector<float>& g = params_->at(name).grad;
  std::copy(host, host + g.size(), g.begin());
}

double StageProgram::grad_sq_norm(std::span<const Param> params) { return pf::grad_sq_norm(params); }

void StageProgram::scale_grads(std::span<const Param> params, double factor) { pf::scale_grads(params, factor); }

int64_t StageProgram::arena_bytes() const {
  int64_t total = 0;
  for (const cpu::Executor* e : programs_->all()) total += e->arena_bytes();
  return total;
}

}  // namespace pf
