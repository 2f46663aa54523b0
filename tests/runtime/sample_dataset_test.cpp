// Tests of data sets on disk (safetensors samples, token files), their epochs, shards and positions, and the
// one-batch-ahead prefetcher.
#include "runtime/sample_dataset.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <numeric>
#include <set>
#include <stdexcept>

#include "ir/diagnostic.h"
#include "runtime/batch_prefetcher.h"
#include "runtime/safetensors.h"
#include "tests/error_of.h"
#include "tests/temp_dir.h"

namespace pf {
namespace {

using testing_support::error_of;
using testing_support::TempDir;

TensorType f32(Shape s) { return {DType::f32, std::move(s)}; }
TensorType i32(Shape s) { return {DType::i32, std::move(s)}; }

// x f32[n, 3] with x[s] = {s, s + 0.25, s + 0.5}, y i32[n] with y[s] = s: a
// sample is recognisable from either input.
std::string write_samples(const TempDir& dir, int64_t n, const std::string& name = "d.safetensors") {
  std::vector<float> x;
  std::vector<int32_t> y;
  for (int64_t s = 0; s < n; ++s) {
    for (float d : {0.0f, 0.25f, 0.5f}) x.push_back(static_cast<float>(s) + d);
    y.push_back(static_cast<int32_t>(s));
  }
  SafeTensors file;
  file.add("x", f32({n, 3}), x.data());
  file.add("y", i32({n}), y.data());
  std::filesystem::create_directories(dir.str());
  const std::string path = dir.str() + "/" + name;
  file.write(path);
  return path;
}

std::vector<DataInput> mlp_inputs(int64_t batch) { return {{"x", f32({batch, 3}), true}, {"y", i32({batch}), true}}; }

// The y values (sample numbers) of the next batch.
std::vector<int32_t> next_labels(DataSetBatches& batches, int64_t batch) {
  std::vector<float> x(static_cast<size_t>(batch * 3), -1.0f);
  std::vector<int32_t> y(static_cast<size_t>(batch), -1);
  void* buffers[] = {x.data(), y.data()};
  batches.next(buffers);
  for (int64_t i = 0; i < batch; ++i)
    if (y[static_cast<size_t>(i)] >= 0) {
      EXPECT_EQ(x[static_cast<size_t>(3 * i + 1)], static_cast<float>(y[static_cast<size_t>(i)]) + 0.25f);
    }
  return y;
}

TEST(EpochOrder, IsAPermutationThatDiffersBetweenEpochsAndSeeds) {
  const std::vector<int64_t> a = epoch_order(1000, 7, 0);
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> identity(1000);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_EQ(sorted, identity);
  EXPECT_NE(a, identity);
  EXPECT_EQ(a, epoch_order(1000, 7, 0));  // a pure function of (seed, epoch)
  EXPECT_NE(a, epoch_order(1000, 7, 1));
  EXPECT_NE(a, epoch_order(1000, 8, 0));
  EXPECT_EQ(epoch_order(1, 7, 3), std::vector<int64_t>{0});
  EXPECT_TRUE(epoch_order(0, 7, 3).empty());
}

TEST(SampleDataset, EveryEpochReadsEachSampleOnceInItsOwnOrderAndDropsTheRest) {
  TempDir dir;
  const auto data = std::shared_ptr<const SampleDataset>(
      SampleDataset::open(write_samples(dir, 10), mlp_inputs(4), 4, "mlp"));
  EXPECT_EQ(data->samples(), 10);
  EXPECT_EQ(data->batches_per_epoch(), 2);  // 10 = 2 * 4 + 2 left over
  EXPECT_EQ(data->describe(), dir.str() + "/d.safetensors: 10 samples, 2 batches of 4 an epoch, the last 2 left out "
                                          "of each (drop_last)");
  DataSetBatches batches(data, 42, /*shuffle=*/true);
  std::vector<std::vector<int32_t>> epochs;
  for (int e = 0; e < 3; ++e) {
    EXPECT_EQ(batches.position(), (DataPosition{e, 0}));
    std::vector<int32_t> seen = next_labels(batches, 4);
    const std::vector<int32_t> second = next_labels(batches, 4);
    seen.insert(seen.end(), second.begin(), second.end());
    EXPECT_EQ(std::set<int32_t>(seen.begin(), seen.end()).size(), 8u) << "epoch " << e;
    // Batch b of epoch e holds the samples at positions [4b, 4b + 4) of its order.
    const std::vector<int64_t> order = epoch_order(10, 42, e);
    EXPECT_EQ(std::vector<int32_t>(seen.begin(), seen.end()), std::vector<int32_t>(order.begin(), order.begin() + 8));
    epochs.push_back(seen);
  }
  EXPECT_NE(epochs[0], epochs[1]);
  EXPECT_NE(epochs[1], epochs[2]);
}

TEST(SampleDataset, UnshuffledReadsTheFileInOrderAndOneBatchIsNeverShuffled) {
  TempDir dir;
  const auto data =
      std::shared_ptr<const SampleDataset>(SampleDataset::open(write_samples(dir, 9), mlp_inputs(3), 3, "mlp"));
  DataSetBatches in_order(data, 42, /*shuffle=*/false);
  for (int32_t b = 0; b < 4; ++b)
    EXPECT_EQ(next_labels(in_order, 3), (std::vector<int32_t>{3 * (b % 3), 3 * (b % 3) + 1, 3 * (b % 3) + 2}));

  const auto one =
      std::shared_ptr<const SampleDataset>(SampleDataset::open(write_samples(dir, 3, "one.safetensors"),
                                                               mlp_inputs(3), 3, "mlp"));
  DataSetBatches batches(one, 42, /*shuffle=*/true);
  for (int step = 0; step < 3; ++step) EXPECT_EQ(next_labels(batches, 3), (std::vector<int32_t>{0, 1, 2}));
}

TEST(SampleDataset, ReplicaShardsAreDisjointAndCoverEveryBatch) {
  TempDir dir;
  const auto data =
      std::shared_ptr<const SampleDataset>(SampleDataset::open(write_samples(dir, 50), mlp_inputs(8), 8, "mlp"));
  for (int replicas : {2, 4}) {
    DataSetBatches whole(data, 3, true, replicas);
    std::vector<std::unique_ptr<DataSetBatches>> shards;
    for (int r = 0; r < replicas; ++r) shards.push_back(std::make_unique<DataSetBatches>(data, 3, true, replicas, r));
    for (int k = 0; k < 14; ++k) {  // past the end of the first epoch (6 batches)
      const DataPosition p = whole.position();
      const std::vector<int32_t> all = next_labels(whole, 8);
      std::set<int64_t> union_of;
      for (int r = 0; r < replicas; ++r) {
        const std::vector<int64_t> mine = whole.samples_of(p, r);
        EXPECT_EQ(mine.size(), static_cast<size_t>(8 / replicas));
        union_of.insert(mine.begin(), mine.end());
        // A replica's reader writes its share, where the runtime reads it, and nothing else.
        const std::vector<int32_t> got = next_labels(*shards[static_cast<size_t>(r)], 8);
        for (int64_t at = 0; at < 8; ++at) {
          const bool ours = at / (8 / replicas) == r;
          EXPECT_EQ(got[static_cast<size_t>(at)], ours ? all[static_cast<size_t>(at)] : -1) << "replica " << r;
        }
      }
      EXPECT_EQ(union_of, std::set<int64_t>(all.begin(), all.end())) << "batch " << k;
    }
  }
}

TEST(SampleDataset, SeekingToAPositionGivesTheBatchesOfARunThatNeverStopped) {
  TempDir dir;
  const auto data =
      std::shared_ptr<const SampleDataset>(SampleDataset::open(write_samples(dir, 20), mlp_inputs(6), 6, "mlp"));
  DataSetBatches straight(data, 5, true);
  std::vector<std::vector<int32_t>> run;
  for (int k = 0; k < 8; ++k) run.push_back(next_labels(straight, 6));
  DataSetBatches resumed(data, 5, true);
  resumed.seek(4);  // 3 batches an epoch: epoch 1, batch 1
  EXPECT_EQ(resumed.position(), (DataPosition{1, 1}));
  for (int k = 4; k < 8; ++k) EXPECT_EQ(next_labels(resumed, 6), run[static_cast<size_t>(k)]) << "batch " << k;
  resumed.seek(DataPosition{0, 2});
  EXPECT_EQ(next_labels(resumed, 6), run[2]);
  EXPECT_EQ(error_of([&] { resumed.seek(DataPosition{0, 3}); }),
            dir.str() + "/d.safetensors: no batch 3 in epoch 0: an epoch has 3 batches");
}

TEST(SampleDataset, ShapesThatDoNotFitAreNamedInOneMessage) {
  TempDir dir;
  const std::string path = write_samples(dir, 10);
  EXPECT_EQ(error_of([&] {
              SampleDataset::open(path, {{"x", f32({4, 16}), true}, {"y", i32({4}), true}}, 4, "mlp");
            }),
            path + ": input 'x' is f32[10,3] (10 samples of f32[3]) but @mlp reads f32[16] per sample (f32[4,16] a "
                   "batch)");
  EXPECT_EQ(error_of([&] {
              SampleDataset::open(path, {{"x", f32({4, 3}), true}, {"labels", i32({4}), true}}, 4, "mlp");
            }),
            path + ": no tensor 'labels' (@mlp reads i32[] per sample); unexpected tensor 'y': @mlp has no input of "
                   "that name");
  EXPECT_EQ(error_of([&] { SampleDataset::open(path, mlp_inputs(16), 16, "mlp"); }),
            path + ": 10 samples, fewer than one batch of 16; a batch needs 16 samples (or compile the model for a "
                   "smaller batch)");
  SafeTensors uneven;
  const std::vector<float> x(30, 0.0f);
  const std::vector<int32_t> y(9, 0);
  uneven.add("x", f32({10, 3}), x.data());
  uneven.add("y", i32({9}), y.data());
  uneven.write(dir.str() + "/uneven.safetensors");
  EXPECT_EQ(error_of([&] { SampleDataset::open(dir.str() + "/uneven.safetensors", mlp_inputs(4), 4, "mlp"); }),
            dir.str() + "/uneven.safetensors: input 'y' holds 9 samples but 'x' holds 10; every input needs the same "
                        "number");
}

TEST(SampleDataset, WholeInputsAreReadAsTheyAreWithEveryBatch) {
  TempDir dir;
  std::filesystem::create_directories(dir.str());
  SafeTensors file;
  const std::vector<float> x = {0, 1, 2, 3, 4, 5}, table = {7, 8};
  file.add("x", f32({6, 1}), x.data());
  file.add("table", f32({2}), table.data());
  file.write(dir.str() + "/w.safetensors");
  const std::vector<DataInput> inputs = {{"x", f32({3, 1}), true}, {"table", f32({2}), false}};
  const auto data =
      std::shared_ptr<const SampleDataset>(SampleDataset::open(dir.str() + "/w.safetensors", inputs, 3, "t"));
  DataSetBatches batches(data, 1, false);
  std::vector<float> xb(3), tb(2);
  void* buffers[] = {xb.data(), tb.data()};
  batches.next(buffers);
  batches.next(buffers);
  EXPECT_EQ(xb, (std::vector<float>{3, 4, 5}));
  EXPECT_EQ(tb, table);
  EXPECT_EQ(error_of([&] {
              SampleDataset::open(dir.str() + "/w.safetensors", {{"x", f32({3, 1}), true}, {"table", f32({3}), false}},
                                  3, "t");
            }),
            dir.str() + "/w.safetensors: input 'table' is f32[2] but @t reads all of f32[3] with every batch");
}

template <class T>
void write_ids(const std::string& path, const std::vector<T>& ids, const std::vector<int32_t>& header = {}) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(header.data()), static_cast<std::streamsize>(header.size() * 4));
  out.write(reinterpret_cast<const char*>(ids.data()), static_cast<std::streamsize>(ids.size() * sizeof(T)));
}

