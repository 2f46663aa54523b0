// Reading and writing tensors in the safetensors format.
#include "runtime/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>
#include <tuple>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ir/diagnostic.h"

namespace pf {

// The format is little-endian and tensors are copied byte for byte; a
// big-endian host would need a byte swap on every element.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

// A header larger than this is a corrupt length field, not a real file: even
// a model with a million tensors needs far less (the reference reader uses
// the same limit).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DTypeSpelling {
  DType type;
  std::string_view name;
};
constexpr DTypeSpelling kSpellings[] = {
    {DType::f32, "F32"}, {DType::f16, "F16"}, {DType::bf16, "BF16"},    {DType::f64, "F64"},
    {DType::i32, "I32"}, {DType::i64, "I64"}, {DType::boolean, "BOOL"},
};

std::optional<DType> parse_safetensors_dtype(std::string_view name) {
  for (const DTypeSpelling& s : kSpellings)
    if (s.name == name) return s.type;
  return std::nullopt;
}

std::string supported_dtypes() {
  std::string out;
  for (const DTypeSpelling& s : kSpellings) out += (out.empty() ? "" : ", ") + std::string(s.name);
  return out;
}

// Closes a file descriptor on every path out of a function.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  // Closes now so that a failing close (deferred write errors on some file
  // systems) is reported; returns false with errno set on failure.
  bool close() {
    int fd = fd_;
    fd_ = -1;
    return ::close(fd) == 0;
  }

 private:
  int fd_;
};

std::string errno_text() { return std::strerror(errno); }

// Reads exactly `size` bytes at `offset`; false on a short read or error.
bool read_at(int fd, void* out, uint64_t size, uint64_t offset) {
  auto* p = static_cast<char*>(out);
  while (size > 0) {
    ssize_t n = ::pread(fd, p, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<uint64_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return true;
}

// Writes all of `size` bytes, retrying partial writes; false with errno set.
bool write_all(int fd, const void* data, size_t size) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// Parses JSON while rejecting duplicate keys, which nlohmann::json would
// otherwise resolve silently by keeping the last one: a file that names a
// tensor twice is ambiguous and must not load.
nlohmann::json parse_header(const std::string& path, const std::string& text) {
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  bool duplicate_is_tensor = false;
  auto callback = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) {
      open_objects.emplace_back();
    } else if (event == E::object_end) {
      open_objects.pop_back();
    } else if (event == E::key && !open_objects.empty()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(key).second && duplicate.empty()) {
        duplicate = key;
        duplicate_is_tensor = open_objects.size() == 1;
      }
    }
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text, callback);
  } catch (const nlohmann::json::exception& e) {
    // Drop the library's "[json.exception.parse_error.101] " tag.
    std::string what = e.what();
    if (auto end = what.find("] "); what.starts_with("[json.exception") && end != std::string::npos)
      what = what.substr(end + 2);
    throw Error(fmt::format("{}: header is not valid JSON: {}", path, what));
  }
  if (!duplicate.empty())
    throw Error(duplicate_is_tensor ? fmt::format("{}: tensor '{}' appears twice in the header", path, duplicate)
                                    : fmt::format("{}: key '{}' appears twice in one header entry", path, duplicate));
  if (!header.is_object()) throw Error(fmt::format("{}: header is JSON but not an object", path));
  return header;
}

// A non-negative integer from the header, or an error naming `what`.
uint64_t header_uint(const std::string& path, const std::string& name, const nlohmann::json& v, const char* what) {
  // nlohmann::json stores a non-negative integer literal as "unsigned";
  // negative integers and floats are anything else.
  if (!v.is_number_unsigned())
    throw Error(fmt::format("{}: tensor '{}': {} must hold non-negative integers, got {}", path, name, what, v.dump()));
  return v.get<uint64_t>();
}

struct Entry {
  std::string name;
  TensorType type;
  uint64_t begin = 0;
  uint64_t end = 0;
};

