// The Redis store, over hiredis: SET, GET (polled), EXISTS and INCRBY.
#include "comm/redis_store.h"

#include <fmt/format.h>
#include <hiredis/hiredis.h>

#include <memory>
#include <thread>
#include <vector>

#include "comm/socket_address.h"
#include "ir/diagnostic.h"

namespace pf {

namespace {

using Clock = std::chrono::steady_clock;

struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;

}  // namespace

RedisStore::RedisStore(const std::string& host, int port, std::chrono::milliseconds timeout)
    : host_(host), port_(port), timeout_(timeout) {
  const auto deadline = Clock::now() + timeout;
  std::string why;
  for (auto pause = std::chrono::milliseconds(10);; pause = std::min(pause * 2, std::chrono::milliseconds(500))) {
    timeval tv{1, 0};
    redisContext* c = redisConnectWithTimeout(host.c_str(), port, tv);
    if (c && !c->err) {
      context_ = c;
      return;
    }
    why = c ? c->errstr : "out of memory";
    if (c) redisFree(c);
    if (Clock::now() + pause >= deadline) break;
    std::this_thread::sleep_for(pause);
  }
  throw Error(fmt::format("cannot reach the Redis rendezvous store at {} after {:.0f} s ({}); is redis-server "
                          "running there?",
                          where(), std::chrono::duration<double>(timeout).count(), why));
}

RedisStore::~RedisStore() {
  if (context_) redisFree(context_);
}

std::string RedisStore::where() const { return fmt::format("{}:{}", host_, port_); }

namespace {

Reply command(redisContext* c, const std::string& where, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lengths;
  for (const std::string& a : args) {
    argv.push_back(a.data());
    lengths.push_back(a.size());
  }
  Reply r(static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(args.size()), argv.data(), lengths.data())));
  if (!r) throw Error(fmt::format("lost the Redis rendezvous store at {}: {}", where, c->errstr));
  if (r->type == REDIS_REPLY_ERROR)
    throw Error(fmt::format("the Redis rendezvous store at {} answered {}: {}", where, args[0],
                            std::string(r->str, r->len)));
  return r;
}

}  // namespace

void RedisStore::set(const std::string& key, const std::string& value) {
  std::lock_guard lock(mutex_);
  command(context_, where(), {"SET", key, value});
}

std::string RedisStore::get(const std::string& key) {
  const auto deadline = Clock::now() + timeout_;
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      Reply r = command(context_, where(), {"GET", key});
      if (r->type == REDIS_REPLY_STRING) return std::string(r->str, r->len);
    }
    if (Clock::now() >= deadline)
      throw Error(fmt::format("Redis rendezvous store at {}: no value for '{}' after {:.0f} s (has every rank "
                              "started?)",
                              where(), key, std::chrono::duration<double>(timeout_).count()));
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

bool RedisStore::check(const std::vector<std::string>& keys) {
  std::vector<std::string> args = {"EXISTS"};
  args.insert(args.end(), keys.begin(), keys.end());
  std::lock_guard lock(mutex_);
  Reply r = command(context_, where(), args);
  return r->type == REDIS_REPLY_INTEGER && r->integer == static_cast<long long>(keys.size());
}

int64_t RedisStore::add(const std::string& key, int64_t delta) {
  std::lock_guard lock(mutex_);
  Reply r = command(context_, where(), {"INCRBY", key, std::to_string(delta)});
  return r->integer;
}

std::string RedisStore::local_address() const { return pf::local_address(context_->fd, where()); }

}  // namespace pf
