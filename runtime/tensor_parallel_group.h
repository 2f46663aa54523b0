// A stage's tensor-parallel group as its kernels see it: tp_reduce sums and
// tp_max takes the maximum over the ranks of the group through the rank's
// communicator (the sequence-parallel gathers and reduce-scatters through
// its sum too).
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <span>
#include <utility>
#include <vector>

#include "backends/common/kernel_args.h"
#include "comm/communicator.h"

namespace pf {

class CommTensorParallelGroup final : public backend::TensorParallelGroup {
 public:
  explicit CommTensorParallelGroup(CommGroup group) : group_(std::move(group)) {}

  /// The rank's communicator, known once the workers are made (after the
  /// stages' executors, which hold this group).
  void attach(Communicator& comm) { comm_ = &comm; }
  const CommGroup& group() const { return group_; }

  int rank() const override { return place(); }
  int size() const override { return static_cast<int>(group_.ranks.size()); }
  void all_reduce(std::span<float> values) override { comm().all_reduce(group_, values); }
  void all_reduce(std::span<double> values) override { comm().all_reduce(group_, values); }
  void all_reduce_max(std::span<float> values) override { gathered_max(values); }
  void all_reduce_max(std::span<double> values) override { gathered_max(values); }
  void all_gather(std::span<const float> part, std::span<float> whole, std::span<const int64_t> counts) override {
    comm().all_gather(group_, part, whole, counts);
  }
  void all_gather(std::span<const double> part, std::span<double> whole, std::span<const int64_t> counts) override {
    comm().all_gather(group_, part, whole, counts);
  }
  void reduce_scatter(std::span<const float> whole, std::span<float> part, std::span<const int64_t> counts) override {
    comm().reduce_scatter(group_, whole, part, counts);
  }
  void reduce_scatter(std::span<const double> whole, std::span<double> part,
                      std::span<const int64_t> counts) override {
    comm().reduce_scatter(group_, whole, part, counts);
  }

 private:
  Communicator& comm() const {
    if (!comm_) throw Error("a tensor-parallel stage ran before its rank had a communicator");
    return *comm_;
  }

  /// The maximum through the communicator's sum: each rank writes its
  /// values into its own slot of a zeroed buffer, the sum gathers every
  /// rank's (adding zeros changes no value), and each rank takes the
  /// maximum of the slots. The values are the rows of a softmax over
  /// shares, so the buffer of group-size times their count stays small.
  /// The rank's place in the group: its slot.
  int place() const {
    const auto at = std::find(group_.ranks.begin(), group_.ranks.end(), comm().rank());
    if (at == group_.ranks.end())
      throw Error(fmt::format("rank {} is not in tensor-parallel group '{}'", comm().rank(), group_.name));
    return static_cast<int>(at - group_.ranks.begin());
  }

  template <class T>
  void gathered_max(std::span<T> values) {
    const size_t n = values.size(), slot = static_cast<size_t>(place());
    std::vector<T> slots(n * group_.ranks.size(), T(0));
    std::copy(values.begin(), values.end(), slots.begin() + static_cast<std::ptrdiff_t>(slot * n));
    comm().all_reduce(group_, std::span<T>(slots));
    for (size_t i = 0; i < n; ++i) {
      T m = slots[i];
      for (size_t k = 1; k < group_.ranks.size(); ++k) m = std::max(m, slots[k * n + i]);
      values[i] = m;
    }
  }

  CommGroup group_;
  Communicator* comm_ = nullptr;
};

}  // namespace pf
