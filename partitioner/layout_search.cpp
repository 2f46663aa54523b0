// Enumerating, pricing and choosing layouts of P x D x T GPUs.
#include "partitioner/layout_search.h"

#include <fmt/format.h>

#include <algorithm>

#include "ir/diagnostic.h"
#include "ir/units.h"

namespace pf {

std::vector<Layout> candidate_layouts(const LayoutSpace& space) {
  std::vector<Layout> out;
  if (space.tensor < 1 || space.gpus % space.tensor != 0) return out;
  const int64_t groups = space.gpus / space.tensor;  // P x D
  for (int64_t p = 1; p <= std::min<int64_t>(groups, space.max_pipeline); ++p) {
    if (groups % p != 0) continue;
    const int64_t d = groups / p;
    if (space.data > 0 && d != space.data) continue;
    if (space.batch % d != 0) continue;
    const int64_t per_replica = space.batch / d;
    std::vector<int64_t> counts;  // micro-batches, increasing
    if (space.microbatches > 0) {
      if (per_replica % space.microbatches == 0) counts.push_back(space.microbatches);
    } else {
      for (int64_t b : space.microbatch_sizes)
        if (b > 0 && per_replica % b == 0) counts.push_back(per_replica / b);
      std::sort(counts.begin(), counts.end());
      counts.erase(std::unique(counts.begin(), counts.end()), counts.end());
    }
    for (int64_t m : counts)
      if (m >= int64_t{space.microbatches_per_device} * p)
        out.push_back({static_cast<int>(p), static_cast<int>(d), space.tensor, static_cast<int>(m), per_replica / m});
  }
  return out;
}

LayoutCandidate price_layout(const Layout& layout, const CostGraph& graph, const PartitionOptions& partition,
                             const StepOptions& step, double peak_flops) {
  LayoutCandidate c;
  c.layout = layout;
  auto most_memory = [](const PartitionResult& r) {
    int64_t most = 0;
    for (const DevicePlan& d : r.devices) most = std::max(most, d.memory_bytes);
    return most;
  };
  try {
    c.partition = pf::partition(graph, partition);
  } catch (const Error&) {
    // Nothing fits: say how much the plainest split would need.
    c.memory_bytes = most_memory(equal_layers(graph, partition));
    return c;
  }
  c.fits = true;
  c.period_s = c.partition.period_s;
  c.memory_bytes = most_memory(c.partition);
  c.step = predict_step(graph, c.partition, step);
  c.utilisation = flop_utilisation(graph_flops(graph) * layout.microbatches * layout.data, c.step.step_s, layout.gpus(), peak_flops);
  return c;
}

LayoutChoice choose_layout(std::vector<LayoutCandidate> candidates) {
  LayoutChoice choice;
  choice.candidates = std::move(candidates);
  for (size_t i = 0; i < choice.candidates.size(); ++i) {
    const LayoutCandidate& c = choice.candidates[i];
    if (c.fits && (choice.best < 0 || c.step.step_s < choice.candidates[choice.best].step.step_s))
      choice.best = static_cast<int>(i);
  }
  return choice;
}

std::string render_layout_table(const LayoutChoice& choice) {
  std::string out = "     P    D  T     m  mb   period ms         step    MFU  memory/GPU  fits\n";
  for (size_t i = 0; i < choice.candidates.size(); ++i) {
    const LayoutCandidate& c = choice.candidates[i];
    const Layout& l = c.layout;
    const std::string mark = static_cast<int>(i) == choice.best ? "*" : " ";
    out.append(fmt::format("{} {:>4} {:>4} {:>2} {:>5} {:>3}", mark, l.pipeline, l.data, l.tensor, l.microbatches,
                           l.microbatch_size));
    if (c.fits)
      out.append(fmt::format(" {:>11.3f} {:>12} {:>5.1f}% {:>11}  yes\n", 1e3 * c.period_s, format_seconds(c.step.step_s),
                             100 * c.utilisation, format_bytes(static_cast<double>(c.memory_bytes))));
    else
      out.append(fmt::format(" {:>11} {:>12} {:>6} {:>11}  no\n", "-", "-", "-",
                             format_bytes(static_cast<double>(c.memory_bytes))));
  }
  return out;
}

}  // namespace pf
