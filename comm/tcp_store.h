// The rendezvous store over TCP: rank 0's process serves it, every rank
// (rank 0 too) is a client. Gloo brings no TCP store of its own, so this is
// Pipeforge's, in the manner of PyTorch's c10d TCPStore.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "comm/store.h"

namespace pf {

/// Serves one store on a thread of its own, from construction until
/// destruction. Binds every interface (a client on another host reaches it
/// through rank 0's address); `port` 0 picks a free port (see port()). A
/// client that dies only loses its connection.
class TcpStoreServer {
 public:
  explicit TcpStoreServer(int port);
  ~TcpStoreServer();
  TcpStoreServer(const TcpStoreServer&) = delete;
  TcpStoreServer& operator=(const TcpStoreServer&) = delete;

  int port() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

/// One client connection to a TcpStoreServer, safe to share between
/// threads (one request at a time). Connecting retries until `timeout`
/// passes, then fails naming the address; get() waits on the server (no
/// polling) up to the same timeout.
class TcpStore final : public Store {
 public:
  TcpStore(const std::string& host, int port, std::chrono::milliseconds timeout);
  ~TcpStore() override;
  TcpStore(const TcpStore&) = delete;
  TcpStore& operator=(const TcpStore&) = delete;

  void set(const std::string& key, const std::string& value) override;
  std::string get(const std::string& key) override;
  bool check(const std::vector<std::string>& keys) override;
  int64_t add(const std::string& key, int64_t delta) override;

  /// The address of this host that the connection to the server leaves
  /// from: one the other ranks can reach this one at.
  std::string local_address() const;

 private:
  /// Sends one request and returns the reply's payload; `op` as the server
  /// reads it.
  std::string request(char op, const std::string& key, const std::string& value);
  std::string where() const;

  std::string host_;
  int port_;
  std::chrono::milliseconds timeout_;
  int fd_ = -1;
  std::mutex mutex_;
};

}  // namespace pf
