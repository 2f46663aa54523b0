// The rendezvous store on a Redis server that every rank reaches: for
// clusters that run one already.
#pragma once

#include <chrono>
#include <mutex>
#include <string>

#include "comm/store.h"

struct redisContext;

namespace pf {

/// One connection to the server at host:port (connecting retries until
/// `timeout`); get() polls until the key is set or `timeout` passes. Safe to
/// share between threads. Keys live on in the server: give each job a prefix
/// of its own (pipeforge launch does).
class RedisStore final : public Store {
 public:
  RedisStore(const std::string& host, int port, std::chrono::milliseconds timeout);
  ~RedisStore() override;
  RedisStore(const RedisStore&) = delete;
  RedisStore& operator=(const RedisStore&) = delete;

  void set(const std::string& key, const std::string& value) override;
  std::string get(const std::string& key) override;
  bool check(const std::vector<std::string>& keys) override;
  int64_t add(const std::string& key, int64_t delta) override;

  /// The address of this host that the connection leaves from.
  std::string local_address() const;

 private:
  std::string where() const;
  std::string host_;
  int port_;
  std::chrono::milliseconds timeout_;
  redisContext* context_ = nullptr;
  std::mutex mutex_;
};

}  // namespace pf
