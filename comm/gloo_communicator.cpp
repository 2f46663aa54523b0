// The communicator between processes over Gloo (its watchdog is a JobWatch).
#include "comm/gloo_communicator.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gloo/common/error.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/unbound_buffer.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <thread>
#include <type_traits>

#include "comm/job_watch.h"
#include "ir/diagnostic.h"

namespace pf {

namespace {

using Clock = std::chrono::steady_clock;
using gloo::transport::UnboundBuffer;

// Collectives' own messages, apart from every tag a caller uses.
constexpr uint64_t kCollectiveTag = uint64_t{1} << 62;
// Gloo gives up on a wait after its own timeout and then breaks every
// connection: the watchdog ends waits instead, so Gloo's never comes.
constexpr auto kForever = std::chrono::hours(24 * 365);

/// Gloo's rendezvous over our store.
class GlooStore final : public gloo::rendezvous::Store {
 public:
  GlooStore(pf::Store& store, std::string prefix, std::chrono::milliseconds timeout)
      : store_(store), prefix_(std::move(prefix)), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    store_.set(prefix_ + key, std::string(data.begin(), data.end()));
  }
  std::vector<char> get(const std::string& key) override {
    const std::string value = store_.get(prefix_ + key);
    return {value.begin(), value.end()};
  }
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override {
    std::vector<std::string> full;
    for (const std::string& k : keys) full.push_back(prefix_ + k);
    const auto deadline = Clock::now() + timeout;
    auto pause = std::chrono::milliseconds(1);
    while (!store_.check(full)) {
      if (Clock::now() >= deadline) {
        // Gloo's keys are the ranks' numbers.
        std::vector<std::string> missing;
        for (size_t k = 0; k < keys.size(); ++k)
          if (!store_.check({full[k]})) missing.push_back(keys[k]);
        throw Error(fmt::format("rank{} {} did not join within {:.0f} s: not started, or cannot reach the "
                                "rendezvous store",
                                missing.size() == 1 ? "" : "s", fmt::join(missing, ", "),
                                std::chrono::duration<double>(timeout).count()));
      }
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds(50));
    }
  }

 private:
  pf::Store& store_;
  std::string prefix_;
  std::chrono::milliseconds timeout_;
};

uint64_t group_id(const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : name) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
  return h & 0x3fffffff;
}

}  // namespace

struct GlooCommunicator::Impl {
  pf::Store& store;
  int rank, size;
  GlooOptions options;
  std::shared_ptr<gloo::transport::Device> device;
  std::shared_ptr<gloo::rendezvous::Context> context;

  struct Posted {
    RecvRequest request;
    std::unique_ptr<UnboundBuffer> buffer;  // null for a message to itself
    bool waited = false;
  };
  std::vector<Posted> posted;
  /// In flight until the next world collective, with their receivers.
  std::vector<std::pair<std::unique_ptr<UnboundBuffer>, int>> sends;
  std::map<int64_t, std::pair<const void*, int64_t>> own_messages;
  std::map<std::string, uint64_t> rounds;  // collectives so far, per group
  std::vector<double> f64;
  std::vector<float> f32;

  JobWatch watch;

  Impl(pf::Store& s, int r, int n, GlooOptions o)
      : store(s), rank(r), size(n), options(std::move(o)), watch(s, r, n, {options.timeout_s, options.heartbeat_s, options.prefix}) {}

  std::string key(const std::string& k) const { return watch.key(k); }

  /// Waits for `buffer`'s receive (or send) to complete, ended early by a
  /// failure anywhere: CommAborted, or CommTimeout when it timed out.
  void await(UnboundBuffer& buffer, bool send, const std::string& what, int peer) {
    watch.begin_wait(what, [&buffer, send] {
      if (send)
        buffer.abortWaitSend();
      else
        buffer.abortWaitRecv();
    });
    bool done = false;
    std::string broken;
    try {
      done = send ? buffer.waitSend(nullptr, kForever) : buffer.waitRecv(nullptr, kForever);
    } catch (const std::exception& e) {
      broken = e.what();
    }
    watch.end_wait();
    if (!broken.empty()) watch.fail(gone(peer));
    if (done) return;
    watch.throw_failure();
  }

  /// The same words whichever rank notices, so that the job reports it once.
  std::string gone(int peer) const {
    return fmt::format("{} is gone: a connection to it broke (its process died?)", watch.name(peer));
  }

