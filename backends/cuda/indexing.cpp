// Strided walks for the CUDA kernels: broadcasting and permutations as merged dimensions with per-operand strides.
#include "backends/cuda/indexing.h"

#include <fmt/format.h>

#include <array>
#include <vector>

#include "ir/diagnostic.h"

namespace pf::cuda {

namespace {

// Appends result dimension `size` with per-operand strides `step`, merging it
// into the previous dimension when every operand continues it.
class PlanBuilder {
 public:
  explicit PlanBuilder(int operands) : operands_(operands) {}
  void add(int64_t size, const int64_t* step) {
    if (size == 1) return;  // steps nowhere
    bool merges = !dims_.empty();
    for (int k = 0; merges && k < operands_; ++k) merges = strides_[k].back() == step[k] * size;
    if (merges) {
      dims_.back() *= size;
      for (int k = 0; k < operands_; ++k) strides_[k].back() = step[k];
      return;
    }
    dims_.push_back(size);
    for (int k = 0; k < operands_; ++k) strides_[k].push_back(step[k]);
  }
  StridedPlan finish(const std::string& what) const {
    StridedPlan plan;
    if (dims_.empty()) return plan;  // a scalar, or only size-1 dimensions
    if (dims_.size() > static_cast<size_t>(kMaxDims))
      throw Error(fmt::format("cuda: {} needs {} dimensions after merging; the kernels walk at most {}", what,
                              dims_.size(), kMaxDims));
    plan.rank = static_cast<int>(dims_.size());
    constexpr int64_t kLimit = int64_t{1} << 31;
    int64_t elements = 1;
    std::array<int64_t, kMaxOperands> last{};  // each operand's largest offset
    for (int d = 0; d < plan.rank; ++d) {
      plan.dims[d] = dims_[d];
      elements *= dims_[d];
      for (int k = 0; k < operands_; ++k) {
        plan.strides[k][d] = strides_[k][d];
        last[k] += (dims_[d] - 1) * strides_[k][d];
      }
    }
    plan.index32 = elements < kLimit;
    for (int k = 0; k < operands_; ++k) plan.index32 = plan.index32 && last[k] < kLimit;
    if (plan.index32)
      for (int d = 0; d < plan.rank; ++d) fast_divider(static_cast<uint32_t>(plan.dims[d]), plan.magic[d], plan.shift[d]);
    return plan;
  }

 private:
  int operands_;
  std::vector<int64_t> dims_;
  std::vector<int64_t> strides_[kMaxOperands];
};

}  // namespace

void fast_divider(uint32_t divisor, uint32_t& magic, uint32_t& shift) {
  // shift = ceil(log2 divisor), magic = floor(2^32 (2^shift - divisor) / divisor) + 1: for x < 2^31 the
  // quotient (umulhi(x, magic) + x) >> shift is exact (round-up multiplication by 1/divisor).
  shift = 0;
  while ((uint64_t{1} << shift) < divisor) ++shift;
  magic = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - divisor)) / divisor + 1);
}

StridedPlan plan_broadcast(const Shape& result, std::span<const Shape* const> operands) {
  const size_t rank = result.size();
  const int n = static_cast<int>(operands.size());
  if (n > kMaxOperands) throw Error(fmt::format("cuda: {} operands to broadcast, at most {}", n, kMaxOperands));
  std::vector<std::array<int64_t, kMaxOperands>> aligned(rank);  // per result dim, per operand
  for (auto& a : aligned) a.fill(0);
  for (int k = 0; k < n; ++k) {
    const Shape& s = *operands[k];
    int64_t stride = 1;
    for (size_t i = s.size(); i-- > 0;) {
      aligned[rank - s.size() + i][k] = s[i] == 1 ? 0 : stride;
      stride *= s[i];
    }
  }
  PlanBuilder b(n);
  for (size_t d = 0; d < rank; ++d) b.add(result[d], aligned[d].data());
  return b.finish("broadcasting to " + shape_str(result));
}

StridedPlan plan_transpose(const Shape& input, const std::vector<int64_t>& perm) {
  const int64_t rank = static_cast<int64_t>(input.size());
  std::vector<int64_t> in_strides(input.size(), 1);
  for (size_t d = input.size(); d-- > 1;) in_strides[d - 1] = in_strides[d] * input[d];
  PlanBuilder b(1);
  for (int64_t p : perm) {
    const int64_t axis = normalize_axis(p, rank);
    b.add(input[axis], &in_strides[axis]);
  }
  return b.finish("transposing " + shape_str(input));
}

ReducePlan plan_reduce(const Shape& input, const std::vector<bool>& reduced) {
  std::vector<int64_t> strides(input.size(), 1);
  for (size_t d = input.size(); d-- > 1;) strides[d - 1] = strides[d] * input[d];
  PlanBuilder outer(1), inner(1);
  ReducePlan plan;
  for (size_t d = 0; d < input.size(); ++d) {
    if (reduced[d]) {
      inner.add(input[d], &strides[d]);
      plan.group *= input[d];
    } else {
      outer.add(input[d], &strides[d]);
      plan.outputs *= input[d];
    }
  }
  plan.outer = outer.finish("reducing " + shape_str(input));
  plan.inner = inner.finish("reducing " + shape_str(input));
  plan.contiguous = plan.inner.rank == 1 && (plan.inner.strides[0][0] == 1 || plan.group == 1);
  return plan;
}

bool is_flat(const StridedPlan& plan, int operands) {
  if (plan.rank != 1) return false;
  for (int k = 0; k < operands; ++k)
    if (plan.strides[k][0] != 1) return false;
  return true;
}

}  // namespace pf::cuda
