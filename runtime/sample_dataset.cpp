// Data sets on disk: safetensors samples and token files through a read-only memory map, in shuffled epochs.
#include "runtime/sample_dataset.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <numeric>
#include <random>

#include "ir/diagnostic.h"
#include "ir/units.h"
#include "runtime/dataset.h"
#include "runtime/safetensors.h"

namespace pf {

MappedFile::MappedFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(fmt::format("cannot open '{}': {}", path, std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(fmt::format("{}: not a regular file", path));
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    const int error = errno;
    ::close(fd);  // the mapping keeps the file
    if (p == MAP_FAILED) throw Error(fmt::format("cannot map '{}': {}", path, std::strerror(error)));
    data_ = static_cast<const std::byte*>(p);
  } else {
    ::close(fd);
  }
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
}

std::optional<TokenDType> parse_token_dtype(const std::string& text) {
  if (text == "uint16") return TokenDType::u16;
  if (text == "int32") return TokenDType::i32;
  if (text == "uint32") return TokenDType::u32;
  return std::nullopt;
}

namespace {

const char* token_dtype_name(TokenDType t) {
  switch (t) {
    case TokenDType::u16: return "uint16";
    case TokenDType::i32: return "int32";
    case TokenDType::u32: return "uint32";
  }
  return "?";
}

int64_t token_size(TokenDType t) { return t == TokenDType::u16 ? 2 : 4; }

TensorType sample_type(const TensorType& batch_type) {
  return {batch_type.dtype, Shape(batch_type.shape.begin() + 1, batch_type.shape.end())};
}

std::string too_few(const std::string& path, int64_t batch, const std::string& have, const std::string& need) {
  return fmt::format("{}: {}, fewer than one batch of {}; a batch needs {} (or compile the model for a smaller batch)",
                     path, have, batch, need);
}

// A safetensors file: a tensor per input, the samples along the first axis.
class SafeTensorsSamples final : public SampleDataset {
 public:
  SafeTensorsSamples(const std::string& path, std::vector<DataInput> inputs, int64_t batch, const std::string& model)
      : SampleDataset(path, std::move(inputs), batch) {
    const SafeTensorsLayout layout = SafeTensorsLayout::read(path);
    std::vector<std::string> problems;
    const std::string* first = nullptr;  // the per-sample input that set samples_
    samples_ = -1;
    for (const DataInput& in : inputs_) {
      places_.push_back(0);
      const auto it = layout.tensors.find(in.name);
      if (it == layout.tensors.end()) {
        problems.push_back(in.per_sample ? fmt::format("no tensor '{}' (@{} reads {} per sample)", in.name, model,
                                                       sample_type(in.type).str())
                                         : fmt::format("no tensor '{}' (@{} reads all of {} with every batch)",
                                                       in.name, model, in.type.str()));
        continue;
      }
      const TensorType& t = it->second.type;
      places_.back() = it->second.offset;
      if (!in.per_sample) {
        if (t != in.type)
          problems.push_back(fmt::format("input '{}' is {} but @{} reads all of {} with every batch", in.name, t.str(),
                                         model, in.type.str()));
        continue;
      }
      const TensorType want = sample_type(in.type);
      if (t.rank() == 0 || sample_type(t) != want) {
        problems.push_back(fmt::format("input '{}' is {}{} but @{} reads {} per sample ({} a batch)", in.name,
                                       t.str(),
                                       t.rank() == 0 ? ", without a sample axis"
                                                     : fmt::format(" ({} samples of {})", t.shape[0],
                                                                   sample_type(t).str()),
                                       model, want.str(), in.type.str()));
        continue;
      }
      if (first == nullptr) {
        first = &in.name;
        samples_ = t.shape[0];
      } else if (t.shape[0] != samples_) {
        problems.push_back(fmt::format(
            "input '{}' holds {} samples but '{}' holds {}; every input needs the same number", in.name, t.shape[0],
            *first, samples_));
      }
    }
    for (const auto& [name, place] : layout.tensors)
      if (std::none_of(inputs_.begin(), inputs_.end(), [&](const DataInput& in) { return in.name == name; }))
        problems.push_back(fmt::format("unexpected tensor '{}': @{} has no input of that name", name, model));
    if (!problems.empty()) throw Error(fmt::format("{}: {}", path, fmt::join(problems, "; ")));
    if (samples_ < 0) samples_ = batch_;  // only whole inputs: every batch is the same
    if (samples_ < batch_)
      throw Error(too_few(path, batch_, fmt::format("{} samples", format_count(samples_)),
                          fmt::format("{} samples", format_count(batch_))));
    file_ = std::make_unique<MappedFile>(path);
    if (file_->size() != layout.file_size)
      throw Error(fmt::format("{}: the file changed while it was opened", path));
    kind_ = fmt::format("{} samples", format_count(samples_));
  }

