// How a model trains: the optimizer, its learning-rate schedule, gradient
// clipping and the seed. One struct for every way of training (a plan's
// pipeline, the one-device run of a model, the test oracle), so that they
// share their defaults.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pf {

/// The learning rate follows a schedule over `steps`: constant, or (with
/// `cosine` or a `warmup`) linear warm-up for `warmup` steps, then cosine
/// decay to lr/10 at `steps`.
struct TrainingOptions {
  std::string optimizer = "adamw";  ///< "adamw" or "sgd" (with momentum)
  double lr = 1e-3;
  double momentum = 0.9;     ///< sgd only
  double weight_decay = 0;   ///< decoupled; matrices and kernels only, not biases or norm gains
  double clip = 0;           ///< clip gradients to this global norm; 0: off
  int64_t warmup = 0;
  bool cosine = false;
  int64_t steps = 1;         ///< length of the learning-rate schedule
  uint64_t seed = 0;         ///< of the initial weights (and of built-in data)
};

/// Whether a CPU stage keeps its weights packed for its products through a
/// step's actions (cpu::PackedWeights): each packed once per step and layout
/// rather than once per micro-batch, for the memory of at most two copies of
/// them, held from the first step on (stale from each update to the next
/// step). automatic: on a device whose step has two micro-batches or more
/// and whose memory (the plan's, where it gives one) holds the copies beside
/// what the plan predicts for its stages.
enum class PackWeights { automatic, on, off };

/// The setting a user names: "auto", "on" or "off"; nullopt for any other.
std::optional<PackWeights> pack_weights_named(std::string_view name);

/// The learning rate a user means by not giving one: 3e-4 for adamw, 0.01
/// for sgd (with momentum 0.9). Adam moves every weight by about lr on its
/// first steps, so a layer of fan-in n moves its outputs by up to n x lr
/// where the gradients agree in sign (ReLU features, all positive, make them
/// agree): 1e-3 over examples/mlp.pf's 4096 features moves each unit by more
/// than its own spread.
double default_lr(const std::string& optimizer);

/// The global gradient norm a user means by not giving a clip: 1, as in
/// Megatron-LM and nanoGPT. It bounds sgd's first steps, which a wide ReLU
/// layer's large initial gradients otherwise throw far past the minimum.
/// (A TrainingOptions left as it is does not clip: the library trains
/// exactly as told; the command line and the Python module use this.)
double default_clip();

/// Throws pf::Error("<what>: ...") naming the first option out of range.
void check_training_options(const TrainingOptions& options, const std::string& what);

}  // namespace pf
