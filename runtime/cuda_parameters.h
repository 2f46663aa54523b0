// A CUDA stage's parameters on its device: f32 master values and gradients, back to back, and a bf16 copy of the values.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "backends/cuda/device.h"
#include "runtime/optimizer.h"
#include "runtime/parameters.h"

namespace pf {

/// The device side of a CUDA stage's ParameterSet (the host set stays the
/// place values are initialised, loaded and saved). Values and gradients are
/// f32 arrays laid out back to back in the set's order, each parameter at a
/// 256-byte boundary (the gaps stay 0), so that one kernel can scale, round
/// or square-sum all of them. A bf16 stage's kernels read a bf16 copy of the
/// values, rounded from the f32 master after every change (mixed precision
/// with f32 master weights, no loss scaling).
///
/// Gradients: a backward program writes the parameters' gradients where
/// grad_target() says and accumulate() folds them into the f32 gradients.
/// An f32 program that writes the first micro-batch's gradients writes them
/// into the f32 gradients directly, as the CPU does; every other case goes
/// through a scratch block of the program's float dtype.
///
/// Everything runs on the stage's stream; a copy to or from the host returns
/// when it is done.
class CudaParameters {
 public:
  /// `name` ("stage S on cuda:D") is what a failing CUDA call names.
  CudaParameters(ParameterSet& host, std::shared_ptr<cuda::CudaDevice> device, int lane, DType float_dtype,
                 std::string name);
  ~CudaParameters();
  CudaParameters(const CudaParameters&) = delete;
  CudaParameters& operator=(const CudaParameters&) = delete;

  /// Where the kernels read parameter `name`: its f32 value, or its bf16 copy.
  void* kernel_value(std::string_view name);
  /// Views of the device values and gradients, for an optimizer: names,
  /// shapes and weight decay as ParameterSet::optimizer_params gives them.
  std::vector<Param> device_params();

  /// Where a backward program writes the gradient of `name` when
  /// `overwrite` (the step's first micro-batch) or not.
  void* grad_target(std::string_view name, bool overwrite);
  /// Folds what the program wrote into the f32 gradients (replacing them
  /// with `overwrite`); nothing to do when it wrote them in place.
  void accumulate(bool overwrite);

  /// The host values to the device (and the bf16 copy).
  void upload_values();
  /// The f32 values changed on the device (an optimizer step): the bf16 copy again.
  void round_values();
  void download_values();
  void download_grads();
  void read_grad(std::string_view name, float* host);
  void write_grad(std::string_view name, const float* host);

  /// The sum of squares of the gradients of `params` (by name), in double.
  double grad_sq_norm(std::span<const Param> params);
  /// Multiplies every gradient by `factor`.
  void scale_grads(double factor);

 private:
  struct Slot {
    ParameterSet::Entry* entry;
    int64_t offset;  // in elements, from the start of every block
  };
  const Slot& slot(std::string_view name) const;
  cudaStream_t stream() const;
  /// Copies `block` (values_ or grads_) into each host entry's `field`.
  void download(const float* block, std::vector<float> ParameterSet::Entry::*field);
  /// A zeroed block of `elements` of `dtype` from the device's allocator.
  void* zeroed_block(int64_t elements, DType dtype);

  ParameterSet* host_;
  std::string name_;
  std::shared_ptr<cuda::CudaDevice> device_;
  int lane_;
  DType float_dtype_;
  std::vector<Slot> slots_;  // in the host set's order
  std::map<std::string, size_t, std::less<>> index_;
  int64_t elements_ = 0;            // of every block, gaps included
  float* values_ = nullptr;         // f32 master values
  float* grads_ = nullptr;          // f32 gradients
  void* values16_ = nullptr;        // bf16 copy (bf16 stages)
  void* scratch_ = nullptr;         // gradients a program writes before accumulate(), in its float dtype
  double* partials_ = nullptr;      // grad_sq_norm's, kMaxSquarePartials per parameter
  std::vector<void*> blocks_;       // everything above, for the destructor
};

}  // namespace pf
