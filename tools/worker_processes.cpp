// Worker processes: fork and exec with pipes, pass output on, stop the rest
// when one fails.
#include "tools/worker_processes.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <set>

#include "ir/diagnostic.h"

namespace pf::tools {

namespace {

using Clock = std::chrono::steady_clock;

std::atomic<int> g_stop_signal{0};

void on_stop_signal(int sig) { g_stop_signal = sig; }

/// A child's end of the supervision.
struct Worker {
  pid_t pid = -1;
  int out = -1, err = -1;  // read ends of its stdout and stderr pipes; -1 once closed
  std::string out_line, err_line;  // a line still being read
  bool running = true;
};

void make_pipe(int fds[2]) {
  if (::pipe2(fds, O_CLOEXEC) != 0) throw Error(fmt::format("cannot create a pipe: {}", std::strerror(errno)));
}

pid_t start(const WorkerSpec& spec, int out_fd, int err_fd) {
  std::vector<char*> argv;
  for (const std::string& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw Error(fmt::format("cannot start {}: fork failed: {}", spec.name, std::strerror(errno)));
  if (pid > 0) return pid;
  // The child: only async-signal-safe calls until exec.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(127);  // the launcher died before prctl
  ::dup2(out_fd, STDOUT_FILENO);
  ::dup2(err_fd, STDERR_FILENO);
  for (const auto& [key, value] : spec.env) ::setenv(key.c_str(), value.c_str(), 1);
  ::execv(argv[0], argv.data());
  const char msg[] = "error: cannot start the worker program\n";
  (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
  ::_exit(127);
}

}  // namespace

int run_workers(const std::vector<WorkerSpec>& specs, std::ostream& out, std::ostream& err, double grace_s) {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  struct sigaction old_int {}, old_term {};
  ::sigaction(SIGINT, &action, &old_int);
  ::sigaction(SIGTERM, &action, &old_term);

  std::vector<Worker> workers(specs.size());
  std::set<std::string> said;  // stderr lines already passed on
  // The first worker to report an error speaks for the job (the others
  // report the same failure, or its consequences); -2: the launcher did.
  int reporter = -1;
  auto pass_on = [&](Worker& w, bool is_err, std::string_view data) {
    const int k = static_cast<int>(&w - workers.data());
    std::string& line = is_err ? w.err_line : w.out_line;
    for (char c : data) {
      if (c != '\n') {
        line += c;
        continue;
      }
      if (!is_err) {
        out << line << '\n' << std::flush;
      } else {
        if (reporter == -1 && line.starts_with("error:")) reporter = k;
        if ((reporter == -1 || reporter == k) && said.insert(line).second) err << line << '\n' << std::flush;
      }
      line.clear();
    }
  };
  auto drain = [&](int& fd, Worker& w, bool is_err) {
    char buffer[4096];
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n > 0) return pass_on(w, is_err, std::string_view(buffer, static_cast<size_t>(n)));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    ::close(fd);
    fd = -1;
    std::string& rest = is_err ? w.err_line : w.out_line;
    if (!rest.empty()) pass_on(w, is_err, "\n");
  };

  for (size_t k = 0; k < specs.size(); ++k) {
    int o[2], e[2];
    make_pipe(o);
    make_pipe(e);
    workers[k].pid = start(specs[k], o[1], e[1]);
    ::close(o[1]);
    ::close(e[1]);
    workers[k].out = o[0];
    workers[k].err = e[0];
  }

  int status_code = 0;
  bool stopping = false;
  Clock::time_point kill_at{};
  auto stop_others = [&] {
    if (stopping) return;
    stopping = true;
    for (Worker& w : workers)
      if (w.running) ::kill(w.pid, SIGTERM);
    kill_at = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(grace_s));
  };
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<std::pair<size_t, bool>> owner;  // worker, stderr
    for (size_t k = 0; k < workers.size(); ++k) {
      if (workers[k].out >= 0) {
        fds.push_back({workers[k].out, POLLIN, 0});
        owner.emplace_back(k, false);
      }
      if (workers[k].err >= 0) {
        fds.push_back({workers[k].err, POLLIN, 0});
        owner.emplace_back(k, true);
      }
    }
    const bool any_running = std::any_of(workers.begin(), workers.end(), [](const Worker& w) { return w.running; });
    if (!any_running && fds.empty()) break;
    if (!fds.empty() && ::poll(fds.data(), fds.size(), 50) > 0) {
      for (size_t i = 0; i < fds.size(); ++i)
        if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
          Worker& w = workers[owner[i].first];
          drain(owner[i].second ? w.err : w.out, w, owner[i].second);
        }
    } else if (fds.empty()) {
      ::usleep(20000);
    }
    if (g_stop_signal != 0 && !stopping) {
      err << fmt::format("error: stopped by signal {} ({}); stopping every worker\n", g_stop_signal.load(),
                         ::strsignal(g_stop_signal))
          << std::flush;
      status_code = 1;
      stop_others();
    }
    for (size_t k = 0; k < workers.size(); ++k) {
      Worker& w = workers[k];
      if (!w.running) continue;
      int status = 0;
      const pid_t got = ::waitpid(w.pid, &status, WNOHANG);
      if (got != w.pid) continue;
      w.running = false;
      const bool failed = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
      if (!failed || stopping) continue;  // the launcher's own SIGTERM is no news
      status_code = 1;
      if (WIFSIGNALED(status) && reporter == -1) {
        err << fmt::format("error: {} was killed by signal {} ({})\n", specs[k].name, WTERMSIG(status),
                           ::strsignal(WTERMSIG(status)))
            << std::flush;
        reporter = -2;
      }
      stop_others();
    }
    if (stopping && Clock::now() >= kill_at)
      for (Worker& w : workers)
        if (w.running) ::kill(w.pid, SIGKILL);
  }
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);
  g_stop_signal = 0;
  return status_code;
}

}  // namespace pf::tools
