// The executors of one differentiated stage program and the order a backward, whole or split, runs them in; shared by StageProgram (CPU) and CudaStageProgram.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "backends/common/op_time.h"
#include "ir/align.h"
#include "ir/diagnostic.h"
#include "ir/gradients.h"
#include "ir/module.h"

namespace pf {

/// The forward and backward executors of a stage program over executors of
/// type `Executor` (cpu::Executor or cuda::Executor, which bind and run
/// alike), with the layout of a stash slot: the stash, then the values a
/// split backward defers from B to W. The programs own the slots' memory and
/// decide where the parameters' gradients go; this class only runs the
/// parts in order and binds what each reads and writes.
///
/// Included only by the two programs' .cpp files.
template <class Executor>
class StageExecutors {
 public:
  /// Compiles function `f` of the module, leaving results `caller_outputs` to the caller.
  using Make = std::function<std::unique_ptr<Executor>(const Function& f, std::vector<int> caller_outputs)>;
  /// Runs `e`, whose results from `first_param` on are the parameters' gradients, and folds them in.
  using RunIntoGrads = std::function<void(Executor& e, int first_param)>;

  /// The forward of the module's graph (its own results left to the caller
  /// with `caller_results`; the stash always, into the slot) and its
  /// backward `gradients.backward`, whole or, given a `split`, as its input
  /// and weight parts (the deferred values into the slot). With
  /// `caller_grads` the parameters' gradients are left to the caller too.
  /// Values in a slot start at multiples of `align` bytes; `slots` slots.
  StageExecutors(const Module& module, const GradientProgram& gradients, const std::optional<BackwardSplit>& split,
                 int slots, bool caller_results, bool caller_grads, int64_t align, const Make& make)
      : input_grads_(static_cast<int>(gradients.input_grads.size())),
        stash_results_(gradients.original_results),
        split_(split),
        seeds_(static_cast<size_t>(std::max(1, slots))) {
    auto function = [&](const std::string& name) -> const Function& {
      const Function* f = module.find_function(name);
      if (!f) throw Error(fmt::format("@{} has no function @{}", module.graph().name, name));
      return *f;
    };
    // The stash goes straight from the forward's kernels into the slot.
    std::vector<int> forward_outputs;
    if (caller_results)
      for (int r = 0; r < gradients.original_results; ++r) forward_outputs.push_back(r);
    for (size_t s = 0; s < gradients.stash.size(); ++s)
      forward_outputs.push_back(gradients.original_results + static_cast<int>(s));
    forward_ = make(module.graph(), forward_outputs);
    for (size_t s = 0; s < gradients.stash.size(); ++s) {
      stash_offsets_.push_back(slot_bytes_);
      slot_bytes_ += align_up(forward_->output_type(gradients.original_results + static_cast<int>(s)).bytes(), align);
    }
    const int params = static_cast<int>(gradients.params.size());
    auto grads_from = [&](int first) {
      std::vector<int> out;
      if (caller_grads)
        for (int p = 0; p < params; ++p) out.push_back(first + p);
      return out;
    };
    if (!split_) {
      backward_ = make(function(gradients.backward), grads_from(input_grads_));
      return;
    }
    const Function& input_fn = function(split_->input);
    const Function& weight_fn = function(split_->weight);
    // The deferred values go straight from the input part's kernels into the slot.
    if (!input_fn.returns.empty()) {
      std::vector<int> deferred;
      for (size_t d = 0; d < split_->deferred.size(); ++d) deferred.push_back(input_grads_ + static_cast<int>(d));
      input_part_ = make(input_fn, deferred);
      for (int r : deferred) {
        deferred_offsets_.push_back(slot_bytes_);
        slot_bytes_ += align_up(input_part_->output_type(r).bytes(), align);
      }
    }
    weight_part_ = make(weight_fn, grads_from(0));
  }

  bool split() const { return split_.has_value(); }
  const BackwardSplit& backward_split() const { return *split_; }
  int slots() const { return static_cast<int>(seeds_.size()); }
  /// Bytes of one slot: the stash, then the deferred values.
  int64_t slot_bytes() const { return slot_bytes_; }
  /// Where stashed value `s` (in the gradient program's stash order) begins within a slot.
  int64_t stash_offset(size_t s) const { return stash_offsets_.at(s); }
  Executor& forward() const { return *forward_; }
  /// Forward, then backward or its parts.
  std::vector<Executor*> all() const {
    std::vector<Executor*> out;
    for (Executor* e : {forward_.get(), backward_.get(), input_part_.get(), weight_part_.get()})
      if (e) out.push_back(e);
    return out;
  }

