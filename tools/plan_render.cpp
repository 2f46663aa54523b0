// A plan's stage table and its cut tensors, as text (its picture:
// plan_render_dot.cpp; SVG through Graphviz: graphviz.cpp).
#include "tools/plan_render.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ir/parser.h"
#include "ir/units.h"
#include "tools/plan_facts.h"

namespace pf::tools {

namespace {

/// Under tensor or expert parallelism, how many of a layer's experts each
/// rank routes the tokens to ("4 of every layer's 8", "1 to 2 of every
/// layer's 4"), read from the ranks' programs; "" where no layer's experts
/// are cut.
std::string experts_per_rank(const Plan& plan) {
  int64_t fewest = INT64_MAX, most = 0, experts = 0;
  for (const PlanStage& s : plan.stages)
    for (const PlanShard& shard : s.shards) {
      if (shard.program.find("moe_route") == std::string::npos) continue;  // no experts: nothing to parse
      const Module program = parse_module_text("stage", shard.program);  // outlives the loop over its ops
      for (const Op& op : program.graph().ops) {
        const Attr* held = op.attr("experts");
        if (op.kind != OpKind::moe_route || held == nullptr) continue;
        const Attr* first = op.attr("first_expert");
        const int64_t n = held->dim.constant();
        fewest = std::min(fewest, n);
        most = std::max(most, n);
        experts = std::max(experts, n + (first ? first->dim.constant() : 0));
      }
    }
  if (most == 0) return "";
  return fewest == most ? fmt::format("{} of every layer's {}", most, experts)
                        : fmt::format("{} to {} of every layer's {}", fewest, most, experts);
}

}  // namespace

std::string render_plan_text(const Plan& plan) {
  std::vector<std::vector<std::string>> rows = {
      {"stage", "device", "layers", "params", "fwd+bwd ms", "peak mem", "sent", "imbalance"}};
  for (const PlanStage& s : plan.stages)
    rows.push_back({std::to_string(s.index), device_name(plan, s), layer_range(plan, static_cast<size_t>(s.index)),
                    format_count(param_count(s)),
                    compute_ms(s), bytes_text(s.predicted.memory_bytes), bytes_text(s.predicted.bytes_sent), imbalance(plan, s)});
  std::vector<size_t> width(rows[0].size());
  for (const auto& row : rows)
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  // Text columns to the left, numbers to the right.
  constexpr bool kLeft[] = {false, true, true, false, false, false, false, false};
  std::string out = "plan for " + summary(plan) + "\npredicted: " + prediction(plan) + "\n\n";
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c)
      line += (c ? "  " : "") +
              (kLeft[c] ? fmt::format("{:<{}}", row[c], width[c]) : fmt::format("{:>{}}", row[c], width[c]));
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  for (size_t s = 1; s < plan.stages.size(); ++s)
    if (begins_inside_layer(plan, s)) {
      std::vector<std::string> sent;
      for (const PlanTensor& t : plan.stages[s - 1].send) sent.push_back(t.name);
      out += fmt::format("layer {} is cut between stages {} and {}, which hand over {}\n", plan.stages[s].layers.front(),
                         s - 1, s, fmt::join(sent, ", "));
    }
  // A product split between stages: which rows of its weight each holds.
  std::map<std::string, std::vector<std::string>> pieces;
  for (const PlanStage& s : plan.stages)
    for (const PlanParam& p : s.params)
      if (p.piece)
        pieces[p.piece->whole].push_back(
            fmt::format("rows {}..{} on stage {}", p.piece->begin, p.piece->end, s.index));
  for (const auto& [whole, where] : pieces)
    out += fmt::format("parameter {} is split by rows: {}\n", whole, fmt::join(where, ", "));
  // Tensor parallelism: how much of the model a rank holds a block of.
  if (plan.tensor_parallel > 1 && !plan.stages.front().shards.empty()) {
    std::map<std::string, std::pair<int64_t, bool>> params;  // whole name -> (elements, split)
    for (const PlanStage& s : plan.stages)
      for (const PlanParam& p : s.shards.front().params)
        params[p.piece ? p.piece->whole : p.name] = {p.piece ? p.piece->whole_type(p.type).numel() : p.type.numel(),
                                                     p.piece.has_value()};
    int64_t split = 0, total = 0;
    int split_count = 0;
    for (const auto& [name, entry] : params) {
      total += entry.first;
      if (entry.second) {
        split += entry.first;
        ++split_count;
      }
    }
    const double share = total > 0 ? 100.0 * static_cast<double>(split) / static_cast<double>(total) : 0.0;
    out += fmt::format("each of a device's {} tensor-parallel ranks holds a block of {} of the {} parameters "
                       "({:.1f}% of the elements) and the other {} whole\n",
                       plan.tensor_parallel, split_count, params.size(), share, params.size() - split_count);
    if (const std::string experts = experts_per_rank(plan); !experts.empty())
      out += fmt::format("each rank routes every token only to the experts it holds: {}\n", experts);
    // "%logits = matmul: why" -> "stage 1 runs %logits = matmul whole on every rank: why".
    for (const PlanStage& s : plan.stages)
      for (const std::string& note : s.kept_whole) {
        const size_t colon = note.find(": ");
        out += colon == std::string::npos
                   ? fmt::format("  stage {} runs {} whole on every rank\n", s.index, note)
                   : fmt::format("  stage {} runs {} whole on every rank: {}\n", s.index, note.substr(0, colon),
                                 note.substr(colon + 2));
      }
  }
  // Recomputation: what each stage's backward computes again instead of stashing.
  std::vector<std::string> recomputed;
  for (const PlanStage& s : plan.stages)
    if (s.gradients && !s.gradients->recomputed.empty())
      recomputed.push_back(fmt::format("stage {}: {}", s.index, s.gradients->recomputed.size()));
  if (!recomputed.empty())
    out += fmt::format("the backward computes forward values again instead of stashing them ({})\n",
                       fmt::join(recomputed, ", "));
  if (replica_count(plan) > 1) {
    // Who runs what: each stage's copies average their gradients after the
    // step (predicted: their share per micro-batch).
    out += "\nranks (rank: device, replica, stages):\n";
    for (const PlanRank& r : plan.ranks)
      out += fmt::format("  {}: {}, replica {}, stage{} {}\n", r.rank, plan.devices[static_cast<size_t>(r.device)].name,
                         r.replica, r.stages.size() == 1 ? "" : "s", fmt::join(r.stages, ","));
    const int x = plan.expert_parallel, replicas = replica_count(plan);
    if (const std::string experts = experts_per_rank(plan); x > 1 && !experts.empty())
      out += x == replicas ? fmt::format("  the replicas share the experts out: each holds {} and routes every "
                                         "replica's tokens to them\n",
                                         experts)
                           : fmt::format("  groups of {} replicas share the experts out: each holds {} and routes "
                                         "its group's tokens to them\n",
                                         x, experts);
    for (const PlanStage& s : plan.stages) {
      std::vector<int> copies;
      for (int k = 0; k < replicas; ++k) copies.push_back(rank_of_stage(plan, s.index, k));
      const bool own = !replica_own_params(plan, s, 0).empty();
      // A block of the experts is summed over the replicas holding it, one per group.
      std::vector<std::string> blocks;
      for (int b = 0; b < x && own && x < replicas; ++b) {
        std::vector<int> holders;
        for (int k : expert_block_replicas(plan, b)) holders.push_back(rank_of_stage(plan, s.index, k));
        blocks.push_back(fmt::format("{}", fmt::join(holders, ",")));
      }
      out += fmt::format("  stage {} all-reduces its gradients{} over ranks {}{} ({:.3f} ms per micro-batch)\n", s.index,
                         own ? " but its experts'" : "", fmt::join(copies, ","),
                         blocks.empty() ? "" : fmt::format(", each block of its experts over ranks {}",
                                                           fmt::join(blocks, " and ")),
                         1e3 * s.predicted.sync_s);
    }
  }
  for (const PlanStage& s : plan.stages) {
    out += fmt::format("\nstage {} on {}:\n", s.index, device_name(plan, s));
    // Batch inputs are sliced per micro-batch; only the exceptions are listed.
    for (const PlanTensor& t : s.inputs)
      if (t.whole) out += fmt::format("  input {} {} whole: every micro-batch reads all of it\n", t.name, t.type.str());
    if (s.recv.empty() && s.send.empty()) out += "  no cut tensors\n";
    for (const PlanTensor& t : s.recv)
      out += fmt::format("  recv {} {} ({}) from stage {}\n", t.name, t.type.str(), bytes_text(t.type.bytes()), t.peer);
    for (const PlanTensor& t : s.send)
      out += fmt::format("  send {} {} ({}) to stage {}\n", t.name, t.type.str(), bytes_text(t.type.bytes()), t.peer);
  }
  return out;
}

}  // namespace pf::tools
