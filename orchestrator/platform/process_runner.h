// ProcessRunner: the real WorkerRunner — clone(CLONE_VFORK)/exec, one process group per worker, pipes, reaping.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "orchestrator/batch/clock.h"
#include "orchestrator/batch/worker_runner.h"
#include "protocol/job_messages.h"

namespace ab {

struct ProcessRunnerConfig {
  /// Logs: `worker-N.log` per persistent worker (built-in engine); for commands, `slot-N.log` per
  /// slot of concurrent jobs (each command's output followed by a line naming its job), and
  /// `ID-NAME.log` with the output of each command that failed. Not one file per job.
  std::filesystem::path log_dir;
  /// Written to each worker's /proc/PID/oom_score_adj, so the kernel picks a worker, never the
  /// parent (which keeps 0). 500: half-way to "always first", above any ordinary process.
  int oom_score_adj = 500;
  /// Built-in engine: the persistent worker's argv (`align-batch-worker --model M --threads N`).
  /// Empty: external-command mode, one process per job from RunnerJob::argv.
  std::vector<std::string> worker_argv;
  /// Built-in engine: "NAME=VALUE" entries added to each persistent worker's environment, each
  /// only where the parent's own environment has no NAME (a user's setting wins). run_batch gives
  /// OMP_WAIT_POLICY=PASSIVE: see kWorkerEnvironment in run_command.cpp.
  std::vector<std::string> worker_env;
  /// A persistent worker whose idle RSS has grown by more than this since its first job is
  /// replaced (it is told to exit by closing its stdin). 0: never recycle.
  std::uint64_t recycle_growth_bytes = 256ull << 20;
  /// Built-in engine: give each persistent worker a status block (worker/status_block.h), a
  /// shared-memory object "ab-status-PARENTPID-RANDOM" (status_block_name) passed as
  /// `--status-shm`, removed when the
  /// worker is reaped (and, for a parent that died, by the next ProcessRunner).
  bool status_blocks = false;
  /// Built-in engine: the file every persistent worker is given as `--shared-weights` (one
  /// read-only copy of the model's tensors for all of them; worker/shared_weights.h), made by
  /// create_shared_weights_file(); removed when the runner shuts down, and (for a parent that died) by
  /// the next ProcessRunner. Empty: every worker keeps its own copy.
  std::filesystem::path shared_weights;
};

/// Counters for the summary.
struct ProcessRunnerStats {
  std::uint32_t workers_started = 0;
  std::uint32_t workers_recycled = 0;
  std::uint32_t workers_retired = 0;  ///< idle workers told to exit by retire_idle()
};

class ProcessRunner : public WorkerRunner {
 public:
  explicit ProcessRunner(ProcessRunnerConfig config);
  ~ProcessRunner() override;
  ProcessRunner(const ProcessRunner&) = delete;
  ProcessRunner& operator=(const ProcessRunner&) = delete;

  Result<Done> start(const RunnerJob& job) override;
  std::vector<JobEnd> wait(int timeout_ms) override;
  void kill(JobId id, int grace_ms) override;
  std::vector<LiveJob> live() const override;
  std::vector<pid_t> idle_pids() const override;
  std::size_t retire_idle(std::size_t keep) override;
  std::vector<WorkerProgress> progress() const override;
  /// Names of the status blocks of the workers alive now.
  std::vector<std::string> status_block_names() const;
  std::vector<JobEnd> shutdown(int grace_ms) override;
  std::string setup_error() const override { return setup_error_; }
  std::optional<std::uint64_t> ready_idle_bytes() const override { return ready_idle_bytes_; }

  const ProcessRunnerStats& stats() const { return stats_; }

