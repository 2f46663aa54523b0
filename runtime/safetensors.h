// Reading and writing tensors in the safetensors format (checkpoints, optimizer state).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "ir/types.h"

namespace pf {

/// One tensor held in memory: its type and its raw little-endian bytes
/// (`type.bytes()` of them, row-major). The bytes live in a std::vector, whose
/// storage comes from ::operator new and is therefore aligned for every
/// fundamental type, so `view<float>()` of an f32 tensor is a valid float array.
struct TensorData {
  TensorType type;
  std::vector<std::byte> bytes;

  /// The elements as `T`; throws Error when `T` is not the tensor's dtype
  /// (float = f32, double = f64, int32_t = i32, int64_t = i64, uint8_t = bool,
  /// uint16_t = f16 or bf16 bit patterns).
  template <typename T>
  std::span<const T> view() const {
    check_view(sizeof(T), element_kind<T>());
    return {reinterpret_cast<const T*>(bytes.data()), bytes.size() / sizeof(T)};
  }
  template <typename T>
  std::span<T> view() {
    check_view(sizeof(T), element_kind<T>());
    return {reinterpret_cast<T*>(bytes.data()), bytes.size() / sizeof(T)};
  }

 private:
  enum class Kind { floating, signed_int, unsigned_int };
  template <typename T>
  static constexpr Kind element_kind() {
    // A bool tensor may hold any byte value in a file; view it as uint8_t.
    static_assert(!std::is_same_v<T, bool>, "view bool tensors as uint8_t");
    if constexpr (std::is_floating_point_v<T>)
      return Kind::floating;
    else if constexpr (std::is_signed_v<T>)
      return Kind::signed_int;
    else
      return Kind::unsigned_int;
  }
  void check_view(size_t element_size, Kind kind) const;
};

/// A set of named tensors plus string metadata: the contents of one
/// .safetensors file (https://github.com/huggingface/safetensors, format only).
///
/// File layout: an 8-byte little-endian header length N, N bytes of JSON
/// header `{"name": {"dtype": "F32", "shape": [2,3], "data_offsets": [b, e]},
/// "__metadata__": {...}}` padded with spaces to a multiple of 8, then the
/// tensors' bytes, contiguous and in header order. Names are unique and kept
/// sorted, so writing the same tensors always gives the same bytes.
class SafeTensors {
 public:
  /// Reads and validates a whole file. Every defect (short file, bad JSON,
  /// unknown dtype, offsets that overlap, leave gaps or disagree with the
  /// shape, duplicate names, absurd header length) throws Error naming the
  /// file and, where there is one, the tensor.
  static SafeTensors read(const std::string& path);

  /// Writes to `path + ".tmp"`, fsyncs it, then renames it over `path`, so
  /// that a failure or crash part-way leaves any previous `path` intact.
  void write(const std::string& path) const;

  /// Copies `type.bytes()` bytes from `data` (little-endian, row-major) under
  /// `name`; throws Error on an empty, reserved or already present name.
  void add(std::string name, TensorType type, const void* data);

  /// The tensor `name`; the error for a missing one lists a few that exist.
  const TensorData& at(std::string_view name) const;
  TensorData& at(std::string_view name);
  bool contains(std::string_view name) const;
  /// Removes the tensor `name`, if there is one.
  void remove(std::string_view name);
  /// Every tensor name, sorted.
  std::vector<std::string> names() const;
  size_t size() const { return tensors_.size(); }

  /// Where these tensors came from (the path after read(), "<memory>"
  /// otherwise): the prefix of error messages.
  const std::string& source() const { return source_; }

  /// Free-form string pairs stored under "__metadata__".
  std::map<std::string, std::string> metadata;

 private:
  std::map<std::string, TensorData, std::less<>> tensors_;
  std::string source_ = "<memory>";
};

/// Where one tensor of a safetensors file lies: its type and its first
/// byte, counted from the start of the file.
struct TensorPlace {
  TensorType type;
  uint64_t offset = 0;
};

/// A safetensors file's header, read and validated as SafeTensors::read
/// validates the whole file, without reading any tensor: for a reader that
/// maps the file instead (a data set larger than memory).
struct SafeTensorsLayout {
  std::map<std::string, TensorPlace, std::less<>> tensors;
  std::map<std::string, std::string> metadata;
  uint64_t file_size = 0;

  static SafeTensorsLayout read(const std::string& path);
};

/// Checks that `file` holds exactly the `expected` tensors and throws one
/// Error listing every problem at once, prefixed by `what`, e.g.
/// "w.safetensors: missing h.0.attn.w; h.1.mlp.b is f32[3] here but the model
/// expects f32[4]; unexpected h.9.w". With `allow_unexpected`, tensors not in
/// `expected` are accepted (a checkpoint that also holds optimizer state).
void check_tensors(const SafeTensors& file, const std::vector<std::pair<std::string, TensorType>>& expected,
                   const std::string& what, bool allow_unexpected = false);

/// The safetensors spelling of a dtype ("F32", "BF16", "BOOL").
std::string_view safetensors_dtype_name(DType t);

}  // namespace pf
