// Where `pipeforge run` and `pipeforge eval` take their batches: a data set on disk, the bytes of a text, or a
// built-in synthetic task, prepared one batch ahead on a thread of their own.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/runtime.h"
#include "runtime/sample_dataset.h"

namespace pf {
class BatchPrefetcher;
class Dataset;
}  // namespace pf

namespace pf::tools {

/// Where batches come from, as the command line says it.
struct DataFlags {
  std::string data;        // a data set file (safetensors, or token ids)
  std::string data_dtype;  // its token ids: "uint16", "int32", "uint32"; empty: by the file
  std::string text;        // a text whose bytes are tokens (training only)
  std::string flag = "--data";  // names `data` in messages
};

/// The batches of one run, in order, each named by the model's inputs.
///
/// A data set (runtime/sample_dataset.h) is read in epochs: shuffled per
/// epoch from the seed for training, in its own order for evaluation. In a
/// process that runs one rank of a job (`rank` >= 0), only that rank's
/// replica's share of each batch is read; the rest of the buffers is left
/// as it is, since the rank never reads it.
class BatchSource {
 public:
  /// Batches for `runtime`'s model. `shuffle`: training order (for a data
  /// set; the built-in tasks and --text draw at random anyway). Throws
  /// Error, before any step, when the data does not fit the model.
  BatchSource(const DataFlags& flags, const Runtime& runtime, uint64_t seed, bool shuffle, int rank);
  ~BatchSource();
  BatchSource(const BatchSource&) = delete;
  BatchSource& operator=(const BatchSource&) = delete;

  /// The next batch, valid until the following call.
  Runtime::Batch next();
  /// Makes batch `index` of the run (from 0) the next one.
  void seek(int64_t index);
  /// After a resume: the next batch is where the checkpoint's notes say
  /// (the data set's position), or batch `step` where they say nothing.
  /// Throws Error when the notes were written for another data set shape.
  void resume(const CheckpointNotes& notes, int64_t step, const std::string& checkpoint);
  /// The position of the next batch, for a checkpoint (empty without a
  /// data set).
  CheckpointNotes notes() const;

  /// Whether batches come from a data set file.
  bool has_data_set() const { return data_ != nullptr; }
  /// The data set's file (empty without one).
  std::string data_path() const { return data_ ? data_->path() : ""; }
  /// Whole batches in an epoch of the data set.
  int64_t batches_per_epoch() const;
  /// "  epoch 1.37": the epochs read once the last batch next() gave is
  /// done; empty without a data set.
  std::string epoch_text() const;
  /// One line on the data set (SampleDataset::describe), empty without one.
  std::string describe() const;

  int64_t samples() const { return samples_; }
  /// Tokens per batch of a token model (0 otherwise).
  int64_t tokens() const { return tokens_; }

 private:
  void start();

  std::vector<std::string> names_;
  std::vector<int64_t> bytes_;
  std::shared_ptr<const SampleDataset> data_;
  std::unique_ptr<DataSetBatches> batches_;
  std::unique_ptr<Dataset> builtin_;
  std::unique_ptr<BatchPrefetcher> ahead_;  // made at the first next() after a seek
  int64_t next_index_ = 0;                  // the batch the next next() returns
  int64_t samples_ = 1;
  int64_t tokens_ = 0;
};

}  // namespace pf::tools
