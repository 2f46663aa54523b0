// Writing a file by rename.
#include "support/atomic_file.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "ir/diagnostic.h"

namespace pf {

void write_file_atomically(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  auto failure = [&](const std::string& what) {
    return Error(fmt::format("cannot write '{}': {} ({})", path, what, std::strerror(errno)));
  };
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw failure("creating " + tmp);
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      Error e = failure("writing " + tmp);
      ::close(fd);
      ::unlink(tmp.c_str());
      throw e;
    }
    done += static_cast<size_t>(n);
  }
  // On disk before the rename, or a crash could leave an empty file under
  // the final name.
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    Error e = failure("flushing " + tmp);
    ::unlink(tmp.c_str());
    throw e;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    Error e = failure("renaming " + tmp);
    ::unlink(tmp.c_str());
    throw e;
  }
}

}  // namespace pf