std::vector<DataInput> gpt_inputs(int64_t batch, int64_t seq) {
  return {{"tokens", i32({batch, seq}), true}, {"targets", i32({batch, seq}), true}};
}

TEST(TokenFile, WindowsOfTPlusOneEveryTIdsTheTargetsShiftedByOne) {
  TempDir dir;
  std::filesystem::create_directories(dir.str());
  std::vector<uint16_t> ids(101);
  std::iota(ids.begin(), ids.end(), uint16_t{1000});
  write_ids(dir.str() + "/train.bin", ids);
  const auto data = std::shared_ptr<const SampleDataset>(
      SampleDataset::open(dir.str() + "/train.bin", gpt_inputs(2, 8), 2, "gpt"));
  EXPECT_EQ(data->samples(), 12);  // (101 - 1) / 8
  EXPECT_EQ(data->describe(), dir.str() + "/train.bin: 101 uint16 token ids: 12 windows of 9, 6 batches of 2 an epoch");
  DataSetBatches batches(data, 0, false);
  std::vector<int32_t> tokens(16), targets(16);
  void* buffers[] = {tokens.data(), targets.data()};
  batches.next(buffers);
  batches.next(buffers);  // windows 2 and 3
  for (int32_t j = 0; j < 16; ++j) {
    EXPECT_EQ(tokens[static_cast<size_t>(j)], 1016 + j);
    EXPECT_EQ(targets[static_cast<size_t>(j)], 1017 + j);
  }
}

