// This process's part in a job of several: where the ranks meet, read from
// the environment a launcher (or a cluster's scheduler) sets, and the
// communicator over it.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace pf {

/// How this process joins the others: rank and world size, and rank 0's
/// store (rank 0 serves it on `master_port` of every interface; the others
/// reach it at `master_addr`).
struct Rendezvous {
  int rank = 0;
  int world = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  /// Instead of rank 0's TCP store: "file:FOLDER", a FileStore in a folder
  /// every rank sees (fresh for each job), or "redis:HOST:PORT", a Redis
  /// server's.
  std::string store;
  /// Prefixes every key this job puts in the store, so that jobs sharing a
  /// Redis server do not meet.
  std::string job = "pf";
  /// The address the other ranks reach this one at; empty: the one this
  /// process reaches rank 0's store through (or, with a file store, this
  /// host's name).
  std::string address;
};

/// A rendezvous store other than rank 0's TCP one: "file:FOLDER" or
/// "redis:HOST:PORT"; pf::Error naming `what` (the flag or variable it came
/// from) for anything else.
struct StoreSpec {
  std::string kind;  // "file", "redis"; empty: rank 0's TCP store
  std::string path;
  std::string host;
  int port = 0;
};
StoreSpec parse_store(const std::string& spec, const std::string& what);

/// The rendezvous that PF_RANK, PF_WORLD_SIZE, PF_MASTER_ADDR and
/// PF_MASTER_PORT describe (as `pipeforge launch` sets them), with PF_RDZV
/// ("file:FOLDER" or "redis:HOST:PORT"), PF_JOB_ID (the prefix of the job's
/// keys) and PF_ADDR (this rank's address) where set; nullopt
/// when PF_RANK is unset. A variable missing or malformed throws pf::Error
/// naming it.
std::optional<Rendezvous> rendezvous_from_environment();

class TcpStoreServer;
class Store;
class GlooCommunicator;

/// Joins the job: rank 0 starts the store, every rank connects to it and
/// then to every other rank. Waits, messages and the watchdog use
/// `timeout_s`, and so does the rendezvous, whose errors name this rank.
/// The ranks talk over Gloo (TCP), or, where `gpu` is a CUDA device (every
/// rank of the job computes on a GPU), over NCCL from that device; a
/// pipeforge built without CUDA refuses a GPU.
class ProcessGroup {
 public:
  ProcessGroup(const Rendezvous& rendezvous, double timeout_s, int gpu = -1);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  Communicator& comm();
  /// How failures name each rank (GlooCommunicator::set_rank_names).
  void name_ranks(std::vector<std::string> names);

 private:
  void join(const Rendezvous& rendezvous, double timeout_s, int gpu);

  std::unique_ptr<TcpStoreServer> server_;  // rank 0's
  std::unique_ptr<Store> store_;
  std::unique_ptr<GlooCommunicator> gloo_;  // one of the two
  std::unique_ptr<Communicator> nccl_;      // a NcclCommunicator, with CUDA
};

}  // namespace pf
