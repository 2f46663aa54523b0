// A CUDA device: a stream per pipeline stage with its cuBLAS/cuDNN handles, events, a caching allocator, pinned buffers.
#include "backends/cuda/device.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "backends/cuda/check.h"
#include "backends/cuda/cublas_api.h"
#include "ir/diagnostic.h"

namespace pf::cuda {

bool cuda_available(std::string* why) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    if (why) *why = fmt::format("cudaGetDeviceCount: {} ({})", cudaGetErrorString(status), cudaGetErrorName(status));
    return false;
  }
  if (count == 0) {
    if (why) *why = "no CUDA device is visible";
    return false;
  }
  return true;
}

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return count;
}

// ---------------------------------------------------------------------------

Event::Event(int device) {
  PF_CUDA_CHECK(cudaSetDevice(device));
  PF_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
}

Event::~Event() {
  if (event_) (void)cudaEventDestroy(event_);  // a destructor must not throw
}

Event::Event(Event&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}

Event& Event::operator=(Event&& other) noexcept {
  if (this != &other) {
    if (event_) (void)cudaEventDestroy(event_);
    event_ = std::exchange(other.event_, nullptr);
  }
  return *this;
}

void Event::record(cudaStream_t stream) { PF_CUDA_CHECK(cudaEventRecord(event_, stream)); }
void Event::wait(cudaStream_t stream) const { PF_CUDA_CHECK(cudaStreamWaitEvent(stream, event_, 0)); }
void Event::synchronize() const { PF_CUDA_CHECK(cudaEventSynchronize(event_)); }

bool Event::done() const {
  const cudaError_t status = cudaEventQuery(event_);
  if (status == cudaErrorNotReady) return false;
  PF_CUDA_CHECK(status);
  return true;
}

// ---------------------------------------------------------------------------

PinnedBuffer::PinnedBuffer(size_t bytes) : size_(bytes) {
  // Portable: pinned for every device of the process, not only the current one.
  PF_CUDA_CHECK(cudaHostAlloc(&data_, std::max<size_t>(bytes, 1), cudaHostAllocPortable));
}

PinnedBuffer::~PinnedBuffer() {
  if (data_) (void)cudaFreeHost(data_);
}

