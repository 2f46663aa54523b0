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
#include <thread>

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

  /// One all-reduce between its start and its end: the root receives every
  /// member's values, sums them in rank order and sends the total back.
  template <class T>
  struct Reduction {
    std::span<T> values;
    std::vector<int> ranks;  // the group's; empty: nothing to do
    std::string what;        // for the watchdog
    std::vector<T>* scratch = nullptr;  // the root's: every other member's values
    std::vector<std::unique_ptr<UnboundBuffer>> in, out;
    uint64_t tag = 0;
  };

  /// Posts the reduction's messages: a member's values go to the root at
  /// once, and the root's receives wait for them.
  template <class T>
  Reduction<T> begin_reduce(const CommGroup& group, std::span<T> values, std::vector<T>& scratch) {
    check_member(group);
    check_failure();
    Reduction<T> r;
    if (group.ranks.size() < 2) return r;
    settle(group);
    const uint64_t tag = next_tag(group);
    const auto bytes = static_cast<int64_t>(values.size_bytes());
    if (bytes == 0) return r;
    r.values = values;
    r.ranks = group.ranks;
    r.what = fmt::format("rank {} waits in collective '{}'", rank, group.name);
    r.scratch = &scratch;
    const int root = group.ranks.front();
    if (rank == root) {
      const size_t n = values.size(), members = group.ranks.size();
      scratch.resize(n * (members - 1));
      for (size_t k = 1; k < members; ++k) {
        r.in.push_back(buffer(scratch.data() + (k - 1) * n, bytes));
        start(*r.in.back(), false, group.ranks[k], tag);
      }
      // The root's answers go out under the same tag, once summed.
      for (size_t k = 1; k < members; ++k) r.out.push_back(buffer(values.data(), bytes));
    } else {
      // The total lands where the values were: the root answers only once it
      // has received all of them.
      r.out.push_back(buffer(values.data(), bytes));
      start(*r.out.back(), true, root, tag);
      r.in.push_back(buffer(values.data(), bytes));
      start(*r.in.back(), false, root, tag);
    }
    r.tag = tag;
    return r;
  }

  template <class T>
  void end_reduce(Reduction<T>& r) {
    if (r.ranks.empty()) return;
    const int root = r.ranks.front();
    if (rank == root) {
      const size_t n = r.values.size(), members = r.ranks.size();
      // In rank order: the root's own values first, then each member's.
      for (size_t k = 1; k < members; ++k) {
        await(*r.in[k - 1], false, r.what, r.ranks[k]);
        const T* x = r.scratch->data() + (k - 1) * n;
        for (size_t i = 0; i < n; ++i) r.values[i] += x[i];
      }
      for (size_t k = 1; k < members; ++k) start(*r.out[k - 1], true, r.ranks[k], r.tag);
      for (size_t k = 1; k < members; ++k) await(*r.out[k - 1], true, r.what, r.ranks[k]);
    } else {
      await(*r.in.front(), false, r.what, root);
      await(*r.out.front(), true, r.what, root);
    }
    r.ranks.clear();
  }

  template <class T>
  void reduce(const CommGroup& group, std::span<T> values, std::vector<T>& scratch) {
    Reduction<T> r = begin_reduce(group, values, scratch);
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
  impl_->reduce(group, values, impl_->f64);
}

void GlooCommunicator::all_reduce(const CommGroup& group, std::span<float> values) {
  impl_->reduce(group, values, impl_->f32);
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
