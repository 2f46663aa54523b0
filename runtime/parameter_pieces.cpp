// Joining parameter pieces into their wholes and cutting them out again.
#include "runtime/parameter_pieces.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "ir/diagnostic.h"

namespace pf {

namespace {

using Json = nlohmann::json;

/// The suffix of `name` after `prefix` when it is `prefix` itself ("") or
/// `prefix` + ".<something>", else nullopt.
std::optional<std::string> suffix_after(const std::string& name, const std::string& prefix) {
  if (!name.starts_with(prefix)) return std::nullopt;
  if (name.size() == prefix.size()) return std::string();
  if (name[prefix.size()] != '.') return std::nullopt;
  return name.substr(prefix.size());
}

/// Whether `a` and `b` differ at most along `axis`.
bool same_but_axis(const TensorType& a, const TensorType& b, int axis) {
  if (a.dtype != b.dtype || a.rank() != b.rank()) return false;
  for (int d = 0; d < a.rank(); ++d)
    if (d != axis && a.shape[static_cast<size_t>(d)] != b.shape[static_cast<size_t>(d)]) return false;
  return true;
}

/// Whether `parts` (sorted by begin) cut one whole the same way and cover
/// each of its segments exactly once.
template <class Part>
bool tile_the_whole(const std::vector<Part*>& parts) {
  const ParamPiece& first = parts.front()->second.piece;
  int64_t next = 0;
  for (const Part* part : parts) {
    const ParamPiece& p = part->second.piece;
    if (p.begin != next || p.axis != first.axis || p.segments != first.segments || p.whole_rows != first.whole_rows)
      return false;
    next = p.end;
  }
  return next * first.segments == first.whole_rows;
}

}  // namespace

ParameterPieces plan_pieces(const Plan& plan) {
  ParameterPieces out;
  for (const PlanStage& s : plan.stages) {
    // A tensor-parallel stage runs as its ranks' parts, never whole.
    auto add = [&](const std::vector<PlanParam>& params) {
      for (const PlanParam& p : params)
        if (p.piece) out[p.name] = {*p.piece, p.type};
    };
    if (s.shards.empty()) add(s.params);
    for (const PlanShard& part : s.shards) add(part.params);
  }
  return out;
}

void join_pieces(SafeTensors& file, const ParameterPieces& pieces) {
  std::map<std::string, std::vector<const ParameterPieces::value_type*>> by_whole;
  for (const auto& entry : pieces) by_whole[entry.second.piece.whole].push_back(&entry);
  const std::vector<std::string> names = file.names();
  for (auto& [whole, parts] : by_whole) {
    std::sort(parts.begin(), parts.end(),
              [](auto* a, auto* b) { return a->second.piece.begin < b->second.piece.begin; });
    if (!tile_the_whole(parts)) continue;
    const ParamPiece& first_piece = parts.front()->second.piece;
    const int axis = first_piece.axis;
    for (const std::string& name : names) {
      const std::optional<std::string> suffix = suffix_after(name, parts.front()->first);
      if (!suffix || file.contains(whole + *suffix)) continue;
      const TensorType& first = file.at(name).type;
      if (first.rank() <= axis) continue;
      bool complete = true;
      for (auto* part : parts) {
        const std::string piece_name = part->first + *suffix;
        complete = complete && file.contains(piece_name) &&
                   file.at(piece_name).type.shape.at(static_cast<size_t>(axis)) == part->second.piece.size() &&
                   same_but_axis(file.at(piece_name).type, first, axis);
      }
      if (!complete) continue;
      const TensorType type = first_piece.whole_type(first);
      std::vector<std::byte> bytes(static_cast<size_t>(type.bytes()));
      for (auto* part : parts) {
        const TensorData& piece = file.at(part->first + *suffix);
        part->second.piece.place(piece.type, piece.bytes.data(), bytes.data(), dtype_size(type.dtype));
      }
      for (auto* part : parts) file.remove(part->first + *suffix);
      file.add(whole + *suffix, type, bytes.data());
    }
  }
}

void cut_pieces(SafeTensors& file, const ParameterPieces& pieces) {
  const std::vector<std::string> names = file.names();
  std::set<std::string> cut;  // the wholes cut up, removed at the end
  for (const auto& [piece_name, part] : pieces) {
    const ParamPiece& p = part.piece;
    for (const std::string& name : names) {
      const std::optional<std::string> suffix = suffix_after(name, p.whole);
      if (!suffix || file.contains(piece_name + *suffix)) continue;
      const TensorData& whole = file.at(name);
      const TensorType expected = p.whole_type(part.type);
      if (whole.type.rank() <= p.axis || whole.type.shape[static_cast<size_t>(p.axis)] != p.whole_rows ||
          !same_but_axis(whole.type, expected, p.axis)) {
        if (suffix->empty())
          throw Error(fmt::format("{}: {} is {} here, but the plan holds {} of it as a {}", file.source(), name,
                                  whole.type.str(), p.str(), expected.str()));
        continue;  // another tensor whose name extends the whole's
      }
      TensorType type = whole.type;
      type.shape[static_cast<size_t>(p.axis)] = p.size();
      std::vector<std::byte> bytes(static_cast<size_t>(type.bytes()));
      p.cut(type, whole.bytes.data(), bytes.data(), dtype_size(type.dtype));
      file.add(piece_name + *suffix, type, bytes.data());
      cut.insert(name);
    }
  }
  for (const std::string& name : cut) file.remove(name);
}

std::string pieces_to_text(const ParameterPieces& pieces) {
  Json j = Json::object();
  for (const auto& [name, part] : pieces) {
    Json& piece = j[name] = {{"piece_of", part.piece.whole},
                             {"rows", {part.piece.begin, part.piece.end}},
                             {"whole_rows", part.piece.whole_rows}};
    if (part.piece.axis != 0) piece["axis"] = part.piece.axis;
    if (part.piece.segments != 1) piece["segments"] = part.piece.segments;
  }
  return j.dump();
}

ParameterPieces pieces_from_text(const std::string& text, const std::string& what) {
  ParameterPieces out;
  try {
    const Json j = Json::parse(text);
    for (const auto& [name, v] : j.items()) {
      PieceOfParameter part;
      part.piece.whole = v.at("piece_of").get<std::string>();
      part.piece.begin = v.at("rows").at(0).get<int64_t>();
      part.piece.end = v.at("rows").at(1).get<int64_t>();
      part.piece.whole_rows = v.at("whole_rows").get<int64_t>();
      part.piece.axis = v.value("axis", 0);
      part.piece.segments = v.value("segments", int64_t{1});
      const ParamPiece& p = part.piece;
      if (p.axis < 0 || p.segments < 1 || p.whole_rows % p.segments != 0 || p.begin < 0 || p.end <= p.begin ||
          p.end > p.whole_rows / p.segments)
        throw Error("");
      out[name] = std::move(part);
    }
  } catch (const std::exception&) {
    throw Error(fmt::format("{}: the pieces of split parameters are not in the form this pipeforge writes", what));
  }
  return out;
}

}  // namespace pf
