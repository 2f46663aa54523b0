// What every communicator between processes watches through the rendezvous
// store: the job's first failure, each rank's heartbeat and what it computes.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "comm/store.h"

namespace pf {

struct WatchOptions {
  /// A wait ends with CommTimeout after this long while no rank computes; a
  /// rank computing one thing longer, or silent (no heartbeat) this long,
  /// fails the job.
  double timeout_s = 60;
  /// How often this rank publishes its heartbeat and looks at the others'.
  double heartbeat_s = 0.2;
  /// Keys in the store start with this, so that jobs sharing one do not meet.
  std::string prefix = "pf";
};

/// One rank's watchdog in a job of processes meeting through `store` (which
/// must outlive it). A thread of its own publishes this rank's heartbeat
/// (and what it computes) and, while this rank waits, ends the wait when any
/// rank failed (the first failure, kept in the store, is every rank's, in
/// the same words), another rank went silent or computed one thing past the
/// timeout, or no rank computed for the timeout. A communicator brackets
/// each wait with begin_wait and end_wait; how a wait is ended early is its
/// own business (a callback, or a wait that polls failed()).
class JobWatch {
 public:
  JobWatch(Store& store, int rank, int size, WatchOptions options);
  ~JobWatch();
  JobWatch(const JobWatch&) = delete;
  JobWatch& operator=(const JobWatch&) = delete;

  /// Publishes a first heartbeat and starts the thread: every rank past the
  /// rendezvous has one, so silence from the start counts too.
  void start();
  const WatchOptions& options() const { return options_; }
  /// `k` under the job's prefix.
  std::string key(const std::string& k) const { return options_.prefix + "/" + k; }

  /// Publishes `message` as the job's failure unless one came first; this
  /// rank's failure is then whichever did. Ends the current wait. `timeout`:
  /// the failure is this rank's wait timing out (CommTimeout, not CommAborted).
  void fail(const std::string& message, bool timeout = false);
  /// This rank waits for `what` ("stage 1 waits for ...") from now on;
  /// `end`, when given, is called (from any thread, under the watch's lock)
  /// to end the wait early. Throws CommAborted when the job has failed.
  void begin_wait(std::string what, std::function<void()> end = {});
  /// The wait is over, whatever ended it.
  void end_wait();
  /// CommTimeout when this rank's wait timed out, else CommAborted.
  [[noreturn]] void throw_failure() const;
  /// CommAborted when the job has failed.
  void check() const;
  bool failed() const;
  std::string error() const;

  void set_busy(const std::string& who, const std::string& what);
  void set_rank_names(std::vector<std::string> names);
  /// "rank 1 (stage 1, replica 0)" once set_rank_names was called, else "rank 1".
  std::string name(int rank) const;

 private:
  using Clock = std::chrono::steady_clock;
  void beat(uint64_t count);
  void look_at_peers();
  void watch();
  void end_wait_locked();

  Store& store_;
  int rank_, size_;
  WatchOptions options_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::string failure_;     // the job's, once known
  bool timed_out_ = false;  // the current wait ended by the timeout
  bool waiting_ = false;
  std::function<void()> end_;  // ends the current wait
  std::string waiting_for_;
  Clock::time_point last_busy_seen_;
  bool busy_ = false;
  std::string busy_text_;
  Clock::time_point busy_since_;
  std::vector<std::string> names_;
  std::map<int, std::pair<std::string, Clock::time_point>> beats_;  // per peer: last text and when it changed
  std::thread thread_;
};

}  // namespace pf
