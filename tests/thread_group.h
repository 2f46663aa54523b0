// Test helper: the ranks of a tensor-parallel group as threads of one
// process. Every rank's all_reduce gets the sum of all ranks' values, added
// in rank order, so every rank gets the same bits.
#pragma once

#include <algorithm>
#include <barrier>
#include <span>
#include <vector>

#include "backends/common/kernel_args.h"

namespace pf {

class ThreadGroup {
 public:
  explicit ThreadGroup(int ranks) : sync_(ranks), floats_(static_cast<size_t>(ranks)), doubles_(floats_.size()) {}

  class Rank final : public backend::TensorParallelGroup {
   public:
    Rank(ThreadGroup& group, int rank) : group_(group), rank_(static_cast<size_t>(rank)) {}
    void all_reduce(std::span<float> values) override { group_.sum(group_.floats_, rank_, values); }
    void all_reduce(std::span<double> values) override { group_.sum(group_.doubles_, rank_, values); }

   private:
    ThreadGroup& group_;
    size_t rank_;
  };

 private:
  template <class T>
  void sum(std::vector<std::span<T>>& parts, size_t rank, std::span<T> values) {
    parts[rank] = values;
    sync_.arrive_and_wait();
    std::vector<T> total(values.size(), T(0));
    for (const std::span<T>& part : parts)
      for (size_t i = 0; i < total.size(); ++i) total[i] += part[i];
    sync_.arrive_and_wait();  // every rank has read every part
    std::copy(total.begin(), total.end(), values.begin());
  }

  std::barrier<> sync_;
  std::vector<std::span<float>> floats_;
  std::vector<std::span<double>> doubles_;
};

}  // namespace pf
