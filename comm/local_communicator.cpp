// Ranks as threads of one process.
#include "comm/local_communicator.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <tuple>

#include "ir/diagnostic.h"

namespace pf {

namespace {

using Clock = std::chrono::steady_clock;

struct Message {
  const void* data = nullptr;
  int64_t bytes = 0;
  void* context = nullptr;
};

/// One collective in progress on a group: what each member brought, and how
/// many have arrived and left. A member leaves only when all have read
/// what it brought, so the next collective of the group starts clean.
struct Collective {
  std::vector<const void*> inputs;  // per member, in the group's rank order
  int arrived = 0;
  int left = 0;
  uint64_t round = 0;  // completed collectives
};

}  // namespace

struct LocalWorld::State {
  State(int size, double seconds)
      : timeout(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds))),
        timeout_s(seconds),
        busy(static_cast<size_t>(size)),
        waiting(static_cast<size_t>(size)),
        finished(static_cast<size_t>(size), 0) {}

  const Clock::duration timeout;
  const double timeout_s;
  std::mutex mutex;
  std::condition_variable changed;
  std::map<std::tuple<int, int, int64_t>, Message> mailbox;  // (from, to, tag)
  std::map<std::string, Collective> collectives;             // by group name
  struct Busy {
    std::string who;
    std::string what;  // empty: not computing
    Clock::time_point since;
  };
  std::vector<Busy> busy;             // [rank]
  std::vector<std::string> waiting;   // [rank]: what it waits for, or empty
  std::vector<char> finished;         // [rank]
  bool failed = false;
  std::string error;

  void fail(const std::string& message) {
    if (!failed) error = message;
    failed = true;
    changed.notify_all();
  }

  bool computing() const {
    return std::any_of(busy.begin(), busy.end(), [](const Busy& b) { return !b.what.empty(); });
  }

  /// Waits (the lock held) until `ready`; throws CommAborted on a failure
  /// and CommTimeout when the timeout passes while no rank computes.
  template <class Ready>
  void wait(std::unique_lock<std::mutex>& lock, int rank, std::string what, Ready ready) {
    waiting[static_cast<size_t>(rank)] = std::move(what);
    while (!changed.wait_for(lock, timeout, [&] { return failed || ready(); }))
      if (!computing()) {
        std::string message = stalled();
        fail(message);
        waiting[static_cast<size_t>(rank)].clear();
        throw CommTimeout{message};
      }
    waiting[static_cast<size_t>(rank)].clear();
    if (failed) throw CommAborted{};
  }

  /// Every rank waiting now, in rank order.
  std::string stalled() const {
    std::string out = fmt::format("watchdog: no hand-off for {:g} s", timeout_s);
    const char* sep = ": ";
    for (const std::string& w : waiting) {
      if (w.empty()) continue;
      out += sep + w;
      sep = "; ";
    }
    return out;
  }

  /// Runs one collective of `group` for `rank`: deposits `input`, waits for
  /// every member, calls combine(inputs in rank order) while all inputs are
  /// alive, and leaves once every member has combined.
  template <class Combine>
  void collective(const CommGroup& group, int rank, const void* input, Combine combine) {
    const auto at = std::find(group.ranks.begin(), group.ranks.end(), rank);
    if (at == group.ranks.end())
      throw Error(fmt::format("rank {} is not a member of group '{}'", rank, group.name));
    const auto n = static_cast<int>(group.ranks.size());
    std::unique_lock lock(mutex);
    Collective& c = collectives[group.name];
    // A member of the previous round may still be reading: wait for it to leave.
    wait(lock, rank, fmt::format("rank {} waits to enter collective '{}'", rank, group.name),
         [&] { return c.arrived < n; });
    const uint64_t round = c.round;
    if (c.arrived == 0) c.inputs.assign(static_cast<size_t>(n), nullptr);
    c.inputs[static_cast<size_t>(at - group.ranks.begin())] = input;
    c.arrived += 1;
    changed.notify_all();
    wait(lock, rank, fmt::format("rank {} waits for the other ranks of collective '{}'", rank, group.name),
         [&] { return c.round != round || c.arrived == n; });
    const std::vector<const void*> inputs = c.inputs;
    lock.unlock();
    combine(inputs);
    lock.lock();
    c.left += 1;
    if (c.left == n) {
      c.arrived = c.left = 0;
      c.round += 1;
      changed.notify_all();
    } else {
      wait(lock, rank, fmt::format("rank {} waits for the other ranks to leave collective '{}'", rank, group.name),
           [&] { return c.round != round; });
    }
  }
};