TEST(TokenFile, ReadsLlmcHeadersAndInt32Ids) {
  TempDir dir;
  std::filesystem::create_directories(dir.str());
  std::vector<int32_t> header(256, 0);
  header[0] = 20240520;
  header[1] = 1;
  header[2] = 17;
  std::vector<uint16_t> ids(17);
  std::iota(ids.begin(), ids.end(), uint16_t{50000});
  write_ids(dir.str() + "/llmc_train.bin", ids, header);
  // No .bin needed: the header says what the file is.
  std::filesystem::copy_file(dir.str() + "/llmc_train.bin", dir.str() + "/llmc.tokens");
  const auto data = std::shared_ptr<const SampleDataset>(
      SampleDataset::open(dir.str() + "/llmc.tokens", gpt_inputs(2, 4), 2, "gpt"));
  EXPECT_EQ(data->describe(),
            dir.str() + "/llmc.tokens: 17 uint16 token ids (llm.c header): 4 windows of 5, 2 batches of 2 an epoch");
  DataSetBatches batches(data, 0, false);
  std::vector<int32_t> tokens(8), targets(8);
  void* buffers[] = {tokens.data(), targets.data()};
  batches.next(buffers);
  EXPECT_EQ(tokens, (std::vector<int32_t>{50000, 50001, 50002, 50003, 50004, 50005, 50006, 50007}));
  EXPECT_EQ(targets[7], 50008);

  header[2] = 18;  // one more id than the file holds
  write_ids(dir.str() + "/short.bin", ids, header);
  EXPECT_EQ(error_of([&] { SampleDataset::open(dir.str() + "/short.bin", gpt_inputs(2, 4), 2, "gpt"); }),
            dir.str() + "/short.bin: llm.c's header (magic 20240520, version 1) counts 18 token ids, but 34 bytes of "
                        "uint16 ids follow it");

  const std::vector<int32_t> wide = {5, 6, 7, 8, 9};
  write_ids(dir.str() + "/wide.i32", wide);
  const auto int32s = std::shared_ptr<const SampleDataset>(
      SampleDataset::open(dir.str() + "/wide.i32", gpt_inputs(1, 2), 1, "gpt", TokenDType::i32));
  EXPECT_EQ(int32s->samples(), 2);
  DataSetBatches in_order(int32s, 0, false);
  std::vector<int32_t> t(2), u(2);
  void* two[] = {t.data(), u.data()};
  in_order.next(two);
  in_order.next(two);
  EXPECT_EQ(t, (std::vector<int32_t>{7, 8}));
  EXPECT_EQ(u, (std::vector<int32_t>{8, 9}));
}

