// How a pipeline's stages reach their neighbours: the buffers each hand-off
// is written to and read from, in this process or across processes.
#include <fmt/format.h>

#include "comm/communicator.h"
#include "runtime/pipeline.h"
#include "runtime/pipeline_stage.h"

namespace pf {

namespace {

/// How stage `receiver` reads `buffers` ([mb][tensor], `bytes` each), which
/// `sender` writes: in place when both are on the host (`views` are set as
/// each message arrives), else through buffers of the receiver's own, the
/// same ones when both share a GPU, pinned host memory from a GPU sender,
/// which StageRunner::receive fills. Returns whether it copies.
bool link(StageRunner& receiver, StageRunner& sender, const std::vector<std::vector<void*>>& buffers,
          const std::vector<int64_t>& bytes, std::vector<std::vector<const void*>>& views) {
  const StagePlace r = receiver.place(), s = sender.place();
  const bool copies = !(r.on_host() && s.on_host());
  views.assign(buffers.size(), {});
  for (size_t mb = 0; mb < buffers.size(); ++mb)
    for (size_t i = 0; i < buffers[mb].size(); ++i) {
      void* src = buffers[mb][i];
      void* dst = !copies ? nullptr
                  : r == s ? src
                  : r.on_host() ? sender.allocate_host(bytes[i])
                                : receiver.allocate(bytes[i]);
      views[mb].push_back(dst);
    }
  return copies;
}

/// Why a GPU stage cannot hand over to a neighbour in another process when
/// the communicator moves only host memory (Gloo).
Error no_device_messages(int stage, int neighbour) {
  return Error(fmt::format("stage {} on a GPU exchanges hand-offs with stage {} in another process, which only NCCL "
                           "does, and it runs only when every rank of the job is on a GPU; place the neighbouring "
                           "stages in one process, or every rank on a GPU",
                           stage, neighbour));
}

/// A neighbour in another process: its messages land in buffers of the
/// receiver's own, `m` micro-batches of `bytes`, which the views then read;
/// on a GPU, device buffers that the communicator (`device_messages`)
/// writes itself.
void land(const PipelineStage& st, int neighbour, bool device_messages, int m, const std::vector<int64_t>& bytes,
          std::vector<std::vector<void*>>& landing, std::vector<std::vector<const void*>>& views) {
  StageRunner& receiver = *st.program;
  const bool gpu = !receiver.place().on_host();
  if (gpu && !device_messages) throw no_device_messages(st.index, neighbour);
  landing.assign(static_cast<size_t>(m), {});
  views.assign(static_cast<size_t>(m), {});
  for (int mb = 0; mb < m; ++mb)
    for (int64_t b : bytes) {
      landing[static_cast<size_t>(mb)].push_back(receiver.allocate(b));
      views[static_cast<size_t>(mb)].push_back(landing[static_cast<size_t>(mb)].back());
    }
  // A GPU stage clears new buffers on its own stream, which the
  // communicator's receives do not wait for: the clearing is done first.
  if (gpu) receiver.finish();
}

/// What stage `st` receives from its neighbours, by its own program (the
/// senders may be elsewhere): the activations its graph takes that are not
/// batch inputs, in argument order, and the gradients of the results it
/// differentiates, but the loss, in result order.
void received_bytes(const PipelineStage& st, std::vector<int64_t>& activations, std::vector<int64_t>& gradients) {
  const StageRunner& p = *st.program;
  const Function& g = p.graph();
  activations.clear();
  for (size_t a = 0; a < g.args.size(); ++a)
    if (st.input_args[a] < 0) activations.push_back(stored_bytes(g.type_of(g.args[a]), p.float_dtype()));
  gradients.clear();
  for (int r : st.float_outputs)
    if (!(st.has_loss && r == 0)) gradients.push_back(stored_bytes(p.result_type(r), p.float_dtype()));
}

}  // namespace

void Pipeline::connect_stages() {
  for (int k = 0; k < replicas_ * tensor_; ++k) connect_replica(k);
}

void Pipeline::connect_replica(int k) {
  const int n = stages(), m = options_.microbatches;
  // Stage s of this replica; null where another process runs it.
  auto at = [&](int s) -> PipelineStage* {
    return s >= 0 && s < n ? stages_[static_cast<size_t>(k * n + s)].get() : nullptr;
  };
  for (int s = 0; s + 1 < n; ++s) {
    if (!at(s) || !at(s + 1)) continue;
    const StageRunner &a = *at(s)->program, &b = *at(s + 1)->program;
    if (a.float_dtype() != b.float_dtype())
      throw Error(fmt::format("stages {} and {} would hand over floats as {} and {}: a bf16 plan computes in bf16 on "
                              "CUDA devices and in f32 on CPU devices; place both on the same kind of device or "
                              "compile the plan with --dtype f32",
                              s, s + 1, dtype_name(a.float_dtype()), dtype_name(b.float_dtype())));
  }
  // A buffer stage s writes and stage `reader` reads: in s's memory, but
  // pinned (allocated by the reader) when s is on the CPU and the reader on
  // a GPU of this process, so that the reader's copies run asynchronously at
  // bus speed.
  const bool device_messages = options_.comm && options_.comm->device_messages();
  auto buffer = [&](int s, int reader, int64_t bytes) -> void* {
    StageRunner& own = *at(s)->program;
    if (!at(reader) && reader >= 0 && reader < n && !own.place().on_host() && !device_messages)
      throw no_device_messages(s, reader);
    if (at(reader) && own.place().on_host() && !at(reader)->program->place().on_host())
      return at(reader)->program->allocate_host(bytes);
    return own.allocate(bytes);
  };
  for (int s = 0; s < n; ++s) {
    if (!at(s)) continue;
    PipelineStage& st = *at(s);
    StageRunner& p = *st.program;
    st.send_bytes.clear();
    for (int r = st.has_loss ? 1 : 0; r < st.results; ++r) st.send_bytes.push_back(p.result_type(r).bytes());
    st.send_grad_bytes.clear();
    for (const TensorType& t : st.send_grad_types) st.send_grad_bytes.push_back(stored_bytes(t, p.float_dtype()));
    // Every micro-batch's buffers, allocated (and touched) once.
    st.sends.assign(static_cast<size_t>(m), {});
    st.send_grads.assign(static_cast<size_t>(m), {});
    for (auto& row : st.sends)
      for (int64_t bytes : st.send_bytes) row.push_back(buffer(s, s + 1, bytes));
    for (auto& row : st.send_grads)
      for (int64_t bytes : st.send_grad_bytes) row.push_back(buffer(s, s - 1, bytes));
    st.loss_out.clear();
    if (st.has_loss) {
      const int64_t bytes = p.result_type(0).bytes();
      auto* base = p.place().on_host() ? nullptr : static_cast<std::byte*>(p.allocate(bytes * m));
      for (int mb = 0; mb < m; ++mb)
        st.loss_out.push_back(base ? static_cast<void*>(base + bytes * mb) : &st.losses[static_cast<size_t>(mb)]);
    }
    // A micro-batch is 1/m of one replica's share of the batch: the seed
    // divides by both, so that the replicas' summed gradients are the
    // whole batch's mean.
    st.loss_seed = p.scalar(1.0f / static_cast<float>(m * replicas_));
  }
  for (int s = 0; s < n; ++s) {
    if (!at(s)) continue;
    PipelineStage& st = *at(s);
    std::vector<int64_t> activations, gradients;
    received_bytes(st, activations, gradients);
    if (s > 0) {
      st.recv_bytes = activations;
      if (const PipelineStage* prev = at(s - 1))
        st.recv_copies = link(*st.program, *prev->program, prev->sends, prev->send_bytes, st.recvs);
      else
        land(st, s - 1, device_messages, m, activations, st.recv_landing, st.recvs);
    }
    if (s + 1 < n) {
      st.seed_bytes = gradients;
      if (const PipelineStage* next = at(s + 1))
        st.seed_copies = link(*st.program, *next->program, next->send_grads, next->send_grad_bytes, st.seeds_in);
      else
        land(st, s + 1, device_messages, m, gradients, st.seed_landing, st.seeds_in);
    }
  }
}

}  // namespace pf