  /// Starts `buffer`'s send to (or receive from) `peer`; a connection
  /// already broken fails the job.
  void start(UnboundBuffer& buffer, bool send, int peer, uint64_t tag) {
    try {
      if (send)
        buffer.send(peer, tag);
      else
        buffer.recv(peer, tag);
    } catch (const std::exception&) {
      watch.fail(gone(peer));
      throw CommAborted{};
    }
  }

  void check_failure() { watch.check(); }

  std::unique_ptr<UnboundBuffer> buffer(const void* data, int64_t bytes) {
    return context->createUnboundBuffer(const_cast<void*>(data), static_cast<size_t>(bytes));
  }

  // ---- Collectives, through the group's first rank.

  void check_member(const CommGroup& group) const {
    if (!group.contains(rank)) throw Error(fmt::format("rank {} is not a member of group '{}'", rank, group.name));
  }

  /// A collective over every rank: every message sent before it has been
  /// received, so the senders' buffers are free again.
  void settle(const CommGroup& group) {
    if (static_cast<int>(group.ranks.size()) != size) return;
    for (auto& [b, peer] : sends)
      await(*b, true, fmt::format("rank {} waits for rank {} to receive its messages", rank, peer), peer);
    sends.clear();
    if (std::all_of(posted.begin(), posted.end(), [](const Posted& p) { return p.waited; })) posted.clear();
    own_messages.clear();
  }

  uint64_t next_tag(const CommGroup& group) {
    return kCollectiveTag | (group_id(group.name) << 32) | (rounds[group.name]++ & 0xffffffffu);
  }

  using Messages = std::vector<std::pair<std::unique_ptr<UnboundBuffer>, int>>;  // with each one's peer

  /// Starts a send (or a receive) of `count` values at `data` to (from)
  /// `peer`, kept in `messages` until awaited.
  template <class T>
  void transfer(Messages& messages, bool send, const T* data, int64_t count, int peer, uint64_t tag) {
    if (count == 0) return;
    messages.emplace_back(buffer(data, count * static_cast<int64_t>(sizeof(T))), peer);
    start(*messages.back().first, send, peer, tag);
  }

  void await_all(Messages& messages, bool send, const std::string& what) {
    for (auto& [b, peer] : messages) await(*b, send, what, peer);
    messages.clear();
  }

  std::string collective_wait(const CommGroup& group) const {
    return fmt::format("rank {} waits in collective '{}'", rank, group.name);
  }

  template <class T>
  std::vector<T>& scratch() {
    if constexpr (std::is_same_v<T, float>)
      return f32;
    else
      return f64;
  }

  /// `total` = the members' blocks of `n` values summed in rank order, the
  /// order of a sum through the group's first rank: this rank's block is
  /// `own` at `place`, the others' lie in `received` one after another.
  /// `total` may be `own` at place 0, or `received`.
  template <class T>
  static void sum_in_rank_order(size_t members, size_t place, const T* own, const T* received, int64_t n,
                                T* total) {
    const auto block = [&](size_t k) {
      return k == place ? own : received + static_cast<int64_t>(k < place ? k : k - 1) * n;
    };
    if (total != block(0)) std::copy(block(0), block(0) + n, total);
    for (size_t k = 1; k < members; ++k) {
      const T* x = block(k);
      for (int64_t i = 0; i < n; ++i) total[i] += x[i];
    }
  }

  /// Sends each member its block of `whole` and receives every member's
  /// version of this rank's block into `received`, as sum_in_rank_order
  /// reads them.
  template <class T>
  void swap_blocks(const std::vector<int>& ranks, const GroupBlocks& b, const T* whole, T* received, uint64_t tag,
                   Messages& in, Messages& out) {
    const int64_t n = b.count(b.place);
    for (size_t k = 0, slot = 0; k < ranks.size(); ++k) {
      if (k == b.place) continue;
      transfer(in, false, received + static_cast<int64_t>(slot++) * n, n, ranks[k], tag);
      transfer(out, true, whole + b.begin[k], b.count(k), ranks[k], tag);
    }
  }

  /// Sends this rank's block of `whole` to every member and receives theirs
  /// into their places.
  template <class T>
  void share_blocks(const std::vector<int>& ranks, const GroupBlocks& b, const T* own, T* whole, uint64_t tag,
                    Messages& in, Messages& out) {
    for (size_t k = 0; k < ranks.size(); ++k) {
      if (k == b.place) continue;
      transfer(in, false, whole + b.begin[k], b.count(k), ranks[k], tag);
      transfer(out, true, own, b.count(b.place), ranks[k], tag);
    }
  }

