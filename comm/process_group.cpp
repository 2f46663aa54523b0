// Joining a job of several processes.
#include "comm/process_group.h"

#include <fmt/format.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdlib>

#include "comm/file_store.h"
#include "comm/gloo_communicator.h"
#include "comm/nccl_communicator.h"
#include "comm/redis_store.h"
#include "comm/tcp_store.h"
#include "ir/diagnostic.h"

namespace pf {

namespace {

int env_int(const char* name, int min, int max) {
  const char* text = std::getenv(name);
  if (!text || !*text)
    throw Error(fmt::format("{} is not set; a rank started by hand needs PF_RANK, PF_WORLD_SIZE, PF_MASTER_ADDR and "
                            "PF_MASTER_PORT (pipeforge launch sets them)",
                            name));
  int value = 0;
  const char* end = text + std::char_traits<char>::length(text);
  const auto [p, ec] = std::from_chars(text, end, value);
  if (ec != std::errc() || p != end || value < min || value > max)
    throw Error(fmt::format("{}={} is not a whole number in [{}, {}]", name, text, min, max));
  return value;
}

}  // namespace

StoreSpec parse_store(const std::string& spec, const std::string& what) {
  StoreSpec s;
  const auto bad = [&] {
    return Error(fmt::format("{} {}: give file:FOLDER or redis:HOST:PORT (or nothing, for rank 0's TCP store)", what,
                             spec));
  };
  if (spec.starts_with("file:") && spec.size() > 5) {
    s.kind = "file";
    s.path = spec.substr(5);
  } else if (spec.starts_with("redis:")) {
    const size_t colon = spec.rfind(':');
    if (colon <= 6) throw bad();
    s.kind = "redis";
    s.host = spec.substr(6, colon - 6);
    const std::string port = spec.substr(colon + 1);
    const auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), s.port);
    if (ec != std::errc() || p != port.data() + port.size() || s.port < 1 || s.port > 65535 || s.host.empty())
      throw bad();
  } else {
    throw bad();
  }
  return s;
}

std::optional<Rendezvous> rendezvous_from_environment() {
  if (!std::getenv("PF_RANK")) return std::nullopt;
  Rendezvous r;
  r.world = env_int("PF_WORLD_SIZE", 1, 1 << 20);
  r.rank = env_int("PF_RANK", 0, r.world - 1);
  if (const char* rdzv = std::getenv("PF_RDZV"); rdzv && *rdzv) {
    r.store = rdzv;
    parse_store(r.store, "PF_RDZV");
  } else {
    if (const char* addr = std::getenv("PF_MASTER_ADDR"); addr && *addr) r.master_addr = addr;
    r.master_port = env_int("PF_MASTER_PORT", 1, 65535);
  }
  if (const char* addr = std::getenv("PF_ADDR"); addr && *addr) r.address = addr;
  if (const char* job = std::getenv("PF_JOB_ID"); job && *job) r.job = job;
  return r;
}

namespace {

std::string host_name() {
  char name[256] = {};
  return ::gethostname(name, sizeof name - 1) == 0 && name[0] ? name : "127.0.0.1";
}

}  // namespace

ProcessGroup::ProcessGroup(const Rendezvous& r, double timeout_s, int gpu) {
  try {
    join(r, timeout_s, gpu);
  } catch (const Error& e) {
    throw Error(fmt::format("rank {}: {}", r.rank, e.message()));
  }
}

void ProcessGroup::join(const Rendezvous& r, double timeout_s, int gpu) {
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  GlooOptions options;
  options.timeout_s = timeout_s;
  options.address = r.address;
  options.prefix = r.job;
  const StoreSpec spec = r.store.empty() ? StoreSpec{} : parse_store(r.store, "the rendezvous");
  if (spec.kind == "file") {
    store_ = std::make_unique<FileStore>(spec.path, timeout);
    if (options.address.empty()) options.address = host_name();
  } else if (spec.kind == "redis") {
    auto redis = std::make_unique<RedisStore>(spec.host, spec.port, timeout);
    if (options.address.empty()) options.address = redis->local_address();
    store_ = std::move(redis);
  } else {
    if (r.rank == 0) server_ = std::make_unique<TcpStoreServer>(r.master_port);
    auto tcp = std::make_unique<TcpStore>(r.master_addr, r.master_port, timeout);
    if (options.address.empty()) options.address = tcp->local_address();
    store_ = std::move(tcp);
  }
  if (gpu < 0) {
    gloo_ = std::make_unique<GlooCommunicator>(*store_, r.rank, r.world, options);
    return;
  }
#ifdef PF_CUDA
  nccl_ = std::make_unique<NcclCommunicator>(
      *store_, r.rank, r.world, NcclOptions{gpu, {options.timeout_s, options.heartbeat_s, options.prefix}});
#else
  throw Error(fmt::format("this rank computes on CUDA device {}, but this pipeforge was built without CUDA", gpu));
#endif
}

ProcessGroup::~ProcessGroup() {
  // Their watchdogs use the store.
  gloo_.reset();
  nccl_.reset();
  store_.reset();
}

Communicator& ProcessGroup::comm() {
  if (gloo_) return *gloo_;
  return *nccl_;
}

void ProcessGroup::name_ranks(std::vector<std::string> names) {
  if (gloo_) return gloo_->set_rank_names(std::move(names));
#ifdef PF_CUDA
  static_cast<NcclCommunicator&>(*nccl_).set_rank_names(std::move(names));
#endif
}

}  // namespace pf
