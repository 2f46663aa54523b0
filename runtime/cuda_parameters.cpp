// A CUDA stage's parameters on its device.
#include "runtime/cuda_parameters.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "backends/cuda/check.h"
#include "backends/cuda/optimizers.h"
#include "ir/align.h"
#include "ir/diagnostic.h"

namespace pf {

namespace {

// 256 bytes of f32: every parameter starts where cuBLAS likes its operands.
constexpr int64_t kAlignElements = 64;

}  // namespace

CudaParameters::CudaParameters(ParameterSet& host, std::shared_ptr<cuda::CudaDevice> device, int lane,
                               DType float_dtype, std::string name)
    : host_(&host), name_(std::move(name)), device_(std::move(device)), lane_(lane), float_dtype_(float_dtype) {
  for (ParameterSet::Entry& e : host.entries()) {
    index_.emplace(e.name, slots_.size());
    slots_.push_back({&e, elements_});
    elements_ += align_up(static_cast<int64_t>(e.value.size()), kAlignElements);
  }
  values_ = static_cast<float*>(zeroed_block(elements_, DType::f32));
  grads_ = static_cast<float*>(zeroed_block(elements_, DType::f32));
  if (float_dtype_ == DType::bf16) {
    values16_ = zeroed_block(elements_, DType::bf16);
    scratch_ = zeroed_block(elements_, DType::bf16);
  }
}

CudaParameters::~CudaParameters() {
  for (void* b : blocks_) device_->deallocate(b);
}

cudaStream_t CudaParameters::stream() const { return device_->stream(lane_); }

void* CudaParameters::zeroed_block(int64_t elements, DType dtype) {
  const auto bytes = static_cast<size_t>(std::max<int64_t>(elements, 1) * dtype_size(dtype));
  void* p = device_->allocate(bytes, lane_);
  blocks_.push_back(p);
  cuda::CheckScope scope(name_, "clearing the parameters' memory");
  PF_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream()));
  return p;
}

const CudaParameters::Slot& CudaParameters::slot(std::string_view name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error(fmt::format("cuda stage: no parameter named {}", name));
  return slots_[it->second];
}

void* CudaParameters::kernel_value(std::string_view name) {
  const Slot& s = slot(name);
  if (values16_) return static_cast<std::byte*>(values16_) + s.offset * dtype_size(DType::bf16);
  return values_ + s.offset;
}

std::vector<Param> CudaParameters::device_params() {
  std::vector<Param> out = host_->optimizer_params();
  for (Param& p : out) {
    const Slot& s = slot(p.name);
    p.value = values_ + s.offset;
    p.grad = grads_ + s.offset;
  }
  return out;
}

void* CudaParameters::grad_target(std::string_view name, bool overwrite) {
  const Slot& s = slot(name);
  if (float_dtype_ == DType::f32 && overwrite) return grads_ + s.offset;
  if (!scratch_) scratch_ = zeroed_block(elements_, float_dtype_);  // the first step that accumulates
  return static_cast<std::byte*>(scratch_) + s.offset * dtype_size(float_dtype_);
}

void CudaParameters::accumulate(bool overwrite) {
  if (float_dtype_ == DType::f32 && overwrite) return;
  device_->make_current();
  cuda::CheckScope scope(name_, "summing the parameters' gradients");
  cuda::accumulate(grads_, scratch_, float_dtype_, elements_, overwrite, stream());
}

void CudaParameters::upload_values() {
  device_->make_current();
  cuda::CheckScope scope(name_, "copying the parameters to the device");
  for (const Slot& s : slots_)
    PF_CUDA_CHECK(cudaMemcpyAsync(values_ + s.offset, s.entry->value.data(), s.entry->value.size() * sizeof(float),
                                  cudaMemcpyHostToDevice, stream()));
  round_values();
  PF_CUDA_CHECK(cudaStreamSynchronize(stream()));
}

void CudaParameters::round_values() {
  if (!values16_) return;
  device_->make_current();
  cuda::CheckScope scope(name_, "rounding the weights to bf16");
  cuda::round_to_bf16(values_, values16_, elements_, stream());
}

void CudaParameters::download_values() { download(values_, &ParameterSet::Entry::value); }
void CudaParameters::download_grads() { download(grads_, &ParameterSet::Entry::grad); }

void CudaParameters::download(const float* block, std::vector<float> ParameterSet::Entry::*field) {
  device_->make_current();
  cuda::CheckScope scope(name_, "copying the parameters to the host");
  for (const Slot& s : slots_) {
    std::vector<float>& host = s.entry->*field;
    PF_CUDA_CHECK(cudaMemcpyAsync(host.data(), block + s.offset, host.size() * sizeof(float), cudaMemcpyDeviceToHost,
                                  stream()));
  }
  PF_CUDA_CHECK(cudaStreamSynchronize(stream()));
}

void CudaParameters::read_grad(std::string_view name, float* host) {
  const Slot& s = slot(name);
  device_->make_current();
  cuda::CheckScope scope(name_, "reading a tied gradient");
  PF_CUDA_CHECK(cudaMemcpyAsync(host, grads_ + s.offset, s.entry->grad.size() * sizeof(float), cudaMemcpyDeviceToHost,
                                stream()));
  PF_CUDA_CHECK(cudaStreamSynchronize(stream()));
}

void CudaParameters::write_grad(std::string_view name, const float* host) {
  const Slot& s = slot(name);
  device_->make_current();
  cuda::CheckScope scope(name_, "writing a tied gradient");
  PF_CUDA_CHECK(cudaMemcpyAsync(grads_ + s.offset, host, s.entry->grad.size() * sizeof(float), cudaMemcpyHostToDevice,
                                stream()));
  PF_CUDA_CHECK(cudaStreamSynchronize(stream()));  // `host` may go away when this returns
}

double CudaParameters::grad_sq_norm(std::span<const Param> params) {
  device_->make_current();
  cuda::CheckScope scope(name_, "summing the squares of the gradients");
  if (!partials_) {
    const auto n = static_cast<int64_t>(std::max<size_t>(slots_.size(), 1)) * cuda::kMaxSquarePartials;
    partials_ = static_cast<double*>(zeroed_block(n, DType::f64));
  }
  // Every parameter: one pass over the whole block (its gaps are 0).
  std::vector<int> counts;
  if (params.size() == slots_.size()) {
    counts.push_back(cuda::sum_of_squares(grads_, elements_, partials_, stream()));
  } else {
    for (const Param& p : params) {
      const Slot& s = slot(p.name);
      const auto n = static_cast<int64_t>(s.entry->grad.size());
      counts.push_back(
          cuda::sum_of_squares(grads_ + s.offset, n, partials_ + counts.size() * cuda::kMaxSquarePartials, stream()));
    }
  }
  std::vector<double> host(counts.size() * cuda::kMaxSquarePartials);
  PF_CUDA_CHECK(cudaMemcpyAsync(host.data(), partials_, host.size() * sizeof(double), cudaMemcpyDeviceToHost,
                                stream()));
  PF_CUDA_CHECK(cudaStreamSynchronize(stream()));
  double sum = 0;
  for (size_t k = 0; k < counts.size(); ++k)
    for (int i = 0; i < counts[k]; ++i) sum += host[k * cuda::kMaxSquarePartials + static_cast<size_t>(i)];
  return sum;
}

void CudaParameters::scale_grads(double factor) {
  device_->make_current();
  cuda::CheckScope scope(name_, "clipping the gradients");
  cuda::scale(grads_, elements_, factor, stream());
}

}  // namespace pf
