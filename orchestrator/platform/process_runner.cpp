// ProcessRunner: clone(CLONE_VM|CLONE_VFORK)/exec with setpgid, oom_score_adj and PR_SET_PDEATHSIG;
// reaping with wait4.
//
// Our own spawn rather than Boost.Process 1.74 or posix_spawn: we need setpgid, oom_score_adj and the
// parent-death signal set in the child before exec (glibc 2.36's posix_spawn sets a process group
// but neither of the other two), and a non-blocking wait4 with rusage, which Boost.Process 1.74
// does not expose without its own SIGCHLD machinery.
#include "orchestrator/platform/process_runner.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "protocol/wire_path.h"
#include "memguard/process_memory.h"
#include "protocol/status_block.h"

namespace fs = std::filesystem;

namespace ab {

std::string resolve_program(const std::string& program) {
  if (program.empty()) return {};
  if (program.find('/') != std::string::npos) {
    // A directory passes access(X_OK) too; execv would then fail for every file.
    struct stat st {};
    return ::stat(program.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(program.c_str(), X_OK) == 0
               ? program
               : std::string();
  }
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

namespace {

/// The last `max_bytes` of bytes [begin, end) of `fd`, trimmed to whole lines.
std::string range_tail(int fd, std::uint64_t begin, std::uint64_t end, std::size_t max_bytes) {
  if (fd < 0 || end <= begin) return {};
  const std::uint64_t from = end - begin > max_bytes ? end - max_bytes : begin;
  std::string text(static_cast<std::size_t>(end - from), '\0');
  const ssize_t n = ::pread(fd, text.data(), text.size(), static_cast<off_t>(from));
  text.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  if (from > begin) {
    auto nl = text.find('\n');
    if (nl != std::string::npos) text.erase(0, nl + 1);
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

}  // namespace

std::string log_tail(const fs::path& log, std::size_t max_bytes) {
  const int fd = ::open(log.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  struct stat st {};
  const std::string text = ::fstat(fd, &st) == 0 ? range_tail(fd, 0, static_cast<std::uint64_t>(st.st_size), max_bytes) : "";
  ::close(fd);
  return text;
}

struct ProcessRunner::Proc {
  pid_t pid = 0;
  int pidfd = -1;  ///< readable once the process has exited (poll()ed by wait())
  bool persistent = false;
  int stdin_fd = -1;
  int stdout_fd = -1;
  std::string out_buf;
  fs::path log;  ///< persistent: the worker's log; command: its slot's log, or once failed its own
  int log_slot = -1;                  ///< command: index into log_slots_
  std::uint64_t log_begin_bytes = 0;  ///< command: where its output starts in the slot's log
  bool ready = false;
  std::int64_t ready_ms = 0;  ///< parent's monotonic clock when its ready line arrived
  bool busy = false;
  JobId job = 0;
  std::string job_name;
  std::int64_t job_started_ms = 0;
  std::uint32_t results = 0;  ///< persistent: result lines it has sent
  std::uint64_t job_started_cpu_ticks = 0;  ///< persistent workers: the process's CPU at job start
  /// This (the parent) process's RSS when it forked the command. A child's ru_maxrss counts its
  /// pre-exec copy of the parent, so only a figure above this says something about the command.
  std::uint64_t parent_rss_at_fork_bytes = 0;
  bool kill_sent = false;
  std::int64_t sigkill_at_ms = -1;   ///< -1: no escalation pending
  bool exiting = false;              ///< told to exit (stdin closed); reaped silently
  std::optional<std::uint64_t> first_idle_rss_bytes;
  std::uint64_t shared_weights_bytes = 0;  ///< from the ready line: the mapping this worker shares
  std::optional<JobEnd> pending;     ///< a result line arrived; delivered at once
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

/// What the child does between clone and exec, prepared by the parent: the child shares the
/// parent's memory (CLONE_VM) until exec, so it may only read this and write child_errno.
struct SpawnRequest {
  const char* program = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;  ///< null: the parent's environ
  int stdin_fd = -1, stdout_fd = -1, stderr_fd = -1;
  pid_t parent = 0;
  int death_signal = SIGKILL;
  const char* oom_score_adj_text = nullptr;
  int oom_score_adj_len = 0;
  volatile int child_errno = 0;  ///< set by the child when exec failed
  int pidfd = -1;                ///< the child's pidfd (CLONE_PIDFD): readable once it has exited
};

int spawn_child(void* arg) {
  auto* req = static_cast<SpawnRequest*>(arg);
  // Signal dispositions are the child's own (no CLONE_SIGHAND): handlers of the parent's would
  // run on the parent's memory, so every caught signal goes back to its default before the
  // mask the parent blocked for the clone is opened.
  for (int sig = 1; sig < NSIG; ++sig) {
    struct sigaction sa {};
    if (::sigaction(sig, nullptr, &sa) != 0) continue;
    // SIGPIPE (ignored by the parent), SIGINT and SIGTERM are default in every child, as before.
    const bool always = sig == SIGPIPE || sig == SIGINT || sig == SIGTERM;
    if (sa.sa_handler == SIG_DFL || (sa.sa_handler == SIG_IGN && !always)) continue;
    sa = {};
    sa.sa_handler = SIG_DFL;
    ::sigaction(sig, &sa, nullptr);
  }
  ::setpgid(0, 0);
  ::prctl(PR_SET_PDEATHSIG, req->death_signal);
  if (::getppid() != req->parent) ::_exit(127);  // the parent died before prctl took effect
  int adj_fd = ::open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
  if (adj_fd >= 0) {
    (void)!::write(adj_fd, req->oom_score_adj_text, static_cast<std::size_t>(req->oom_score_adj_len));
    ::close(adj_fd);
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::dup2(req->stdin_fd, 0);
  ::dup2(req->stdout_fd, 1);
  ::dup2(req->stderr_fd, 2);
  if (req->envp)
    ::execve(req->program, req->argv, req->envp);
  else
    ::execv(req->program, req->argv);
  req->child_errno = errno;
  ::_exit(127);
}

/// Starts `req` with clone(CLONE_VM | CLONE_VFORK): the child borrows the parent's memory until it
/// execs, so nothing is copied and the cost does not grow with the parent's size (fork copied
/// the page tables of a parent that holds the queue: perf showed 41% of a 10,000-job run's
/// parent CPU in copy_page_range, issue 13). Returns the pid, or -1 with errno. The parent
/// resumes once the child has exec'd or exited; req.child_errno then says whether exec failed.
/// req.pidfd lets wait() poll for the child's end: SIGCHLD alone woke poll() only if it came
/// after poll() began, and one that came just before left it asleep for the whole tick.
pid_t spawn_process(SpawnRequest& req, char* stack, std::size_t stack_bytes) {
  sigset_t all, old;
  sigfillset(&all);
  // No handler may run in the child while it shares our memory, before it resets them.
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  const pid_t pid = ::clone(spawn_child, stack + stack_bytes, CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, &req,
                            reinterpret_cast<pid_t*>(&req.pidfd));
  const int clone_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  errno = clone_errno;
  return pid;
}

/// A status block and the name it was created under.
struct NamedStatusBlock {
  std::unique_ptr<StatusBlock> block;
  std::string name;
};

/// A new status block for a worker, under an unguessable name, created exclusively: another
/// local user could pre-create a predictable one (ab-status-PID-N) and make every job fail. A
/// clash is retried.
Result<NamedStatusBlock> create_status_block() {
  for (int attempt = 0;; ++attempt) {
    std::string name = status_block_name(::getpid());
    try {
      return NamedStatusBlock{StatusBlock::create(name), name};
    } catch (const boost::interprocess::interprocess_exception& e) {
      if (e.get_error_code() == boost::interprocess::already_exists_error && attempt < 16) continue;
      return Result<NamedStatusBlock>::failure("cannot create the worker's status block /dev/shm/" + name + " (" +
                                               e.what() + "); check that /dev/shm is writable and not full");
    }
  }
}

/// A persistent worker's stdin and stdout pipes: [0] the read end, [1] the write end.
struct WorkerPipes {
  int in[2] = {-1, -1};
  int out[2] = {-1, -1};

  bool open() { return ::pipe2(in, O_CLOEXEC) == 0 && ::pipe2(out, O_CLOEXEC) == 0; }
  void close_all() {
    for (int fd : {in[0], in[1], out[0], out[1]})
      if (fd >= 0) ::close(fd);
  }
  /// The ends the child has (its stdin's read end, its stdout's write end).
  void close_child_ends() {
    ::close(in[0]);
    ::close(out[1]);
  }
  void close_parent_ends() {
    ::close(in[1]);
    ::close(out[0]);
  }
};

/// What the child reads between clone and exec besides its file descriptors, prepared by the
/// parent: exec's argv (pointing into the strings given), its environment (none: the parent's
/// environ) and the text it writes to /proc/self/oom_score_adj. Not copied: it points into itself.
struct ChildArgs {
  std::vector<char*> argv;
  std::vector<std::string> env;
  std::vector<char*> envp;
  char oom_score_adj[16] = {};
  int oom_score_adj_len = 0;

  ChildArgs(const std::vector<std::string>& args, int oom_score_adj_value) {
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    oom_score_adj_len = std::snprintf(oom_score_adj, sizeof oom_score_adj, "%d\n", oom_score_adj_value);
  }
  ChildArgs(const ChildArgs&) = delete;
  ChildArgs& operator=(const ChildArgs&) = delete;

  /// The parent's environment plus each "NAME=VALUE" of `added` whose NAME it does not have
  /// (none of `added`: the child keeps the parent's environ).
  void add_environment(const std::vector<std::string>& added) {
    if (added.empty()) return;
    for (char** e = environ; *e; ++e) env.emplace_back(*e);
    for (const auto& add : added) {
      const std::string name = add.substr(0, add.find('='));
      if (!std::getenv(name.c_str())) env.push_back(add);
    }
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
  }
};

/// The request to exec `program` with `child`'s argv and environment on these standard streams;
/// the child sends itself `death_signal` when the parent dies (spawn_child).
void fill_spawn_request(SpawnRequest& req, const std::string& program, const ChildArgs& child, int stdin_fd,
                        int stdout_fd, int stderr_fd, int death_signal) {
  req.program = program.c_str();
  req.argv = child.argv.data();
  req.envp = child.envp.empty() ? nullptr : child.envp.data();
  req.stdin_fd = stdin_fd;
  req.stdout_fd = stdout_fd;
  req.stderr_fd = stderr_fd;
  req.parent = ::getpid();
  req.death_signal = death_signal;
  req.oom_score_adj_text = child.oom_score_adj;
  req.oom_score_adj_len = child.oom_score_adj_len;
}

/// Reaps `pid`, which has exited already.
void reap_exited(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

}  // namespace

namespace {

/// Names "PREFIXPID-..." in `dir` whose PID is no process now: files a dead parent left.
std::vector<std::string> names_of_dead_parents(const fs::path& dir, const std::string& prefix) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    char* end = nullptr;
    const long pid = std::strtol(name.c_str() + prefix.size(), &end, 10);
    if (pid <= 0 || *end != '-') continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // its parent is alive
    out.push_back(name);
  }
  return out;
}

}  // namespace

namespace {

// 64 random bits (getrandom), so no other user can guess a name and create it first.
std::uint64_t random_u64() {
  std::uint64_t random = 0;
  if (::getrandom(&random, sizeof random, 0) != static_cast<ssize_t>(sizeof random)) {
    // No entropy source (ancient kernel): the clock's nanoseconds still make a guess unlikely.
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    random = static_cast<std::uint64_t>(ts.tv_nsec) * 0x9e3779b97f4a7c15ull ^ static_cast<std::uint64_t>(ts.tv_sec);
  }
  return random;
}

}  // namespace

std::string status_block_name(pid_t parent_pid) { return fmt::format("ab-status-{}-{:016x}", parent_pid, random_u64()); }

std::size_t remove_stale_status_blocks() {
  std::size_t removed = 0;
  for (const auto& name : names_of_dead_parents("/dev/shm", "ab-status-"))
    if (boost::interprocess::shared_memory_object::remove(name.c_str())) ++removed;
  return removed;
}

Result<fs::path> create_shared_weights_file(pid_t parent_pid, const fs::path& shm_dir) {
  for (int attempt = 0;; ++attempt) {
    const fs::path path = shm_dir / fmt::format("ab-weights-{}-{:016x}", parent_pid, random_u64());
    // O_EXCL: the file is ours, new and empty (a name someone planted is never taken over); the
    // first worker finds it empty and writes the weights into it.
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0) {
      ::close(fd);
      return path;
    }
    if (errno != EEXIST || attempt == 7)
      return Result<fs::path>::failure(fmt::format("cannot create a shared weights file in {}: {}", shm_dir.string(),
                                                   std::strerror(errno)));
  }
}

std::size_t remove_stale_shared_weights(const fs::path& shm_dir) {
  std::size_t removed = 0;
  std::error_code ec;
  for (const auto& name : names_of_dead_parents(shm_dir, "ab-weights-"))
    if (fs::remove(shm_dir / name, ec)) ++removed;
  return removed;
}

ProcessRunner::ProcessRunner(ProcessRunnerConfig config)
    : config_(std::move(config)), spawn_stack_(new char[kSpawnStackBytes]) {
  if (config_.status_blocks) remove_stale_status_blocks();
  if (!config_.shared_weights.empty()) remove_stale_shared_weights(config_.shared_weights.parent_path());
  std::error_code ec;
  if (!config_.log_dir.empty()) fs::create_directories(config_.log_dir, ec);
  // A worker that dies while we write its job line must not kill the parent.
  ::signal(SIGPIPE, SIG_IGN);
}

ProcessRunner::~ProcessRunner() {
  shutdown(2000);
  for (auto& slot : log_slots_) close_fd(slot.fd);
  close_fd(null_fd_);
}

Result<int> ProcessRunner::take_log_slot() {
  for (std::size_t i = 0; i < log_slots_.size(); ++i)
    if (!log_slots_[i].busy) {
      log_slots_[i].busy = true;
      return static_cast<int>(i);
    }
  LogSlot slot;
  slot.path = config_.log_dir / ("slot-" + std::to_string(log_slots_.size() + 1) + ".log");
  // Appended to, never truncated: each run's commands add their output to what is there.
  slot.fd = ::open(slot.path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (slot.fd < 0)
    return Result<int>::failure("cannot open the log " + slot.path.string() + ": " + std::strerror(errno) +
                                "; check --out");
  struct stat st {};
  if (::fstat(slot.fd, &st) == 0) slot.size_bytes = static_cast<std::uint64_t>(st.st_size);
  slot.busy = true;
  log_slots_.push_back(std::move(slot));
  return static_cast<int>(log_slots_.size() - 1);
}

std::string ProcessRunner::end_command_log(Proc& p, bool ok, const std::string& how) {
  LogSlot& slot = log_slots_[static_cast<std::size_t>(p.log_slot)];
  struct stat st {};
  const std::uint64_t end_bytes = ::fstat(slot.fd, &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : slot.size_bytes;
  slot.size_bytes = end_bytes;
  if (end_bytes <= p.log_begin_bytes) return {};  // it wrote nothing: the log is not touched
  std::string tail;
  if (!ok) {
    // A failed command's output also gets a file of its own, named after the job.
    tail = range_tail(slot.fd, p.log_begin_bytes, end_bytes, 600);
    const fs::path own = config_.log_dir / (std::to_string(p.job) + "-" + sanitize(p.job_name) + ".log");
    const int fd = ::open(own.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
      off_t from = static_cast<off_t>(p.log_begin_bytes);
      std::size_t left = static_cast<std::size_t>(end_bytes - p.log_begin_bytes);
      while (left > 0) {
        const ssize_t n = ::copy_file_range(slot.fd, &from, fd, nullptr, left, 0);
        if (n <= 0) break;
        left -= static_cast<std::size_t>(n);
      }
      ::close(fd);
      p.log = own;
    }
  }
  // Each command's output in a slot log is followed by one line saying whose it was.
  const std::string trailer = fmt::format("--- job {} {}: {} bytes above, {} ---\n", p.job, p.job_name,
                                          end_bytes - p.log_begin_bytes, how);
  if (::write(slot.fd, trailer.data(), trailer.size()) == static_cast<ssize_t>(trailer.size()))
    slot.size_bytes += trailer.size();
  return tail;
}

void ProcessRunner::note_setup_error(const std::string& error) {
  if (setup_error_.empty()) setup_error_ = error;
}

Result<std::shared_ptr<ProcessRunner::Proc>> ProcessRunner::spawn(const std::vector<std::string>& argv_in,
                                                                  bool persistent, int log_fd, const fs::path& log) {
  using R = Result<std::shared_ptr<Proc>>;
  std::vector<std::string> argv = argv_in;
  std::unique_ptr<StatusBlock> status;
  if (persistent && config_.status_blocks) {
    auto created = create_status_block();
    if (!created) return setup_failure<std::shared_ptr<Proc>>(created.error());
    status = std::move(created->block);
    argv.insert(argv.end(), {"--status-shm", created->name});
  }
  if (persistent && !config_.shared_weights.empty())
    argv.insert(argv.end(), {"--shared-weights", config_.shared_weights.string()});
  const std::string program = resolve_program(argv.empty() ? std::string() : argv[0]);
  if (program.empty())
    return setup_failure<std::shared_ptr<Proc>>(
        "command '" + (argv.empty() ? std::string() : argv[0]) +
        "' not found or not executable; check the program after '--' (or --model's worker) and $PATH");
  auto p = std::make_shared<Proc>();
  p->persistent = persistent;
  p->status = std::move(status);
  p->heartbeat_moved_ms = monotonic_ms();
  p->log = log;
  if (auto started = start_child(*p, program, argv, log_fd); !started) return R::failure(started.error());
  ++stats_.workers_started;
  procs_.push_back(p);
  return p;
}

Result<Done> ProcessRunner::start_child(Proc& p, const std::string& program, const std::vector<std::string>& argv,
                                        int log_fd) {
  using R = Result<Done>;
  if (null_fd_ < 0) null_fd_ = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  const int null_fd = null_fd_;
  if (log_fd < 0) log_fd = null_fd;
  WorkerPipes pipes;
  if (p.persistent && !pipes.open()) {
    const std::string error = std::string("cannot create pipes: ") + std::strerror(errno) + "; too many open files?";
    pipes.close_all();
    return R::failure(error);
  }
  // Everything the child needs is prepared before the clone: between it and exec only
  // async-signal-safe calls, and no writes to our memory but req.child_errno.
  ChildArgs child(argv, config_.oom_score_adj);
  if (p.persistent) child.add_environment(config_.worker_env);
  SpawnRequest req;
  fill_spawn_request(req, program, child, p.persistent ? pipes.in[0] : null_fd, p.persistent ? pipes.out[1] : log_fd,
                     log_fd, p.persistent ? SIGTERM : SIGKILL);
  const std::uint64_t parent_rss_bytes = own_rss_bytes();
  const pid_t pid = spawn_process(req, spawn_stack_.get(), kSpawnStackBytes);
  if (pid < 0) {
    const std::string error =
        std::string("cannot start a process: ") + std::strerror(errno) + "; the machine is out of processes or memory";
    pipes.close_all();
    return R::failure(error);
  }
  ::setpgid(pid, pid);  // also here, so the group exists before we ever signal it
  if (p.persistent) pipes.close_child_ends();
  if (req.child_errno != 0) {
    // exec failed: the child has exited already (CLONE_VFORK returned only after it did).
    close_fd(req.pidfd);
    reap_exited(pid);
    if (p.persistent) pipes.close_parent_ends();
    // Every file would fail the same way: the run's fault, not the file's.
    return setup_failure<Done>("cannot run '" + program + "': " + std::strerror(req.child_errno) +
                               "; check the program (its #! interpreter too) and its permissions");
  }
  p.pid = pid;
  p.pidfd = req.pidfd;
  p.parent_rss_at_fork_bytes = parent_rss_bytes;
  if (p.persistent) {
    p.stdin_fd = pipes.in[1];
    p.stdout_fd = pipes.out[0];
    ::fcntl(p.stdout_fd, F_SETFL, ::fcntl(p.stdout_fd, F_GETFL) | O_NONBLOCK);
  }
  return Done{};
}

Result<Done> ProcessRunner::start(const RunnerJob& job) {
  using R = Result<Done>;
  if (!broken_.empty()) return R::failure(broken_);
  if (config_.worker_argv.empty()) {
    const auto slot_taken = take_log_slot();
    if (!slot_taken) return R::failure(slot_taken.error());
    const int slot = *slot_taken;
    LogSlot& log = log_slots_[static_cast<std::size_t>(slot)];
    auto spawned = spawn(job.argv, false, log.fd, log.path);
    if (!spawned) {
      log.busy = false;
      return R::failure(spawned.error());
    }
    std::shared_ptr<Proc> p = std::move(*spawned);
    p->log_slot = slot;
    p->log_begin_bytes = log.size_bytes;
    p->busy = true;
    p->job = job.id;
    p->job_name = job.name;
    p->job_started_ms = monotonic_ms();
    return Done{};
  }
  std::shared_ptr<Proc> worker;
  for (auto& p : procs_)
    if (p->persistent && !p->busy && !p->exiting) {
      worker = p;
      break;
    }
  if (!worker) {
    const fs::path log = config_.log_dir / ("worker-" + std::to_string(++next_worker_) + ".log");
    const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    auto spawned = spawn(config_.worker_argv, true, log_fd, log);
    if (log_fd >= 0) ::close(log_fd);
    if (!spawned) return R::failure(spawned.error());
    worker = std::move(*spawned);
  }
  std::string line = job.request_json + "\n";
  const char* data = line.data();
  std::size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(worker->stdin_fd, data, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const std::string error = "worker " + std::to_string(worker->pid) + " did not accept the job (" +
                                std::strerror(errno) + "); see its log " + worker->log.string();
      worker->exiting = true;
      close_fd(worker->stdin_fd);
      ::kill(-worker->pid, SIGKILL);
      return R::failure(error);
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
  return Done{};
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
    if (auto ready = parse_ready_line(msg)) take_ready_line(p, *ready);
    else if (auto result = parse_job_result(msg); result && p.busy) ended.push_back(take_result_line(p, *result));
    // else: progress lines, or a stray result
  }
}

void ProcessRunner::take_ready_line(Proc& p, const ReadyLine& line) {
  if (!line.ready) {
    broken_ = "align-batch-worker could not start: " + (line.error.empty() ? std::string("unknown error") : line.error) +
              "; check --model (see " + p.log.string() + ")";
    note_setup_error(broken_);
    return;
  }
  p.ready = any_ready_ = true;
  p.ready_ms = monotonic_ms();
  p.shared_weights_bytes = line.shared_weights_bytes.value_or(0);
  // What one loaded worker holds, as the budget counts it: PSS (RSS would count LibTorch's
  // pages in full even when other processes share them), else the ready line's RSS. With
  // shared weights, its PSS without its share of them plus the one copy, whole: what a
  // lone worker needs, however many others map the copy now.
  std::optional<std::uint64_t> idle_bytes;
  if (auto rollup = read_smaps_rollup("/proc", p.pid)) {
    idle_bytes = rollup->pss_bytes;
    if (p.shared_weights_bytes)
      idle_bytes = rollup->pss_bytes - std::min(rollup->pss_bytes, rollup->pss_shmem_bytes) + p.shared_weights_bytes;
  } else {
    idle_bytes = line.rss_bytes;
  }
  // The smallest: a worker already busy with its first job when this is read holds more.
  if (idle_bytes) ready_idle_bytes_ = std::min(ready_idle_bytes_.value_or(*idle_bytes), *idle_bytes);
}

JobEnd ProcessRunner::take_result_line(Proc& p, const JobResult& result) {
  JobEnd end;
  end.id = p.job;
  end.ok = result.ok;
  end.job_error = !end.ok;
  end.exit_code = 0;
  if (!end.ok) end.error = result.error.empty() ? std::string("the worker reported a failure") : result.error;
  end.wall_s = static_cast<double>(monotonic_ms() - p.job_started_ms) / 1000.0;
  end.worker_first_job = p.results++ == 0;
  if (const std::uint64_t ticks = cpu_ticks_of(p.pid); ticks >= p.job_started_cpu_ticks)
    end.cpu_s = static_cast<double>(ticks - p.job_started_cpu_ticks) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  end.idle_rss_bytes = result.idle_rss_bytes;
  // VmHWM counts the shared weights whole; history learns the worker's own memory, and the
  // mapping is charged once for all workers (MemorySample::shared_bytes).
  if (const auto peak = result.peak_rss_bytes)
    end.peak_rss_bytes = *peak > p.shared_weights_bytes ? *peak - p.shared_weights_bytes : 0;
  if (end.ok) {
    end.band_limited = result.band_limited;
    end.outputs = result.outputs;
  }
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
  return end;
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
    // The first worker of the run ending before its ready line, unasked: no worker can start
    // (killed while loading the model, a broken installation, ...). Later ones may be unlucky.
    if (p.persistent && !p.ready && !any_ready_ && !p.kill_sent && !p.exiting && setup_error_.empty()) {
      const std::string tail = log_tail(p.log);
      setup_error_ = "align-batch-worker " + describe_status(status) + " before it was ready (loading the model)" +
                     (tail.empty() ? std::string() : "; its log " + p.log.string() + " ends: " + tail);
    }
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
      std::string tail;
      if (p.log_slot >= 0) tail = end_command_log(p, end.ok, describe_status(status));
      else if (!end.ok) tail = log_tail(p.log);
      if (!end.ok) {
        end.error = (p.persistent ? "worker " : "command ") + describe_status(status);
        if (!tail.empty()) end.error += "; log " + p.log.string() + " ends: " + tail;
      }
      ended.push_back(std::move(end));
    }
    if (p.log_slot >= 0) log_slots_[static_cast<std::size_t>(p.log_slot)].busy = false;
    close_fd(p.stdin_fd);
    close_fd(p.stdout_fd);
    close_fd(p.pidfd);
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
  for (auto& p : procs_) {
    if (p->stdout_fd >= 0) {
      fds.push_back({p->stdout_fd, POLLIN, 0});
      owners.push_back(p.get());
    }
    if (p->pidfd >= 0) {
      fds.push_back({p->pidfd, POLLIN, 0});
      owners.push_back(nullptr);  // reap() below finds who ended
    }
  }
  // Returns early on worker output, a process's end (its pidfd) or any signal.
  int n = ::poll(fds.data(), fds.size(), std::max(0, timeout_ms));
  if (n > 0)
    for (std::size_t i = 0; i < fds.size(); ++i)
      if (owners[i] && (fds[i].revents & (POLLIN | POLLHUP | POLLERR))) read_output(*owners[i], ended);
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
    // Since it moved, or since this job started or the worker became ready if later: an idle
    // worker that stopped beating long ago is only "silent" for as long as it has had a job. A
    // worker still loading is never silent: its first beat comes only after the dynamic loader
    // has mapped LibTorch, which on a loaded machine alone took over 2 s, and its start-up has
    // its own verdicts (ready:false, death before ready: setup errors).
    w.silent_ms = p->ready ? now - std::max({p->heartbeat_moved_ms, p->job_started_ms, p->ready_ms}) : 0;
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
    if (p->busy) out.push_back({p->job, p->pid, p->persistent && !p->ready});
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
    if (!p.persistent || p.busy || p.exiting) continue;
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
  if (procs_.empty()) {
    remove_shared_weights();
    return ended;
  }
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
  remove_shared_weights();
  return ended;
}

void ProcessRunner::remove_shared_weights() {
  if (config_.shared_weights.empty() || !procs_.empty()) return;
  // Only the file our workers wrote: a link or another user's file planted under the name (the
  // workers refused to use it) is not ours to remove.
  struct stat st {};
  if (::lstat(config_.shared_weights.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != ::geteuid()) return;
  std::error_code ec;
  fs::remove(config_.shared_weights, ec);
}

}  // namespace ab
