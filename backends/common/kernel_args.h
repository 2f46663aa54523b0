// What a kernel sees on every backend: its operands and results with their types, and the op's evaluated attributes.
#pragma once

#include <cstdint>
#include <span>

#include "ir/op_table.h"
#include "ir/types.h"

namespace pf::backend {

/// The ranks that share a stage's layers under tensor parallelism, as the
/// kernels of the tp_ ops see them (or, under expert parallelism, the
/// replicas that share its experts, as the ep_ ops see them): each call sums
/// (or takes the maximum of) a buffer over the group in place, every rank
/// calling in the same order (they run the same program).
class TensorParallelGroup {
 public:
  virtual ~TensorParallelGroup() = default;
  /// This rank's place in the group, and the group's size.
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual void all_reduce(std::span<float> values) = 0;
  virtual void all_reduce(std::span<double> values) = 0;
  virtual void all_reduce_max(std::span<float> values) = 0;
  virtual void all_reduce_max(std::span<double> values) = 0;
  /// Sequence parallelism's collectives over blocks of `counts[k]` values
  /// per place k, in place order (Communicator::all_gather and
  /// reduce_scatter). By default through all_reduce.
  virtual void all_gather(std::span<const float> part, std::span<float> whole, std::span<const int64_t> counts);
  virtual void all_gather(std::span<const double> part, std::span<double> whole, std::span<const int64_t> counts);
  virtual void reduce_scatter(std::span<const float> whole, std::span<float> part, std::span<const int64_t> counts);
  virtual void reduce_scatter(std::span<const double> whole, std::span<double> part,
                              std::span<const int64_t> counts);
};

/// A group of one rank, whose sums leave every value as it is: a
/// tensor-parallel function run alone, as its own reference.
class SingleRankGroup final : public TensorParallelGroup {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce(std::span<float>) override {}
  void all_reduce(std::span<double>) override {}
  void all_reduce_max(std::span<float>) override {}
  void all_reduce_max(std::span<double>) override {}
};

/// A kernel's arguments: its operands and results as contiguous row-major
/// buffers with their concrete types (host memory on the CPU, the device's
/// memory on a GPU), and the op's evaluated attributes. Results are
/// preallocated by the caller; a kernel overwrites every element and never
/// reads what was there before, unless `accumulate` is set: then it adds
/// its result to what is there (only kernels an executor marked as able to
/// see it set).
struct KernelArgs {
  std::span<const TensorType> in_types;
  std::span<const void* const> in;  // operands, contiguous row-major
  std::span<const TensorType> out_types;
  std::span<void* const> out;  // results, preallocated, contiguous
  const OpAttrs& attrs;
  bool accumulate = false;
  /// The group tp_reduce sums over; null where the function runs alone.
  TensorParallelGroup* group = nullptr;
  /// The group the ep_ ops gather and reduce-scatter over: the replicas of
  /// a stage whose experts they share out; null where there is none.
  TensorParallelGroup* expert_group = nullptr;
};

}  // namespace pf::backend
