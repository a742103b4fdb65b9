// ProcessRunner: fork/exec with setpgid, oom_score_adj and PR_SET_PDEATHSIG; reaping with wait4.
//
// Plain fork/exec rather than Boost.Process 1.74: we need setpgid, oom_score_adj and the
// parent-death signal set in the child between fork and exec, and a non-blocking wait4 with
// rusage, which Boost.Process 1.74 does not expose without its own SIGCHLD machinery.
#include "orchestrator/process_runner.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/wire_path.h"
#include "memguard/process_memory.h"
#include "worker/status_block.h"

namespace fs = std::filesystem;

namespace ab {

std::int64_t monotonic_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

std::string resolve_program(const std::string& program) {
  if (program.empty()) return {};
  if (program.find('/') != std::string::npos) return ::access(program.c_str(), X_OK) == 0 ? program : std::string();
  const char* path_env = std::getenv("PATH");
  std::string path = path_env ? path_env : "/usr/local/bin:/usr/bin:/bin";
  std::size_t pos = 0;
  while (pos <= path.size()) {
    std::size_t colon = path.find(':', pos);
    if (colon == std::string::npos) colon = path.size();
    std::string dir = path.substr(pos, colon - pos);
    if (dir.empty()) dir = ".";
    std::string candidate = dir + "/" + program;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(candidate.c_str(), X_OK) == 0)
      return candidate;
    pos = colon + 1;
  }
  return {};
}

