// Tests of the byte-level text dataset and the synthetic MLP and CNN datasets.
#include "runtime/dataset.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numbers>

#include "ir/diagnostic.h"
#include "tests/allocation_counter.h"
#include "tests/error_of.h"

namespace pf {
namespace {

using testing_support::allocations_in;
using testing_support::error_of;

namespace fs = std::filesystem;

// A temporary file removed when the test ends.
class TempFile {
 public:
  TempFile(const std::string& name, const std::string& bytes)
      : path_((fs::temp_directory_path() / ("pf_dataset_" + std::to_string(::getpid()) + "_" + name)).string()) {
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  ~TempFile() { fs::remove(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// 1000 bytes covering every value 0..255, high bytes included, so that a
// signed-char slip would show as a negative token.
std::string all_bytes_text() {
  std::string s;
  for (int i = 0; i < 1000; ++i) s.push_back(static_cast<char>((i * 37 + i / 256) % 256));
  return s;
}

// ---------------------------------------------------------------------------
// ByteTextDataset

TEST(ByteTextDataset, WindowsFollowTheDocumentedPositions) {
  TempFile file("text.txt", all_bytes_text());
  const int64_t B = 4, T = 16;
  ByteTextDataset data(file.path(), B, T, /*seed=*/7);
  ASSERT_EQ(data.inputs().size(), 2u);
  EXPECT_EQ(data.inputs()[0].first, "tokens");
  EXPECT_EQ(data.inputs()[0].second.str(), "i32[4,16]");
  EXPECT_EQ(data.inputs()[1].first, "targets");
  EXPECT_EQ(data.inputs()[1].second.str(), "i32[4,16]");
  EXPECT_EQ(data.text().size(), 1000u);

  std::vector<int32_t> tokens(B * T), targets(B * T);
  for (int64_t k = 0; k < 3; ++k) {
    EXPECT_EQ(data.batch_index(), k);
    data.next_batch(tokens.data(), targets.data());
    // Row b starts at the b-th output of mt19937_64(batch_seed(seed, 0, k)) modulo n - T.
    std::mt19937_64 rng(batch_seed(7, 0, k));
    for (int64_t b = 0; b < B; ++b) {
      const uint64_t start = rng() % (1000 - T);
      for (int64_t t = 0; t < T; ++t) {
        EXPECT_EQ(tokens[b * T + t], data.text()[start + t]) << "batch " << k << " row " << b << " t " << t;
        EXPECT_EQ(targets[b * T + t], data.text()[start + t + 1]) << "batch " << k << " row " << b << " t " << t;
        EXPECT_GE(tokens[b * T + t], 0);
        EXPECT_LT(tokens[b * T + t], ByteTextDataset::kVocab);
      }
      // Targets are the tokens shifted by one.
      for (int64_t t = 0; t + 1 < T; ++t) EXPECT_EQ(targets[b * T + t], tokens[b * T + t + 1]);
    }
  }
}

TEST(ByteTextDataset, IsDeterministicBySeedAndSeekable) {
  TempFile file("text.txt", all_bytes_text());
  const int64_t B = 3, T = 8;
  ByteTextDataset a(file.path(), B, T, 1), b(file.path(), B, T, 1), c(file.path(), B, T, 2);
  std::vector<int32_t> ta(B * T), ya(B * T), tb(B * T), yb(B * T), tc(B * T), yc(B * T);
  std::vector<std::vector<int32_t>> history;
  for (int k = 0; k < 5; ++k) {
    a.next_batch(ta.data(), ya.data());
    b.next_batch(tb.data(), yb.data());
    c.next_batch(tc.data(), yc.data());
    EXPECT_EQ(ta, tb);
    EXPECT_EQ(ya, yb);
    EXPECT_NE(ta, tc) << "seeds 1 and 2 gave the same batch " << k;
    history.push_back(ta);
  }
  // Resuming at batch 3 gives batch 3 again, through the generic interface too.
  b.seek(3);
  void* buffers[] = {tb.data(), yb.data()};
  b.next_batch(buffers);
  EXPECT_EQ(tb, history[3]);
  EXPECT_EQ(b.batch_index(), 4);
}

TEST(ByteTextDataset, ShortestFileHasOneWindow) {
  TempFile file("short.txt", "abcde");
  ByteTextDataset data(file.path(), 2, 4, 9);
  std::vector<int32_t> tokens(8), targets(8);
  data.next_batch(tokens.data(), targets.data());
  EXPECT_EQ(tokens, (std::vector<int32_t>{'a', 'b', 'c', 'd', 'a', 'b', 'c', 'd'}));
  EXPECT_EQ(targets, (std::vector<int32_t>{'b', 'c', 'd', 'e', 'b', 'c', 'd', 'e'}));
}

TEST(ByteTextDataset, NextBatchAllocatesNothing) {
  TempFile file("text.txt", all_bytes_text());
  ByteTextDataset data(file.path(), 4, 32, 3);
  std::vector<int32_t> tokens(4 * 32), targets(4 * 32);
  void* buffers[] = {tokens.data(), targets.data()};
  EXPECT_EQ(allocations_in([&] {
              for (int k = 0; k < 10; ++k) {
                data.next_batch(tokens.data(), targets.data());
                data.next_batch(buffers);
              }
            }),
            0);
}

TEST(ByteTextDataset, Errors) {
  TempFile file("tiny.txt", "0123456789");
  EXPECT_EQ(error_of([&] { ByteTextDataset(file.path(), 2, 16, 0); }),
            file.path() + ": 10 bytes is too short for sequences of T + 1 = 17 bytes");
  EXPECT_EQ(error_of([&] { ByteTextDataset(file.path() + ".absent", 2, 4, 0); }),
            "cannot open '" + file.path() + ".absent'");
  EXPECT_EQ(error_of([&] { ByteTextDataset(file.path(), 0, 4, 0); }),
            "byte text dataset: batch size must be positive, got 0");
  EXPECT_EQ(error_of([&] { ByteTextDataset(file.path(), 2, -1, 0); }),
            "byte text dataset: sequence length must be positive, got -1");

  ByteTextDataset data(file.path(), 1, 4, 0);
  std::vector<int32_t> tokens(4);
  void* one[] = {tokens.data()};
  EXPECT_EQ(error_of([&] { data.next_batch(one); }), "dataset: a batch has 2 inputs but 1 buffers were given");
  EXPECT_EQ(error_of([&] { data.next_batch(tokens.data(), nullptr); }), "dataset: no buffer for input 'targets'");
  EXPECT_EQ(error_of([&] { data.seek(-1); }), "dataset: cannot seek to batch -1");
}

// ---------------------------------------------------------------------------
// SeparableDataset

TEST(SeparableDataset, LabelsFollowTheProjection) {
  const int64_t in = 12, classes = 4, B = 500;
  SeparableDataset data(in, classes, B, /*seed=*/5);
  EXPECT_EQ(data.inputs()[0].first, "x");
  EXPECT_EQ(data.inputs()[0].second.str(), "f32[500,12]");
  EXPECT_EQ(data.inputs()[1].first, "y");
  EXPECT_EQ(data.inputs()[1].second.str(), "i32[500]");

  // Rows of the projection have unit norm.
  for (int64_t c = 0; c < classes; ++c) {
    double norm = 0;
    for (int64_t j = 0; j < in; ++j) norm += std::pow(data.projection()[c * in + j], 2);
    EXPECT_NEAR(norm, 1.0, 1e-12);
  }
  std::vector<float> x(B * in);
  std::vector<int32_t> y(B);
  data.next_batch(x.data(), y.data());
  std::vector<int> counts(classes);
  double mean = 0, sq = 0;
  for (int64_t b = 0; b < B; ++b) {
    // The label is the argmax of P x, recomputed here from the projection.
    int32_t best = 0;
    double best_score = -1e300;
    for (int32_t c = 0; c < classes; ++c) {
      double score = 0;
      for (int64_t j = 0; j < in; ++j) score += data.projection()[c * in + j] * x[b * in + j];
      if (score > best_score) best_score = score, best = c;
    }
    EXPECT_EQ(y[b], best) << "sample " << b;
    ++counts[y[b]];
    for (int64_t j = 0; j < in; ++j) mean += x[b * in + j], sq += x[b * in + j] * x[b * in + j];
  }
  // No class is starved (each would get 125 if exactly balanced).
  for (int c = 0; c < classes; ++c) EXPECT_GT(counts[c], 60) << "class " << c;
  // Inputs look like N(0, 1).
  mean /= B * in;
  EXPECT_NEAR(mean, 0.0, 0.1);
  EXPECT_NEAR(sq / (B * in), 1.0, 0.1);
}

TEST(SeparableDataset, SeedFixesTheTaskAndStreamTheSamples) {
  SeparableDataset train(8, 3, 16, 11, 0), again(8, 3, 16, 11, 0), eval(8, 3, 16, 11, 1), other(8, 3, 16, 12, 0);
  EXPECT_TRUE(std::ranges::equal(train.projection(), eval.projection()));
  EXPECT_FALSE(std::ranges::equal(train.projection(), other.projection()));
  std::vector<float> x1(16 * 8), x2(16 * 8), x3(16 * 8);
  std::vector<int32_t> y1(16), y2(16), y3(16);
  train.next_batch(x1.data(), y1.data());
  again.next_batch(x2.data(), y2.data());
  eval.next_batch(x3.data(), y3.data());
  EXPECT_EQ(x1, x2);
  EXPECT_EQ(y1, y2);
  EXPECT_NE(x1, x3);
  for (int b = 0; b < 16; ++b) EXPECT_EQ(y3[b], eval.label_of(&x3[b * 8]));
}

TEST(SeparableDataset, Errors) {
  EXPECT_EQ(error_of([] { SeparableDataset(4, 1, 8, 0); }), "separable dataset: needs at least 2 classes, got 1");
  EXPECT_EQ(error_of([] { SeparableDataset(0, 3, 8, 0); }), "separable dataset: input size must be positive, got 0");
}

// ---------------------------------------------------------------------------
// GratingImageDataset

// Classifies an image (3, 32, 32) by the energy of its projection on each
// class's pattern at phases 0 and pi/2: the phase-invariant feature a conv
// layer with pooling can learn. If this oracle gets the labels right, the
// labels follow the class patterns and the noise does not hide them.
int32_t matched_filter(const GratingImageDataset& data, const float* image) {
  constexpr int64_t n = 3 * 32 * 32;
  std::vector<float> s(n), c(n);
  int32_t best = -1;
  double best_energy = -1;
  for (int32_t k = 0; k < GratingImageDataset::kClasses; ++k) {
    data.pattern(k, 0.0, s.data());
    data.pattern(k, std::numbers::pi / 2, c.data());
    double ps = 0, pc = 0, norm = 0;
    for (int64_t i = 0; i < n; ++i) {
      ps += double{s[i]} * image[i];
      pc += double{c[i]} * image[i];
      norm += 0.5 * (double{s[i]} * s[i] + double{c[i]} * c[i]);
    }
    const double energy = (ps * ps + pc * pc) / norm;
    if (energy > best_energy) best_energy = energy, best = k;
  }
  return best;
}

TEST(GratingImageDataset, LabelsMatchTheClassPatterns) {
  const int64_t B = 200;
  GratingImageDataset data(B, /*seed=*/3);
  EXPECT_EQ(data.inputs()[0].first, "images");
  EXPECT_EQ(data.inputs()[0].second.str(), "f32[200,3,32,32]");
  EXPECT_EQ(data.inputs()[1].first, "labels");
  EXPECT_EQ(data.inputs()[1].second.str(), "i32[200]");
  std::vector<float> images(B * 3 * 32 * 32);
  std::vector<int32_t> labels(B);
  data.next_batch(images.data(), labels.data());
  std::vector<int> counts(10);
  int correct = 0;
  for (int64_t b = 0; b < B; ++b) {
    ASSERT_GE(labels[b], 0);
    ASSERT_LT(labels[b], 10);
    ++counts[labels[b]];
    correct += matched_filter(data, &images[b * 3 * 32 * 32]) == labels[b];
  }
  EXPECT_GE(correct, 196) << "of " << B;
  for (int c = 0; c < 10; ++c) EXPECT_GT(counts[c], 5) << "class " << c;
}

TEST(GratingImageDataset, NoiseFreeImagesArePhaseShiftedPatterns) {
  GratingImageDataset data(8, 3, 0, /*noise=*/0.0);
  std::vector<float> images(8 * 3 * 32 * 32);
  std::vector<int32_t> labels(8);
  data.next_batch(images.data(), labels.data());
  // Every colour has unit RMS over the channels, and a grating's values stay in [-|colour|, |colour|].
  for (int32_t c = 0; c < 10; ++c) {
    double sq = 0;
    for (double v : data.colour(c)) sq += v * v;
    EXPECT_NEAR(sq / 3, 1.0, 1e-12);
  }
  for (int64_t b = 0; b < 8; ++b) {
    const float* image = &images[b * 3 * 32 * 32];
    for (int64_t ch = 0; ch < 3; ++ch)
      for (int64_t p = 0; p < 32 * 32; ++p)
        EXPECT_LE(std::abs(image[ch * 1024 + p]), std::abs(data.colour(labels[b])[ch]) + 1e-6);
    EXPECT_EQ(matched_filter(data, image), labels[b]);
  }
}

TEST(GratingImageDataset, IsDeterministicBySeedAndStream) {
  GratingImageDataset a(4, 1), b(4, 1), other_stream(4, 1, 1), other_seed(4, 2);
  const size_t n = 4 * 3 * 32 * 32;
  std::vector<float> ia(n), ib(n), ic(n), id(n);
  std::vector<int32_t> la(4), lb(4), lc(4), ld(4);
  a.next_batch(ia.data(), la.data());
  b.next_batch(ib.data(), lb.data());
  other_stream.next_batch(ic.data(), lc.data());
  other_seed.next_batch(id.data(), ld.data());
  EXPECT_EQ(ia, ib);
  EXPECT_EQ(la, lb);
  EXPECT_NE(ia, ic);
  EXPECT_NE(ia, id);
  EXPECT_TRUE(std::ranges::equal(a.colour(4), other_stream.colour(4)));  // same task
  EXPECT_FALSE(std::ranges::equal(a.colour(4), other_seed.colour(4)));

  EXPECT_EQ(allocations_in([&] { a.next_batch(ia.data(), la.data()); }), 0);
}

TEST(GratingImageDataset, Errors) {
  EXPECT_EQ(error_of([] { GratingImageDataset(4, 0, 0, -1.0); }),
            "grating image dataset: noise must be finite and >= 0, got -1");
  EXPECT_EQ(error_of([] { GratingImageDataset(0, 0); }), "grating image dataset: batch size must be positive, got 0");
  GratingImageDataset data(1, 0);
  std::vector<float> out(3 * 32 * 32);
  EXPECT_EQ(error_of([&] { data.pattern(10, 0.0, out.data()); }), "grating image dataset: no class 10");
}

}  // namespace
}  // namespace pf
