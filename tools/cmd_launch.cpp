// `pipeforge launch`: start this host's ranks of a plan as processes, like
// torchrun, and supervise them.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <climits>
#include <ctime>
#include <filesystem>
#include <cstdlib>
#include <iostream>
#include <memory>

#include "comm/process_group.h"
#include "ir/diagnostic.h"
#include "plan/plan.h"
#include "tools/command.h"
#include "tools/option_checks.h"
#include "tools/worker_processes.h"

namespace pf::tools {

namespace {

struct LaunchOptions {
  std::string plan;
  std::vector<std::string> run_args;
  int nproc = 0;  // 0: every rank of the plan, on this host
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;  // 0: a free port, when there is one node
  std::string rdzv;
  std::string job_id;
  double grace = 5;
};

/// This program's own path, to start the workers with.
std::string self_path() {
  char buffer[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buffer, sizeof buffer - 1);
  if (n <= 0) throw Error("cannot find the pipeforge program (/proc/self/exe)");
  return std::string(buffer, static_cast<size_t>(n));
}

/// A port that is free now on the loopback interface, for rank 0's store.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw Error("cannot open a socket to find a free port");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  ::close(fd);
  if (!ok) throw Error("cannot find a free port for the rendezvous; give one with --master-port");
  return ntohs(addr.sin_port);
}

int launch(const LaunchOptions& o) {
  const Plan plan = load_plan(o.plan);
  const int world = static_cast<int>(plan.ranks.size());
  const int nproc = o.nproc > 0 ? o.nproc : world / o.nnodes;
  if (nproc * o.nnodes != world)
    throw Error(fmt::format("{} has {} ranks, but --nproc {} on {} node{} starts {}; start {} in all", o.plan, world,
                            nproc, o.nnodes, o.nnodes == 1 ? "" : "s", nproc * o.nnodes, world));
  if (o.node_rank < 0 || o.node_rank >= o.nnodes)
    throw Error(fmt::format("--node-rank {} is not in [0, {})", o.node_rank, o.nnodes));
  if (o.nnodes > 1 && o.master_port == 0 && o.rdzv.empty())
    throw Error("with several nodes, give the rendezvous: --master-addr (rank 0's host) and --master-port");
  const StoreSpec store = o.rdzv.empty() ? StoreSpec{} : parse_store(o.rdzv, "--rdzv");
  if (store.kind == "file") {
    // Keys left by another job would be taken for this one's.
    std::error_code ec;
    if (std::filesystem::exists(store.path, ec) && !std::filesystem::is_empty(store.path, ec))
      throw Error(fmt::format("--rdzv {}: {} is not empty; give each job a fresh folder", o.rdzv, store.path));
  }
  // A Redis server keeps earlier jobs' keys: each job gets a prefix of its
  // own, which the launchers of several hosts must be told.
  std::string job = o.job_id;
  if (job.empty() && store.kind == "redis" && o.nnodes > 1)
    throw Error("--rdzv redis: with several nodes, give every host's launcher the same --job-id");
  if (job.empty()) job = o.nnodes == 1 ? fmt::format("pf-{:x}-{:x}", ::getpid(), ::time(nullptr)) : "pf";
  const int port = o.master_port > 0 ? o.master_port : o.rdzv.empty() ? free_port() : 0;
  const std::string self = self_path();
  std::vector<WorkerSpec> workers;
  for (int local = 0; local < nproc; ++local) {
    const int rank = o.node_rank * nproc + local;
    WorkerSpec w;
    w.argv = {self, "run", o.plan};
    w.argv.insert(w.argv.end(), o.run_args.begin(), o.run_args.end());
    w.env = {{"PF_RANK", std::to_string(rank)},
             {"PF_LOCAL_RANK", std::to_string(local)},
             {"PF_WORLD_SIZE", std::to_string(world)},
             {"PF_MASTER_ADDR", o.master_addr},
             {"PF_MASTER_PORT", std::to_string(port)}};
    w.env.emplace_back("PF_RDZV", o.rdzv);  // empty: rank 0's TCP store, not one the caller's environment names
    w.env.emplace_back("PF_JOB_ID", job);
    w.name = rank_name(plan, rank);
    workers.push_back(std::move(w));
  }
  return run_workers(workers, std::cout, std::cerr, o.grace);
}

}  // namespace

void add_launch_command(CLI::App& app) {
  auto o = std::make_shared<LaunchOptions>();
  CLI::App* cmd = app.add_subcommand(
      "launch",
      "start a plan's ranks on this host as processes (pipeforge run PLAN.json in each, with the flags after --) and "
      "supervise them; rank 0 prints the steps");
  cmd->add_option("plan", o->plan, "plan (.json)")->required();
  cmd->add_option("run_flags", o->run_args, "flags of pipeforge run, after --");
  at_least(cmd->add_option("--nproc", o->nproc,
                           "processes on this host (default: every rank of the plan, on one node)"),
           1)
      ->default_str("");  // 0 in the options: unset
  at_least(cmd->add_option("--nnodes", o->nnodes, "hosts taking part, each with its own pipeforge launch"), 1);
  cmd->add_option("--node-rank", o->node_rank, "this host's index among them (its ranks: node-rank x nproc ..)");
  cmd->add_option("--master-addr", o->master_addr, "address of node 0, where rank 0 serves the rendezvous store")
      ->envname("PF_MASTER_ADDR");
  cmd->add_option("--master-port", o->master_port, "port of the rendezvous store (default: a free one, on one node)")
      ->envname("PF_MASTER_PORT")
      ->default_str("");  // 0 in the options: unset
  cmd->add_option("--rdzv", o->rdzv,
                  "rendezvous other than rank 0's TCP store: file:FOLDER (a fresh folder every host sees) or "
                  "redis:HOST:PORT");
  cmd->add_option("--job-id", o->job_id,
                  "prefix of the job's keys in the store (default: one of its own on one node; with Redis and "
                  "several nodes, give every host the same)")
      ->envname("PF_JOB_ID");
  at_least(cmd->add_option("--grace", o->grace,
                           "seconds the other workers get to stop when one fails, before SIGKILL"),
           0);
  cmd->callback([o] {
    const int status = launch(*o);
    if (status != 0) throw AlreadyReported();
  });
}

}  // namespace pf::tools