std::string log_tail(const fs::path& log, std::size_t max_bytes) {
  std::ifstream in(log, std::ios::binary);
  if (!in) return {};
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff from = size > static_cast<std::streamoff>(max_bytes) ? size - static_cast<std::streamoff>(max_bytes) : 0;
  in.seekg(from);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (from > 0) {
    auto nl = text.find('\n');
    if (nl != std::string::npos) text.erase(0, nl + 1);
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

struct ProcessRunner::Proc {
  pid_t pid = 0;
  bool persistent = false;
  int stdin_fd = -1;
  int stdout_fd = -1;
  std::string out_buf;
  fs::path log;
  bool ready = false;
  bool busy = false;
  JobId job = 0;
  std::string job_name;
  std::int64_t job_started_ms = 0;
  std::uint64_t job_started_cpu_ticks = 0;  ///< persistent workers: the process's CPU at job start
  /// This (the parent) process's RSS when it forked the command. A child's ru_maxrss counts its
  /// pre-exec copy of the parent, so only a figure above this says something about the command.
  std::uint64_t parent_rss_at_fork_bytes = 0;
  bool kill_sent = false;
  std::int64_t sigkill_at_ms = -1;   ///< -1: no escalation pending
  bool exiting = false;              ///< told to exit (stdin closed); reaped silently
  std::optional<std::uint64_t> first_idle_rss_bytes;
  std::optional<JobEnd> pending;     ///< a result line arrived; delivered at once
  bool exited = false;
  std::unique_ptr<StatusBlock> status;  ///< built-in engine; the shm object goes with it
  std::uint64_t last_heartbeat = 0;
  std::int64_t heartbeat_moved_ms = 0;  ///< parent's monotonic clock
  StatusSnapshot last_status;
};

namespace {

/// A persistent worker's CPU so far (utime + stime of all its threads); 0 if it is gone. The
/// difference across one job is that job's CPU time, which wait4's rusage gives only at exit.
std::uint64_t cpu_ticks_of(pid_t pid) {
  auto stat = read_proc_stat("/proc", pid);
  return stat ? stat->cpu_ticks : 0;
}

/// This process's RSS (0 if unreadable).
std::uint64_t own_rss_bytes() {
  auto statm = read_statm("/proc", ::getpid());
  return statm ? statm->resident_bytes : 0;
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

std::string sanitize(const std::string& name) {
  std::string s;
  for (char c : name) s += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_') ? c : '_';
  if (s.size() > 80) s = s.substr(s.size() - 80);
  return s;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    std::string s = "killed by signal " + std::to_string(sig);
    const char* name = strsignal(sig);
    if (name) s += std::string(" (") + name + ")";
    return s;
  }
  return "ended with wait status " + std::to_string(status);
}

}  // namespace

std::size_t remove_stale_status_blocks() {
  std::size_t removed = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/dev/shm", ec)) {
    const std::string name = entry.path().filename().string();
    const std::string prefix = "ab-status-";
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    char* end = nullptr;
    const long pid = std::strtol(name.c_str() + prefix.size(), &end, 10);
    if (pid <= 0 || *end != '-') continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // its parent is alive
    if (boost::interprocess::shared_memory_object::remove(name.c_str())) ++removed;
  }
  return removed;
}

ProcessRunner::ProcessRunner(ProcessRunnerConfig config) : config_(std::move(config)) {
  if (config_.status_blocks) remove_stale_status_blocks();
  std::error_code ec;
  if (!config_.log_dir.empty()) fs::create_directories(config_.log_dir, ec);
  // A worker that dies while we write its job line must not kill the parent.
  ::signal(SIGPIPE, SIG_IGN);
}

ProcessRunner::~ProcessRunner() { shutdown(2000); }

std::shared_ptr<ProcessRunner::Proc> ProcessRunner::spawn(const std::vector<std::string>& argv_in, bool persistent,
                                                          const std::string& log_name, std::string& error) {
  std::vector<std::string> argv = argv_in;
  std::unique_ptr<StatusBlock> status;
  if (persistent && config_.status_blocks) {
    const std::string name = "ab-status-" + std::to_string(::getpid()) + "-" + std::to_string(next_worker_);
    try {
      status = StatusBlock::create(name);
    } catch (const std::exception& e) {
      error = "cannot create the worker's status block /dev/shm/" + name + " (" + e.what() +
              "); check that /dev/shm is writable and not full";
      return nullptr;
    }
    argv.insert(argv.end(), {"--status-shm", name});
  }
  const std::string program = resolve_program(argv.empty() ? std::string() : argv[0]);
  if (program.empty()) {
    error = "command '" + (argv.empty() ? std::string() : argv[0]) +
            "' not found or not executable; check the program after '--' (or --model's worker) and $PATH";
    return nullptr;
  }
  auto p = std::make_shared<Proc>();
  p->persistent = persistent;
  p->status = std::move(status);
  p->heartbeat_moved_ms = monotonic_ms();
  p->log = config_.log_dir / log_name;
  int log_fd = ::open(p->log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) log_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int in_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
  if (::pipe2(err_pipe, O_CLOEXEC) != 0 ||
      (persistent && (::pipe2(in_pipe, O_CLOEXEC) != 0 || ::pipe2(out_pipe, O_CLOEXEC) != 0))) {
    error = std::string("cannot create pipes: ") + std::strerror(errno) + "; too many open files?";
    for (int fd : {log_fd, null_fd, in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]})
      if (fd >= 0) ::close(fd);
    return nullptr;
  }
  // Everything the child needs is prepared before fork: between fork and exec only
  // async-signal-safe calls (the sampler thread may hold the malloc lock).
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  char adj[16];
  int adj_len = std::snprintf(adj, sizeof adj, "%d\n", config_.oom_score_adj);
  const pid_t parent = ::getpid();
  const int death_signal = persistent ? SIGTERM : SIGKILL;

  const std::uint64_t parent_rss_bytes = own_rss_bytes();
  pid_t pid = ::fork();
  if (pid < 0) {
    error = std::string("fork failed: ") + std::strerror(errno) + "; the machine is out of processes or memory";
    for (int fd : {log_fd, null_fd, in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]})
      if (fd >= 0) ::close(fd);
    return nullptr;
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, death_signal);
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl took effect
    int adj_fd = ::open("/proc/self/oom_score_adj", O_WRONLY);
    if (adj_fd >= 0) {
      (void)!::write(adj_fd, adj, static_cast<std::size_t>(adj_len));
      ::close(adj_fd);
    }
    ::signal(SIGPIPE, SIG_DFL);
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::dup2(persistent ? in_pipe[0] : null_fd, 0);
    ::dup2(persistent ? out_pipe[1] : log_fd, 1);
    ::dup2(log_fd, 2);
    ::execv(program.c_str(), cargv.data());
    int e = errno;
    (void)!::write(err_pipe[1], &e, sizeof e);
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also here, so the group exists before we ever signal it
  ::close(err_pipe[1]);
  ::close(log_fd);
  ::close(null_fd);
  if (persistent) {
    ::close(in_pipe[0]);
    ::close(out_pipe[1]);
  }
  int child_errno = 0;
  ssize_t n;
  do n = ::read(err_pipe[0], &child_errno, sizeof child_errno);
  while (n < 0 && errno == EINTR);
  ::close(err_pipe[0]);
  if (n == static_cast<ssize_t>(sizeof child_errno)) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (persistent) {
      ::close(in_pipe[1]);
      ::close(out_pipe[0]);
    }
    error = "cannot run '" + program + "': " + std::strerror(child_errno);
    return nullptr;
  }
  p->pid = pid;
  p->parent_rss_at_fork_bytes = parent_rss_bytes;
  if (persistent) {
    p->stdin_fd = in_pipe[1];
    p->stdout_fd = out_pipe[0];
    ::fcntl(p->stdout_fd, F_SETFL, ::fcntl(p->stdout_fd, F_GETFL) | O_NONBLOCK);
  }
  ++stats_.workers_started;
  procs_.push_back(p);
  return p;
}

