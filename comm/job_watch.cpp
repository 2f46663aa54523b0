// A rank's watchdog over a job of processes: heartbeats, the first failure and timeouts, through the store.
#include "comm/job_watch.h"

#include <fmt/format.h>

#include <algorithm>

#include "ir/diagnostic.h"

namespace pf {

namespace {

double seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

/// A peer's heartbeat: "<count>\n<ms busy, or -1>\n<what it computes>".
struct Beat {
  int64_t busy_ms = -1;
  std::string what;
};

Beat parse_beat(const std::string& text) {
  Beat b;
  const size_t first = text.find('\n');
  const size_t second = first == std::string::npos ? std::string::npos : text.find('\n', first + 1);
  if (second == std::string::npos) return b;
  b.busy_ms = std::stoll(text.substr(first + 1, second - first - 1));
  b.what = text.substr(second + 1);
  return b;
}

}  // namespace

JobWatch::JobWatch(Store& store, int rank, int size, WatchOptions options)
    : store_(store), rank_(rank), size_(size), options_(std::move(options)) {}

JobWatch::~JobWatch() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    wake_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

void JobWatch::start() {
  beat(0);
  thread_ = std::thread([this] { watch(); });
}

void JobWatch::fail(const std::string& message, bool timeout) {
  std::string first = message;
  try {
    if (store_.add(key("abort/count"), 1) == 1)
      store_.set(key("abort"), message);
    else
      first = store_.get(key("abort"));
  } catch (const Error&) {
    // the store is gone: this rank's own message stands
  }
  std::lock_guard lock(mutex_);
  if (failure_.empty()) {
    failure_ = first;
    timed_out_ = timeout && first == message;
  }
  end_wait_locked();
}

void JobWatch::end_wait_locked() {
  if (waiting_ && end_) end_();
}

void JobWatch::begin_wait(std::string what, std::function<void()> end) {
  std::lock_guard lock(mutex_);
  if (!failure_.empty()) throw CommAborted{};
  waiting_ = true;
  end_ = std::move(end);
  waiting_for_ = std::move(what);
  last_busy_seen_ = Clock::now();
}

void JobWatch::end_wait() {
  std::lock_guard lock(mutex_);
  waiting_ = false;
  end_ = nullptr;
}

void JobWatch::throw_failure() const {
  std::lock_guard lock(mutex_);
  if (timed_out_) throw CommTimeout{failure_};
  throw CommAborted{};
}

void JobWatch::check() const {
  if (failed()) throw CommAborted{};
}

bool JobWatch::failed() const {
  std::lock_guard lock(mutex_);
  return !failure_.empty();
}

std::string JobWatch::error() const {
  std::lock_guard lock(mutex_);
  return failure_;
}

void JobWatch::set_busy(const std::string& who, const std::string& what) {
  std::lock_guard lock(mutex_);
  busy_ = !what.empty();
  if (busy_) {
    busy_text_ = fmt::format("{} computing {}", who, what);
    busy_since_ = Clock::now();
  }
}

void JobWatch::set_rank_names(std::vector<std::string> names) {
  std::lock_guard lock(mutex_);
  names_ = std::move(names);
}

std::string JobWatch::name(int r) const {
  std::lock_guard lock(mutex_);
  return r < static_cast<int>(names_.size()) ? names_[static_cast<size_t>(r)] : fmt::format("rank {}", r);
}

void JobWatch::beat(uint64_t count) {
  std::string text;
  {
    std::lock_guard lock(mutex_);
    const int64_t busy_ms =
        busy_ ? std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - busy_since_).count() : -1;
    text = fmt::format("{}\n{}\n{}", count, busy_ms, busy_ ? busy_text_ : "");
  }
  store_.set(key(fmt::format("beat/{}", rank_)), text);
}

// While this rank waits: another rank silent or computing one thing for
// longer than the timeout fails the job; so does this wait, when no rank has
// computed for that long.
void JobWatch::look_at_peers() {
  const double timeout = options_.timeout_s;
  const auto now = Clock::now();
  bool someone_busy = false;
  // The peer silent the longest, if any has missed its heartbeats for half
  // the timeout: a loaded machine delays a beat, not that many.
  int silent = -1;
  double silent_for = std::max(3 * options_.heartbeat_s, timeout / 2);
  std::string silent_was;
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    const std::string k = key(fmt::format("beat/{}", peer));
    if (!store_.check({k})) continue;  // still in the rendezvous, which has a timeout of its own
    const std::string text = store_.get(k);
    auto& [last, since] = beats_[peer];
    if (text != last) {
      last = text;
      since = now;
    }
    const Beat b = parse_beat(text);
    if (seconds(now - since) > silent_for) {
      silent = peer;
      silent_for = seconds(now - since);
      silent_was = b.what;
    }
    if (b.busy_ms > timeout * 1000)
      return fail(fmt::format("{} has been {} for more than {:.0f} s (the timeout): it seems stuck", name(peer),
                              b.what, timeout));
    someone_busy = someone_busy || b.busy_ms >= 0;
  }
  const auto fail_silent = [&] {
    fail(fmt::format("{} stopped responding: no heartbeat for {:.0f} s (its process died or is stopped){}",
                     name(silent), timeout, silent_was.empty() ? "" : "; it was last seen " + silent_was));
  };
  if (silent >= 0 && silent_for > timeout) return fail_silent();
  std::string why;
  {
    std::lock_guard lock(mutex_);
    if (someone_busy) last_busy_seen_ = now;
    if (seconds(now - last_busy_seen_) <= timeout) return;
    why = fmt::format("timed out after {:.0f} s with no rank computing: {}", timeout, waiting_for_);
  }
  // A silent rank explains the wait better than the wait itself.
  if (silent >= 0) return fail_silent();
  fail(why, /*timeout=*/true);
}

void JobWatch::watch() {
  uint64_t count = 0;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, std::chrono::duration<double>(options_.heartbeat_s), [&] { return stopping_; });
      if (stopping_) return;
    }
    try {
      beat(++count);
      bool known, waiting;
      {
        std::lock_guard lock(mutex_);
        known = !failure_.empty();
        waiting = waiting_;
      }
      if (!known && store_.check({key("abort")})) {
        fail(store_.get(key("abort")));
      } else if (!known && waiting) {
        look_at_peers();
      }
    } catch (const Error& e) {
      // Rank 0 serves the TCP store: it is gone, and so is rank 0.
      std::lock_guard lock(mutex_);
      if (failure_.empty()) failure_ = e.message();
      end_wait_locked();
    } catch (const std::exception& e) {
      std::lock_guard lock(mutex_);
      if (failure_.empty()) failure_ = fmt::format("rank {}'s watchdog failed: {}", rank_, e.what());
      end_wait_locked();
    }
  }
}

}  // namespace pf