// Validates one tensor's header entry against the data section's size.
Entry parse_entry(const std::string& path, const std::string& name, const nlohmann::json& info, uint64_t data_size) {
  if (!info.is_object())
    throw Error(fmt::format("{}: tensor '{}': header entry must be an object, got {}", path, name, info.dump()));
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!info.contains(key)) throw Error(fmt::format("{}: tensor '{}': header entry has no '{}'", path, name, key));

  Entry e;
  e.name = name;
  const auto& dtype = info["dtype"];
  if (!dtype.is_string())
    throw Error(fmt::format("{}: tensor '{}': dtype must be a string, got {}", path, name, dtype.dump()));
  auto type = parse_safetensors_dtype(dtype.get_ref<const std::string&>());
  if (!type)
    throw Error(fmt::format("{}: tensor '{}' has dtype '{}', which pipeforge does not support (supported: {})", path,
                            name, dtype.get_ref<const std::string&>(), supported_dtypes()));
  e.type.dtype = *type;

  const auto& shape = info["shape"];
  if (!shape.is_array())
    throw Error(fmt::format("{}: tensor '{}': shape must be an array, got {}", path, name, shape.dump()));
  uint64_t numel = 1;
  for (const auto& d : shape) {
    uint64_t dim = header_uint(path, name, d, "shape");
    if (dim > uint64_t{INT64_MAX} || __builtin_mul_overflow(numel, dim, &numel))
      throw Error(fmt::format("{}: tensor '{}': shape {} has too many elements", path, name, shape.dump()));
    e.type.shape.push_back(static_cast<int64_t>(dim));
  }
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(e.type.dtype)), &bytes))
    throw Error(fmt::format("{}: tensor '{}': shape {} has too many elements", path, name, shape.dump()));

  const auto& offsets = info["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2)
    throw Error(fmt::format("{}: tensor '{}': data_offsets must be [begin, end], got {}", path, name, offsets.dump()));
  e.begin = header_uint(path, name, offsets[0], "data_offsets");
  e.end = header_uint(path, name, offsets[1], "data_offsets");
  if (e.end < e.begin)
    throw Error(
        fmt::format("{}: tensor '{}': data_offsets [{}, {}] end before they begin", path, name, e.begin, e.end));
  if (e.end > data_size)
    throw Error(fmt::format("{}: tensor '{}': data_offsets [{}, {}] run past the end of the data section ({} bytes)",
                            path, name, e.begin, e.end, data_size));
  if (e.end - e.begin != bytes)
    throw Error(fmt::format("{}: tensor '{}': data_offsets [{}, {}] span {} bytes but {} needs {}", path, name, e.begin,
                            e.end, e.end - e.begin, e.type.str(), bytes));
  return e;
}

// The tensors must tile the data section exactly: no overlap (two tensors
// sharing bytes), no gap and no trailing bytes (data that no tensor owns, as
// in a polyglot file).
void check_layout(const std::string& path, std::vector<Entry>& entries, uint64_t data_size) {
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return std::tie(a.begin, a.end) < std::tie(b.begin, b.end); });
  uint64_t covered = 0;
  const Entry* previous = nullptr;
  for (const Entry& e : entries) {
    if (e.begin < covered)
      throw Error(fmt::format("{}: tensors '{}' and '{}' overlap in the data section (bytes [{}, {}) and [{}, {}))",
                              path, previous->name, e.name, previous->begin, previous->end, e.begin, e.end));
    if (e.begin > covered)
      throw Error(fmt::format("{}: bytes [{}, {}) of the data section belong to no tensor (before '{}')", path, covered,
                              e.begin, e.name));
    covered = e.end;
    previous = &e;
  }
  if (covered != data_size)
    throw Error(
        fmt::format("{}: the data section has {} bytes but the tensors cover only {}", path, data_size, covered));
}

}  // namespace

std::string_view safetensors_dtype_name(DType t) {
  for (const DTypeSpelling& s : kSpellings)
    if (s.type == t) return s.name;
  return "?";
}

void TensorData::check_view(size_t element_size, Kind kind) const {
  Kind want = Kind::floating;
  switch (type.dtype) {
    case DType::f32:
    case DType::f64: want = Kind::floating; break;
    case DType::i32:
    case DType::i64: want = Kind::signed_int; break;
    case DType::f16:
    case DType::bf16:
    case DType::boolean: want = Kind::unsigned_int; break;
  }
  if (want != kind || static_cast<int64_t>(element_size) != dtype_size(type.dtype)) {
    const char* names[] = {"a floating-point", "a signed integer", "an unsigned integer"};
    throw Error(fmt::format("cannot view a {} tensor as {} type of {} bytes", type.str(), names[static_cast<int>(kind)],
                            element_size));
  }
}