bool ProcessRunner::start(const RunnerJob& job, std::string& error) {
  if (!broken_.empty()) {
    error = broken_;
    return false;
  }
  if (config_.worker_argv.empty()) {
    auto p = spawn(job.argv, false, std::to_string(job.id) + "-" + sanitize(job.name) + ".log", error);
    if (!p) return false;
    p->busy = true;
    p->job = job.id;
    p->job_name = job.name;
    p->job_started_ms = monotonic_ms();
    return true;
  }
  std::shared_ptr<Proc> worker;
  for (auto& p : procs_)
    if (p->persistent && !p->busy && !p->exiting && !p->exited) {
      worker = p;
      break;
    }
  if (!worker) {
    worker = spawn(config_.worker_argv, true, "worker-" + std::to_string(++next_worker_) + ".log", error);
    if (!worker) return false;
  }
  std::string line = job.request_json + "\n";
  const char* data = line.data();
  std::size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(worker->stdin_fd, data, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      error = "worker " + std::to_string(worker->pid) + " did not accept the job (" + std::strerror(errno) +
              "); see its log " + worker->log.string();
      worker->exiting = true;
      close_fd(worker->stdin_fd);
      ::kill(-worker->pid, SIGKILL);
      return false;
    }
    data += n;
    left -= static_cast<std::size_t>(n);
  }
  worker->busy = true;
  worker->job = job.id;
  worker->job_name = job.name;
  worker->job_started_ms = monotonic_ms();
  worker->job_started_cpu_ticks = cpu_ticks_of(worker->pid);
  worker->kill_sent = false;
  return true;
}

void ProcessRunner::read_output(Proc& p, std::vector<JobEnd>& ended) {
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(p.stdout_fd, buf, sizeof buf);
    if (n > 0) {
      p.out_buf.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) close_fd(p.stdout_fd);  // EOF: the worker is exiting; reap() reports it
    break;
  }
  std::size_t nl;
  while ((nl = p.out_buf.find('\n')) != std::string::npos) {
    std::string line = p.out_buf.substr(0, nl);
    p.out_buf.erase(0, nl + 1);
    auto msg = nlohmann::json::parse(line, nullptr, false);
    if (msg.is_discarded() || !msg.is_object()) continue;  // not protocol: ignore (it goes nowhere)
    if (msg.contains("ready")) {
      if (msg.value("ready", false)) {
        p.ready = true;
      } else {
        broken_ = "align-batch-worker could not start: " + msg.value("error", std::string("unknown error")) +
                  "; check --model (see " + p.log.string() + ")";
      }
      continue;
    }
    if (!msg.contains("ok") || !p.busy) continue;  // progress lines, or a stray result
    JobEnd end;
    end.id = p.job;
    end.ok = msg.value("ok", false);
    end.job_error = !end.ok;
    end.exit_code = 0;
    end.error = end.ok ? std::string() : msg.value("error", std::string("the worker reported a failure"));
    end.wall_s = static_cast<double>(monotonic_ms() - p.job_started_ms) / 1000.0;
    if (const std::uint64_t ticks = cpu_ticks_of(p.pid); ticks >= p.job_started_cpu_ticks)
      end.cpu_s = static_cast<double>(ticks - p.job_started_cpu_ticks) / static_cast<double>(::sysconf(_SC_CLK_TCK));
    if (msg.contains("idle_rss_bytes") && msg["idle_rss_bytes"].is_number_unsigned())
      end.idle_rss_bytes = msg["idle_rss_bytes"].get<std::uint64_t>();
    if (msg.contains("peak_rss_bytes") && msg["peak_rss_bytes"].is_number_unsigned())
      end.peak_rss_bytes = msg["peak_rss_bytes"].get<std::uint64_t>();
    if (end.ok && msg.contains("band_limited") && msg["band_limited"].is_boolean())
      end.band_limited = msg["band_limited"].get<bool>();
    if (end.ok && msg.contains("outputs") && msg["outputs"].is_array())
      for (const auto& o : msg["outputs"])
        if (auto path = path_from_json(o)) end.outputs.push_back(*path);
    end.killed_by_us = p.kill_sent;
    p.busy = false;
    p.job = 0;
    p.sigkill_at_ms = -1;
    if (end.idle_rss_bytes) {
      if (!p.first_idle_rss_bytes) p.first_idle_rss_bytes = end.idle_rss_bytes;
      if (config_.recycle_growth_bytes > 0 &&
          *end.idle_rss_bytes > *p.first_idle_rss_bytes + config_.recycle_growth_bytes) {
        p.exiting = true;  // idle memory crept up: replace this worker
        close_fd(p.stdin_fd);
        ++stats_.workers_recycled;
      }
    }
    if (p.kill_sent) {
      // We asked it to die while it finished: it may be gone; never reuse it.
      p.exiting = true;
      close_fd(p.stdin_fd);
    }
    ended.push_back(std::move(end));
  }
}

