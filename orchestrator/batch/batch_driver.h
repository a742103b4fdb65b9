// BatchDriver: the one loop between the Scheduler and its seams (worker runner, memory probe,
// clock, job sink). The real run (RunLoop), replay (replay_run.h) and the simulation tests drive
// jobs through it; only the seams differ.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "history/timeline.h"
#include "orchestrator/batch/clock.h"
#include "orchestrator/batch/memory_probe.h"
#include "orchestrator/batch/worker_runner.h"
#include "orchestrator/core/scheduler.h"

namespace ab {

class PredictionPolicy;

/// How the driver runs (from the command line, or a replayed run's settings).
struct DriverConfig {
  SchedulerConfig scheduler;
  /// 50 ms: a job allocating at 1 GiB/s grows ~50 MiB between two readings, well inside the
  /// 10% high-water margin of any budget above 0.5 GiB.
  int tick_ms = 50;
  /// Guard kills and timeouts: SIGTERM, then SIGKILL after this. Short, because memory is short.
  int kill_grace_ms = 1000;
  /// First interrupt: SIGTERM to every worker, SIGKILL after this (or at the second).
  int stop_grace_ms = 10000;
  std::int64_t timeout_ms = 0;  ///< per job; 0: none
  /// A running job whose worker's heartbeat has not moved for this long is killed and retried
  /// (counted as a crash). 0: never.
  std::int64_t hang_ms = 0;
  /// Persistent workers that load a model (the built-in engine): a worker that cannot fit the
  /// budget even while loading is the run's setup error, not every file's failure.
  bool persistent_workers = false;
  /// Keep each attempt's memory timeline (history stores it); replay needs none.
  bool keep_timelines = true;
  /// Replay: end the run when nothing runs and nothing queued can start (those count as
  /// failed). A real run waits instead: idle workers may still retire and make room.
  bool stop_when_stalled = false;
};

/// One attempt of a job: its measurements while it runs. Made when the attempt starts and let go
/// once its end is settled for good (a requeued job's stays until its next start), so queued and
/// finished files carry none of it.
struct DriverAttempt {
  std::int64_t started_ms = 0;  ///< since the run's start
  bool guard_kill = false;
  bool timed_out = false;
  bool hung = false;       ///< killed because its worker's heartbeat stopped
  std::uint64_t peak_pss_bytes = 0;  ///< the job's own: readings while its worker loaded left out
  std::uint64_t peak_rss_bytes = 0;
  std::uint64_t loading_peak_pss_bytes = 0;  ///< its new worker's PSS while that loaded the model
  std::vector<TimelinePoint> timeline;
  std::optional<std::uint64_t> oom_kills_at_start;
};

/// One job as the driver tracks it: what predictions need, and its current attempt. One is held
/// for every queued file: 64 bytes.
struct DriverJob {
  JobId id = 0;
  std::uint64_t size_bytes = 0;
  std::optional<double> audio_duration_s;
  std::optional<std::uint64_t> predicted_peak_bytes;  ///< the policy's (scaled), refits included
  std::unique_ptr<DriverAttempt> current;  ///< the attempt running or just ended; null otherwise
  std::uint32_t attempts = 0;
  bool running = false;
  bool finished = false;   ///< ended ok or failed for good

  /// The current attempt, or an empty one (a job refused before it ever started).
  const DriverAttempt& attempt() const {
    static const DriverAttempt none;
    return current ? *current : none;
  }
};

/// The driver's fourth seam: what becomes of each job. The real run stats files, moves outputs,
/// records history and shows progress; replay keeps its figures.
class JobSink {
 public:
  virtual ~JobSink() = default;
  /// The job's next attempt is about to start: what the runner runs, or why the file cannot run
  /// now (it then fails for good, unstarted).
  virtual Result<RunnerJob> prepare(DriverJob& job) = 0;
  /// It started; admission reserved `estimate_bytes` for it.
  virtual void started(const DriverJob& job, std::uint64_t estimate_bytes) = 0;
  /// An attempt ended as classify_end says, before the scheduler hears of it. A kOk whose outputs
  /// are not in place is turned into kFailed here (with the error). The place to record it.
  virtual void ended(DriverJob& job, const JobEnd& end, JobOutcome& outcome) = 0;
  /// Once the scheduler knows: what the user is told (done, failed, retry, killed).
  virtual void settled(const DriverJob& job, const JobEnd& end, const JobOutcome& outcome) = 0;
  /// An attempt ended by the run's stop (`setup_fault`: the run's setup failed; else an
  /// interrupt): not the file's doing, it runs again next time.
  virtual void stopped(DriverJob& job, const JobEnd& end, bool setup_fault) = 0;
  /// The file fails for good without a (further) attempt: a refused prepare (`announce` false)
  /// or a start the runner refused.
  virtual void failed(DriverJob& job, const std::string& reason, bool announce) = 0;
  /// The scheduler failed the file for good (its kFail decision), for `reason`.
  virtual void refused(DriverJob& job, const Reason& reason) = 0;
  /// The memory guard is stopping `job` (a confirmed kill), for `reason`; it is requeued.
  virtual void stopping(const DriverJob& job, const Reason& reason) = 0;
  /// Something the user should know, about `job` when not null.
  virtual void notice(const DriverJob* job, const std::string& text) = 0;
  /// `job`'s worker has stopped beating (`reason`, kWorkerSilent): it is killed now and the file
  /// retried. Replay has no heartbeats.
  virtual void hung(const DriverJob& /*job*/, const Reason& /*reason*/) {}
  /// After each reading: jobs running, memory in use, the workers' own status.
  virtual void tick(std::size_t running, std::uint64_t in_use_bytes, const std::vector<WorkerProgress>& workers) = 0;
  /// After each memory reading: the reading, and all that the run holds (`in_use_bytes`: jobs,
  /// idle workers, shared weights). History keeps the machine around the jobs from it.
  virtual void sampled(const MemorySample& sample, std::uint64_t in_use_bytes) {
    (void)sample;
    (void)in_use_bytes;
  }
  /// After each wait: a chance to write what is pending (history batches).
  virtual void after_wait() {}
};

/// What the driver did, beyond the scheduler's stats.
struct DriverStats {
  std::uint32_t refits = 0;               ///< times the policy refitted on this run's jobs
  std::uint64_t predictions_updated = 0;  ///< queued jobs handed a refitted prediction, in total
  std::uint32_t workers_retired = 0;      ///< idle workers let go (WorkerRunner::retire_idle)
  std::uint32_t memory_reads = 0;         ///< MemoryProbe::read calls
};

class BatchDriver {
 public:
  /// `policy` may be null (no predictions but the jobs' own); it learns each ok job and its
  /// refits reach the queued jobs. `interrupts` returns how many SIGINT/SIGTERM have arrived.
  BatchDriver(DriverConfig config, WorkerRunner& runner, MemoryProbe& probe, Clock& clock, JobSink& sink,
              PredictionPolicy* policy = nullptr, std::function<int()> interrupts = {});