TEST(TokenFile, RefusesModelsWithoutTokensAndFilesShorterThanABatch) {
  TempDir dir;
  std::filesystem::create_directories(dir.str());
  write_ids(dir.str() + "/tiny.bin", std::vector<uint16_t>(20, 1));
  EXPECT_EQ(error_of([&] { SampleDataset::open(dir.str() + "/tiny.bin", gpt_inputs(4, 8), 4, "gpt"); }),
            dir.str() + "/tiny.bin: 20 token ids make 2 windows of 9 (T = 8 and the next id), fewer than one batch of "
                        "4; a batch needs 33 ids (or compile the model for a smaller batch)");
  EXPECT_EQ(error_of([&] { SampleDataset::open(dir.str() + "/tiny.bin", mlp_inputs(2), 2, "mlp"); }),
            dir.str() + "/tiny.bin: a token file feeds a model whose inputs are two i32[B,T] (the tokens, then the "
                        "targets), but @mlp reads x f32[2,3], y i32[2]; give it a safetensors file of its inputs "
                        "instead");
  write_ids(dir.str() + "/odd.bin", std::vector<uint8_t>(41, 1));
  EXPECT_EQ(error_of([&] { SampleDataset::open(dir.str() + "/odd.bin", gpt_inputs(4, 8), 4, "gpt"); }),
            dir.str() + "/odd.bin: 41 bytes are not a whole number of uint16 token ids");
}