class LocalWorld::Rank final : public Communicator {
 public:
  Rank(std::shared_ptr<State> state, int rank, int size) : state_(std::move(state)), rank_(rank), size_(size) {}

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void send(int peer, int64_t tag, const void* data, int64_t bytes, void* context) override {
    check_peer(peer);
    std::lock_guard lock(state_->mutex);
    auto [it, fresh] = state_->mailbox.emplace(std::tuple{rank_, peer, tag}, Message{data, bytes, context});
    if (!fresh)
      throw Error(fmt::format("rank {} sent message {} to rank {} twice before it was received", rank_, tag, peer));
    state_->changed.notify_all();
  }

  int post(RecvRequest request) override {
    check_peer(request.peer);
    posted_.push_back(std::move(request));
    return static_cast<int>(posted_.size()) - 1;
  }

  bool ready(int handle) override {
    const RecvRequest& r = posted_.at(static_cast<size_t>(handle));
    std::lock_guard lock(state_->mutex);
    return state_->mailbox.count(std::tuple{r.peer, rank_, r.tag}) > 0;
  }

  Received wait(int handle) override {
    const RecvRequest& r = posted_.at(static_cast<size_t>(handle));
    const std::tuple key{r.peer, rank_, r.tag};
    std::unique_lock lock(state_->mutex);
    state_->wait(lock, rank_, r.waiting, [&] { return state_->mailbox.count(key) > 0; });
    auto it = state_->mailbox.find(key);
    const Message m = it->second;
    state_->mailbox.erase(it);
    if (m.bytes != r.bytes)
      throw Error(fmt::format("rank {} expected {} bytes in message {} from rank {}, but {} came", rank_, r.bytes,
                              r.tag, r.peer, m.bytes));
    return {m.data, m.context};
  }

  void all_reduce(const CommGroup& group, std::span<double> values) override { sum(group, values, f64_); }
  void all_reduce(const CommGroup& group, std::span<float> values) override { sum(group, values, f32_); }

  void all_gather(const CommGroup& group, std::span<const float> part, std::span<float> whole,
                  std::span<const int64_t> counts) override {
    gather(group, part, whole, counts);
  }
  void all_gather(const CommGroup& group, std::span<const double> part, std::span<double> whole,
                  std::span<const int64_t> counts) override {
    gather(group, part, whole, counts);
  }
  void reduce_scatter(const CommGroup& group, std::span<const float> whole, std::span<float> part,
                      std::span<const int64_t> counts) override {
    scatter(group, whole, part, counts);
  }
  void reduce_scatter(const CommGroup& group, std::span<const double> whole, std::span<double> part,
                      std::span<const int64_t> counts) override {
    scatter(group, whole, part, counts);
  }

  void broadcast(const CommGroup& group, int root, void* data, int64_t bytes) override {
    if (!group.contains(root)) throw Error(fmt::format("broadcast root {} is not in group '{}'", root, group.name));
    const auto root_index = static_cast<size_t>(std::find(group.ranks.begin(), group.ranks.end(), root) -
                                                group.ranks.begin());
    state_->collective(group, rank_, data, [&](const std::vector<const void*>& inputs) {
      if (rank_ != root) std::memcpy(data, inputs[root_index], static_cast<size_t>(bytes));
    });
  }

  void barrier(const CommGroup& group) override {
    state_->collective(group, rank_, nullptr, [](const std::vector<const void*>&) {});
  }

  void set_busy(const std::string& who, const std::string& what) override {
    // No one to wake: a waiter looks at the busy ranks when its wait times
    // out, and the watchdog wakes within a timeout of any busy rank's start.
    std::lock_guard lock(state_->mutex);
    state_->busy[static_cast<size_t>(rank_)] = {who, what, Clock::now()};
  }

  void abort(const std::string& message) override {
    std::lock_guard lock(state_->mutex);
    state_->fail(message);
  }

  std::string error() const override {
    std::lock_guard lock(state_->mutex);
    return state_->error;
  }

  /// Forgets the receives posted in the last step.
  void clear_posted() { posted_.clear(); }

 private:
  void check_peer(int peer) const {
    if (peer < 0 || peer >= size_)
      throw Error(fmt::format("rank {} cannot talk to rank {} in a world of {}", rank_, peer, size_));
  }

  /// Every member sums the inputs itself, in rank order, into a scratch
  /// buffer and then, once all have read every input, into `values`: each
  /// gets the same bits, and no input changes while another member reads it.
  /// The scratch is kept from call to call: fresh pages cost a fault each on
  /// first touch, which for a tied embedding's gradient is most of the sum.
  template <class T>
  void sum(const CommGroup& group, std::span<T> values, std::vector<T>& scratch) {
    if (scratch.size() < values.size()) scratch.resize(values.size());
    T* total = scratch.data();
    state_->collective(group, rank_, values.data(), [&](const std::vector<const void*>& inputs) {
      const T* first = static_cast<const T*>(inputs.front());
      std::copy(first, first + values.size(), total);
      for (size_t k = 1; k < inputs.size(); ++k) {
        const T* x = static_cast<const T*>(inputs[k]);
        for (size_t i = 0; i < values.size(); ++i) total[i] += x[i];
      }
    });
    std::copy(total, total + values.size(), values.begin());
  }