void ProcessRunner::reap(std::vector<JobEnd>& ended) {
  for (auto it = procs_.begin(); it != procs_.end();) {
    Proc& p = **it;
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(p.pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid != p.pid) {
      ++it;
      continue;
    }
    // The leader has ended but is not reaped yet, so its pid (the group id) cannot be reused:
    // nothing of its group may outlive it (no orphans).
    ::kill(-p.pid, SIGKILL);
    int status = 0;
    rusage ru{};
    while (::wait4(p.pid, &status, 0, &ru) < 0 && errno == EINTR) {
    }
    if (p.stdout_fd >= 0) read_output(p, ended);  // a result written just before exiting
    if (p.busy) {
      JobEnd end;
      end.id = p.job;
      end.killed_by_us = p.kill_sent;
      end.wall_s = static_cast<double>(monotonic_ms() - p.job_started_ms) / 1000.0;
      end.cpu_s = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                  static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
      // The command's own peak, where wait4 can tell it: ru_maxrss also counts the child's copy of
      // this process between fork and exec (measured: a parent holding 200 MiB gives `true` 205).
      const auto maxrss_bytes = static_cast<std::uint64_t>(std::max(0L, ru.ru_maxrss)) * 1024;
      if (!p.persistent && maxrss_bytes > p.parent_rss_at_fork_bytes + (1ull << 20)) end.peak_rss_bytes = maxrss_bytes;
      if (WIFEXITED(status)) end.exit_code = WEXITSTATUS(status);
      if (WIFSIGNALED(status)) end.term_signal = WTERMSIG(status);
      end.ok = !p.persistent && WIFEXITED(status) && WEXITSTATUS(status) == 0;
      if (!end.ok) {
        std::string tail = log_tail(p.log);
        end.error = (p.persistent ? "worker " : "command ") + describe_status(status);
        if (!tail.empty()) end.error += "; log " + p.log.string() + " ends: " + tail;
      }
      ended.push_back(std::move(end));
    }
    close_fd(p.stdin_fd);
    close_fd(p.stdout_fd);
    it = procs_.erase(it);
  }
}

void ProcessRunner::escalate_kills() {
  const std::int64_t now = monotonic_ms();
  for (auto& p : procs_)
    if (p->sigkill_at_ms >= 0 && now >= p->sigkill_at_ms) {
      ::kill(-p->pid, SIGKILL);
      p->sigkill_at_ms = -1;
    }
}

