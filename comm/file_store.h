// The rendezvous store as files in a folder that every rank sees (a local
// folder for one host, a shared file system for several): no server needed.
#pragma once

#include <chrono>
#include <string>

#include "comm/store.h"

namespace pf {

/// Each key is a file in `directory` (created if missing), named after the
/// key with every character but letters, digits, '.', '_' and '-' written
/// as %HH (and a leading '.' too), so that any key stays inside the folder.
/// set() writes a hidden temporary file and renames it, so get() never
/// reads half a value; get() polls until the key exists or `timeout`
/// passes; add() holds a lock file (flock) while it reads and writes. Use a
/// fresh folder, or fresh keys, for each job.
class FileStore final : public Store {
 public:
  FileStore(std::string directory, std::chrono::milliseconds timeout);

  void set(const std::string& key, const std::string& value) override;
  std::string get(const std::string& key) override;
  bool check(const std::vector<std::string>& keys) override;
  int64_t add(const std::string& key, int64_t delta) override;

  const std::string& directory() const { return directory_; }

 private:
  std::string path_of(const std::string& key) const;
  std::string directory_;
  std::chrono::milliseconds timeout_;
};

}  // namespace pf