  /// Every member copies each member's part into its own whole.
  template <class T>
  void gather(const CommGroup& group, std::span<const T> part, std::span<T> whole, std::span<const int64_t> counts) {
    const GroupBlocks blocks = group_blocks(group, rank_, counts, part.size(), whole.size());
    state_->collective(group, rank_, part.data(), [&](const std::vector<const void*>& inputs) {
      for (size_t k = 0; k < inputs.size(); ++k) {
        const T* from = static_cast<const T*>(inputs[k]);
        std::copy(from, from + blocks.count(k), whole.begin() + blocks.begin[k]);
      }
    });
  }

  /// Every member sums its own block of the members' wholes, in rank order
  /// as sum() does, so that the bits are all_reduce's.
  template <class T>
  void scatter(const CommGroup& group, std::span<const T> whole, std::span<T> part, std::span<const int64_t> counts) {
    const GroupBlocks blocks = group_blocks(group, rank_, counts, part.size(), whole.size());
    state_->collective(group, rank_, whole.data(), [&](const std::vector<const void*>& inputs) {
      const int64_t begin = blocks.begin[blocks.place], n = blocks.count(blocks.place);
      const T* first = static_cast<const T*>(inputs.front()) + begin;
      std::copy(first, first + n, part.begin());
      for (size_t k = 1; k < inputs.size(); ++k) {
        const T* x = static_cast<const T*>(inputs[k]) + begin;
        for (int64_t i = 0; i < n; ++i) part[static_cast<size_t>(i)] += x[i];
      }
    });
  }

  std::shared_ptr<State> state_;
  int rank_;
  int size_;
  std::vector<RecvRequest> posted_;
  std::vector<float> f32_;  // sum()'s scratch
  std::vector<double> f64_;
};

LocalWorld::LocalWorld(int size, double timeout_s) : state_(std::make_shared<State>(size, timeout_s)) {
  if (size < 1) throw Error(fmt::format("a world needs at least one rank, not {}", size));
  if (!(timeout_s > 0)) throw Error(fmt::format("the timeout must be positive, not {}", timeout_s));
  for (int r = 0; r < size; ++r) ranks_.push_back(std::make_unique<Rank>(state_, r, size));
}

LocalWorld::~LocalWorld() = default;

int LocalWorld::size() const { return static_cast<int>(ranks_.size()); }

Communicator& LocalWorld::rank(int r) { return *ranks_.at(static_cast<size_t>(r)); }

void LocalWorld::start_step() {
  std::lock_guard lock(state_->mutex);
  state_->mailbox.clear();
  state_->collectives.clear();
  std::fill(state_->finished.begin(), state_->finished.end(), 0);
  for (auto& b : state_->busy) b = {};
  for (auto& w : state_->waiting) w.clear();
  state_->failed = false;
  state_->error.clear();
  for (auto& r : ranks_) r->clear_posted();
}

void LocalWorld::finish(int r) {
  std::lock_guard lock(state_->mutex);
  state_->finished.at(static_cast<size_t>(r)) = 1;
  state_->busy.at(static_cast<size_t>(r)) = {};
  state_->changed.notify_all();
}

std::vector<int> LocalWorld::watch() {
  State& st = *state_;
  std::unique_lock lock(st.mutex);
  std::optional<Clock::time_point> give_up_at;  // once the step has failed: how long the others get to return
  auto all_finished = [&] { return std::all_of(st.finished.begin(), st.finished.end(), [](char c) { return c; }); };
  while (!all_finished()) {
    const Clock::time_point now = Clock::now();
    if (st.failed && !give_up_at) give_up_at = now + st.timeout;
    if (give_up_at && now >= *give_up_at) break;
    Clock::time_point wake = give_up_at ? *give_up_at : now + st.timeout;
    if (!st.failed) {
      for (const State::Busy& b : st.busy)
        if (!b.what.empty() && now - b.since >= st.timeout) {
          st.fail(fmt::format("watchdog: {} has spent more than {:g} s in {} and does not return", b.who, st.timeout_s,
                              b.what));
          break;
        }
      if (st.failed) continue;
    }
    for (size_t r = 0; r < st.busy.size(); ++r)
      if (!st.finished[r] && !st.busy[r].what.empty()) wake = std::min(wake, st.busy[r].since + st.timeout);
    st.changed.wait_until(lock, std::max(wake, now + std::chrono::milliseconds(1)));
  }
  std::vector<int> stuck;
  for (size_t r = 0; r < st.finished.size(); ++r)
    if (!st.finished[r]) stuck.push_back(static_cast<int>(r));
  return stuck;
}

std::string LocalWorld::error() const {
  std::lock_guard lock(state_->mutex);
  return state_->error;
}

}  // namespace pf
