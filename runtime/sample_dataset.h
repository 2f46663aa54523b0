// Data sets on disk: samples of a model's inputs in a safetensors file, or token ids in a nanoGPT or llm.c .bin
// file, read through a read-only memory map, shuffled per epoch and split between data-parallel replicas.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ir/types.h"

namespace pf {

/// A whole file mapped read-only into memory; unmapped on destruction.
/// Pages are read from the disk when first touched, so a data set larger
/// than memory costs only the pages its batches touch.
class MappedFile {
 public:
  /// Throws Error naming `path` when it cannot be opened, is not a regular
  /// file or cannot be mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  const std::byte* data_ = nullptr;
  uint64_t size_ = 0;
};

/// One input of a model as a data set feeds it.
struct DataInput {
  std::string name;
  /// The whole batch's type, the batch along the first axis (as
  /// Runtime::batch_inputs() gives it).
  TensorType type;
  /// False for an input without the batch dimension (a table, marked
  /// "whole" in the plan): every batch holds all of it.
  bool per_sample = true;
};

/// How a token file stores its ids (little-endian).
enum class TokenDType { u16, i32, u32 };

/// Parses "uint16", "int32" or "uint32"; nullopt otherwise.
std::optional<TokenDType> parse_token_dtype(const std::string& text);

/// Samples on disk, each one value of every per-sample input, N of them.
///
/// Two kinds of file:
/// - safetensors: a tensor per input, named after it; a per-sample input of
///   batch type dtype[B, d...] is a tensor dtype[N, d...], the same N for
///   every one; a whole input is stored at its own type. A file that holds
///   exactly one batch (N = B) is the batch `--data` took before data sets.
/// - token ids, for a model whose two per-sample inputs are i32[B, T]
///   (tokens first, then the targets): a flat array of ids, cut into
///   N = (count - 1) / T windows of T + 1 ids starting every T ids (the
///   tokens are a window's first T, the targets its last T). The ids are
///   uint16 as nanoGPT's prepare.py writes them (`np.uint16` `.tofile`), or
///   given as a dtype; a file beginning with llm.c's header (256 int32:
///   magic 20240520 and version 1 for uint16 GPT-2 ids, or 20240801 and
///   version 7 for uint32 LLaMA-3 ids, then the id count, which must match
///   the file's size) is read past it whatever its name.
///
/// Which kind: a token dtype given reads a token file; otherwise a file
/// with llm.c's header, or named *.bin, is one; anything else is
/// safetensors.
class SampleDataset {
 public:
  /// Opens `path` for a model (`model` names it in errors) reading
  /// `inputs`, whose per-sample ones share the batch `batch`. Every problem
  /// is found here, before a step runs: one Error naming `path`, each input
  /// at fault and both types, or saying that the file holds fewer samples
  /// than one batch.
  static std::unique_ptr<SampleDataset> open(const std::string& path, const std::vector<DataInput>& inputs,
                                             int64_t batch, const std::string& model,
                                             std::optional<TokenDType> token_dtype = std::nullopt);
  virtual ~SampleDataset() = default;

  const std::string& path() const { return path_; }
  const std::vector<DataInput>& inputs() const { return inputs_; }
  int64_t samples() const { return samples_; }
  int64_t batch() const { return batch_; }
  /// Whole batches in one pass over the samples: samples() / batch(); the
  /// samples left over are not read in that epoch (drop_last).
  int64_t batches_per_epoch() const { return samples_ / batch_; }
  /// One line for the user: "train.bin: 1,000,000 uint16 token ids (llm.c
  /// header): 7,751 windows of 129, 60 batches an epoch, 71 windows left
  /// over each epoch".
  std::string describe() const;

  /// Writes sample `sample` (0 <= sample < samples()) of every per-sample
  /// input at `at` in that input's batch buffer: buffers[i] is input i's
  /// whole batch, and the sample goes to its slot `at` (0 <= at < batch()).
  /// Throws Error for a token id an i32 cannot hold.
  virtual void read(int64_t sample, std::span<void* const> buffers, int64_t at) const = 0;
  /// Writes every whole input into its buffer (the same each batch).
  virtual void read_whole(std::span<void* const> buffers) const = 0;

 protected:
  SampleDataset(std::string path, std::vector<DataInput> inputs, int64_t batch)
      : path_(std::move(path)), inputs_(std::move(inputs)), batch_(batch) {}

  std::string path_;
  std::vector<DataInput> inputs_;
  int64_t batch_;
  int64_t samples_ = 0;
  std::string kind_;  // what describe() says the samples are
};

/// Epoch `epoch`'s order of `n` samples: a Fisher-Yates shuffle drawing
/// from std::mt19937_64(batch_seed(seed, kShuffleStream, epoch)) (j = rng()
/// % (i + 1) for i from n - 1 down, whose bias is below n / 2^64), so an
/// epoch's order is a pure function of (seed, epoch) on every platform.
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch);
inline constexpr uint64_t kShuffleStream = 0x5348554646ull;  // "SHUFF"

/// Where a run is in a data set: the epoch and the batch within it (both
/// from 0). Batch k of training (from 0) is at (k / batches, k % batches).
struct DataPosition {
  int64_t epoch = 0;
  int64_t batch = 0;
  bool operator==(const DataPosition&) const = default;
};

/// The batches of a data set, epoch after epoch: batch b of epoch e holds
/// the samples at positions [b B, (b + 1) B) of epoch e's order
/// (epoch_order under `seed` when shuffling, the file's order otherwise).
/// A data set of exactly one batch is never shuffled: reordering the
/// samples of the only batch would change nothing but the rounding.
///
/// With D data-parallel replicas, replica r's share of a batch is its
/// positions [r B/D, (r + 1) B/D), where the runtime reads it: the shards
/// are disjoint and cover the batch. A process running one replica's ranks
/// reads that share alone.
class DataSetBatches {
 public:
  /// `replica` < 0: every replica's share (a run whose ranks are threads
  /// of one process). B must be a multiple of `replicas`.
  DataSetBatches(std::shared_ptr<const SampleDataset> data, uint64_t seed, bool shuffle, int replicas = 1,
                 int replica = -1);

  const SampleDataset& data() const { return *data_; }
  /// The batch the next call to next() writes.
  DataPosition position() const { return position_; }
  /// Makes `p` the next batch; throws Error when p.batch is not in
  /// [0, batches_per_epoch()) or p.epoch is negative.
  void seek(DataPosition p);
  /// Makes batch `index` of the run (from 0) the next: seek to
  /// (index / batches_per_epoch(), index % batches_per_epoch()).
  void seek(int64_t index);
  /// Writes the batch at position() into `buffers` (one per input, each its
  /// whole-batch bytes; only this replica's share of the per-sample ones
  /// with a replica) and moves to the next.
  void next(std::span<void* const> buffers);
  /// The samples of batch `p` that replica `r` reads, in order.
  std::vector<int64_t> samples_of(DataPosition p, int r) const;

 private:
  const std::vector<int64_t>& order(int64_t epoch) const;

  std::shared_ptr<const SampleDataset> data_;
  uint64_t seed_;
  bool shuffle_;
  int replicas_;
  int replica_;
  DataPosition position_;
  mutable int64_t order_epoch_ = -1;  // the epoch order_ holds
  mutable std::vector<int64_t> order_;
};

}  // namespace pf
