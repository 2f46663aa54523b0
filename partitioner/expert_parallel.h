// Expert parallelism as the cost model sees it: the data-parallel replicas
// of a stage share each layer's experts out (expert_parallel_layout, which
// the expert-parallel pass executes), priced for one replica.
#pragma once

#include <cstdint>

#include "ir/module.h"
#include "partitioner/cost_graph.h"
#include "partitioner/device_profile.h"
#include "partitioner/tensor_parallel.h"

namespace pf {

struct ExpertParallel {
  int replicas = 1;           // of a group sharing the experts out (Plan::expert_parallel)
  LinkSpec link;              // between a stage's replicas
  int64_t element_bytes = 4;  // bytes a collective moves per element: the compute dtype's
};

/// Prices `cg` (built from `graph`, node i = op i) for one of `ep.replicas`
/// replicas of a group sharing the experts out. An expert weight holds its
/// block's bytes, which are its replica's own (CostNode::own_param_bytes:
/// summed over the replicas holding the same block, not all of them). The ops over the experts' slots cost what they did: a
/// replica's experts take every replica's tokens, and a balanced route
/// fills as many of their slots as the whole model's on one replica's
/// tokens. The hand-offs are added as ring collectives over `ep.link`: in
/// the forward, the router's logits and the tokens gathered from every
/// replica of the group and the combine reduce-scattered; in the backward, the combine's
/// gradient gathered and the tokens' and logits' gradients reduce-scattered.
/// The gathered logits the backward keeps ((replicas - 1) x tokens x
/// experts floats) are left out. One replica changes nothing. Returns the
/// split (`sharded`: the values each replica holds its experts' block of),
/// for cuts_between_shares: each stage's program is split alone. The first
/// `whole_results` results of `graph` (all when negative) leave whole; the
/// rest (a training stage's stash) may be the replica's blocks.
TensorParallelSplit apply_expert_parallel(CostGraph& cg, const Function& graph, const ExpertParallel& ep,
                                          int whole_results = -1);

}  // namespace pf