  template <class T>
  void gather(const CommGroup& group, std::span<const T> part, std::span<T> whole, std::span<const int64_t> counts) {
    check_member(group);
    check_failure();
    const GroupBlocks b = group_blocks(group, rank, counts, part.size(), whole.size());
    std::copy(part.begin(), part.end(), whole.begin() + b.begin[b.place]);
    if (group.ranks.size() < 2) return;
    settle(group);
    Messages in, out;
    share_blocks(group.ranks, b, part.data(), whole.data(), next_tag(group), in, out);
    await_all(in, false, collective_wait(group));
    await_all(out, true, collective_wait(group));
  }

  template <class T>
  void reduce_scatter(const CommGroup& group, std::span<const T> whole, std::span<T> part,
                      std::span<const int64_t> counts) {
    check_member(group);
    check_failure();
    const GroupBlocks b = group_blocks(group, rank, counts, part.size(), whole.size());
    const T* own = whole.data() + b.begin[b.place];
    const size_t members = group.ranks.size();
    if (members < 2) {
      std::copy(own, own + part.size(), part.begin());
      return;
    }
    settle(group);
    const int64_t n = b.count(b.place);
    std::vector<T>& received = scratch<T>();
    received.resize(static_cast<size_t>(n) * (members - 1));
    Messages in, out;
    swap_blocks(group.ranks, b, whole.data(), received.data(), next_tag(group), in, out);
    await_all(in, false, collective_wait(group));
    sum_in_rank_order(members, b.place, own, received.data(), n, part.data());
    await_all(out, true, collective_wait(group));
  }

  /// One all-reduce between its start and its end, in one of two ways with
  /// the same bits. Through the root: every member's values go to the
  /// group's first rank, which sums them in rank order and sends the total
  /// back ((N - 1) times the bytes in and out of the root: cheapest for a
  /// few values). In blocks: a reduce-scatter, each member summing its
  /// block in rank order, then an all-gather (2 (N - 1) / N of the bytes in
  /// and out of every member, the sums shared out).
  template <class T>
  struct Reduction {
    std::span<T> values;
    std::vector<int> ranks;  // the group's; empty: nothing to do
    std::string what;        // for the watchdog
    std::vector<T>* scratch = nullptr;  // what this rank receives to sum
    Messages in, out;
    uint64_t tag = 0;
    std::optional<GroupBlocks> blocks;  // set when in blocks
    uint64_t gather_tag = 0;
  };

  /// Posts the reduction's first messages: what each member sends goes at
  /// once, and the receives wait for it.
  template <class T>
  Reduction<T> begin_reduce(const CommGroup& group, std::span<T> values, std::vector<T>& scratch) {
    check_member(group);
    check_failure();
    Reduction<T> r;
    const size_t members = group.ranks.size();
    if (members < 2) return r;
    settle(group);
    r.tag = next_tag(group);
    if (values.empty()) return r;
    r.values = values;
    r.ranks = group.ranks;
    r.what = collective_wait(group);
    r.scratch = &scratch;
    if (static_cast<int64_t>(values.size_bytes()) >= options.blocks_from_bytes && values.size() >= members) {
      // Blocks as even as the values allow, none empty.
      GroupBlocks& b = r.blocks.emplace();
      b.place = static_cast<size_t>(std::find(group.ranks.begin(), group.ranks.end(), rank) - group.ranks.begin());
      for (size_t k = 0; k <= members; ++k) b.begin.push_back(static_cast<int64_t>(values.size() * k / members));
      r.gather_tag = next_tag(group);
      scratch.resize(static_cast<size_t>(b.count(b.place)) * (members - 1));
      swap_blocks(group.ranks, b, values.data(), scratch.data(), r.tag, r.in, r.out);
      return r;
    }
    const int root = group.ranks.front();
    if (rank == root) {
      scratch.resize(values.size() * (members - 1));
      for (size_t k = 1; k < members; ++k)
        transfer(r.in, false, scratch.data() + (k - 1) * values.size(), static_cast<int64_t>(values.size()),
             group.ranks[k], r.tag);
    } else {
      // The total lands where the values were: the root answers only once it
      // has received all of them.
      transfer(r.out, true, values.data(), static_cast<int64_t>(values.size()), root, r.tag);
      transfer(r.in, false, values.data(), static_cast<int64_t>(values.size()), root, r.tag);
    }
    return r;
  }

