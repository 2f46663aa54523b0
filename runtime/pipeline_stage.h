// One pipeline stage as the pipeline's ranks hold it: its program, its
// parameters and optimizer, and the buffers of its hand-offs. Internal to
// pipeline.cpp and rank_worker.cpp.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backends/cpu/packed_weights.h"
#include "runtime/optimizer.h"
#include "runtime/parameters.h"
#include "runtime/stage_runner.h"
#include "runtime/tensor_parallel_group.h"

namespace pf {

struct PipelineStage {
  int index = 0;
  int replica = 0;                                   // the data-parallel replica it belongs to
  int rank = 0;                                      // the worker that runs it
  int shard = 0;                                     // its place in its tensor-parallel group
  /// Its tensor-parallel group (null without one); declared before the
  /// program, whose kernels reach it, so that it outlives them.
  std::unique_ptr<CommTensorParallelGroup> tensor_group;
  /// Under expert parallelism: the stage's copies in every replica, which
  /// share its experts out (null otherwise); declared before the program too.
  std::unique_ptr<CommTensorParallelGroup> expert_group;
  /// Under expert parallelism: the parameters its replica holds alone, its
  /// blocks of the experts (replica_own_params).
  std::vector<std::string> replica_own;
  std::vector<std::string> inputs;                   // the model inputs it reads, as the plan lists them
  bool has_loss = false;                             // the last stage of a training plan: result 0 is the loss
  ParameterSet params;
  std::unique_ptr<StageRunner> program;              // a StageProgram, or a CudaStageProgram on a GPU
  std::unique_ptr<Optimizer> optimizer;
  /// Its weights packed for its products through a step (a CPU stage where
  /// PipelineOptions::pack_weights says so; null otherwise).
  std::unique_ptr<cpu::PackedWeights> packed_weights;
  std::vector<int> input_args;                       // per graph argument: index into inputs, or -1
  std::vector<int64_t> input_stride_bytes;           // per model input the stage reads: bytes from one micro-batch to the next (0: whole)
  std::vector<TensorType> input_types;               // per model input the stage reads: its micro-batch type
  std::vector<int> float_outputs;                    // differentiated results
  int results = 0;                                   // the graph's own results (the loss, then what it sends)
  // Hand-offs, each buffer in the memory of the stage that writes it.
  std::vector<std::vector<void*>> sends;             // [mb][send i]: activations its forward writes
  std::vector<int64_t> send_bytes;                   // [send i]
  std::vector<std::vector<void*>> send_grads;        // [mb][recv i]: gradients going back
  std::vector<TensorType> send_grad_types;           // [recv i], as the model declares them
  std::vector<int64_t> send_grad_bytes;              // [recv i], as the stage stores them
  /// What it reads from its neighbours: [mb][tensor], the activations its
  /// forward reads and the gradients its backward reads. Where both ends
  /// share the host's memory the sender's buffers are read in place (set
  /// when each message arrives); otherwise these are the stage's own
  /// buffers, which StageRunner::receive fills (`*_copies`).
  std::vector<std::vector<const void*>> recvs;
  std::vector<std::vector<const void*>> seeds_in;
  std::vector<int64_t> recv_bytes;                   // [recv i]: as the previous stage sends them
  std::vector<int64_t> seed_bytes;                   // [send i]: as the next stage sends them back
  /// [mb][tensor]: where a neighbour's messages land when it runs in another
  /// process (empty otherwise); the views above then read these.
  std::vector<std::vector<void*>> recv_landing;
  std::vector<std::vector<void*>> seed_landing;
  bool recv_copies = false;
  bool seed_copies = false;
  std::vector<float> losses;                         // [mb]
  std::vector<void*> loss_out;                       // [mb]: where the forward writes the loss (&losses[mb] on the CPU)
  const void* loss_seed = nullptr;                   // the loss's gradient: 1/m (the step's loss is the mean)
  std::vector<int> free_slots;
  std::vector<int> slot_of;                          // [mb]
  int inflight = 0, peak = 0;  // micro-batches between forward and backward (its input part), and their most
  int peak_held = 0;            // the most stash slots in use at once: until the weight part where it is split
  bool grads_written = false;  // this step: the first backward writes the gradients, later ones add to them
};

/// At most the bytes of a stage's weights packed for its products.
int64_t packed_weights_bound(const ParameterSet& params);

}  // namespace pf