std::vector<JobEnd> ProcessRunner::wait(int timeout_ms) {
  std::vector<JobEnd> ended;
  std::vector<pollfd> fds;
  std::vector<Proc*> owners;
  for (auto& p : procs_)
    if (p->stdout_fd >= 0) {
      fds.push_back({p->stdout_fd, POLLIN, 0});
      owners.push_back(p.get());
    }
  // Returns early on worker output or any signal (SIGCHLD included: the loop installs a handler
  // without SA_RESTART).
  int n = ::poll(fds.data(), fds.size(), std::max(0, timeout_ms));
  if (n > 0)
    for (std::size_t i = 0; i < fds.size(); ++i)
      if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) read_output(*owners[i], ended);
  escalate_kills();
  reap(ended);
  read_status();
  return ended;
}

void ProcessRunner::read_status() {
  const std::int64_t now = monotonic_ms();
  for (auto& p : procs_) {
    if (!p->status) continue;
    p->last_status = p->status->read();
    if (p->last_status.heartbeat != p->last_heartbeat) {
      p->last_heartbeat = p->last_status.heartbeat;
      p->heartbeat_moved_ms = now;
    }
  }
}

std::vector<WorkerProgress> ProcessRunner::progress() const {
  std::vector<WorkerProgress> out;
  const std::int64_t now = monotonic_ms();
  for (auto& p : procs_) {
    if (!p->status || !p->busy) continue;
    WorkerProgress w;
    w.id = p->job;
    w.phase = phase_name(p->last_status.phase);
    // The block's fraction belongs to our job only once the worker has taken it.
    const bool ours = p->last_status.job_id && static_cast<JobId>(*p->last_status.job_id) == p->job;
    w.fraction_done = ours ? p->last_status.fraction_done : 0.0;
    // Since it moved, or since this job started if that is later: an idle worker that stopped
    // beating long ago is only "silent" for as long as it has had a job.
    w.silent_ms = now - std::max(p->heartbeat_moved_ms, p->job_started_ms);
    out.push_back(std::move(w));
  }
  return out;
}

std::vector<std::string> ProcessRunner::status_block_names() const {
  std::vector<std::string> out;
  for (auto& p : procs_)
    if (p->status) out.push_back(p->status->name());
  return out;
}

void ProcessRunner::kill(JobId id, int grace_ms) {
  for (auto& p : procs_)
    if (p->busy && p->job == id) {
      p->kill_sent = true;
      if (grace_ms <= 0) {
        ::kill(-p->pid, SIGKILL);
        p->sigkill_at_ms = -1;
      } else {
        ::kill(-p->pid, SIGTERM);
        p->sigkill_at_ms = monotonic_ms() + grace_ms;
      }
    }
}

std::vector<LiveJob> ProcessRunner::live() const {
  std::vector<LiveJob> out;
  for (auto& p : procs_)
    if (p->busy) out.push_back({p->job, p->pid});
  return out;
}

std::vector<pid_t> ProcessRunner::idle_pids() const {
  std::vector<pid_t> out;
  for (auto& p : procs_)
    if (!p->busy) out.push_back(p->pid);
  return out;
}

std::size_t ProcessRunner::retire_idle(std::size_t keep) {
  std::size_t idle = 0, told = 0;
  // The newest idle workers go first: the oldest have shown their idle memory longest.
  for (auto it = procs_.begin(); it != procs_.end(); ++it) {
    Proc& p = **it;
    if (!p.persistent || p.busy || p.exiting || p.exited) continue;
    if (++idle <= keep) continue;
    p.exiting = true;  // EOF on stdin: the worker exits; reap() collects it silently
    close_fd(p.stdin_fd);
    ++told;
  }
  stats_.workers_retired += static_cast<std::uint32_t>(told);
  return told;
}

std::vector<JobEnd> ProcessRunner::shutdown(int grace_ms) {
  std::vector<JobEnd> ended;
  if (procs_.empty()) return ended;
  for (auto& p : procs_) {
    close_fd(p->stdin_fd);  // idle persistent workers exit on EOF
    if (p->busy) {
      p->kill_sent = true;
      ::kill(-p->pid, SIGTERM);
    }
  }
  const std::int64_t deadline = monotonic_ms() + grace_ms;
  while (!procs_.empty() && monotonic_ms() < deadline) {
    auto part = wait(20);
    ended.insert(ended.end(), part.begin(), part.end());
  }
  for (auto& p : procs_) ::kill(-p->pid, SIGKILL);
  while (!procs_.empty()) {
    auto part = wait(20);
    ended.insert(ended.end(), part.begin(), part.end());
  }
  return ended;
}

}  // namespace ab
