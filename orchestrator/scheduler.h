// Scheduler: the pure state machine that decides which job runs, which is killed, and which fails.
//
// It is ninja's Plan for memory: it takes events (job queued, prediction updated, memory sample,
// job ended) and returns decisions (start job X, kill job Y, fail job Z). It never touches
// processes, files or the clock; time arrives as `now_ms` inside events, so the same code runs the
// real loop (orchestrator/run_loop), the tests (no processes at all) and `align-batch replay`
// (simulated time).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ab {

using JobId = std::uint64_t;

/// Fixed settings of one run. Budgets are bytes of PSS (and VRAM) summed over all workers.
struct SchedulerConfig {
  std::uint64_t budget_bytes = 0;       ///< effective memory budget (memguard::effective_budget)
  std::uint64_t vram_budget_bytes = 0;  ///< 0: no GPU budget, VRAM is not considered
  std::uint32_t max_workers = 0;        ///< upper bound on concurrent jobs; 0: memory alone decides
  double high_water = 0.90;             ///< preempt when measured total > high_water * budget
  std::uint64_t reserve_bytes = 0;      ///< preempt when the machine's MemAvailable falls below this
  double psi_full_avg10_limit = 20.0;   ///< preempt when PSI memory "full" avg10 (percent) exceeds this
  std::int64_t pause_after_kill_ms = 2000;  ///< no admissions for this long after a guard kill
  std::uint32_t max_attempts = 3;       ///< a job is started at most this many times
  std::uint32_t cold_start_jobs = 1;    ///< at most this many jobs without a prediction run at once
  double raise_factor = 1.25;           ///< a requeued job's estimate: raise_factor * peak seen
};

/// A job as the scheduler sees it: an id, a size for ordering, and (when history has one) a
/// predicted peak. The loop keeps everything else (paths, outputs) under the same id.
struct JobSpec {
  JobId id = 0;
  std::uint64_t size_bytes = 0;
  std::optional<std::uint64_t> predicted_peak_bytes;  ///< none: no history for this job's key
  std::uint64_t predicted_vram_bytes = 0;
};

/// One memguard reading, taken by the loop (or replayed). Per running job: its worker tree's usage.
struct MemorySample {
  std::int64_t now_ms = 0;
  struct Job {
    JobId id = 0;
    std::uint64_t pss_bytes = 0;
    std::uint64_t vram_bytes = 0;
  };
  std::vector<Job> jobs;                  ///< running jobs only
  std::uint64_t idle_pss_bytes = 0;       ///< idle workers (persistent, model loaded) count too
  std::optional<std::uint64_t> mem_available_bytes;  ///< machine or cgroup, whichever is lower
  std::optional<double> psi_full_avg10;   ///< percent, where the kernel has PSI
};

/// How a started job ended.
struct JobOutcome {
  enum class Kind {
    kOk,          ///< finished, outputs written
    kFailed,      ///< the job itself failed (bad input): never retried
    kDied,        ///< the process died (signal or crash) without the guard asking: retried
    kGuardKilled  ///< killed on a Kill decision: requeued with a raised estimate
  };
  Kind kind = Kind::kOk;
  std::uint64_t peak_pss_bytes = 0;   ///< measured peak over the job's life
  std::uint64_t peak_vram_bytes = 0;
  bool oom_suspected = false;         ///< SIGKILL we did not send, or the cgroup's oom_kill rose
  std::string error;                  ///< for kFailed / kDied: what happened, for the summary
};

/// What the loop must do.
struct Decision {
  enum class Kind { kStart, kKill, kFail };
  Kind kind = Kind::kStart;
  JobId job = 0;
  std::string reason;  ///< for kKill and kFail: user-facing, names the figures involved
};

/// Counters for the summary and for replay.
struct SchedulerStats {
  std::uint32_t started = 0, finished_ok = 0, failed = 0, retried = 0, guard_kills = 0,
                oom_deaths = 0;
  std::uint64_t peak_total_pss_bytes = 0;  ///< highest measured total seen in any sample
  std::uint32_t peak_running = 0;
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerConfig& config);

  /// A job joins the queue.
  void add_job(const JobSpec& job);
  /// History learned more (a job of the same key finished): a queued job's prediction changes.
  void set_prediction(JobId job, std::uint64_t predicted_peak_bytes);
  /// A memory reading. May queue Kill decisions for the next poll().
  void on_sample(const MemorySample& sample);
  /// A started job ended (reported by the loop, whatever the cause).
  void on_job_ended(JobId job, const JobOutcome& outcome, std::int64_t now_ms);
  /// Re-checks a pending kill against a fresh reading taken right before acting (STYLE.md 12):
  /// true if the kill should still go ahead.
  bool confirm_kill(JobId job, const MemorySample& fresh);

  /// The decisions to carry out now: kills first, then failures, then starts. Started jobs are
  /// counted as running from now_ms.
  std::vector<Decision> poll(std::int64_t now_ms);

  /// Every job has finished or failed for good.
  bool done() const;
  std::size_t queued() const;
  std::size_t running() const;
  /// Sum over running jobs of max(predicted, observed) plus idle workers: what admission uses.
  std::uint64_t committed_bytes() const;
  const SchedulerStats& stats() const { return stats_; }
  const SchedulerConfig& config() const { return config_; }

 private:
  SchedulerConfig config_;
  SchedulerStats stats_;
  // State is the implementer's (see orchestrator/scheduler.cpp).
  struct State;
  struct StateDeleter { void operator()(State*) const; };
  std::unique_ptr<State, StateDeleter> state_;
};

}  // namespace ab