namespace {

// The header of an open file, validated; `entries` are the tensors in the
// order of their bytes, each offset counted from the start of the data.
struct Header {
  std::vector<Entry> entries;
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;
  uint64_t file_size = 0;
};

Header read_header(const std::string& path, const Fd& fd) {
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw Error(fmt::format("cannot stat '{}': {}", path, errno_text()));
  if (!S_ISREG(st.st_mode)) throw Error(fmt::format("{}: not a regular file", path));
  const auto file_size = static_cast<uint64_t>(st.st_size);

  unsigned char prefix[8];
  if (file_size < 8 || !read_at(fd.get(), prefix, 8, 0))
    throw Error(fmt::format("{}: file is {} bytes, too short for the 8-byte header length", path, file_size));
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | prefix[i];
  if (header_size > kMaxHeaderBytes)
    throw Error(fmt::format("{}: header length {} exceeds the limit of {} bytes (corrupt file?)", path, header_size,
                            kMaxHeaderBytes));
  if (header_size > file_size - 8)
    throw Error(fmt::format("{}: header length is {} bytes but only {} bytes follow it (truncated file?)", path,
                            header_size, file_size - 8));

  std::string text(header_size, '\0');
  if (!read_at(fd.get(), text.data(), header_size, 8)) throw Error(fmt::format("{}: cannot read the header", path));
  nlohmann::json header = parse_header(path, text);

  Header out;
  out.file_size = file_size;
  out.data_start = 8 + header_size;
  const uint64_t data_size = file_size - out.data_start;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      if (!info.is_object()) throw Error(fmt::format("{}: __metadata__ must be an object, got {}", path, info.dump()));
      for (const auto& [key, value] : info.items()) {
        if (!value.is_string())
          throw Error(fmt::format("{}: __metadata__ value of '{}' must be a string, got {}", path, key, value.dump()));
        out.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    out.entries.push_back(parse_entry(path, name, info, data_size));
  }
  check_layout(path, out.entries, data_size);
  return out;
}

// A descriptor open for reading, or an error naming the file.
int open_for_reading(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(fmt::format("cannot open '{}': {}", path, errno_text()));
  return fd;
}

}  // namespace

SafeTensors SafeTensors::read(const std::string& path) {
  const Fd fd(open_for_reading(path));
  Header header = read_header(path, fd);
  SafeTensors out;
  out.source_ = path;
  out.metadata = std::move(header.metadata);
  for (const Entry& e : header.entries) {
    TensorData t;
    t.type = e.type;
    t.bytes.resize(e.end - e.begin);
    if (!read_at(fd.get(), t.bytes.data(), t.bytes.size(), header.data_start + e.begin))
      throw Error(fmt::format("{}: tensor '{}': cannot read its {} bytes", path, e.name, t.bytes.size()));
    out.tensors_.emplace(e.name, std::move(t));
  }
  return out;
}

SafeTensorsLayout SafeTensorsLayout::read(const std::string& path) {
  const Fd fd(open_for_reading(path));
  Header header = read_header(path, fd);
  SafeTensorsLayout out;
  out.file_size = header.file_size;
  out.metadata = std::move(header.metadata);
  for (const Entry& e : header.entries) out.tensors.emplace(e.name, TensorPlace{e.type, header.data_start + e.begin});
  return out;
}

