// DualPipeV: DeepSeek's bidirectional schedule cut in half, two chunks per device placed as a V.
//
// The stages lie as zbv's (chunk 0 of device d is stage d on the way down,
// chunk 1 is stage 2p - 1 - d on the way back up), and the order is built
// for a device that overlaps a forward of one chunk with a backward of the
// other (DeepSeek-V3 hides a mixture of experts' all-to-all that way): its
// steady state alternates "F of chunk 0 with B of chunk 1" and "F of chunk 1
// with B of chunk 0". Here each such pair runs one after the other, the
// forward first. Most backwards run whole (B with its W right after); the
// warm-up's last chunk-1 backwards and the cool-down's last half defer their
// W to fill the gaps a device would otherwise wait in, oldest first, as
// zero bubble does. It takes m >= 2p, as DeepSeek's does (device 0's
// warm-up alone runs 2p - 1 forwards of chunk 0 before its first backward).
#include <deque>

#include <fmt/format.h>

#include "ir/diagnostic.h"
#include "runtime/schedule_orders.h"

namespace pf::schedule_orders {
namespace {

/// One device's list, built phase by phase. Each chunk's forwards and its
/// backwards run their micro-batches in order; a deferred W waits in a
/// queue until a phase takes the oldest.
class DeviceList {
 public:
  void forward(int chunk) { order_.push_back({ActionKind::forward, forwards_[chunk]++, chunk}); }
  /// B of the chunk's next micro-batch; its W right after unless `defer`.
  void backward(int chunk, bool defer) {
    const Work input{ActionKind::backward_input, backwards_[chunk]++, chunk};
    order_.push_back(input);
    const Work weight{ActionKind::backward_weight, input.microbatch, chunk};
    if (defer)
      deferred_.push_back(weight);
    else
      order_.push_back(weight);
  }
  void oldest_weight() {
    order_.push_back(deferred_.front());
    deferred_.pop_front();
  }
  std::vector<Work> take() { return std::move(order_); }

 private:
  std::vector<Work> order_;
  std::deque<Work> deferred_;
  int forwards_[2] = {0, 0}, backwards_[2] = {0, 0};
};

std::vector<Work> dual_pipe_v_order(int p, int m, int d) {
  DeviceList list;
  const int below = p - 1 - d;  // devices after this one on the way down
  // Warm-up: chunk 0 alone until the first micro-batch turns, then chunk 0
  // and chunk 1 in turn as they come back up.
  for (int k = 0; k < 2 * below; ++k) list.forward(0);
  for (int k = 0; k <= d; ++k) {
    list.forward(0);
    list.forward(1);
  }
  // Chunk 1's first backwards, each W taken at once behind its B: B first
  // passes the gradient down, then the W fills the wait for the next F.
  for (int k = 0; k < below; ++k) {
    list.backward(1, true);
    list.oldest_weight();
    list.forward(1);
  }
  // Steady state: the pairs that overlap on DeepSeek's devices.
  for (int k = 0; k < m - 2 * p + d + 1; ++k) {
    list.forward(0);
    list.backward(1, false);
    list.forward(1);
    list.backward(0, false);
  }
  // Chunk 0's forwards are done; chunk 1's last ones drain.
  for (int k = 0; k < below; ++k) {
    list.backward(1, false);
    list.forward(1);
    list.backward(0, false);
  }
  // Cool-down: the backwards left, the second half with W deferred (from
  // chunk 0's B of the middle pair on an even device, from both of them on
  // an odd one), then those Ws between chunk 0's last Bs and after them.
  const int pairs = d + 1;
  bool defer = false;
  for (int k = 0; k < pairs; ++k) {
    if (k == pairs / 2 && d % 2 == 1) defer = true;
    list.backward(1, defer);
    if (k == pairs / 2 && d % 2 == 0) defer = true;
    list.backward(0, defer);
  }
  for (int k = 0; k < below; ++k) {
    list.oldest_weight();
    list.backward(0, true);
  }
  for (int k = 0; k < pairs; ++k) list.oldest_weight();
  return list.take();
}

}  // namespace

Schedule dual_pipe_v(int devices, int microbatches) {
  if (microbatches < microbatches_per_device(ScheduleKind::dual_pipe_v) * devices)
    throw Error(fmt::format("dualpipev needs at least 2 micro-batches per device ({} on {} device{}), got {}",
                            2 * devices, devices, devices == 1 ? "" : "s", microbatches));
  DeviceOrders orders(static_cast<size_t>(devices));
  for (int d = 0; d < devices; ++d) orders[static_cast<size_t>(d)] = dual_pipe_v_order(devices, microbatches, d);
  return schedule_from_orders(ScheduleKind::dual_pipe_v, devices, microbatches, 2, orders);
}

}  // namespace pf::schedule_orders