  // Per-op profiles of every executor (each kind's set_profile, op_times, reset_profile).
  void set_profile(bool on) const {
    for (Executor* e : all()) e->set_profile(on);
  }
  std::vector<backend::OpTime> op_times() const {
    std::vector<backend::OpTime> out;
    for (const Executor* e : all()) {
      std::vector<backend::OpTime> part = e->op_times();
      out.insert(out.end(), std::make_move_iterator(part.begin()), std::make_move_iterator(part.end()));
    }
    return out;
  }
  void reset_profile() const {
    for (Executor* e : all()) e->reset_profile();
  }

  /// The forward of one micro-batch: `inputs` are the graph's arguments,
  /// `results` its own results' buffers, the stash goes to `slot`.
  void run_forward(std::byte* slot, std::span<const void* const> inputs, std::span<void* const> results) {
    for (size_t i = 0; i < inputs.size(); ++i) forward_->bind_input(static_cast<int>(i), inputs[i]);
    for (size_t r = 0; r < results.size(); ++r) forward_->bind_output(static_cast<int>(r), results[r]);
    for (size_t s = 0; s < stash_offsets_.size(); ++s)
      forward_->bind_output(stash_results_ + static_cast<int>(s), slot + stash_offsets_[s]);
    forward_->run();
  }

  void run_backward(std::byte* slot, std::span<const void* const> seeds, const RunIntoGrads& into_grads) {
    if (split_) throw Error("this stage program runs its backward in two parts: backward_input, then backward_weight");
    bind_seeds_and_stash(*backward_, slot, seeds);
    into_grads(*backward_, input_grads_);
    last_input_grads_ = backward_.get();
  }

  /// The input part for the micro-batch in slot `index` (at `slot`); its
  /// seeds are kept for the weight part and must stay unchanged until then.
  void run_backward_input(int index, std::byte* slot, std::span<const void* const> seeds) {
    if (!split_) throw Error("backward_input: this stage program runs its backward in one part");
    seeds_.at(static_cast<size_t>(index)).assign(seeds.begin(), seeds.end());
    if (!input_part_) return;  // no input gradient to send: everything waits for the weight part
    bind_seeds_and_stash(*input_part_, slot, seeds);
    for (size_t d = 0; d < deferred_offsets_.size(); ++d)
      input_part_->bind_output(input_grads_ + static_cast<int>(d), slot + deferred_offsets_[d]);
    input_part_->run();
    last_input_grads_ = input_part_.get();
  }

  void run_backward_weight(int index, std::byte* slot, const RunIntoGrads& into_grads) {
    if (!split_) throw Error("backward_weight: this stage program runs its backward in one part");
    int arg = bind_seeds_and_stash(*weight_part_, slot, seeds_.at(static_cast<size_t>(index)));
    for (int64_t offset : deferred_offsets_) weight_part_->bind_input(arg++, slot + offset);
    into_grads(*weight_part_, 0);
  }

  /// The executor whose results hold the input gradients of the last backward (or backward_input).
  const Executor& last_input_grads() const {
    if (!last_input_grads_) throw Error("input_grad: no backward has run yet");
    return *last_input_grads_;
  }

 private:
  /// Binds the seeds, then the slot's stash, as the first arguments of `e`; returns the next argument index.
  int bind_seeds_and_stash(Executor& e, const std::byte* slot, std::span<const void* const> seeds) {
    int arg = 0;
    for (const void* seed : seeds) e.bind_input(arg++, seed);
    for (int64_t offset : stash_offsets_) e.bind_input(arg++, slot + offset);
    return arg;
  }

  int input_grads_;    // backward results before the parameters' gradients
  int stash_results_;  // the forward's first stash result
  std::optional<BackwardSplit> split_;
  std::unique_ptr<Executor> forward_;
  std::unique_ptr<Executor> backward_;  // without split
  std::unique_ptr<Executor> input_part_;  // null when the stage sends no gradient back
  std::unique_ptr<Executor> weight_part_;
  std::vector<int64_t> stash_offsets_;     // per stashed value, within a slot
  std::vector<int64_t> deferred_offsets_;  // per deferred value, within a slot, after the stash
  int64_t slot_bytes_ = 0;
  std::vector<std::vector<const void*>> seeds_;  // per slot: the seeds backward_input was given
  const Executor* last_input_grads_ = nullptr;
};

}  // namespace pf
