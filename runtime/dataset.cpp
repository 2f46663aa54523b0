// Training data: byte-level text tokens for GPT, synthetic tasks for the MLP and CNN examples.
#include "runtime/dataset.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <numbers>

#include <fmt/format.h>

#include "ir/diagnostic.h"
#include "runtime/random.h"

namespace pf {

namespace {

void check_positive(const char* what, const char* name, int64_t value) {
  if (value <= 0) throw Error(fmt::format("{}: {} must be positive, got {}", what, name, value));
}

TensorType i32(Shape shape) { return {DType::i32, std::move(shape)}; }
TensorType f32(Shape shape) { return {DType::f32, std::move(shape)}; }

}  // namespace

uint64_t batch_seed(uint64_t seed, uint64_t stream, int64_t batch) {
  return splitmix64(splitmix64(splitmix64(seed) ^ stream) ^ static_cast<uint64_t>(batch));
}

Dataset::Dataset(int64_t batch, uint64_t seed, uint64_t stream, std::vector<std::pair<std::string, TensorType>> inputs)
    : batch_(batch), seed_(seed), stream_(stream), inputs_(std::move(inputs)) {}

void Dataset::next_batch(std::span<void* const> buffers) {
  if (buffers.size() != inputs_.size())
    throw Error(
        fmt::format("dataset: a batch has {} inputs but {} buffers were given", inputs_.size(), buffers.size()));
  produce(buffers);
}

void Dataset::seek(int64_t index) {
  if (index < 0) throw Error(fmt::format("dataset: cannot seek to batch {}", index));
  next_ = index;
}

void Dataset::produce(std::span<void* const> buffers) {
  for (size_t i = 0; i < buffers.size(); ++i)
    if (buffers[i] == nullptr) throw Error(fmt::format("dataset: no buffer for input '{}'", inputs_[i].first));
  rng_.seed(batch_seed(seed_, stream_, next_));
  fill(buffers, rng_);
  ++next_;
}

// ---------------------------------------------------------------------------
// ByteTextDataset

ByteTextDataset::ByteTextDataset(const std::string& path, int64_t batch, int64_t seq_len, uint64_t seed)
    : Dataset(batch, seed, 0, {{"tokens", i32({batch, seq_len})}, {"targets", i32({batch, seq_len})}}),
      seq_len_(seq_len) {
  check_positive("byte text dataset", "batch size", batch);
  check_positive("byte text dataset", "sequence length", seq_len);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("cannot open '{}'", path));
  text_.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  if (in.bad()) throw Error(fmt::format("cannot read '{}'", path));
  if (static_cast<int64_t>(text_.size()) < seq_len + 1)
    throw Error(
        fmt::format("{}: {} bytes is too short for sequences of T + 1 = {} bytes", path, text_.size(), seq_len + 1));
}

void ByteTextDataset::next_batch(int32_t* tokens, int32_t* targets) {
  void* buffers[] = {tokens, targets};
  produce(buffers);
}

void ByteTextDataset::fill(std::span<void* const> buffers, std::mt19937_64& rng) {
  auto* tokens = static_cast<int32_t*>(buffers[0]);   // (B, T)
  auto* targets = static_cast<int32_t*>(buffers[1]);  // (B, T)
  const int64_t T = seq_len_;
  const auto starts = static_cast<uint64_t>(static_cast<int64_t>(text_.size()) - T);
  for (int64_t b = 0; b < batch_; ++b) {
    const uint8_t* window = text_.data() + rng() % starts;  // T + 1 bytes
    for (int64_t t = 0; t < T; ++t) {
      tokens[b * T + t] = window[t];
      targets[b * T + t] = window[t + 1];
    }
  }
}

// ---------------------------------------------------------------------------
// SeparableDataset

SeparableDataset::SeparableDataset(int64_t in_dim, int64_t classes, int64_t batch, uint64_t seed, uint64_t stream)
    : Dataset(batch, seed, stream, {{"x", f32({batch, in_dim})}, {"y", i32({batch})}}),
      in_dim_(in_dim),
      classes_(classes) {
  check_positive("separable dataset", "batch size", batch);
  check_positive("separable dataset", "input size", in_dim);
  if (classes < 2) throw Error(fmt::format("separable dataset: needs at least 2 classes, got {}", classes));
  // Unit rows give every class score the same spread for x ~ N(0, I), so
  // classes come out about equally often.
  std::mt19937_64 task(seed);
  projection_.resize(static_cast<size_t>(classes * in_dim));
  for (int64_t c = 0; c < classes; ++c) {
    double* row = projection_.data() + c * in_dim;
    double norm = 0;
    for (int64_t j = 0; j < in_dim; j += 2) {
      auto [z0, z1] = normal_pair(task);
      row[j] = z0;
      if (j + 1 < in_dim) row[j + 1] = z1;
    }
    for (int64_t j = 0; j < in_dim; ++j) norm += row[j] * row[j];
    norm = std::sqrt(norm);
    for (int64_t j = 0; j < in_dim; ++j) row[j] /= norm;
  }
}

