// Training data: byte-level text tokens for GPT, synthetic tasks for the MLP and CNN examples.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ir/types.h"

namespace pf {

/// The seed of batch `batch` of sample stream `stream` under `seed`: every
/// batch draws from its own std::mt19937_64 seeded with this value, so that
/// batch k is a pure function of (seed, stream, k) and a run resumed from a
/// checkpoint at batch k sees the same data as one that never stopped. The
/// mix is SplitMix64's finaliser applied to each input in turn, which turns
/// neighbouring (seed, k) pairs into unrelated engine seeds.
uint64_t batch_seed(uint64_t seed, uint64_t stream, int64_t batch);

/// A source of batches for one model: a fixed list of named inputs (the
/// graph's input names and types) filled in place, batch after batch.
/// Nothing is allocated per batch.
class Dataset {
 public:
  virtual ~Dataset() = default;

  /// The tensors of one batch, in order, named as the model's inputs.
  const std::vector<std::pair<std::string, TensorType>>& inputs() const { return inputs_; }
  /// Writes batch batch_index() into `buffers` (one per input, in inputs()
  /// order, each of inputs()[i].second.bytes() bytes) and advances.
  void next_batch(std::span<void* const> buffers);

  /// The index of the batch the next call writes (0 at construction).
  int64_t batch_index() const { return next_; }
  /// Makes batch `index` the next one (resuming from a checkpoint).
  void seek(int64_t index);
  int64_t batch_size() const { return batch_; }

 protected:
  /// Batches of `batch` samples drawn from stream `stream` under `seed`.
  Dataset(int64_t batch, uint64_t seed, uint64_t stream, std::vector<std::pair<std::string, TensorType>> inputs);
  /// Fills the buffers with one batch, drawing only from `rng`, which
  /// produce() has seeded for the current batch index.
  virtual void fill(std::span<void* const> buffers, std::mt19937_64& rng) = 0;
  /// Seeds the engine for the current batch and fills it; the typed
  /// next_batch() of each subclass funnels through here.
  void produce(std::span<void* const> buffers);

  int64_t batch_;

 private:
  uint64_t seed_;
  uint64_t stream_;
  std::vector<std::pair<std::string, TensorType>> inputs_;
  int64_t next_ = 0;
  std::mt19937_64 rng_;  // reseeded in place for every batch; never reallocated
};

/// Byte-level language-modelling data from any file: each byte is a token
/// (vocabulary 256). A batch is B windows of T + 1 consecutive bytes;
/// `tokens` are the first T, `targets` the last T (tokens shifted by one).
///
/// Window b of batch k starts at byte rng() % (n - T) where n is the file's
/// size and rng the b-th output of std::mt19937_64(batch_seed(seed, 0, k)),
/// so every start leaves room for T + 1 bytes. (The modulo's bias is below
/// n / 2^64, far under anything training can notice.)
class ByteTextDataset final : public Dataset {
 public:
  static constexpr int64_t kVocab = 256;

  /// Reads the whole file; throws Error when it cannot be read or holds fewer
  /// than T + 1 bytes, or when batch or seq_len is not positive.
  ByteTextDataset(const std::string& path, int64_t batch, int64_t seq_len, uint64_t seed);

  /// Writes the next batch: tokens and targets are (B, T) i32 arrays.
  void next_batch(int32_t* tokens, int32_t* targets);
  using Dataset::next_batch;  // the generic form stays visible

  int64_t seq_len() const { return seq_len_; }
  /// The file's bytes.
  std::span<const uint8_t> text() const { return text_; }

 private:
  void fill(std::span<void* const> buffers, std::mt19937_64& rng) override;

  std::vector<uint8_t> text_;
  int64_t seq_len_;
};

/// A linearly separable classification task for an MLP: x ~ N(0, 1)^in_dim
/// and label = argmax_c (P x)_c for a fixed random projection P (classes,
/// in_dim) whose rows have unit norm (so that no class dominates).
///
/// `seed` fixes the task (P is drawn from std::mt19937_64(seed)); `stream`
/// picks an independent sequence of samples of that task (0 for training,
/// 1 for evaluation, ...). Inputs: "x" f32[B, in_dim], "y" i32[B].
class SeparableDataset final : public Dataset {
 public:
  SeparableDataset(int64_t in_dim, int64_t classes, int64_t batch, uint64_t seed, uint64_t stream = 0);

  /// Writes the next batch: x (B, in_dim) f32, y (B) i32.
  void next_batch(float* x, int32_t* y);
  using Dataset::next_batch;  // the generic form stays visible

  /// The generator's rule for one sample x (in_dim): argmax of P x computed
  /// in double, the lowest class on a tie.
  int32_t label_of(const float* x) const;
  /// P, row-major (classes, in_dim).
  std::span<const double> projection() const { return projection_; }
  int64_t in_dim() const { return in_dim_; }
  int64_t classes() const { return classes_; }

 private:
  void fill(std::span<void* const> buffers, std::mt19937_64& rng) override;

  int64_t in_dim_;
  int64_t classes_;
  std::vector<double> projection_;  // (classes, in_dim)
};

/// A 10-class image task for a small CNN: class c is a sinusoidal grating of
/// its own orientation (c * 18 degrees) and frequency (3, 4 or 5 cycles per
/// image), tinted by a per-class colour (unit-RMS over the 3 channels, drawn
/// from std::mt19937_64(seed)), with a random phase per image plus Gaussian
/// noise of standard deviation `noise`:
///   image[ch, i, j] = colour_c[ch] * sin(2 pi f_c (j cos a_c + i sin a_c) / 32 + phase) + noise * N(0, 1)
/// The random phase shifts the pattern, so a model must recognise it wherever
/// it lies: translation-invariant features (convolutions and pooling) learn
/// it easily, a fixed per-pixel template cannot.
///
/// `stream` as in SeparableDataset. Inputs: "images" f32[B, 3, 32, 32],
/// "labels" i32[B].
class GratingImageDataset final : public Dataset {
 public:
  static constexpr int64_t kClasses = 10;
  static constexpr int64_t kChannels = 3;
  static constexpr int64_t kSize = 32;

  GratingImageDataset(int64_t batch, uint64_t seed, uint64_t stream = 0, double noise = 0.5);

  /// Writes the next batch: images (B, 3, 32, 32) f32, labels (B) i32.
  void next_batch(float* images, int32_t* labels);
  using Dataset::next_batch;  // the generic form stays visible

  /// The noise-free pattern of class c at phase `phase`: (3, 32, 32).
  void pattern(int32_t c, double phase, float* out) const;
  /// Class c's colour, one factor per channel.
  std::span<const double> colour(int32_t c) const { return {colours_.data() + c * kChannels, kChannels}; }
  double noise() const { return noise_; }

 private:
  void fill(std::span<void* const> buffers, std::mt19937_64& rng) override;

  double noise_;
  std::vector<double> colours_;  // (kClasses, kChannels)
};

}  // namespace pf