void SafeTensors::write(const std::string& path) const {
  // Header: metadata first, then the tensors in name order with contiguous
  // offsets; ordered_json keeps that order in the text.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors_) {
    header[name] = {{"dtype", std::string(safetensors_dtype_name(t.type.dtype))},
                    {"shape", t.type.shape},
                    {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  // Padding to a multiple of 8 puts the data section at an 8-aligned file
  // offset, so a memory-mapped reader can use the tensors in place.
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char prefix[8];
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<unsigned char>(static_cast<uint64_t>(text.size()) >> (8 * i));

  const std::string tmp = path + ".tmp";
  auto fail = [&](const std::string& what) {
    int saved = errno;
    ::unlink(tmp.c_str());
    throw Error(fmt::format("cannot write '{}': {} '{}' failed: {}", path, what, tmp, std::strerror(saved)));
  };
  {
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (fd.get() < 0)  // not ours to remove: we never created it
      throw Error(fmt::format("cannot write '{}': cannot create '{}': {}", path, tmp, errno_text()));
    if (!write_all(fd.get(), prefix, sizeof prefix) || !write_all(fd.get(), text.data(), text.size())) fail("writing");
    for (const auto& [name, t] : tensors_)
      if (!write_all(fd.get(), t.bytes.data(), t.bytes.size())) fail("writing");
    // The data must be on disk before the rename makes it the file at `path`;
    // otherwise a crash could leave a renamed but empty file.
    if (::fsync(fd.get()) != 0) fail("syncing");
    if (!fd.close()) fail("closing");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("renaming");
  // Sync the directory so that the rename itself survives a crash. Some file
  // systems cannot sync a directory (EINVAL); the new file is complete either
  // way, so only a real I/O error is reported.
  std::string dir = std::filesystem::path(path).parent_path().string();
  Fd dir_fd(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() >= 0 && ::fsync(dir_fd.get()) != 0 && errno != EINVAL)
    throw Error(fmt::format("cannot write '{}': syncing its directory failed: {}", path, errno_text()));
}

void SafeTensors::remove(std::string_view name) {
  if (auto it = tensors_.find(name); it != tensors_.end()) tensors_.erase(it);
}

void SafeTensors::add(std::string name, TensorType type, const void* data) {
  if (name.empty()) throw Error("safetensors: tensor names must not be empty");
  if (name == "__metadata__") throw Error("safetensors: '__metadata__' is reserved and cannot name a tensor");
  if (tensors_.count(name)) throw Error(fmt::format("safetensors: tensor '{}' is already present", name));
  for (int64_t d : type.shape)
    if (d < 0) throw Error(fmt::format("safetensors: tensor '{}' has a negative dimension in {}", name, type.str()));
  TensorData t;
  t.type = std::move(type);
  t.bytes.resize(static_cast<size_t>(t.type.bytes()));
  if (!t.bytes.empty()) {
    if (data == nullptr) throw Error(fmt::format("safetensors: tensor '{}' ({}) has no data", name, t.type.str()));
    std::memcpy(t.bytes.data(), data, t.bytes.size());
  }
  tensors_.emplace(std::move(name), std::move(t));
}

const TensorData& SafeTensors::at(std::string_view name) const {
  auto it = tensors_.find(name);
  if (it != tensors_.end()) return it->second;
  // List a few present names so that a prefix mismatch ("h.0" vs "blocks.0")
  // is obvious at a glance.
  constexpr size_t kShown = 5;
  std::string present;
  size_t shown = 0;
  for (const auto& [n, t] : tensors_) {
    if (shown == kShown) break;
    present += (shown++ ? ", " : "") + n;
  }
  if (tensors_.empty()) throw Error(fmt::format("{}: no tensor '{}' (the file holds no tensors)", source_, name));
  if (tensors_.size() > kShown) present += fmt::format(", ... ({} in all)", tensors_.size());
  throw Error(fmt::format("{}: no tensor '{}'; present: {}", source_, name, present));
}

TensorData& SafeTensors::at(std::string_view name) {
  return const_cast<TensorData&>(std::as_const(*this).at(name));
}

bool SafeTensors::contains(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }

std::vector<std::string> SafeTensors::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& [name, t] : tensors_) out.push_back(name);
  return out;
}

void check_tensors(const SafeTensors& file, const std::vector<std::pair<std::string, TensorType>>& expected,
                   const std::string& what, bool allow_unexpected) {
  std::vector<std::string> problems;
  std::set<std::string, std::less<>> wanted;
  for (const auto& [name, type] : expected) {
    wanted.insert(name);
    if (!file.contains(name)) {
      problems.push_back("missing " + name);
      continue;
    }
    const TensorType& have = file.at(name).type;
    if (have != type)
      problems.push_back(fmt::format("{} is {} here but the model expects {}", name, have.str(), type.str()));
  }
  if (!allow_unexpected)
    for (const std::string& name : file.names())
      if (!wanted.count(name)) problems.push_back("unexpected " + name);
  if (problems.empty()) return;
  std::string message = what + ": ";
  for (size_t i = 0; i < problems.size(); ++i) message += (i ? "; " : "") + problems[i];
  throw Error(message);
}

}  // namespace pf
