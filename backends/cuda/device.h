// A CUDA device: a stream per pipeline stage with its cuBLAS/cuDNN handles, events, a caching allocator, pinned buffers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "backends/cuda/allocator.h"
#include "backends/cuda/kernels.h"

namespace pf::cuda {

/// Whether a CUDA device can be used. Any error from cudaGetDeviceCount (on
/// machines without a GPU or driver it is cudaErrorInsufficientDriver, 35)
/// and a count of 0 give false, with the reason in `why` when not null.
bool cuda_available(std::string* why = nullptr);
/// The number of usable devices (0 when cuda_available() is false).
int device_count();

/// An event for ordering work between streams without the host waiting:
/// record it on the producer's stream, make the consumer's stream wait on it.
/// Timing is disabled (cheaper to record and wait on).
class Event {
 public:
  explicit Event(int device);
  ~Event();
  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  void record(cudaStream_t stream);
  /// Work queued on `stream` after this call starts after the recorded work.
  void wait(cudaStream_t stream) const;
  /// Blocks the host until the recorded work is done.
  void synchronize() const;
  /// True when the recorded work is done (does not block).
  bool done() const;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

/// Page-locked host memory: copies from and to it run asynchronously and at
/// full bus speed (pageable memory is staged through a driver buffer).
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t bytes);
  ~PinnedBuffer();
  PinnedBuffer(PinnedBuffer&& other) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  void* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

/// One GPU used by `stages` pipeline stages (or virtual stages) of this
/// process. Each stage has its own stream, so that the stages' work overlaps
/// on the device and is ordered only where an Event says so, and its own
/// cuBLAS and cuDNN handles (bound to that stream), scratch workspace and
/// device-error slot. Device memory comes from one caching allocator.
///
/// Every method first makes the device current on the calling thread, so a
/// worker thread may use the device without calling cudaSetDevice itself.
class CudaDevice {
 public:
  CudaDevice(int ordinal, int stages);
  ~CudaDevice();
  CudaDevice(const CudaDevice&) = delete;
  CudaDevice& operator=(const CudaDevice&) = delete;

  int ordinal() const { return ordinal_; }
  int stages() const { return static_cast<int>(lanes_.size()); }
  /// Makes this device current on the calling thread.
  void make_current() const;

  cudaStream_t stream(int stage) const;
  /// The launch context of `stage` (step -1: the executor sets its own).
  LaunchContext context(int stage) const;
  /// Whether kernels launched from context() may use TF32 tensor cores for f32.
  void set_allow_tf32(bool allow) { allow_tf32_ = allow; }

  /// Device memory for work on `stage`'s stream (see CachingAllocator).
  void* allocate(size_t bytes, int stage);
  void deallocate(void* p);
  CachingAllocator& allocator() { return *allocator_; }

  /// Blocks until `stage`'s queued work is done, then throws pf::Error for
  /// bad data a kernel reported (an index out of range), naming it as the
  /// CPU kernel would; `op_name_of_step` maps the kernel's step to a name
  /// ("" when unknown).
  void synchronize(int stage, const std::vector<std::string>* op_name_of_step = nullptr);
  /// The first bad-data report of `stage` since the last call (code
  /// kNoDeviceError when there is none), then clears it; call only while the
  /// stage's stream is idle.
  DeviceErrorSlot take_error(int stage);

 private:
  struct Lane;
  int ordinal_;
  bool allow_tf32_ = false;
  std::unique_ptr<CachingAllocator> allocator_;
  std::vector<std::unique_ptr<Lane>> lanes_;
};

}  // namespace pf::cuda