  /// Queues a job; returns its id (1, 2, ...: admission breaks ties by it, so add in queue order).
  JobId add_job(DriverJob job);
  /// Room for `jobs` more add_job calls at once: a big corpus's job table grown by doubling held
  /// up to 1.5 times its size while it moved (heaptrack, 20,000 jobs: 6.7 MB for 2.7 MB of jobs).
  void reserve(std::size_t jobs) {
    jobs_.reserve(jobs_.size() + jobs);
    scheduler_.reserve(jobs_.size() + jobs);
  }
  /// Runs every queued job to its end (or to an interrupt or a setup error) and shuts the runner
  /// down: no worker is left.
  void run();

  /// Milliseconds since the driver was made (the run's clock).
  std::int64_t elapsed_ms() const { return clock_.now_ms() - t0_ms_; }
  const DriverJob& job(JobId id) const { return jobs_[id - 1]; }
  const std::vector<DriverJob>& jobs() const { return jobs_; }
  const Scheduler& scheduler() const { return scheduler_; }
  const DriverStats& stats() const { return stats_; }
  bool interrupted() const { return interrupted_; }
  /// Why the run stopped on its own setup (a worker cannot load or fit), for one message;
  /// kNone when it did not.
  const Reason& setup_fault() const { return setup_fault_; }
  bool setup_failed() const { return setup_fault_.kind != Reason::Kind::kNone; }
  /// Queued jobs left when a stalled run ended (stop_when_stalled).
  std::size_t stalled_jobs() const { return stalled_jobs_; }

 private:
  bool step();
  void first_reading();
  bool on_interrupts();
  bool dispatch(std::int64_t now_ms);
  void start(DriverJob& job, std::int64_t now_ms, bool& started);
  void confirm_kill(DriverJob& job, const Decision& d);
  std::size_t sample(std::int64_t read_ms);
  void watch_workers(std::size_t running);
  void handle_end(const JobEnd& end, bool stopping_now);
  void settle(DriverJob& job, const JobEnd& end, bool stopping_now);
  void refit(const DriverJob& done);
  bool loading_fault(const DriverJob& job) const;
  void fail_setup(Reason fault);
  bool check_setup();
  bool stalled(std::int64_t now_ms, bool started);
  ProbeReading read(bool exact = false);

  DriverConfig config_;
  WorkerRunner& runner_;
  MemoryProbe& probe_;
  Clock& clock_;
  JobSink& sink_;
  PredictionPolicy* policy_;
  std::function<int()> interrupts_;
  const std::int64_t t0_ms_;
  Scheduler scheduler_;
  std::vector<DriverJob> jobs_;
  DriverStats stats_;
  std::optional<std::uint64_t> oom_kills_now_;
  std::optional<std::uint64_t> cgroup_limit_bytes_;
  std::uint64_t in_use_bytes_ = 0;
  bool stopping_ = false, hard_stop_ = false, interrupted_ = false;
  // Setup errors (WorkerRunner::setup_error, or one worker's memory above the budget) stop the
  // run at once, with one message and exit 2, instead of failing every file the same way.
  Reason setup_fault_;  ///< kNone: no setup fault
  std::size_t stalled_jobs_ = 0;
  // Memory is read, and timeouts, heartbeats and the live line checked, on a deadline: once per
  // tick_ms, the first at once. In between the loop only waits, handles job ends as they come and
  // admits (a finished job's room is used at once, not at the next sample). Waking into a
  // reading at every job end read memory as often as jobs ended (40 jobs of 20 ms, 4 at once,
  // tick 200 ms: 28-85 reads a second, now 3-4 reads in all; orchestrator/run_loop_process_test).
  // A kill is always confirmed by a fresh reading of its own (confirm_kill).
  std::int64_t next_sample_ms_ = 0;
};

}  // namespace ab
