// Checkpoints as a folder: one safetensors shard per stage, holding its
// parameters and their optimizer state by name, and an index naming the
// shards. Any plan of the same model loads it, whatever its number of
// stages: every tensor is found by name.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "runtime/safetensors.h"

namespace pf {

/// The metadata of a checkpoint (the index's fields, which the optimizers'
/// load_state also reads: "optimizer", "optimizer.step").
using CheckpointMeta = std::map<std::string, std::string>;

/// Writes a checkpoint into folder `dir` (created if missing): each of
/// `shards` (shard k: stage k's tensors) to a file named after its content,
/// then `index.json` by rename, then removes the files no index names any
/// more. A crash at any point leaves the previous index and every shard it
/// names intact; writing the same checkpoint twice gives the same files.
void write_checkpoint(const std::string& dir, const CheckpointMeta& meta, const std::vector<SafeTensors>& shards);

/// write_checkpoint in two halves, for processes that each hold some
/// stages: each writes its stages' shards (a file named after its content,
/// in `dir`, created if missing), whose index entries (JSON text) one of
/// them then writes as the index, removing the files it does not name.
std::string write_shard(const std::string& dir, int stage, const SafeTensors& shard);
void write_index(const std::string& dir, const CheckpointMeta& meta, const std::vector<std::string>& entries);

/// Whether `path` is a checkpoint folder (it holds an index.json).
bool is_checkpoint(const std::string& path);

/// Reads the checkpoint in `dir`: every tensor of every shard by name (a
/// tied parameter, in several shards, once), with the index's metadata.
/// Errors name `dir` and the file at fault: a missing or unreadable index or
/// shard, a shard that lacks a tensor the index lists for it.
SafeTensors read_checkpoint(const std::string& dir);

/// Weights by name from a safetensors file or a checkpoint folder.
SafeTensors read_weights(const std::string& path);

}  // namespace pf
