// One batch ahead: a thread that fills the next batch's buffers while the current batch is used.
#include "runtime/batch_prefetcher.h"

namespace pf {

BatchPrefetcher::BatchPrefetcher(const std::vector<int64_t>& bytes, Fill fill) : fill_(std::move(fill)) {
  for (int set = 0; set < 2; ++set) {
    for (int64_t b : bytes) storage_[set].emplace_back(static_cast<size_t>(b));
    for (auto& buffer : storage_[set]) views_[set].push_back(buffer.data());
  }
  wanted_ = true;
  thread_ = std::thread([this] { work(); });
}

BatchPrefetcher::~BatchPrefetcher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

void BatchPrefetcher::work() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    changed_.wait(lock, [this] { return wanted_ || stop_; });
    if (stop_) return;
    wanted_ = false;
    const int set = filling_;
    lock.unlock();
    // Any exception: none may escape the thread (std::terminate).
    std::exception_ptr error;
    try {
      fill_(views_[set]);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    if (error) error_ = error;
    ready_ = true;
    changed_.notify_all();
  }
}

std::span<void* const> BatchPrefetcher::next() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] { return ready_ || error_ != nullptr; });
  if (error_) std::rethrow_exception(error_);
  ready_ = false;
  const int set = filling_;
  filling_ = 1 - set;
  wanted_ = true;
  lock.unlock();
  changed_.notify_all();
  return views_[set];
}

}  // namespace pf
