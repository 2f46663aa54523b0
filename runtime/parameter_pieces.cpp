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

/// Bytes of one row of a piece's type (everything after the first axis).
int64_t row_bytes(const TensorType& type) { return type.bytes() / std::max<int64_t>(type.shape.at(0), 1); }

bool same_rows(const TensorType& a, const TensorType& b) {
  return a.dtype == b.dtype && a.rank() == b.rank() &&
         std::equal(a.shape.begin() + 1, a.shape.end(), b.shape.begin() + 1);
}

}  // namespace

ParameterPieces plan_pieces(const Plan& plan) {
  ParameterPieces out;
  for (const PlanStage& s : plan.stages)
    for (const PlanParam& p : s.params)
      if (p.piece) out[p.name] = {*p.piece, p.type};
  return out;
}

void join_pieces(SafeTensors& file, const ParameterPieces& pieces) {
  std::map<std::string, std::vector<const ParameterPieces::value_type*>> by_whole;
  for (const auto& entry : pieces) by_whole[entry.second.piece.whole].push_back(&entry);
  const std::vector<std::string> names = file.names();
  for (auto& [whole, parts] : by_whole) {
    std::sort(parts.begin(), parts.end(),
              [](auto* a, auto* b) { return a->second.piece.begin < b->second.piece.begin; });
    // The pieces must tile the whole's rows.
    int64_t next = 0;
    for (auto* part : parts) {
      if (part->second.piece.begin != next) break;
      next = part->second.piece.end;
    }
    if (next != parts.front()->second.piece.whole_rows) continue;
    for (const std::string& name : names) {
      const std::optional<std::string> suffix = suffix_after(name, parts.front()->first);
      if (!suffix || file.contains(whole + *suffix)) continue;
      const TensorType& first = file.at(name).type;
      bool complete = true;
      for (auto* part : parts) {
        const std::string piece_name = part->first + *suffix;
        complete = complete && file.contains(piece_name) &&
                   file.at(piece_name).type.shape.at(0) == part->second.piece.end - part->second.piece.begin &&
                   same_rows(file.at(piece_name).type, first);
      }
      if (!complete) continue;
      TensorType type = first;
      type.shape[0] = parts.front()->second.piece.whole_rows;
      std::vector<std::byte> bytes(static_cast<size_t>(type.bytes()));
      size_t at = 0;
      for (auto* part : parts) {
        const std::vector<std::byte>& b = file.at(part->first + *suffix).bytes;
        std::memcpy(bytes.data() + at, b.data(), b.size());
        at += b.size();
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
      if (whole.type.rank() < 1 || whole.type.shape[0] != p.whole_rows || !same_rows(whole.type, expected)) {
        if (suffix->empty())
          throw Error(fmt::format("{}: {} is {} here, but the plan holds rows [{}, {}) of it as a {}", file.source(),
                                  name, whole.type.str(), p.begin, p.end, expected.str()));
        continue;  // another tensor whose name extends the whole's
      }
      TensorType type = whole.type;
      type.shape[0] = p.end - p.begin;
      file.add(piece_name + *suffix, type, whole.bytes.data() + p.begin * row_bytes(whole.type));
      cut.insert(name);
    }
  }
  for (const std::string& name : cut) file.remove(name);
}

std::string pieces_to_text(const ParameterPieces& pieces) {
  Json j = Json::object();
  for (const auto& [name, part] : pieces)
    j[name] = {{"piece_of", part.piece.whole},
               {"rows", {part.piece.begin, part.piece.end}},
               {"whole_rows", part.piece.whole_rows}};
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
      if (part.piece.begin < 0 || part.piece.end <= part.piece.begin || part.piece.end > part.piece.whole_rows)
        throw Error("");
      out[name] = std::move(part);
    }
  } catch (const std::exception&) {
    throw Error(fmt::format("{}: the pieces of split parameters are not in the form this pipeforge writes", what));
  }
  return out;
}

}  // namespace pf
