// A key-value store that the ranks of a job share: where they meet before
// they can talk (rendezvous), and where they leave what every other rank may
// need to read at any time (a failure, each rank's heartbeat).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pf {

class Store {
 public:
  virtual ~Store() = default;

  virtual void set(const std::string& key, const std::string& value) = 0;
  /// The value of `key`, once some rank has set it; pf::Error naming the key
  /// and the store when that takes longer than the store's timeout.
  virtual std::string get(const std::string& key) = 0;
  /// Whether every key is set now, without waiting.
  virtual bool check(const std::vector<std::string>& keys) = 0;
  /// Adds `delta` to the number under `key` (0 when unset), atomically for
  /// every rank, and returns the sum.
  virtual int64_t add(const std::string& key, int64_t delta) = 0;
};

}  // namespace pf