 private:
  struct Proc;
  /// A log shared by the commands that run one after the other in it (one at a time).
  struct LogSlot {
    int fd = -1;
    std::filesystem::path path;
    std::uint64_t size_bytes = 0;
    bool busy = false;
  };
  /// `log_fd` (stdout and stderr of a command, stderr of a worker; -1: /dev/null) stays the caller's.
  Result<std::shared_ptr<Proc>> spawn(const std::vector<std::string>& argv, bool persistent, int log_fd,
                                      const std::filesystem::path& log);
  /// Clones and execs `program` for `p` (its pipes too, for a persistent worker).
  Result<Done> start_child(Proc& p, const std::string& program, const std::vector<std::string>& argv, int log_fd);
  /// Keeps `error` as the run's setup error unless there is one already (the first wins).
  void note_setup_error(const std::string& error);
  /// `error` as a failure that is also the run's setup error (note_setup_error).
  template <class T>
  Result<T> setup_failure(std::string error) {
    note_setup_error(error);
    return Result<T>::failure(std::move(error));
  }
  /// A free command log slot (its index in log_slots_), opening a new one when all are busy.
  Result<int> take_log_slot();
  /// Ends a reaped command's part of its slot log; returns its tail for a failed command's error.
  std::string end_command_log(Proc& p, bool ok, const std::string& how);
  void read_output(Proc& p, std::vector<JobEnd>& ended);
  /// A worker's `ready` line: it loaded its model (or could not: every later start fails).
  void take_ready_line(Proc& p, const ReadyLine& line);
  /// A busy worker's result line: its job's end; the worker is idle again (or told to exit).
  JobEnd take_result_line(Proc& p, const JobResult& result);
  void reap(std::vector<JobEnd>& ended);
  void escalate_kills();
  void read_status();
  /// Unlinks config_.shared_weights once no worker is left (workers still mapping it keep its pages).
  void remove_shared_weights();

  /// 64 KiB: the child runs a few syscalls and execv on it (glibc's posix_spawn uses 32 KiB + argv).
  static constexpr std::size_t kSpawnStackBytes = 64 * 1024;

  ProcessRunnerConfig config_;
  ProcessRunnerStats stats_;
  std::unique_ptr<char[]> spawn_stack_;  ///< the spawned child's stack until it execs
  std::vector<LogSlot> log_slots_;
  int null_fd_ = -1;
  std::vector<std::shared_ptr<Proc>> procs_;
  std::string broken_;  ///< a worker could not load its model: every later start fails with this
  std::string setup_error_;  ///< see WorkerRunner::setup_error(); the first such error wins
  bool any_ready_ = false;   ///< some persistent worker has sent `ready: true`
  std::optional<std::uint64_t> ready_idle_bytes_;
  std::uint32_t next_worker_ = 0;
};

/// A fresh status block name for a worker of `parent_pid`: "ab-status-PID-" and 16 random hex
/// digits (getrandom), so no other user can create it first.
std::string status_block_name(pid_t parent_pid);

/// Removes status blocks ("/dev/shm/ab-status-PID-*") left by align-batch processes that no
/// longer exist. Returns how many were removed.
std::size_t remove_stale_status_blocks();

/// Creates, exclusively and empty (0600, never through a link), the file this parent's workers
/// share their weights in: "SHM_DIR/ab-weights-PID-" and 16 random hex digits, so no other user
/// can guess the name and plant a file there first; `parent_pid` tells a dead run's file. The first
/// worker writes the weights into it (worker/shared_weights.h).
Result<std::filesystem::path> create_shared_weights_file(pid_t parent_pid,
                                                         const std::filesystem::path& shm_dir = "/dev/shm");

/// Removes shared weights files ("/dev/shm/ab-weights-PID-*") left by align-batch processes that
/// no longer exist (`shm_dir`: /dev/shm, or a test's directory). Returns how many were removed.
std::size_t remove_stale_shared_weights(const std::filesystem::path& shm_dir = "/dev/shm");

/// Resolves `program` like execvp would (a name without '/' is searched in $PATH). Empty if not found.
std::string resolve_program(const std::string& program);

/// The last `max_bytes` of a log file, trimmed to whole lines (for error messages).
std::string log_tail(const std::filesystem::path& log, std::size_t max_bytes = 600);

}  // namespace ab