  void read(int64_t sample, std::span<void* const> buffers, int64_t at) const override {
    for (size_t i = 0; i < inputs_.size(); ++i) {
      if (!inputs_[i].per_sample) continue;
      const int64_t bytes = inputs_[i].type.bytes() / batch_;
      std::memcpy(static_cast<std::byte*>(buffers[i]) + at * bytes, file_->data() + places_[i] + sample * bytes,
                  static_cast<size_t>(bytes));
    }
  }

  void read_whole(std::span<void* const> buffers) const override {
    for (size_t i = 0; i < inputs_.size(); ++i)
      if (!inputs_[i].per_sample)
        std::memcpy(buffers[i], file_->data() + places_[i], static_cast<size_t>(inputs_[i].type.bytes()));
  }

 private:
  std::unique_ptr<MappedFile> file_;
  std::vector<uint64_t> places_;  // per input: where its tensor's bytes begin in the file
};

// llm.c's header: 256 int32, of which the magic, the version and the id count.
constexpr int64_t kLlmcHeaderBytes = 256 * 4;
struct LlmcFormat {
  int32_t magic;
  int32_t version;
  TokenDType dtype;
};
constexpr LlmcFormat kLlmcFormats[] = {{20240520, 1, TokenDType::u16}, {20240801, 7, TokenDType::u32}};

// A flat array of token ids, cut into windows of T + 1 every T ids.
class TokenSamples final : public SampleDataset {
 public:
  TokenSamples(const std::string& path, std::vector<DataInput> inputs, int64_t batch, const std::string& model,
               std::optional<TokenDType> given)
      : SampleDataset(path, std::move(inputs), batch) {
    const auto fits = [&] {
      if (inputs_.size() != 2) return false;
      for (const DataInput& in : inputs_)
        if (!in.per_sample || in.type.dtype != DType::i32 || in.type.rank() != 2) return false;
      return inputs_[0].type == inputs_[1].type;
    };
    if (!fits()) {
      std::vector<std::string> reads;
      for (const DataInput& in : inputs_) reads.push_back(fmt::format("{} {}", in.name, in.type.str()));
      throw Error(fmt::format("{}: a token file feeds a model whose inputs are two i32[B,T] (the tokens, then the "
                              "targets), but @{} reads {}; give it a safetensors file of its inputs instead",
                              path, model, fmt::join(reads, ", ")));
    }
    seq_len_ = inputs_[0].type.shape[1];
    file_ = std::make_unique<MappedFile>(path);
    const uint64_t size = file_->size();
    uint64_t start = 0;
    std::optional<TokenDType> dtype = given;
    std::string header;
    if (size >= kLlmcHeaderBytes) {
      int32_t head[3];
      std::memcpy(head, file_->data(), sizeof head);
      for (const LlmcFormat& f : kLlmcFormats) {
        if (head[0] != f.magic || head[1] != f.version) continue;
        const uint64_t body = size - kLlmcHeaderBytes;
        if (head[2] < 0 || static_cast<uint64_t>(head[2]) * static_cast<uint64_t>(token_size(f.dtype)) != body)
          throw Error(fmt::format("{}: llm.c's header (magic {}, version {}) counts {} token ids, but {} bytes of {} "
                                  "ids follow it",
                                  path, f.magic, f.version, head[2], body, token_dtype_name(f.dtype)));
        if (given && *given != f.dtype)
          throw Error(fmt::format("{}: llm.c's header (magic {}, version {}) says the ids are {}, not {}", path,
                                  f.magic, f.version, token_dtype_name(f.dtype), token_dtype_name(*given)));
        dtype = f.dtype;
        start = kLlmcHeaderBytes;
        header = " (llm.c header)";
      }
    }
    if (!dtype) dtype = TokenDType::u16;  // nanoGPT's .bin
    dtype_ = *dtype;
    const auto width = static_cast<uint64_t>(token_size(dtype_));
    if ((size - start) % width != 0)
      throw Error(fmt::format("{}: {} bytes are not a whole number of {} token ids", path, size - start,
                              token_dtype_name(dtype_)));
    ids_ = file_->data() + start;
    count_ = static_cast<int64_t>((size - start) / width);
    samples_ = count_ > 0 ? (count_ - 1) / seq_len_ : 0;
    if (samples_ < batch_)
      throw Error(too_few(path, batch_,
                          fmt::format("{} token ids make {} windows of {} (T = {} and the next id)",
                                      format_count(count_), format_count(samples_), seq_len_ + 1, seq_len_),
                          fmt::format("{} ids", format_count(batch_ * seq_len_ + 1))));
    kind_ = fmt::format("{} {} token ids{}: {} windows of {}", format_count(count_), token_dtype_name(dtype_), header,
                        format_count(samples_), seq_len_ + 1);
  }

