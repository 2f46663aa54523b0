// A stage's tensor-parallel group as its kernels see it: tp_reduce sums over
// the ranks of the group through the rank's communicator.
#pragma once

#include <span>
#include <utility>

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

  void all_reduce(std::span<float> values) override { comm().all_reduce(group_, values); }
  void all_reduce(std::span<double> values) override { comm().all_reduce(group_, values); }

 private:
  Communicator& comm() const {
    if (!comm_) throw Error("a tensor-parallel stage ran before its rank had a communicator");
    return *comm_;
  }

  CommGroup group_;
  Communicator* comm_ = nullptr;
};

}  // namespace pf
