// One batch ahead: the next batch is prepared on a thread of its own while the caller computes with the current one.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

namespace pf {

/// Prepares batches one ahead of their use. It owns two sets of buffers:
/// while the caller reads the batch the last next() returned, a thread of
/// the prefetcher's own writes the following one into the other set.
///
///     BatchPrefetcher ahead({x_bytes, y_bytes}, [&](std::span<void* const> b) { data.next(b); });
///     for (...) runtime.train_step(named(ahead.next()));
///
/// `fill` is called on the prefetcher's thread, once per batch, one call at
/// a time, in order. An exception it throws is rethrown by the next() that
/// would have returned that batch (and every next() after it). The
/// destructor waits for the batch in preparation, then joins the thread.
class BatchPrefetcher {
 public:
  using Fill = std::function<void(std::span<void* const>)>;

  /// Starts preparing the first batch at once: one buffer of each size in
  /// `bytes` per input, twice.
  BatchPrefetcher(const std::vector<int64_t>& bytes, Fill fill);
  ~BatchPrefetcher();
  BatchPrefetcher(const BatchPrefetcher&) = delete;
  BatchPrefetcher& operator=(const BatchPrefetcher&) = delete;

  /// Waits for the next batch and returns its buffers (one per input),
  /// valid until the following call; starts preparing the one after.
  std::span<void* const> next();

 private:
  void work();

  Fill fill_;
  std::vector<std::vector<std::byte>> storage_[2];  // per set, per input
  std::vector<void*> views_[2];                     // per set: its buffers
  std::mutex mutex_;
  std::condition_variable changed_;
  int filling_ = 0;       // the set the thread writes (or will write next)
  bool wanted_ = false;   // a batch is asked for and not yet begun
  bool ready_ = false;    // set filling_ holds a batch nobody has taken
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;    // last: started once everything above exists
};

}  // namespace pf
