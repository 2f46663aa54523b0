// The safetensors reader on any file: sizes and offsets that disagree,
// overflow or point outside the file must give pf::Error, never a read
// outside it (AddressSanitizer watches).
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "ir/diagnostic.h"
#include "runtime/safetensors.h"

namespace {

// One file per fuzzing process, rewritten for every input: the reader takes
// a path, as the runtime gives it.
const std::string& scratch_path() {
  static const std::string path = "/tmp/pf-safetensors-fuzz-" + std::to_string(::getpid());
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = scratch_path();
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return 0;
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  try {
    const pf::SafeTensors file = pf::SafeTensors::read(path);
    for (const std::string& name : file.names()) (void)file.at(name).bytes.size();
  } catch (const pf::Error&) {
  }
  return 0;
}
