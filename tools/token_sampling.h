// Drawing the next token from a language model's logits: temperature and top-k, reproducible from a seed.
#pragma once

#include <cstdint>
#include <random>
#include <span>

namespace pf::tools {

/// How the next token is drawn from the logits.
struct Sampling {
  /// The logits are divided by it before the softmax: below 1 sharper, above
  /// 1 flatter; 0 takes the most likely token.
  double temperature = 1.0;
  /// Draw among the k most likely tokens only; 0: among all of them.
  int64_t top_k = 0;
  /// Then among the fewest most likely tokens whose probabilities add up to
  /// p or more (nucleus sampling); 1: among all that top_k kept.
  double top_p = 1.0;
};

/// The index of the token drawn from `logits` as `how` says, with `rng`; the
/// first largest logit for temperature 0 or top_k 1, drawing nothing. Among
/// equal logits top-k and top-p keep the lower indices. The draw reads one
/// 64-bit number of `rng` and no library distribution, so a seed gives the
/// same tokens with every standard library. Throws Error for a negative
/// temperature or top_k, a top_p outside (0, 1], no logits, or a largest
/// logit that is not finite.
int64_t draw_token(std::span<const float> logits, const Sampling& how, std::mt19937_64& rng);

}  // namespace pf::tools
