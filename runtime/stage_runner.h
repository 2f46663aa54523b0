// What the pipeline asks of one stage, wherever it runs: its compiled programs, the memory its hand-offs live in, and its parameters.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "backends/common/op_time.h"
#include "ir/module.h"
#include "runtime/optimizer.h"
#include "runtime/optimizer_shard.h"

namespace pf {

struct TrainingOptions;

/// Where a stage keeps its buffers and runs its kernels.
struct StagePlace {
  int gpu = -1;  ///< a CUDA device ordinal; -1: the host (a CPU stage)

  bool on_host() const { return gpu < 0; }
  bool operator==(const StagePlace&) const = default;
};

/// What a stage hands to a neighbour for one micro-batch.
enum class HandOff {
  activations,  ///< the forward's results, to the next stage
  gradients,    ///< the gradients of what it received, to the previous stage
};

/// One tensor of a hand-off: `bytes` from the sender's buffer `src` into the
/// receiver's `dst`; dst == src when the receiver reads the buffer in place.
struct HandOffCopy {
  void* dst = nullptr;
  const void* src = nullptr;
  int64_t bytes = 0;
};

/// One pipeline stage's differentiated program, as the pipeline drives it.
///
/// StageProgram runs it on the CPU: pointers are host memory, every call
/// has finished its work when it returns, and a neighbour on the CPU reads
/// the buffers in place. CudaStageProgram runs it on a GPU: pointers are
/// that device's memory, calls queue work on the stage's stream and return,
/// hand-offs are ordered by events, and finish() waits. The pipeline never
/// dereferences a stage's pointers itself; it moves data between stages only
/// through receive().
class StageRunner {
 public:
  virtual ~StageRunner() = default;
  StageRunner(const StageRunner&) = delete;
  StageRunner& operator=(const StageRunner&) = delete;

  // ---- The programs (see StageProgram for what each does).

  virtual const Function& graph() const = 0;
  /// Stash slots: micro-batches that may be in flight at once.
  virtual int slots() const = 0;
  /// Whether the backward runs as backward_input, then backward_weight.
  virtual bool split() const = 0;
  /// The value `name` that the forward of the micro-batch in `slot` kept for
  /// the backward, where it lies in host memory (until the slot's next
  /// forward); null when the stash does not hold it, or holds it on a device.
  virtual const void* stashed_on_host(int /*slot*/, std::string_view /*name*/) const { return nullptr; }
  /// The forward of one micro-batch into stash slot `slot`; `inputs` are the
  /// graph's arguments and `results` the buffers its own results are written to.
  virtual void forward(int slot, std::span<const void* const> inputs, std::span<void* const> results) = 0;
  /// Result `i` of the graph as stored (floats in float_dtype()).
  virtual TensorType result_type(int i) const = 0;
  /// The backward of the micro-batch in `slot`; the parameters' gradients
  /// are written (`overwrite_grads`) or added into the stage's gradients.
  virtual void backward(int slot, std::span<const void* const> seeds, bool overwrite_grads) = 0;
  virtual void backward_input(int slot, std::span<const void* const> seeds) = 0;
  virtual void backward_weight(int slot, bool overwrite_grads) = 0;
  /// Copies the gradient of received input `i`, from the last backward or
  /// backward_input, into `dst` (`bytes`, this stage's memory).
  virtual void copy_input_grad(int i, void* dst, int64_t bytes) = 0;
  /// Waits for the work queued so far and throws pf::Error for bad data a
  /// kernel found, naming the op. Nothing to wait for on the CPU.
  virtual void finish() = 0;

  virtual int64_t arena_bytes() const = 0;
  /// Bytes of one stash slot.
  virtual int64_t stash_bytes() const = 0;
  /// Per-op kernel time, summed over the runs since reset_profile(); off
  /// until set_profile(true). A CUDA stage times its ops with events and
  /// waits for each program it runs while profiling.
  virtual void set_profile(bool on) = 0;
  virtual std::vector<backend::OpTime> op_times() const = 0;
  virtual void reset_profile() = 0;