  void read(int64_t sample, std::span<void* const> buffers, int64_t at) const override {
    auto* tokens = static_cast<int32_t*>(buffers[0]) + at * seq_len_;
    auto* targets = static_cast<int32_t*>(buffers[1]) + at * seq_len_;
    const int64_t first = sample * seq_len_;
    for (int64_t j = 0; j < seq_len_; ++j) {
      tokens[j] = id(first + j);
      targets[j] = id(first + j + 1);
    }
  }

  void read_whole(std::span<void* const>) const override {}

 private:
  int32_t id(int64_t k) const {
    const std::byte* at = ids_ + k * token_size(dtype_);
    switch (dtype_) {
      case TokenDType::u16: {
        uint16_t v;
        std::memcpy(&v, at, sizeof v);
        return v;
      }
      case TokenDType::i32: {
        int32_t v;
        std::memcpy(&v, at, sizeof v);
        return v;
      }
      case TokenDType::u32: {
        uint32_t v;
        std::memcpy(&v, at, sizeof v);
        if (v > static_cast<uint32_t>(INT32_MAX))
          throw Error(fmt::format("{}: token id {} at position {} does not fit the model's i32 tokens", path_, v, k));
        return static_cast<int32_t>(v);
      }
    }
    return 0;
  }

  std::unique_ptr<MappedFile> file_;
  const std::byte* ids_ = nullptr;
  int64_t count_ = 0;
  int64_t seq_len_ = 0;
  TokenDType dtype_ = TokenDType::u16;
};

bool has_llmc_header(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  int32_t head[2] = {0, 0};
  const bool read = ::pread(fd, head, sizeof head, 0) == static_cast<ssize_t>(sizeof head);
  ::close(fd);
  return read && std::any_of(std::begin(kLlmcFormats), std::end(kLlmcFormats),
                             [&](const LlmcFormat& f) { return head[0] == f.magic && head[1] == f.version; });
}

}  // namespace

std::unique_ptr<SampleDataset> SampleDataset::open(const std::string& path, const std::vector<DataInput>& inputs,
                                                   int64_t batch, const std::string& model,
                                                   std::optional<TokenDType> token_dtype) {
  if (batch < 1) throw Error(fmt::format("{}: the batch must be positive, not {}", path, batch));
  for (const DataInput& in : inputs)
    if (in.per_sample && (in.type.rank() == 0 || in.type.shape[0] != batch))
      throw Error(fmt::format("{}: input '{}' is {}, not a batch of {}", path, in.name, in.type.str(), batch));
  if (::access(path.c_str(), R_OK) != 0)
    throw Error(fmt::format("{}: cannot read it: {}", path, std::strerror(errno)));
  if (token_dtype || path.ends_with(".bin") || has_llmc_header(path))
    return std::make_unique<TokenSamples>(path, inputs, batch, model, token_dtype);
  return std::make_unique<SafeTensorsSamples>(path, inputs, batch, model);
}

std::string SampleDataset::describe() const {
  const int64_t left = samples_ - batches_per_epoch() * batch_;
  return fmt::format("{}: {}, {} batch{} of {} an epoch{}", path_, kind_, format_count(batches_per_epoch()),
                     batches_per_epoch() == 1 ? "" : "es", batch_,
                     left > 0 ? fmt::format(", the last {} left out of each (drop_last)", format_count(left)) : "");
}

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::mt19937_64 rng(batch_seed(seed, kShuffleStream, epoch));
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

DataSetBatches::DataSetBatches(std::shared_ptr<const SampleDataset> data, uint64_t seed, bool shuffle, int replicas,
                               int replica)
    : data_(std::move(data)),
      seed_(seed),
      shuffle_(shuffle && data_->samples() != data_->batch()),
      replicas_(replicas),
      replica_(replica) {
  if (replicas_ < 1 || data_->batch() % replicas_ != 0 || replica_ >= replicas_)
    throw Error(fmt::format("{}: a batch of {} cannot be split between {} replicas (replica {})", data_->path(),
                            data_->batch(), replicas_, replica_));
}

void DataSetBatches::seek(DataPosition p) {
  if (p.epoch < 0 || p.batch < 0 || p.batch >= data_->batches_per_epoch())
    throw Error(fmt::format("{}: no batch {} in epoch {}: an epoch has {} batches", data_->path(), p.batch, p.epoch,
                            data_->batches_per_epoch()));
  position_ = p;
}

void DataSetBatches::seek(int64_t index) {
  const int64_t per_epoch = data_->batches_per_epoch();
  seek(DataPosition{index / per_epoch, index % per_epoch});
}

const std::vector<int64_t>& DataSetBatches::order(int64_t epoch) const {
  if (order_epoch_ == epoch || (!shuffle_ && order_epoch_ >= 0)) return order_;
  if (shuffle_) {
    order_ = epoch_order(data_->samples(), seed_, epoch);
  } else {
    order_.resize(static_cast<size_t>(data_->samples()));
    std::iota(order_.begin(), order_.end(), int64_t{0});
  }
  order_epoch_ = epoch;
  return order_;
}

std::vector<int64_t> DataSetBatches::samples_of(DataPosition p, int r) const {
  const int64_t b = data_->batch(), share = b / replicas_;
  const std::vector<int64_t>& ord = order(p.epoch);
  const auto begin = ord.begin() + p.batch * b + r * share;
  return {begin, begin + share};
}

void DataSetBatches::next(std::span<void* const> buffers) {
  const int64_t b = data_->batch(), share = b / replicas_;
  const std::vector<int64_t>& ord = order(position_.epoch);
  const int64_t lo = replica_ < 0 ? 0 : replica_ * share, hi = replica_ < 0 ? b : lo + share;
  for (int64_t at = lo; at < hi; ++at) data_->read(ord[static_cast<size_t>(position_.batch * b + at)], buffers, at);
  data_->read_whole(buffers);
  if (++position_.batch == data_->batches_per_epoch()) {
    position_.batch = 0;
    position_.epoch += 1;
  }
}

}  // namespace pf
