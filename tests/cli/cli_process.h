// Helpers for the black-box CLI tests: run a binary with argv (no shell), capture stdout/stderr.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace ab::cli {

struct Result {
  int exit_code = -1;   ///< exit status, or 128 + signal
  std::string out, err;
  /// The process's own CPU (user + system of its threads, not of its children), read from
  /// /proc/PID/stat while it was a zombie; -1 if unreadable.
  double own_cpu_s = -1;
};

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// A started process that runs in `dir`, its stdout/stderr going to files there.
class Process {
 public:
  /// `in_child` runs after fork, before exec (e.g. to join a cgroup).
  Process(const std::vector<std::string>& argv, const std::filesystem::path& dir,
          const std::function<void()>& in_child = nullptr)
      : out_(dir / ("stdout-" + std::to_string(counter()))), err_(dir / ("stderr-" + std::to_string(counter()))) {
    ++counter();
    std::vector<char*> cargv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      if (in_child) in_child();
      if (::chdir(dir.c_str()) != 0) ::_exit(126);
      int o = ::open(out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int e = ::open(err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int n = ::open("/dev/null", O_RDONLY);
      ::dup2(n, 0);
      ::dup2(o, 1);
      ::dup2(e, 2);
      ::execv(cargv[0], cargv.data());
      ::_exit(127);
    }
  }
  pid_t pid() const { return pid_; }
  void signal(int sig) const { ::kill(pid_, sig); }
  /// Waits for the process; returns its result.
  Result wait() {
    Result r;
    siginfo_t info{};
    while (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOWAIT) < 0 && errno == EINTR) {
    }
    const std::string stat = slurp("/proc/" + std::to_string(pid_) + "/stat");
    if (const auto close = stat.rfind(')'); close != std::string::npos) {
      // After "(comm)": state, then fields 4..; utime and stime are fields 14 and 15.
      std::istringstream in(stat.substr(close + 1));
      std::string field;
      double utime = -1, stime = -1;
      for (int i = 3; i <= 15 && in >> field; ++i) {
        if (i == 14) utime = std::stod(field);
        if (i == 15) stime = std::stod(field);
      }
      if (utime >= 0 && stime >= 0) r.own_cpu_s = (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
    }
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = slurp(out_);
    r.err = slurp(err_);
    return r;
  }
  /// stdout so far (for waiting on progress lines).
  std::string out_so_far() const { return slurp(out_); }
  std::string err_so_far() const { return slurp(err_); }

 private:
  static int& counter() {
    static int n = 0;
    return n;
  }
  std::filesystem::path out_, err_;
  pid_t pid_ = -1;
};

inline Result run(const std::vector<std::string>& argv, const std::filesystem::path& dir) {
  Process p(argv, dir);
  return p.wait();
}

/// Synthesises `pieces` ("1000:0.3" = 1000 Hz for 0.3 s) into a 16 kHz mono WAV with sox; false
/// if sox failed.
inline bool synth(const std::filesystem::path& path, const std::vector<std::string>& pieces,
                  const std::filesystem::path& dir) {
  std::filesystem::create_directories(path.parent_path());
  std::vector<std::string> argv = {"/usr/bin/sox", "-n", "-r", "16000", "-c", "1", "-b", "16", path.string()};
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    if (i) argv.push_back(":");
    const auto colon = pieces[i].find(':');
    argv.insert(argv.end(), {"synth", pieces[i].substr(colon + 1), "sine", pieces[i].substr(0, colon)});
  }
  return run(argv, dir).exit_code == 0;
}

/// Polls `done` every 20 ms for up to `limit_ms`; true once it holds.
inline bool eventually(const std::function<bool()>& done, int limit_ms = 20000) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(limit_ms);
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

/// Pids of live (non-zombie) processes whose command line contains `needle`.
inline std::vector<pid_t> processes_with(const std::string& needle) {
  std::vector<pid_t> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = slurp(e.path() / "cmdline");
    for (auto& c : cmdline)
      if (c == '\0') c = ' ';
    const std::string stat = slurp(e.path() / "stat");
    if (cmdline.find(needle) != std::string::npos && stat.find(") Z ") == std::string::npos)
      out.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return out;
}

}  // namespace ab::cli