  // ---- Memory and hand-offs.

  virtual StagePlace place() const = 0;
  /// How floats are stored: f32, or bf16 on a CUDA stage of a bf16 plan.
  virtual DType float_dtype() const = 0;
  /// A zeroed buffer of `bytes` in this stage's memory, owned by the runner.
  virtual void* allocate(int64_t bytes) = 0;
  /// A zeroed host buffer that this stage's device copies to or from (page
  /// locked on a CUDA stage, so that copies run at bus speed), owned by the runner.
  virtual void* allocate_host(int64_t bytes) = 0;
  /// Graph argument `arg`, a batch input of `type` (as the model declares
  /// it) at `host` for one micro-batch: the pointer its forward reads. A CPU
  /// stage reads the batch in place; a CUDA stage copies it to its device.
  virtual const void* stage_input(int arg, const void* host, const TensorType& type) = 0;
  /// A buffer holding `value` as one float of float_dtype() (the loss's seed).
  virtual const void* scalar(float value) = 0;
  /// `n` floats of float_dtype() at `src` (this stage's memory, after
  /// finish()) into `dst` on the host.
  virtual void read_floats(const void* src, float* dst, int64_t n) = 0;
  /// Everything queued so far produced `kind` of micro-batch `mb`: receivers
  /// order their reads after it. Called before the pipeline marks the
  /// hand-off ready.
  virtual void mark_produced(HandOff kind, int mb) = 0;
  /// For a communicator that moves device memory itself
  /// (Communicator::device_messages): the device event mark_produced
  /// recorded for (kind, mb), a cudaEvent_t; null where the bytes are
  /// ready once written (the CPU).
  virtual void* hand_off_event(HandOff /*kind*/, int /*mb*/) { return nullptr; }
  /// Makes `sender`'s `kind` of micro-batch `mb` (marked produced and ready)
  /// readable by this stage's next work: each copy brings a buffer of the
  /// sender's into this stage's memory, or only orders the reads (dst == src).
  virtual void receive(StageRunner& sender, HandOff kind, int mb, std::span<const HandOffCopy> copies) = 0;
  /// The sender's half of receive() for a receiver on the host: copies from
  /// this stage's memory to host memory once the work marked for (kind, mb)
  /// is done.
  virtual void copy_to_host(HandOff kind, int mb, std::span<const HandOffCopy> copies) = 0;

  // ---- Parameters. The host ParameterSet holds every value and gradient;
  // a CUDA stage computes on device copies and brings them back on request.

  /// The optimizer of this stage's parameters (a CUDA stage's steps on its
  /// device): of all of them, or of a replica's share of them when the
  /// state is sharded over the replicas (share_params).
  virtual std::unique_ptr<Optimizer> make_optimizer(const TrainingOptions& options, const OptimizerShare& share) = 0;
  /// After the host values (and the state of `optimizer`, when not null)
  /// changed: copies them to where the kernels read them.
  virtual void upload(const Optimizer* optimizer) = 0;
  /// Copies values, gradients and the state of `optimizer` (when not null)
  /// into the host ParameterSet and the optimizer's state buffers.
  virtual void download(Optimizer* optimizer) = 0;
  /// The gradient of parameter `name` into `host` (numel floats), and back.
  virtual void read_grad(std::string_view name, float* host) = 0;
  virtual void write_grad(std::string_view name, const float* host) = 0;
  /// The sum of squares of the gradients of `params` (this stage's, as
  /// ParameterSet::optimizer_params lists them: a CUDA stage reads only
  /// their names and sums its device gradients).
  virtual double grad_sq_norm(std::span<const Param> params) = 0;
  /// Multiplies the gradients of `params` (every one of this stage's) by `factor`.
  virtual void scale_grads(std::span<const Param> params, double factor) = 0;

 protected:
  StageRunner() = default;
};

}  // namespace pf
