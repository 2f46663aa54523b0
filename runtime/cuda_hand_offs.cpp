// A CUDA stage's memory and hand-offs: buffers from the caching allocator, batch inputs copied in, events and copies between stages.
#include <fmt/format.h>

#include "backends/cuda/check.h"
#include "backends/cuda/optimizers.h"
#include "backends/cuda/transport.h"
#include "ir/diagnostic.h"
#include "runtime/cuda_stage_program.h"

namespace pf {

namespace {

const char* what(HandOff kind) { return kind == HandOff::activations ? "activations" : "gradients"; }

}  // namespace

void* CudaStageProgram::allocate(int64_t bytes) {
  const auto n = static_cast<size_t>(std::max<int64_t>(bytes, 1));
  void* p = device_->allocate(n, lane_);
  blocks_.push_back(p);
  cuda::CheckScope scope(name_, "clearing a new buffer");
  PF_CUDA_CHECK(cudaMemsetAsync(p, 0, n, stream()));
  return p;
}

void* CudaStageProgram::allocate_host(int64_t bytes) {
  device_->make_current();
  cuda::PinnedBuffer& b = pinned_.emplace_back(static_cast<size_t>(std::max<int64_t>(bytes, 1)));
  std::memset(b.data(), 0, b.size());
  return b.data();
}

const void* CudaStageProgram::stage_input(int arg, const void* host, const TensorType& type) {
  InputBuffer& b = inputs_[arg];
  const bool round = is_float(type.dtype) && options_.float_dtype == DType::bf16;
  if (!b.device) {  // the first step: later ones reuse the buffers
    b.device = allocate(stored_bytes(type, options_.float_dtype));
    if (round) b.staging = allocate(type.bytes());
  }
  device_->make_current();
  cuda::CheckScope scope(name_, "copying a batch input to the device");
  // Stream order keeps the next micro-batch's copy after this one's forward.
  const auto bytes = static_cast<size_t>(type.bytes());
  if (!round) {
    PF_CUDA_CHECK(cudaMemcpyAsync(b.device, host, bytes, cudaMemcpyHostToDevice, stream()));
    return b.device;
  }
  if (type.dtype != DType::f32)
    throw Error(fmt::format("{}: a batch input of {} cannot be fed to a bf16 stage; give it as f32", name_,
                            type.str()));
  PF_CUDA_CHECK(cudaMemcpyAsync(b.staging, host, bytes, cudaMemcpyHostToDevice, stream()));
  cuda::round_to_bf16(static_cast<const float*>(b.staging), b.device, type.numel(), stream());
  return b.device;
}

const void* CudaStageProgram::scalar(float value) {
  void* p = allocate(dtype_size(options_.float_dtype));
  const uint16_t half = bf16_bits(value);
  const void* bytes = options_.float_dtype == DType::bf16 ? static_cast<const void*>(&half) : &value;
  device_->make_current();
  cuda::CheckScope scope(name_, "writing a constant");
  PF_CUDA_CHECK(cudaMemcpyAsync(p, bytes, static_cast<size_t>(dtype_size(options_.float_dtype)),
                                cudaMemcpyHostToDevice, stream()));
  PF_CUDA_CHECK(cudaStreamSynchronize(stream()));  // `bytes` lives on this stack
  return p;
}

void CudaStageProgram::read_floats(const void* src, float* dst, int64_t n) {
  device_->make_current();
  cuda::CheckScope scope(name_, "reading results back");
  if (options_.float_dtype == DType::f32) {
    PF_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(n) * sizeof(float), cudaMemcpyDeviceToHost, stream()));
    PF_CUDA_CHECK(cudaStreamSynchronize(stream()));
    return;
  }
  std::vector<uint16_t> halves(static_cast<size_t>(n));
  PF_CUDA_CHECK(cudaMemcpyAsync(halves.data(), src, halves.size() * sizeof(uint16_t), cudaMemcpyDeviceToHost,
                                stream()));
  PF_CUDA_CHECK(cudaStreamSynchronize(stream()));
  for (size_t i = 0; i < halves.size(); ++i) dst[i] = bf16_to_float(halves[i]);
}

cuda::Event& CudaStageProgram::produced(HandOff kind, int mb) {
  return produced_[static_cast<size_t>(kind)].at(static_cast<size_t>(mb));
}

void CudaStageProgram::mark_produced(HandOff kind, int mb) {
  device_->make_current();
  cuda::CheckScope scope(name_, "recording a hand-off event");
  produced(kind, mb).record(stream());
}

void CudaStageProgram::receive(StageRunner& sender, HandOff kind, int mb, std::span<const HandOffCopy> copies) {
  device_->make_current();
  const std::string doing = fmt::format("receiving the {} of micro-batch {}", what(kind), mb);
  cuda::CheckScope scope(name_, doing);
  if (sender.place().on_host()) {
    // The CPU stage finished writing before it marked them ready; its
    // buffers are pinned (allocate_host), so the copies are asynchronous.
    for (const HandOffCopy& c : copies)
      PF_CUDA_CHECK(cudaMemcpyAsync(c.dst, c.src, static_cast<size_t>(c.bytes), cudaMemcpyHostToDevice, stream()));
    return;
  }
  auto* from = dynamic_cast<CudaStageProgram*>(&sender);
  if (!from) throw Error(fmt::format("{}: the stage it receives from is on cuda:{} but is no CUDA stage", name_,
                                     sender.place().gpu));
  // This stream waits for the sender's work, not the host.
  from->produced(kind, mb).wait(stream());
  for (const HandOffCopy& c : copies)
    if (c.dst != c.src)
      cuda::copy_peer_async(c.dst, device_->ordinal(), c.src, from->device_->ordinal(), static_cast<size_t>(c.bytes),
                            stream());
}

void CudaStageProgram::copy_to_host(HandOff kind, int mb, std::span<const HandOffCopy> copies) {
  device_->make_current();
  const std::string doing = fmt::format("sending the {} of micro-batch {} to a CPU stage", what(kind), mb);
  cuda::CheckScope scope(name_, doing);
  // The CPU receiver needs the bytes now: wait for the work that made them
  // (only that: later work queued on the stream goes on), then copy into its
  // pinned buffers. The stage streams do not synchronise with the default
  // stream that cudaMemcpy uses, which is why the event comes first.
  produced(kind, mb).synchronize();
  for (const HandOffCopy& c : copies)
    PF_CUDA_CHECK(cudaMemcpy(c.dst, c.src, static_cast<size_t>(c.bytes), cudaMemcpyDeviceToHost));
}

}  // namespace pf
