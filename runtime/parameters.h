// The trainable parameters of a model or of a pipeline stage: values and
// accumulated gradients in f32, allocated once, initialised by name.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "ir/attr.h"
#include "ir/param_piece.h"
#include "ir/types.h"
#include "runtime/optimizer.h"

namespace pf {

class SafeTensors;

class ParameterSet {
 public:
  struct Entry {
    std::string name;
    TensorType type;
    Init init;
    std::vector<float> value;  // (numel)
    std::vector<float> grad;   // (numel), accumulated over micro-batches
    std::optional<ParamPiece> piece;  // rows of a whole parameter that stages share out
  };

  /// Adds a parameter (f32). Adding a name twice is an error unless the
  /// type and initializer agree (a tied weight seen from two programs), in
  /// which case the existing entry is kept.
  Entry& add(const std::string& name, const TensorType& type, const Init& init,
             const std::optional<ParamPiece>& piece = std::nullopt);
  /// Adds the parameter a `param` op of `graph` declares.
  Entry& add_declared(const Function& graph, const Op& param);
  Entry* find(std::string_view name);
  const Entry* find(std::string_view name) const;
  Entry& at(std::string_view name);
  std::deque<Entry>& entries() { return entries_; }
  const std::deque<Entry>& entries() const { return entries_; }
  int64_t numel() const;

  /// Fills every value from its initializer. A parameter's values depend
  /// only on `seed` and its name, so a model split into stages starts from
  /// exactly the numbers the whole model would; a piece takes its rows of
  /// the whole parameter's values.
  void initialize(uint64_t seed);
  void zero_grads();

  /// Loads every parameter from `file` (all must be present, with their
  /// dtype and shape; other tensors are an error unless `allow_unexpected`,
  /// as when a stage loads its part of a whole model's file); `what` names
  /// the file in errors.
  void load_values(const SafeTensors& file, const std::string& what, bool allow_unexpected = false);
  void save_values(SafeTensors& file) const;
  void save_grads(SafeTensors& file) const;

  /// Views for an optimizer. Weight decay applies to matrices and kernels,
  /// not to biases and norm gains (rank < 2), as is customary.
  std::vector<Param> optimizer_params();

 private:
  std::deque<Entry> entries_;  // a deque: entries never move once added
};

/// Fills `out` (the values of a parameter of `type`) from `init` with
/// `seed`. xavier is uniform(+-sqrt(6/(fan_in+fan_out))), kaiming is
/// normal(0, sqrt(2/fan_in)); fan_in is the first axis of a matrix [in, out]
/// and C/groups*kh*kw of a convolution kernel [O, C/groups, kh, kw].
void initialize_tensor(const Init& init, const TensorType& type, uint64_t seed, float* out);

}  // namespace pf
