// WorkerRunner: the one seam between the run loop and worker processes (ninja's CommandRunner).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "orchestrator/core/scheduler.h"

namespace ab {

/// What to run for one job. Exactly one of `argv` (external command: one process per job) or
/// `request_json` (built-in engine: one protocol job line for a persistent align-batch-worker).
struct RunnerJob {
  JobId id = 0;
  std::string name;               ///< the file's corpus-relative path: logs, and the fake's script
  std::vector<std::string> argv;  ///< external command, already expanded
  std::string request_json;       ///< built-in engine: the job line, without the trailing newline
};

/// How a started job ended, as the runner saw it.
struct JobEnd {
  JobId id = 0;
  bool ok = false;             ///< exit status 0 (external) or `"ok": true` (built-in)
  bool job_error = false;      ///< the job itself reported failure (`"ok": false`): never retried
  int exit_code = -1;          ///< the process's exit status, if it exited
  int term_signal = 0;         ///< the signal that killed it, if one did
  bool killed_by_us = false;   ///< kill() had been called for this job
  std::string error;           ///< what happened, for the summary (includes the log's tail)
  double wall_s = 0;
  /// A persistent worker's first job: its wall time includes the worker's start-up (the
  /// process, LibTorch, the model), up to ten times the job itself on a busy machine.
  bool worker_first_job = false;
  double cpu_s = 0;            ///< user + system: the job's process (external), the worker's across the job (persistent)
  std::optional<std::uint64_t> idle_rss_bytes;  ///< built-in worker's RSS after the job
  /// The job's peak RSS as its process saw it: the built-in worker's `peak_rss_bytes` (VmHWM
  /// reset at the job's start), or wait4's ru_maxrss for a command (its largest process) when
  /// that is above the parent's own RSS at fork (below it, it may be the child's pre-exec copy).
  std::optional<std::uint64_t> peak_rss_bytes;
  /// The attempt's own PSS peak where the runner knows it better than readings can (replay: the
  /// recorded job's peak, which readings at other moments than the real run's may miss); none
  /// for real processes, whose peak is what the readings saw.
  std::optional<std::uint64_t> peak_pss_bytes;
  /// Built-in align: the worker's `"band_limited": true` (its search band hit --max-trellis-mib
  /// and the path ran along the band's edge, so the alignment may not be the best one).
  bool band_limited = false;
  /// Built-in engine: the files the worker wrote (its result's `outputs`, byte-exact paths).
  std::vector<std::string> outputs;
};

/// What a running job's worker says about itself (built-in engine: its status block).
struct WorkerProgress {
  JobId id = 0;
  std::string phase;           ///< "loading", "decoding", "emissions", "aligning", "writing", ...
  double fraction_done = 0;    ///< 0..1 of the current file
  /// Parent's monotonic ms since the worker's heartbeat last moved, since the job started or
  /// since the worker's ready line, whichever is latest; 0 while the worker is still loading.
  std::int64_t silent_ms = 0;
};

/// A running job's worker process (its process-group leader).
struct LiveJob {
  JobId id = 0;
  pid_t pid = 0;
  /// A new persistent worker that has not sent its ready line: what it holds is the model's load
  /// (for a while a private copy of the weights besides the shared one), not the job's. Admission
  /// counts it; the job's recorded peak, which history learns from, does not.
  bool loading = false;
};

class WorkerRunner {
 public:
  virtual ~WorkerRunner() = default;
  /// Starts `job` (on an idle worker or a new process), or says why it could not start.
  virtual Result<Done> start(const RunnerJob& job) = 0;
  /// Waits up to `timeout_ms` (returns early on a signal or an ended job) and returns ended jobs.
  virtual std::vector<JobEnd> wait(int timeout_ms) = 0;
  /// Stops a job's worker: SIGTERM to its process group now, SIGKILL once `grace_ms` has passed
  /// (escalated inside wait()); `grace_ms` 0 sends SIGKILL at once. The end arrives via wait().
  virtual void kill(JobId id, int grace_ms) = 0;
  /// Running jobs and their worker pids, for the memory sampler.
  virtual std::vector<LiveJob> live() const = 0;
  /// Persistent workers waiting for a job (their memory counts against the budget too).
  virtual std::vector<pid_t> idle_pids() const = 0;
  /// Running jobs whose worker reports its state (none for runners without status blocks).
  virtual std::vector<WorkerProgress> progress() const { return {}; }
  /// Tells idle persistent workers beyond `keep` to exit (their memory is freed once they have;
  /// they leave idle_pids() when reaped). Returns how many were told. The loop calls it when the
  /// scheduler has no work they could take. Runners without persistent workers do nothing.
  virtual std::size_t retire_idle(std::size_t keep) {
    (void)keep;
    return 0;
  }
  /// Non-empty once the run cannot go on whatever the file: the worker cannot load its model
  /// (`ready: false`), the first worker died before it was ready, the program cannot be executed.
  /// The loop then stops before any further job and the run exits 2 with this one message.
  virtual std::string setup_error() const { return {}; }
  /// What one persistent worker holds once its model is loaded (its PSS when its ready line
  /// arrived, else the line's `rss_bytes`; the least over workers): what one worker needs even
  /// idle. None until a worker was ready, and for runners without persistent workers.
  virtual std::optional<std::uint64_t> ready_idle_bytes() const { return std::nullopt; }
  /// Stops every worker (idle ones by closing stdin), SIGTERM then SIGKILL after `grace_ms`, and
  /// reaps them all: no orphan, no zombie. Jobs still running end as killed_by_us.
  virtual std::vector<JobEnd> shutdown(int grace_ms) = 0;
};

/// A runner that starts nothing: RunLoop::plan() (done-ness, predictions) needs a runner it never
/// calls, for --dry-run and the Slurm executor's planning.
struct PlanOnlyRunner : WorkerRunner {
  Result<Done> start(const RunnerJob&) override { return Result<Done>::failure("planning only: nothing is started"); }
  std::vector<JobEnd> wait(int) override { return {}; }
  void kill(JobId, int) override {}
  std::vector<LiveJob> live() const override { return {}; }
  std::vector<pid_t> idle_pids() const override { return {}; }
  std::vector<JobEnd> shutdown(int) override { return {}; }
};

}  // namespace ab