  template <class T>
  void end_reduce(Reduction<T>& r) {
    if (r.ranks.empty()) return;
    const size_t members = r.ranks.size();
    if (r.blocks) {
      const GroupBlocks& b = *r.blocks;
      const int64_t n = b.count(b.place);
      T* own = r.values.data() + b.begin[b.place];
      await_all(r.in, false, r.what);
      T* total = b.place == 0 ? own : r.scratch->data();
      sum_in_rank_order(members, b.place, own, r.scratch->data(), n, total);
      if (total != own) std::copy(total, total + n, own);
      // The other blocks were on their way from `values`: the totals land there.
      await_all(r.out, true, r.what);
      share_blocks(r.ranks, b, own, r.values.data(), r.gather_tag, r.in, r.out);
    } else if (rank == r.ranks.front()) {
      const int64_t n = static_cast<int64_t>(r.values.size());
      await_all(r.in, false, r.what);
      sum_in_rank_order(members, 0, r.values.data(), r.scratch->data(), n, r.values.data());
      for (size_t k = 1; k < members; ++k) transfer(r.out, true, r.values.data(), n, r.ranks[k], r.tag);
    }
    await_all(r.in, false, r.what);
    await_all(r.out, true, r.what);
    r.ranks.clear();
  }

  template <class T>
  void reduce(const CommGroup& group, std::span<T> values) {
    Reduction<T> r = begin_reduce(group, values, scratch<T>());
    end_reduce(r);
  }

  /// Reductions started and not yet finished, by handle, each with its own
  /// scratch; forgotten once all have finished.
  struct Started {
    Reduction<float> reduction;
    std::vector<float> scratch;
  };
  std::vector<std::unique_ptr<Started>> started;
};

GlooCommunicator::GlooCommunicator(Store& store, int rank, int size, GlooOptions options)
    : impl_(std::make_unique<Impl>(store, rank, size, std::move(options))) {
  if (size < 1 || rank < 0 || rank >= size)
    throw Error(fmt::format("rank {} is not within a world of {}", rank, size));
  Impl& m = *impl_;
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(m.options.timeout_s * 1000));
  gloo::transport::tcp::attr attr;
  attr.hostname = m.options.address.empty() ? "127.0.0.1" : m.options.address;
  try {
    m.device = gloo::transport::tcp::CreateDevice(attr);
    m.context = std::make_shared<gloo::rendezvous::Context>(rank, size);
    m.context->setTimeout(timeout);
    GlooStore rendezvous(store, m.key("gloo/"), timeout);
    m.context->connectFullMesh(rendezvous, m.device);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(fmt::format("rank {} cannot connect to the other ranks at {}: {}", rank, attr.hostname, e.what()));
  }
  m.watch.start();
}

GlooCommunicator::~GlooCommunicator() = default;

int GlooCommunicator::rank() const { return impl_->rank; }
int GlooCommunicator::size() const { return impl_->size; }

void GlooCommunicator::send(int peer, int64_t tag, const void* data, int64_t bytes, void*) {
  Impl& m = *impl_;
  if (peer < 0 || peer >= m.size)
    throw Error(fmt::format("rank {} cannot send to rank {} in a world of {}", m.rank, peer, m.size));
  m.check_failure();
  if (peer == m.rank) {
    m.own_messages[tag] = {data, bytes};
    return;
  }
  if (bytes == 0) return;
  auto b = m.buffer(data, bytes);
  m.start(*b, true, peer, static_cast<uint64_t>(tag));
  m.sends.emplace_back(std::move(b), peer);
}

int GlooCommunicator::post(RecvRequest request) {
  Impl& m = *impl_;
  if (request.peer < 0 || request.peer >= m.size)
    throw Error(fmt::format("rank {} cannot receive from rank {} in a world of {}", m.rank, request.peer, m.size));
  Impl::Posted p;
  if (request.peer != m.rank && request.bytes > 0) {
    if (!request.dst)
      throw Error(fmt::format("rank {}: a receive from another process needs a buffer ({})", m.rank,
                              request.waiting));
    p.buffer = m.buffer(request.dst, request.bytes);
    m.start(*p.buffer, false, request.peer, static_cast<uint64_t>(request.tag));
  }
  p.request = std::move(request);
  m.posted.push_back(std::move(p));
  return static_cast<int>(m.posted.size()) - 1;
}