TEST(BatchPrefetcher, HandsOutBatchesInOrderFromTwoBufferSets) {
  int64_t produced = 0;
  BatchPrefetcher ahead({8}, [&](std::span<void* const> buffers) {
    const int64_t v = produced++;
    std::memcpy(buffers[0], &v, sizeof v);
  });
  const void* previous = nullptr;
  for (int64_t k = 0; k < 50; ++k) {
    const std::span<void* const> b = ahead.next();
    int64_t v = -1;
    std::memcpy(&v, b[0], sizeof v);
    EXPECT_EQ(v, k);
    EXPECT_NE(b[0], previous);  // the batch before is the one being refilled
    previous = b[0];
  }
}

TEST(BatchPrefetcher, RethrowsWhatTheFillThrewAtTheBatchItFailed) {
  int calls = 0;
  BatchPrefetcher ahead({4}, [&](std::span<void* const>) {
    if (++calls == 3) throw Error("batch 3 is bad");
  });
  ahead.next();
  ahead.next();
  EXPECT_EQ(error_of([&] { ahead.next(); }), "batch 3 is bad");
  EXPECT_EQ(error_of([&] { ahead.next(); }), "batch 3 is bad");
  // Not only pf::Error: nothing escapes the thread.
  BatchPrefetcher other({4}, [](std::span<void* const>) { throw std::runtime_error("disk gone"); });
  EXPECT_THROW(other.next(), std::runtime_error);
}

TEST(BatchPrefetcher, DestructionWaitsForTheBatchBeingPrepared) {
  std::atomic<int> started{0}, done{0};
  {
    BatchPrefetcher ahead({4}, [&](std::span<void* const>) {
      started += 1;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      done += 1;
    });
    ahead.next();  // the second batch starts now
    while (started.load() < 2) std::this_thread::yield();
  }
  EXPECT_EQ(done.load(), 2);  // the second, begun, was finished before the thread was joined
}

}  // namespace
}  // namespace pf