void SeparableDataset::next_batch(float* x, int32_t* y) {
  void* buffers[] = {x, y};
  produce(buffers);
}

int32_t SeparableDataset::label_of(const float* x) const {
  int32_t best = 0;
  double best_score = -std::numeric_limits<double>::infinity();
  for (int64_t c = 0; c < classes_; ++c) {
    const double* row = projection_.data() + c * in_dim_;
    double score = 0;
    for (int64_t j = 0; j < in_dim_; ++j) score += row[j] * x[j];
    if (score > best_score) {
      best_score = score;
      best = static_cast<int32_t>(c);
    }
  }
  return best;
}

void SeparableDataset::fill(std::span<void* const> buffers, std::mt19937_64& rng) {
  auto* x = static_cast<float*>(buffers[0]);    // (B, in_dim)
  auto* y = static_cast<int32_t*>(buffers[1]);  // (B)
  for (int64_t b = 0; b < batch_; ++b) {
    float* row = x + b * in_dim_;
    fill_normal(rng, row, in_dim_);
    y[b] = label_of(row);  // from the stored floats, so x and y always agree
  }
}

// ---------------------------------------------------------------------------
// GratingImageDataset

GratingImageDataset::GratingImageDataset(int64_t batch, uint64_t seed, uint64_t stream, double noise)
    : Dataset(batch, seed, stream, {{"images", f32({batch, kChannels, kSize, kSize})}, {"labels", i32({batch})}}),
      noise_(noise) {
  check_positive("grating image dataset", "batch size", batch);
  if (!(noise >= 0) || !std::isfinite(noise))
    throw Error(fmt::format("grating image dataset: noise must be finite and >= 0, got {}", noise));
  std::mt19937_64 task(seed);
  colours_.resize(kClasses * kChannels);
  for (int64_t c = 0; c < kClasses; ++c) {
    double* col = colours_.data() + c * kChannels;
    double sum_sq = 0;
    for (int64_t ch = 0; ch < kChannels; ++ch) {
      // Away from 0 so that no colour vanishes.
      col[ch] = (uniform01(task) < 0.5 ? -1.0 : 1.0) * (0.25 + 0.75 * uniform01(task));
      sum_sq += col[ch] * col[ch];
    }
    const double rms = std::sqrt(sum_sq / kChannels);
    for (int64_t ch = 0; ch < kChannels; ++ch) col[ch] /= rms;
  }
}

void GratingImageDataset::next_batch(float* images, int32_t* labels) {
  void* buffers[] = {images, labels};
  produce(buffers);
}

void GratingImageDataset::pattern(int32_t c, double phase, float* out) const {
  if (c < 0 || c >= kClasses) throw Error(fmt::format("grating image dataset: no class {}", c));
  const double angle = std::numbers::pi * c / kClasses;
  const double cycles = 3 + c % 3;
  const double kx = 2 * std::numbers::pi * cycles * std::cos(angle) / kSize;
  const double ky = 2 * std::numbers::pi * cycles * std::sin(angle) / kSize;
  for (int64_t i = 0; i < kSize; ++i)
    for (int64_t j = 0; j < kSize; ++j) {
      const double wave = std::sin(kx * static_cast<double>(j) + ky * static_cast<double>(i) + phase);
      for (int64_t ch = 0; ch < kChannels; ++ch)
        out[(ch * kSize + i) * kSize + j] = static_cast<float>(colours_[c * kChannels + ch] * wave);
    }
}

void GratingImageDataset::fill(std::span<void* const> buffers, std::mt19937_64& rng) {
  auto* images = static_cast<float*>(buffers[0]);    // (B, 3, 32, 32)
  auto* labels = static_cast<int32_t*>(buffers[1]);  // (B)
  constexpr int64_t kPixels = kChannels * kSize * kSize;
  for (int64_t b = 0; b < batch_; ++b) {
    // Per image, in this order: the label, the phase, then the noise.
    const auto c = static_cast<int32_t>(rng() % kClasses);
    const double phase = 2 * std::numbers::pi * uniform01(rng);
    float* image = images + b * kPixels;
    labels[b] = c;
    pattern(c, phase, image);
    for (int64_t p = 0; p < kPixels; p += 2) {
      auto [z0, z1] = normal_pair(rng);
      image[p] += static_cast<float>(noise_ * z0);
      image[p + 1] += static_cast<float>(noise_ * z1);  // kPixels is even
    }
  }
}

}  // namespace pf