Received GlooCommunicator::wait(int handle) {
  Impl& m = *impl_;
  Impl::Posted& p = m.posted.at(static_cast<size_t>(handle));
  p.waited = true;
  if (p.request.peer == m.rank) {
    // Sent before, by this very thread: the schedule orders a rank's own
    // hand-offs.
    auto it = m.own_messages.find(p.request.tag);
    if (it == m.own_messages.end())
      throw Error(fmt::format("rank {} waits for a message it has not sent itself: {}", m.rank, p.request.waiting));
    return {it->second.first, nullptr};
  }
  if (p.buffer) m.await(*p.buffer, false, p.request.waiting, p.request.peer);
  return {p.request.dst, nullptr};
}

void GlooCommunicator::all_reduce(const CommGroup& group, std::span<double> values) {
  impl_->reduce(group, values);
}

void GlooCommunicator::all_reduce(const CommGroup& group, std::span<float> values) {
  impl_->reduce(group, values);
}

void GlooCommunicator::all_gather(const CommGroup& group, std::span<const float> part, std::span<float> whole,
                                  std::span<const int64_t> counts) {
  impl_->gather(group, part, whole, counts);
}

void GlooCommunicator::all_gather(const CommGroup& group, std::span<const double> part, std::span<double> whole,
                                  std::span<const int64_t> counts) {
  impl_->gather(group, part, whole, counts);
}

void GlooCommunicator::reduce_scatter(const CommGroup& group, std::span<const float> whole, std::span<float> part,
                                      std::span<const int64_t> counts) {
  impl_->reduce_scatter(group, whole, part, counts);
}

void GlooCommunicator::reduce_scatter(const CommGroup& group, std::span<const double> whole, std::span<double> part,
                                      std::span<const int64_t> counts) {
  impl_->reduce_scatter(group, whole, part, counts);
}

int GlooCommunicator::start_all_reduce(const CommGroup& group, std::span<float> values) {
  Impl& m = *impl_;
  auto s = std::make_unique<Impl::Started>();
  s->reduction = m.begin_reduce(group, values, s->scratch);
  m.started.push_back(std::move(s));
  return static_cast<int>(m.started.size()) - 1;
}

void GlooCommunicator::finish_all_reduce(int handle) {
  Impl& m = *impl_;
  if (handle < 0 || handle >= static_cast<int>(m.started.size()) || !m.started[static_cast<size_t>(handle)])
    throw Error(fmt::format("rank {} finishes all-reduce {}, which it did not start", m.rank, handle));
  m.end_reduce(m.started[static_cast<size_t>(handle)]->reduction);
  m.started[static_cast<size_t>(handle)].reset();
  if (std::all_of(m.started.begin(), m.started.end(), [](auto& s) { return !s; })) m.started.clear();
}

void GlooCommunicator::broadcast(const CommGroup& group, int root, void* data, int64_t bytes) {
  Impl& m = *impl_;
  m.check_member(group);
  m.check_failure();
  if (!group.contains(root)) throw Error(fmt::format("broadcast root {} is not in group '{}'", root, group.name));
  if (group.ranks.size() < 2) return;
  m.settle(group);
  const uint64_t tag = m.next_tag(group);
  if (bytes == 0) return;
  const std::string what = fmt::format("rank {} waits in broadcast '{}'", m.rank, group.name);
  if (m.rank == root) {
    std::vector<std::pair<std::unique_ptr<UnboundBuffer>, int>> outputs;
    for (int r : group.ranks)
      if (r != root) {
        outputs.emplace_back(m.buffer(data, bytes), r);
        m.start(*outputs.back().first, true, r, tag);
      }
    for (auto& [b, r] : outputs) m.await(*b, true, what, r);
  } else {
    auto in = m.buffer(data, bytes);
    m.start(*in, false, root, tag);
    m.await(*in, false, what, root);
  }
}

void GlooCommunicator::barrier(const CommGroup& group) {
  double token = 0;
  all_reduce(group, std::span<double>(&token, 1));
}

void GlooCommunicator::set_busy(const std::string& who, const std::string& what) { impl_->watch.set_busy(who, what); }

void GlooCommunicator::abort(const std::string& message) { impl_->watch.fail(message); }

void GlooCommunicator::set_rank_names(std::vector<std::string> names) { impl_->watch.set_rank_names(std::move(names)); }

std::string GlooCommunicator::error() const { return impl_->watch.error(); }

}  // namespace pf
