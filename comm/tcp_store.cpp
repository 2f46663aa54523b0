// The TCP store: a thread per client connection on the server, one blocking
// request at a time on the client.
//
// A request is an op byte ('S'et, 'G'et, 'C'heck, 'A'dd), the key's length
// (4 bytes) and bytes, the value's length (8 bytes) and bytes; a reply is a
// status byte ('K' ok, 'T' timed out) and a length-prefixed payload. Get
// carries its timeout in milliseconds as its value, check its keys joined by
// newlines, add its delta; both sides are little-endian x86-64.
#include "comm/tcp_store.h"

#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <map>
#include <thread>
#include <vector>

#include "comm/socket_address.h"
#include "ir/diagnostic.h"

namespace pf {

namespace {

using Clock = std::chrono::steady_clock;

bool write_all(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

bool read_all(int fd, void* data, size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t k = ::recv(fd, p, n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

bool write_blob(int fd, const std::string& s) {
  const uint64_t n = s.size();
  return write_all(fd, &n, sizeof n) && write_all(fd, s.data(), s.size());
}

bool read_blob(int fd, std::string& s) {
  uint64_t n = 0;
  if (!read_all(fd, &n, sizeof n) || n > (uint64_t{1} << 32)) return false;
  s.resize(n);
  return read_all(fd, s.data(), n);
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t end = std::min(text.find('\n', start), text.size());
    out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------

struct TcpStoreServer::State {
  std::mutex mutex;
  std::condition_variable changed;
  std::map<std::string, std::string> values;
  bool stopping = false;
  int listen_fd = -1;
  int port = 0;
  std::vector<int> clients;
  std::vector<std::thread> threads;
  std::thread acceptor;

  void serve(int fd) {
    for (;;) {
      char op = 0;
      uint32_t key_length = 0;
      std::string key, value;
      if (!read_all(fd, &op, 1) || !read_all(fd, &key_length, sizeof key_length) || key_length > (1u << 20))
        break;
      key.resize(key_length);
      if (!read_all(fd, key.data(), key_length) || !read_blob(fd, value)) break;
      char status = 'K';
      std::string reply;
      {
        std::unique_lock lock(mutex);
        if (op == 'S') {
          values[key] = value;
          changed.notify_all();
        } else if (op == 'G') {
          const auto deadline = Clock::now() + std::chrono::milliseconds(std::stoll(value));
          const bool found = changed.wait_until(lock, deadline, [&] { return stopping || values.count(key) > 0; });
          if (found && values.count(key)) {
            reply = values[key];
          } else {
            status = 'T';
          }
        } else if (op == 'C') {
          bool all = true;
          for (const std::string& k : split_lines(key)) all = all && values.count(k) > 0;
          reply.assign(1, all ? '1' : '0');
        } else if (op == 'A') {
          const int64_t now = (values.count(key) ? std::stoll(values[key]) : 0) + std::stoll(value);
          values[key] = std::to_string(now);
          reply = values[key];
          changed.notify_all();
        } else {
          break;  // not a client of this store
        }
      }
      if (!write_all(fd, &status, 1) || !write_blob(fd, reply)) break;
    }
    // The client is gone (or stopping): its connection only.
  }

  void accept_loop() {
    for (;;) {
      const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
      std::lock_guard lock(mutex);
      if (stopping) {
        if (fd >= 0) ::close(fd);
        return;
      }
      if (fd < 0) continue;
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      clients.push_back(fd);
      threads.emplace_back([this, fd] { serve(fd); });
    }
  }
};

TcpStoreServer::TcpStoreServer(int port) : state_(std::make_shared<State>()) {
  State& s = *state_;
  s.listen_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s.listen_fd < 0) throw Error(fmt::format("rendezvous store: cannot open a socket: {}", std::strerror(errno)));
  const int one = 1;
  ::setsockopt(s.listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  socklen_t len = sizeof addr;
  if (::bind(s.listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(s.listen_fd, 128) != 0 ||
      ::getsockname(s.listen_fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const std::string why = std::strerror(errno);
    ::close(s.listen_fd);
    throw Error(fmt::format("rendezvous store: cannot listen on port {}: {} (is another job using it? choose "
                            "another with --master-port)",
                            port, why));
  }
  s.port = ntohs(addr.sin_port);
  s.acceptor = std::thread([state = state_] { state->accept_loop(); });
}

TcpStoreServer::~TcpStoreServer() {
  State& s = *state_;
  {
    std::lock_guard lock(s.mutex);
    s.stopping = true;
    for (int fd : s.clients) ::shutdown(fd, SHUT_RDWR);
    s.changed.notify_all();
  }
  ::shutdown(s.listen_fd, SHUT_RDWR);
  s.acceptor.join();
  ::close(s.listen_fd);
  for (std::thread& t : s.threads) t.join();
  for (int fd : s.clients) ::close(fd);
}

int TcpStoreServer::port() const { return state_->port; }

// ---------------------------------------------------------------------------

TcpStore::TcpStore(const std::string& host, int port, std::chrono::milliseconds timeout)
    : host_(host), port_(port), timeout_(timeout) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  const auto deadline = Clock::now() + timeout;
  std::string why;
  for (auto pause = std::chrono::milliseconds(10);; pause = std::min(pause * 2, std::chrono::milliseconds(500))) {
    addrinfo* found = nullptr;
    const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
    if (rc != 0) {
      why = ::gai_strerror(rc);
    } else {
      const int fd = ::socket(found->ai_family, found->ai_socktype | SOCK_CLOEXEC, found->ai_protocol);
      if (fd >= 0 && ::connect(fd, found->ai_addr, found->ai_addrlen) == 0) {
        ::freeaddrinfo(found);
        const int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fd_ = fd;
        return;
      }
      why = std::strerror(errno);
      if (fd >= 0) ::close(fd);
      ::freeaddrinfo(found);
    }
    if (Clock::now() + pause >= deadline) break;
    std::this_thread::sleep_for(pause);
  }
  throw Error(fmt::format("cannot reach the rendezvous store at {} after {:.0f} s ({}); is rank 0 running there?",
                          where(), std::chrono::duration<double>(timeout).count(), why));
}

TcpStore::~TcpStore() {
  if (fd_ >= 0) ::close(fd_);
}

std::string TcpStore::local_address() const { return pf::local_address(fd_, where()); }

std::string TcpStore::where() const { return fmt::format("{}:{}", host_, port_); }

std::string TcpStore::request(char op, const std::string& key, const std::string& value) {
  std::lock_guard lock(mutex_);
  const auto key_length = static_cast<uint32_t>(key.size());
  char status = 0;
  std::string reply;
  if (!write_all(fd_, &op, 1) || !write_all(fd_, &key_length, sizeof key_length) ||
      !write_all(fd_, key.data(), key.size()) || !write_blob(fd_, value) || !read_all(fd_, &status, 1) ||
      !read_blob(fd_, reply))
    throw Error(fmt::format("lost the rendezvous store at {} (rank 0's process has ended?)", where()));
  if (status == 'T')
    throw Error(fmt::format("rendezvous store at {}: no value for '{}' after {:.0f} s (has every rank started?)",
                            where(), key, std::chrono::duration<double>(timeout_).count()));
  return reply;
}

void TcpStore::set(const std::string& key, const std::string& value) { request('S', key, value); }

std::string TcpStore::get(const std::string& key) { return request('G', key, std::to_string(timeout_.count())); }

bool TcpStore::check(const std::vector<std::string>& keys) {
  std::string joined;
  for (const std::string& k : keys) {
    if (!joined.empty()) joined += '\n';
    joined += k;
  }
  return request('C', joined, "") == "1";
}

int64_t TcpStore::add(const std::string& key, int64_t delta) {
  return std::stoll(request('A', key, std::to_string(delta)));
}

}  // namespace pf