PinnedBuffer::PinnedBuffer(PinnedBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& other) noexcept {
  if (this != &other) {
    if (data_) (void)cudaFreeHost(data_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

// ---------------------------------------------------------------------------

namespace {

// cudaMalloc through the caching allocator's raw interface; out of memory
// is reported as nullptr so that the allocator can release its cache and retry.
void* raw_device_alloc(size_t bytes, void* user) {
  PF_CUDA_CHECK(cudaSetDevice(*static_cast<const int*>(user)));
  void* p = nullptr;
  const cudaError_t status = cudaMalloc(&p, bytes);
  if (status == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    return nullptr;
  }
  PF_CUDA_CHECK(status);
  return p;
}

void raw_device_free(void* p, void* user) {
  (void)cudaSetDevice(*static_cast<const int*>(user));
  (void)cudaFree(p);  // called from destructors too: never throws
}

/// Grow-only scratch of one stream, from the caching allocator: the old
/// block goes back to the stream's free list, which hands it out again only
/// for work queued after what may still read it.
class StreamWorkspace final : public Workspace {
 public:
  StreamWorkspace(CachingAllocator& allocator, cudaStream_t stream) : allocator_(allocator), stream_(stream) {}
  ~StreamWorkspace() override { allocator_.deallocate(block_); }
  void* get(size_t bytes) override {
    if (bytes > capacity_) {
      allocator_.deallocate(block_);
      block_ = nullptr;
      capacity_ = CachingAllocator::size_class(std::max(bytes, capacity_ + capacity_ / 2));
      block_ = allocator_.allocate(capacity_, stream_);
    }
    return block_;
  }

 private:
  CachingAllocator& allocator_;
  cudaStream_t stream_;
  void* block_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace

struct CudaDevice::Lane {
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  cublasLtHandle_t cublaslt = nullptr;
  cudnnHandle_t cudnn = nullptr;
  DeviceErrorSlot* errors = nullptr;  // mapped pinned host memory
  std::unique_ptr<StreamWorkspace> workspace;

  ~Lane() {
    workspace.reset();
    if (cudnn) (void)cudnnDestroy(cudnn);
    if (cublaslt) (void)cuda::cublas().lt_destroy(cublaslt);
    if (cublas) (void)cuda::cublas().destroy(cublas);
    if (stream) (void)cudaStreamDestroy(stream);
    if (errors) (void)cudaFreeHost(errors);
  }
};

CudaDevice::CudaDevice(int ordinal, int stages) : ordinal_(ordinal) {
  if (stages < 1) throw Error(fmt::format("cuda device {}: needs at least one stage, got {}", ordinal, stages));
  const int count = device_count();
  if (ordinal < 0 || ordinal >= count)
    throw Error(fmt::format("cuda device {} does not exist ({} visible)", ordinal, count));
  make_current();
  allocator_ = std::make_unique<CachingAllocator>(RawAllocator{raw_device_alloc, raw_device_free, &ordinal_});
  for (int s = 0; s < stages; ++s) {
    auto lane = std::make_unique<Lane>();
    // Non-blocking: the stage streams must not synchronise with the legacy
    // default stream that other code (or a library) might use.
    PF_CUDA_CHECK(cudaStreamCreateWithFlags(&lane->stream, cudaStreamNonBlocking));
    PF_CUDA_CHECK(cuda::cublas().create(&lane->cublas));
    PF_CUDA_CHECK(cuda::cublas().set_stream(lane->cublas, lane->stream));
    PF_CUDA_CHECK(cuda::cublas().lt_create(&lane->cublaslt));  // its calls take the stream
    PF_CUDA_CHECK(cudnnCreate(&lane->cudnn));
    PF_CUDA_CHECK(cudnnSetStream(lane->cudnn, lane->stream));
    void* slot = nullptr;
    PF_CUDA_CHECK(cudaHostAlloc(&slot, sizeof(DeviceErrorSlot), cudaHostAllocMapped | cudaHostAllocPortable));
    lane->errors = static_cast<DeviceErrorSlot*>(slot);
    std::memset(lane->errors, 0, sizeof(DeviceErrorSlot));
    lane->workspace = std::make_unique<StreamWorkspace>(*allocator_, lane->stream);
    lanes_.push_back(std::move(lane));
  }
}

CudaDevice::~CudaDevice() {
  (void)cudaSetDevice(ordinal_);
  for (auto& lane : lanes_) (void)cudaStreamSynchronize(lane->stream);
  lanes_.clear();
  allocator_.reset();
}

void CudaDevice::make_current() const { PF_CUDA_CHECK(cudaSetDevice(ordinal_)); }

cudaStream_t CudaDevice::stream(int stage) const { return lanes_.at(static_cast<size_t>(stage))->stream; }

LaunchContext CudaDevice::context(int stage) const {
  const Lane& lane = *lanes_.at(static_cast<size_t>(stage));
  LaunchContext ctx;
  ctx.stream = lane.stream;
  ctx.cublas = lane.cublas;
  ctx.cublaslt = lane.cublaslt;
  ctx.cudnn = lane.cudnn;
  ctx.workspace = lane.workspace.get();
  // With unified addressing (every 64-bit platform CUDA 13 supports) the
  // mapped host pointer is also the device pointer.
  ctx.errors = lane.errors;
  ctx.allow_tf32 = allow_tf32_;
  return ctx;
}

void* CudaDevice::allocate(size_t bytes, int stage) {
  make_current();
  return allocator_->allocate(bytes, stream(stage));
}

void CudaDevice::deallocate(void* p) { allocator_->deallocate(p); }

DeviceErrorSlot CudaDevice::take_error(int stage) {
  DeviceErrorSlot* slot = lanes_.at(static_cast<size_t>(stage))->errors;
  DeviceErrorSlot e;
  std::memcpy(&e, slot, sizeof e);  // the stream is idle: no kernel writes it now
  std::memset(slot, 0, sizeof *slot);
  return e;
}

void CudaDevice::synchronize(int stage, const std::vector<std::string>* op_name_of_step) {
  make_current();
  PF_CUDA_CHECK(cudaStreamSynchronize(stream(stage)));
  const DeviceErrorSlot e = take_error(stage);
  if (e.code == kNoDeviceError) return;
  std::string where;
  if (op_name_of_step && e.step >= 0 && static_cast<size_t>(e.step) < op_name_of_step->size())
    where = fmt::format("running {}: ", (*op_name_of_step)[static_cast<size_t>(e.step)]);
  throw Error(fmt::format("{}{} (stage {} on cuda device {})", where, describe(e), stage, ordinal_));
}

}  // namespace pf::cuda
