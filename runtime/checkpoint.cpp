// Checkpoint folders: content-named shards and an index written last.
#include "runtime/checkpoint.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>

#include "ir/diagnostic.h"
#include "support/atomic_file.h"
#include "support/json.h"

namespace pf {

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

constexpr const char* kIndex = "index.json";
constexpr const char* kShardPrefix = "stage-";
constexpr const char* kShardSuffix = ".safetensors";

/// A 64-bit hash of a shard's tensors and metadata, eight bytes at a time:
/// shards are named by it, so equal content means an equal file name and a
/// rewrite never changes a file that an index already names.
uint64_t content_hash(const SafeTensors& shard) {
  uint64_t h = 0x9e3779b97f4a7c15ULL;
  auto mix = [&h](const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      h = (h ^ w) * 0xff51afd7ed558ccdULL;
      h ^= h >> 32;
    }
    for (; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
    h = (h ^ n) * 0xc4ceb9fe1a85ec53ULL;
  };
  for (const auto& [key, value] : shard.metadata) {
    mix(key.data(), key.size());
    mix(value.data(), value.size());
  }
  for (const std::string& name : shard.names()) {
    const TensorData& t = shard.at(name);
    const std::string type = t.type.str();
    mix(name.data(), name.size());
    mix(type.data(), type.size());
    mix(t.bytes.data(), t.bytes.size());
  }
  return h;
}

}  // namespace

std::string write_shard(const std::string& dir, int stage, const SafeTensors& shard) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(fmt::format("cannot write '{}': cannot create the folder: {}", dir, ec.message()));
  const std::string file = fmt::format("{}{}.{:016x}{}", kShardPrefix, stage, content_hash(shard), kShardSuffix);
  // The same content under the same name: a file already there is this one.
  if (!fs::exists(fs::path(dir) / file)) shard.write((fs::path(dir) / file).string());
  Json entry = {{"stage", stage}, {"file", file}, {"tensors", shard.names()}};
  return entry.dump();
}

void write_index(const std::string& dir, const CheckpointMeta& meta, const std::vector<std::string>& entries) {
  Json index = Json::object();
  for (const auto& [key, value] : meta) index[key] = value;
  Json list = Json::array();
  std::set<std::string> named = {kIndex};
  for (const std::string& text : entries) {
    Json entry = Json::parse(text);
    named.insert(entry["file"].get<std::string>());
    list.push_back(std::move(entry));
  }
  index["shards"] = list;
  write_file_atomically((fs::path(dir) / kIndex).string(), format_json(index, {"tensors"}));
  // The new index is in place: what it does not name belongs to older
  // checkpoints (or to writes a crash cut short).
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const bool ours = name.starts_with(kShardPrefix) || name.ends_with(".tmp");
    if (ours && !named.count(name)) fs::remove(e.path(), ec);
  }
}

void write_checkpoint(const std::string& dir, const CheckpointMeta& meta, const std::vector<SafeTensors>& shards) {
  std::vector<std::string> entries;
  for (size_t k = 0; k < shards.size(); ++k) entries.push_back(write_shard(dir, static_cast<int>(k), shards[k]));
  write_index(dir, meta, entries);
}

bool is_checkpoint(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) && fs::exists(fs::path(path) / kIndex, ec);
}

SafeTensors read_checkpoint(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) throw Error(fmt::format("cannot open '{}': no such checkpoint folder", dir));
  if (!is_checkpoint(dir))
    throw Error(fmt::format("{}: not a pipeforge checkpoint (a folder with an {}); a weights file loads with "
                            "--init-from (load_weights)",
                            dir, kIndex));
  const std::string index_path = (fs::path(dir) / kIndex).string();
  const Json index = parse_json_document(read_source_file(index_path)->text(), index_path);
  JsonReader r(index_path);
  if (!index.is_object()) r.fail("the index must be a JSON object");
  SafeTensors out;
  for (const auto& item : index.items())
    if (item.key() != "shards") out.metadata[item.key()] = r.string(index, "", item.key());
  const Json& shards = r.array(index, "", "shards");
  for (size_t k = 0; k < shards.size(); ++k) {
    const std::string at = JsonReader::at("shards", k);
    r.expect_keys(shards[k], at, {"stage", "file", "tensors"});
    const std::string file = r.string(shards[k], at, "file");
    // "stage-<k>.<hash of the content>.safetensors".
    const size_t hash_at = file.size() - std::min(file.size(), std::strlen(kShardSuffix) + 16);
    if (file.find('/') != std::string::npos || !file.starts_with(kShardPrefix) || !file.ends_with(kShardSuffix) ||
        hash_at <= std::strlen(kShardPrefix) || file[hash_at - 1] != '.')
      r.fail(fmt::format("{}.file '{}' is not a shard of this folder", at, file));
    const SafeTensors shard = SafeTensors::read((fs::path(dir) / file).string());
    // The name is the shard's checksum: a file changed or torn after it was
    // written does not load.
    if (fmt::format("{:016x}", content_hash(shard)) != file.substr(hash_at, 16))
      throw Error(fmt::format("{}: shard {} does not match its checksum (the file was changed or damaged after it "
                              "was written); load an older checkpoint",
                              dir, file));
    const Json& tensors = r.array(shards[k], at, "tensors");
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (!tensors[i].is_string()) r.fail(JsonReader::at(JsonReader::at(at, "tensors"), i) + " must be a string");
      const std::string name = tensors[i].get<std::string>();
      if (!shard.contains(name))
        throw Error(fmt::format("{}: shard {} has no tensor {}, which the index lists", dir, file, name));
      if (!out.contains(name)) out.add(name, shard.at(name).type, shard.at(name).bytes.data());
    }
  }
  return out;
}

SafeTensors read_weights(const std::string& path) {
  return is_checkpoint(path) ? read_checkpoint(path) : SafeTensors::read(path);
}

}  // namespace pf
