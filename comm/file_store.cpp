// The file store: a file per key, written by rename.
#include "comm/file_store.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "ir/diagnostic.h"

namespace pf {

namespace {

namespace fs = std::filesystem;

bool plain(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'; }

/// Holds an exclusive flock on a file while it lives.
class FileLock {
 public:
  explicit FileLock(const std::string& path) : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)) {
    if (fd_ < 0 || ::flock(fd_, LOCK_EX) != 0) throw Error(fmt::format("file store: cannot lock {}", path));
  }
  ~FileLock() {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_;
};

}  // namespace

FileStore::FileStore(std::string directory, std::chrono::milliseconds timeout)
    : directory_(std::move(directory)), timeout_(timeout) {
  std::error_code ec;
  fs::create_directories(directory_, ec);
  if (ec) throw Error(fmt::format("file store: cannot create {}: {}", directory_, ec.message()));
}

std::string FileStore::path_of(const std::string& key) const {
  if (key.empty()) throw Error("file store: empty key");
  std::string name;
  for (size_t i = 0; i < key.size(); ++i) {
    const char c = key[i];
    if (plain(c) && !(i == 0 && c == '.'))
      name += c;
    else
      name += fmt::format("%{:02X}", static_cast<unsigned char>(c));
  }
  return (fs::path(directory_) / name).string();
}

void FileStore::set(const std::string& key, const std::string& value) {
  const std::string path = path_of(key);
  // A hidden temporary name unique to this process and thread, then an
  // atomic rename.
  const std::string tmp = (fs::path(directory_) / fmt::format(".{}.{}.{}.tmp", fs::path(path).filename().string(),
                                                               ::getpid(),
                                                               std::hash<std::thread::id>{}(std::this_thread::get_id())))
                              .string();
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(value.data(), static_cast<std::streamsize>(value.size()));
    out.close();
    if (!out) throw Error(fmt::format("file store: cannot write {}", tmp));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw Error(fmt::format("file store: cannot rename {} to {}: {}", tmp, path, ec.message()));
}

std::string FileStore::get(const std::string& key) {
  const std::string path = path_of(key);
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    std::ifstream in(path, std::ios::binary);
    if (in) {
      std::ostringstream s;
      s << in.rdbuf();
      return s.str();
    }
    if (std::chrono::steady_clock::now() >= deadline)
      throw Error(fmt::format("file store: no value for '{}' in {} after {} ms (has the other rank started?)", key,
                              directory_, timeout_.count()));
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

bool FileStore::check(const std::vector<std::string>& keys) {
  std::error_code ec;
  for (const std::string& k : keys)
    if (!fs::exists(path_of(k), ec)) return false;
  return true;
}

int64_t FileStore::add(const std::string& key, int64_t delta) {
  FileLock lock((fs::path(directory_) / ".add.lock").string());
  const std::string path = path_of(key);
  int64_t value = 0;
  if (std::ifstream in(path); in) in >> value;
  value += delta;
  set(key, std::to_string(value));
  return value;
}

}  // namespace pf
