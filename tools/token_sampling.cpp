// Drawing the next token from a language model's logits.
#include "tools/token_sampling.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "ir/diagnostic.h"

namespace pf::tools {

int64_t draw_token(std::span<const float> logits, const Sampling& how, std::mt19937_64& rng) {
  if (how.temperature < 0 || !std::isfinite(how.temperature))
    throw Error(fmt::format("temperature {} is not a number of 0 or more", how.temperature));
  if (how.top_k < 0) throw Error(fmt::format("top-k {} is negative (0 keeps every token)", how.top_k));
  if (!(how.top_p > 0 && how.top_p <= 1))
    throw Error(fmt::format("top-p {} is not in (0, 1] (1 keeps every token)", how.top_p));
  if (logits.empty()) throw Error("no logits to draw a token from");
  const auto largest = std::max_element(logits.begin(), logits.end(), [](float x, float y) {
    return x < y || std::isnan(y);  // a NaN is the largest, so that it is seen
  });
  if (!std::isfinite(*largest))
    throw Error(fmt::format("the logits hold {} (token {}): the weights do not give finite numbers", *largest,
                            largest - logits.begin()));
  const int64_t n = static_cast<int64_t>(logits.size());
  if (how.temperature == 0 || how.top_k == 1) return largest - logits.begin();

  // The candidates, most likely first; ties in index order.
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  const int64_t keep = how.top_k > 0 ? std::min(how.top_k, n) : n;
  std::partial_sort(order.begin(), order.begin() + keep, order.end(), [&](int64_t a, int64_t b) {
    return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)] ||
           (logits[static_cast<size_t>(a)] == logits[static_cast<size_t>(b)] && a < b);
  });
  order.resize(static_cast<size_t>(keep));

  // Softmax weights relative to the largest logit, in double: exp never
  // overflows and the smallest kept weights are not rounded away.
  std::vector<double> cumulative(order.size());
  double total = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    total += std::exp((static_cast<double>(logits[static_cast<size_t>(order[i])]) - *largest) / how.temperature);
    cumulative[i] = total;
  }
  // Top-p: the fewest most likely tokens holding p of the probability.
  auto kept_end = cumulative.end();
  if (how.top_p < 1) {
    const auto last = std::lower_bound(cumulative.begin(), cumulative.end(), how.top_p * total);
    if (last != cumulative.end()) kept_end = last + 1;  // (p * total may round above the total)
  }
  // 53 random bits as a number in [0, 1), scaled to what is kept.
  const double u = static_cast<double>(rng() >> 11) * 0x1p-53 * *(kept_end - 1);
  const auto pick = std::min(std::upper_bound(cumulative.begin(), kept_end, u), kept_end - 1);
  return order[static_cast<size_t>(pick - cumulative.begin())];
}

}  // namespace pf::tools
