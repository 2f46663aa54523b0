// Where `pipeforge run` and `pipeforge eval` take their batches, one batch ahead.
#include "tools/batch_source.h"

#include <fmt/format.h>

#include <optional>

#include "ir/diagnostic.h"
#include "ir/module.h"
#include "plan/plan.h"
#include "runtime/batch_prefetcher.h"
#include "runtime/dataset.h"

namespace pf::tools {

namespace {

/// The width of a classifier's logits (0 if the model has none): the loss,
/// and so its width, is in the last stage.
int64_t classes_of(const Plan& plan) {
  const Module program = stage_program(plan, plan.stages.back());
  const Function& g = program.graph();
  for (const Op& op : g.ops)
    if (op.kind == OpKind::cross_entropy) return g.type_of(op.operands[0]).shape.back();
  return 0;
}

// Checkpoint notes: where the next batch is, and the data set's shape it
// counts in.
constexpr const char* kEpochNote = "data.epoch";
constexpr const char* kBatchNote = "data.batch";
constexpr const char* kSamplesNote = "data.samples";
constexpr const char* kBatchSizeNote = "data.batch_size";

std::optional<int64_t> note_count(const CheckpointNotes& notes, const char* key) {
  const auto it = notes.find(key);
  if (it == notes.end() || it->second.empty() || it->second.size() > 18 ||
      it->second.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  return std::stoll(it->second);
}

}  // namespace

BatchSource::BatchSource(const DataFlags& flags, const Runtime& runtime, uint64_t seed, bool shuffle, int rank) {
  const Plan& plan = runtime.plan();
  const std::string& model = plan.model_name;
  std::vector<DataInput> inputs;
  for (const auto& [name, type] : runtime.batch_inputs()) {
    bool whole = false;
    for (const PlanStage& stage : plan.stages)
      for (const PlanTensor& t : stage.inputs)
        if (t.peer < 0 && t.name == name && t.whole) whole = true;
    inputs.push_back({name, type, !whole});
    names_.push_back(name);
    bytes_.push_back(type.bytes());
  }
  // The batch: the leading dimension of the first per-sample input.
  for (const DataInput& in : inputs)
    if (in.per_sample && in.type.rank() > 0) {
      samples_ = in.type.shape[0];
      break;
    }

  if (!flags.data.empty()) {
    std::optional<TokenDType> dtype;
    if (!flags.data_dtype.empty()) {
      dtype = parse_token_dtype(flags.data_dtype);
      if (!dtype)
        throw Error(fmt::format("--data-dtype {}: token ids are uint16, int32 or uint32", flags.data_dtype));
    }
    try {
      data_ = SampleDataset::open(flags.data, inputs, samples_, model, dtype);
    } catch (const Error& e) {
      throw Error(fmt::format("{} {}", flags.flag, e.message()));
    }
    // Between processes this rank reads its replica's share alone.
    const int replica = rank >= 0 ? plan.ranks.at(static_cast<size_t>(rank)).replica : -1;
    batches_ = std::make_unique<DataSetBatches>(data_, seed, shuffle, replica_count(plan), replica);
    if (inputs.size() == 2 && inputs[0].type.dtype == DType::i32 && inputs[0].type.rank() == 2)
      tokens_ = inputs[0].type.numel();
    if (!flags.text.empty()) throw Error("--text and --data both give the training data: give one");
    return;
  }

  auto is = [&](size_t i, DType dt, int64_t rank_of) {
    return i < inputs.size() && inputs[i].type.dtype == dt && inputs[i].type.rank() == rank_of;
  };
  if (inputs.size() == 2 && is(0, DType::i32, 2) && is(1, DType::i32, 2)) {
    if (flags.text.empty())
      throw Error(fmt::format(
          "@{} reads tokens: give it a text file with --text FILE, or a token file (.bin) or data set with --data",
          model));
    const Shape& s = inputs[0].type.shape;
    builtin_ = std::make_unique<ByteTextDataset>(flags.text, s[0], s[1], seed);
    tokens_ = s[0] * s[1];
  } else if (inputs.size() == 2 && is(0, DType::f32, 2) && is(1, DType::i32, 1)) {
    builtin_ = std::make_unique<SeparableDataset>(inputs[0].type.shape[1], classes_of(plan), inputs[0].type.shape[0],
                                                  seed);
  } else if (inputs.size() == 2 && is(0, DType::f32, 4) && is(1, DType::i32, 1) &&
             inputs[0].type.shape == Shape{inputs[0].type.shape[0], 3, 32, 32}) {
    builtin_ = std::make_unique<GratingImageDataset>(inputs[0].type.shape[0], seed);
  } else {
    throw Error(fmt::format("no built-in data fits @{}'s inputs; give a data set with --data D.safetensors", model));
  }
  if (!flags.text.empty() && tokens_ == 0)
    throw Error(fmt::format("--text: @{} does not read tokens (two i32[B,T] inputs)", model));
}

BatchSource::~BatchSource() = default;

void BatchSource::start() {
  BatchPrefetcher::Fill fill;
  if (batches_) {
    batches_->seek(next_index_);
    fill = [batches = batches_.get()](std::span<void* const> buffers) { batches->next(buffers); };
  } else {
    builtin_->seek(next_index_);
    fill = [builtin = builtin_.get()](std::span<void* const> buffers) { builtin->next_batch(buffers); };
  }
  ahead_ = std::make_unique<BatchPrefetcher>(bytes_, std::move(fill));
}

Runtime::Batch BatchSource::next() {
  if (!ahead_) start();
  const std::span<void* const> buffers = ahead_->next();
  next_index_ += 1;
  Runtime::Batch batch;
  for (size_t i = 0; i < names_.size(); ++i) batch.inputs.emplace_back(names_[i], buffers[i]);
  return batch;
}

void BatchSource::seek(int64_t index) {
  ahead_.reset();  // waits for the batch it was preparing
  next_index_ = index;
}

void BatchSource::resume(const CheckpointNotes& notes, int64_t step, const std::string& checkpoint) {
  const std::optional<int64_t> epoch = note_count(notes, kEpochNote), batch = note_count(notes, kBatchNote);
  if (!data_ || !epoch || !batch) return seek(step);
  const std::optional<int64_t> samples = note_count(notes, kSamplesNote), size = note_count(notes, kBatchSizeNote);
  if (samples != data_->samples() || size != data_->batch() || *batch >= data_->batches_per_epoch())
    throw Error(fmt::format("{}: the checkpoint was written while training on {} samples in batches of {}, but {} "
                            "holds {} samples in batches of {}; resume with the data set it was trained on",
                            checkpoint, samples.value_or(0), size.value_or(0), data_->path(), data_->samples(),
                            data_->batch()));
  seek(*epoch * data_->batches_per_epoch() + *batch);
}

CheckpointNotes BatchSource::notes() const {
  if (!data_) return {};
  const int64_t per_epoch = data_->batches_per_epoch();
  return {{kEpochNote, std::to_string(next_index_ / per_epoch)},
          {kBatchNote, std::to_string(next_index_ % per_epoch)},
          {kSamplesNote, std::to_string(data_->samples())},
          {kBatchSizeNote, std::to_string(data_->batch())}};
}

int64_t BatchSource::batches_per_epoch() const { return data_ ? data_->batches_per_epoch() : 0; }

std::string BatchSource::epoch_text() const {
  if (!data_) return "";
  return fmt::format("  epoch {:.2f}", static_cast<double>(next_index_) / static_cast<double>(batches_per_epoch()));
}

std::string BatchSource::describe() const { return data_ ? data_->describe() : ""; }

}  // namespace pf::tools
