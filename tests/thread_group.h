// Test helper: the ranks of a tensor-parallel group as threads of one
// process. Every rank's all_reduce gets the sum of all ranks' values, added
// in rank order (all_reduce_max their maximum), so every rank gets the same bits.
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
    int rank() const override { return static_cast<int>(rank_); }
    int size() const override { return static_cast<int>(group_.floats_.size()); }
    void all_reduce(std::span<float> values) override { group_.combine(group_.floats_, rank_, values, false); }
    void all_reduce(std::span<double> values) override { group_.combine(group_.doubles_, rank_, values, false); }
    void all_reduce_max(std::span<float> values) override { group_.combine(group_.floats_, rank_, values, true); }
    void all_reduce_max(std::span<double> values) override { group_.combine(group_.doubles_, rank_, values, true); }

   private:
    ThreadGroup& group_;
    size_t rank_;
  };

 private:
  template <class T>
  void combine(std::vector<std::span<T>>& parts, size_t rank, std::span<T> values, bool max) {
    parts[rank] = values;
    sync_.arrive_and_wait();
    std::vector<T> total(parts[0].begin(), parts[0].end());
    for (size_t k = 1; k < parts.size(); ++k)
      for (size_t i = 0; i < total.size(); ++i) total[i] = max ? std::max(total[i], parts[k][i]) : total[i] + parts[k][i];
    sync_.arrive_and_wait();  // every rank has read every part
    std::copy(total.begin(), total.end(), values.begin());
  }

  std::barrier<> sync_;
  std::vector<std::span<float>> floats_;
  std::vector<std::span<double>> doubles_;
};

}  // namespace pf
