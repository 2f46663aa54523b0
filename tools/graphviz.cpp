// Running Graphviz's `dot` on a plan's picture.
#include <fcntl.h>
#include <fmt/format.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "ir/diagnostic.h"
#include "tools/plan_render.h"

extern char** environ;

namespace pf::tools {

namespace {

// A directory removed with everything in it when the scope ends.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "pipeforge-dump-XXXXXX").string();
    if (!::mkdtemp(pattern.data()))
      throw Error(fmt::format("cannot create a temporary directory: {}", std::strerror(errno)));
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const char* name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

std::string dot_to_svg(const std::string& dot_text) {
  TempDir dir;
  std::string in = dir.file("plan.dot"), out = dir.file("plan.svg"), err = dir.file("dot.err");
  {
    std::ofstream f(in, std::ios::binary);
    f << dot_text;
    if (!f.flush()) throw Error("cannot write the temporary file '" + in + "'");
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<std::string> args = {"dot", "-Tsvg", "-o", out, in};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, "dot", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc == ENOENT)
    throw Error(
        "cannot draw SVG: Graphviz's 'dot' is not on the PATH; install the graphviz package "
        "(scripts/setup.sh does) or use --format dot");
  if (rc != 0) throw Error(fmt::format("cannot run Graphviz's 'dot': {}", std::strerror(rc)));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) throw Error(fmt::format("waiting for Graphviz's 'dot' failed: {}", std::strerror(errno)));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string message = read_all(err);
    while (!message.empty() && (message.back() == '\n' || message.back() == '\r')) message.pop_back();
    std::string how = WIFEXITED(status) ? fmt::format("exit status {}", WEXITSTATUS(status))
                                        : fmt::format("signal {}", WTERMSIG(status));
    throw Error(fmt::format("Graphviz's 'dot -Tsvg' failed ({}){}", how, message.empty() ? "" : ": " + message));
  }
  return read_all(out);
}

}  // namespace pf::tools
