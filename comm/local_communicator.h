// The communicator of ranks that are threads of one process: messages are
// lent, not copied (the receiver reads the sender's buffer in place), and
// the world keeps the watchdog's view of every rank.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace pf {

/// `size` ranks in this process, each with its Communicator. A step runs
/// one thread per rank; the thread that starts them calls watch(), which
/// returns once every rank called finish(), and is the watchdog meanwhile.
class LocalWorld {
 public:
  /// Waits time out after `timeout_s` without any rank computing, and a
  /// computation that runs longer than `timeout_s` fails the step.
  LocalWorld(int size, double timeout_s);
  ~LocalWorld();
  LocalWorld(const LocalWorld&) = delete;
  LocalWorld& operator=(const LocalWorld&) = delete;

  int size() const;
  Communicator& rank(int r);

  /// Before a step: no rank finished, no failure, no message left over
  /// (a failed step may leave some).
  void start_step();
  /// Rank `r`'s thread has returned from the step (however it ended).
  void finish(int r);
  /// Waits until every rank finished. Fails the step (abort) when a rank
  /// has computed one thing for longer than the timeout, and gives up on
  /// the ranks that have not finished the timeout after a failure: returns
  /// them (empty when all finished).
  std::vector<int> watch();
  /// The step's failure: empty when none.
  std::string error() const;

 private:
  struct State;
  class Rank;
  std::shared_ptr<State> state_;  // shared with the ranks' communicators
  std::vector<std::unique_ptr<Rank>> ranks_;
};

}  // namespace pf
