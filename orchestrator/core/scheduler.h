// Scheduler: the pure state machine that decides which job runs, which is killed, and which fails.
//
// It is ninja's Plan for memory: it takes events (job queued, prediction updated, memory sample,
// job ended) and returns decisions (start job X, kill job Y, fail job Z). It never touches
// processes, files or the clock; time arrives as `now_ms` inside events, so the same code runs the
// real loop (orchestrator/run_loop), the tests (no processes at all) and `align-batch replay`
// (simulated time).
//
// Every operation costs O(log n) in the number of queued jobs (plus O(k) in the k running jobs a
// sample lists; set_predictions, which moves every queued job, O(n log n)), so replay can push a
// million jobs through it in seconds (bench/replay_speed.sh).
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ab {

using JobId = std::uint64_t;

/// Fixed settings of one run. Budgets are bytes of PSS (and VRAM) summed over all workers.
struct SchedulerConfig {
  std::uint64_t budget_bytes = 0;       ///< effective memory budget (memguard::effective_budget); 0: none
  std::uint64_t vram_budget_bytes = 0;  ///< 0: no GPU budget, VRAM is not considered
  std::uint32_t max_workers = 0;        ///< upper bound on concurrent jobs; 0: memory alone decides
  /// Preempt when the measured total exceeds high_water * budget and either some job clearly
  /// outgrew its reservation (by 2% + 8 MiB) or the plan corrected by what is seen (each job at
  /// max(reservation, current use), plus idle workers) exceeds the budget: jobs within a plan
  /// that fits are never killed.
  double high_water = 0.90;
  std::uint64_t reserve_bytes = 0;      ///< preempt when the machine's MemAvailable falls below this
  double psi_full_avg10_limit = 20.0;   ///< preempt when PSI memory "full" avg10 (percent) exceeds this
  std::int64_t pause_after_kill_ms = 2000;  ///< no admissions for this long after a guard kill
  std::uint32_t max_attempts = 3;       ///< a job may die (crash) this many times before it fails
  std::uint32_t cold_start_jobs = 2;    ///< at most this many jobs without a prediction run at once
  double raise_factor = 1.25;           ///< a requeued job's estimate: raise_factor * peak seen
  /// An unpredicted job is admitted as if it needed max(largest peak observed so far, this).
  std::uint64_t cold_start_floor_bytes = 0;
  /// Smaller jobs that may start past the largest queued job while it does not fit; after that,
  /// admissions hold until it fits, so it never starves. 32 is a choice, not a measurement: a few
  /// rounds of gap filling at typical concurrency (4-16) before the large job's turn is forced.
  std::uint32_t max_overtakes = 32;
  /// Guard kills and suspected OOM deaths a job may suffer before it fails (they do not count
  /// against max_attempts, since they are not the job's fault; this bounds pathological loops).
  std::uint32_t max_guard_kills = 8;
};

/// The MemAvailable floor the guard keeps (SchedulerConfig::reserve_bytes) for a budget that
/// leaves `budget_reserve_bytes` of the machine to others: that, at most 256 MiB. A real run and
/// its replay take it from the same recorded reserve.
inline std::uint64_t guard_reserve_bytes(std::uint64_t budget_reserve_bytes) {
  return budget_reserve_bytes < (256ull << 20) ? budget_reserve_bytes : (256ull << 20);
}

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
  /// How many idle workers idle_pss_bytes covers (0: unknown, none reusable). A started job
  /// reuses one, and its prediction already holds the worker's own memory, so admission stops
  /// counting that worker's share of idle_pss_bytes.
  std::uint32_t idle_workers = 0;
  /// Memory every worker maps and none owns, charged once for the run: the shared weights file
  /// (worker/shared_weights.h), which stays until the run ends. Jobs' and idle workers' figures
  /// exclude their share of it, so history learns each worker's own memory and admission charges
  /// the weights once, not once per worker.
  std::uint64_t shared_bytes = 0;
  std::optional<std::uint64_t> mem_available_bytes;  ///< machine or cgroup, whichever is lower
  std::optional<double> psi_full_avg10;   ///< percent, where the kernel has PSI
};

/// Why the scheduler stops or fails a job (or the loop ends one, or the run cannot go on): what
/// happened and its figures. None of them says anything in words; the CLI words it
/// (orchestrator/cli/decision_words.h).
struct Reason {
  enum class Kind {
    kNone,
    // kFail: the job cannot run, or has run out of attempts.
    kNeedsMoreThanBudget,      ///< need_bytes at peak > limit_bytes, the budget
    kNeedsMoreThanVramBudget,  ///< need_bytes of VRAM at peak > limit_bytes, the VRAM budget
    kNeedsMoreBesideShared,    ///< need_bytes + shared_bytes (the shared weights) > limit_bytes
    kCrashedTooOften,          ///< died `count` times; last_error (empty: none reported)
    kGuardKilledTooOften,      ///< stopped `count` times by the guard; need_bytes: the peak seen
    // kKill: memory is short; the youngest job (running_s, using job_bytes) is stopped.
    kMemoryAboveMark,          ///< used_bytes in use > line_bytes (percent % of limit_bytes)
    kVramAboveMark,            ///< the same for VRAM and the VRAM budget
    kAvailableBelowReserve,    ///< used_bytes available < limit_bytes, the reserve
    kPressureStall,            ///< PSI full avg10 percent > limit_percent
    // A job's end (JobOutcome::reason): what the loop saw that the job did not say.
    kTimedOut,                 ///< ran longer than limit_s (the per-job timeout) and was stopped
    kHung,                     ///< its worker's heartbeat was silent for limit_s: killed
    kKilledByOther,            ///< SIGKILL neither we nor the OOM killer sent; last_error: the end's own
    // The run's setup (BatchDriver::setup_fault): no worker can run here, so no file can.
    kWorkerSetupFailed,        ///< a worker cannot start or load; last_error: the runner's own words
    kWorkerOverBudgetLoading,  ///< a loading worker held need_bytes and needs more than limit_bytes
    kWorkerAboveMarkLoading,   ///< a loading worker held need_bytes, above percent % of limit_bytes
    kWorkerIdleOverBudget,     ///< a loaded, idle worker holds need_bytes > limit_bytes
    kWorkerPeaksOverBudget,    ///< the smallest peak of history's `count` ok jobs, need_bytes > limit_bytes
    // A notice: the job's worker has been silent for silent_s; it is killed and the file retried.
    kWorkerSilent,
    // The Slurm executor's (batch/slurm_executor.h): how a file ended in its tasks, a submission.
    kSlurmTimeLimit,            ///< its task `subject` hit its time limit
    kSlurmOutOfMemoryTooOften,  ///< out of memory in `count` tasks; the last, `subject`, asked for limit_bytes
    kSlurmOverLargestNode,      ///< ran out in task `subject`, which asked for all limit_bytes of the largest node
    kSlurmSubmitted,            ///< a notice: array `subject` went in, `count` tasks at limit_bytes each
    kSlurmCannotCreateDir,      ///< cannot create the directory `subject`; last_error: the system's words
    kSlurmCannotWriteShards,    ///< cannot write the shard files in `subject`
    kSlurmCannotWriteScript,    ///< cannot write the task script `subject`
    // A file the run cannot do, or whose outputs it cannot put in place (RunLoop).
    kNoTranscript,              ///< --task align and no transcript `subject` (its stem) beside it
    kOutputMissing,             ///< output `subject` is gone right after the worker wrote it
    kCannotCreateOutputDir,     ///< cannot create the output directory `subject`; last_error: the system's words
  };
  Kind kind = Kind::kNone;
  std::uint64_t need_bytes = 0;
  std::uint64_t limit_bytes = 0;
  std::uint64_t shared_bytes = 0;
  std::uint64_t used_bytes = 0;
  std::uint64_t line_bytes = 0;
  double percent = 0;
  double limit_percent = 0;
  std::uint32_t count = 0;
  std::string last_error;
  double running_s = 0;          ///< kKill: how long the stopped job had run
  std::uint64_t job_bytes = 0;   ///< kKill: what the stopped job was using
  double limit_s = 0;            ///< kTimedOut, kHung: the allowance it overran, in seconds
  double silent_s = 0;           ///< kWorkerSilent: how long its heartbeat has not moved
  std::string subject;           ///< kSlurm*: the Slurm array or task ("123", "123_4"), or the path

  /// A reason of `kind`: `need_bytes` against a limit of `limit_bytes`.
  static Reason over(Kind kind, std::uint64_t need_bytes, std::uint64_t limit_bytes) {
    Reason r;
    r.kind = kind;
    r.need_bytes = need_bytes;
    r.limit_bytes = limit_bytes;
    return r;
  }
  /// A reason of `kind` about `subject` (a file, a directory, a Slurm array or task).
  static Reason about(Kind kind, std::string subject) {
    Reason r;
    r.kind = kind;
    r.subject = std::move(subject);
    return r;
  }
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
  /// Set when the loop, not the job, knows why it ended (a timeout, a hung worker, a SIGKILL from
  /// elsewhere): the run's progress sink words it into `error` before anything reads that.
  Reason reason;
};

/// What the loop must do.
struct Decision {
  enum class Kind { kStart, kKill, kFail };
  Kind kind = Kind::kStart;
  JobId job = 0;
  Reason reason;  ///< for kKill and kFail
};

/// Counters for the summary and for replay.
struct SchedulerStats {
  std::uint32_t started = 0,      ///< starts, retries included
      finished_ok = 0,            ///< jobs that ended kOk
      failed = 0,                 ///< jobs failed for good (kFailed, or a kFail decision)
      retried = 0,                ///< requeues after a crash, a guard kill or an OOM death
      guard_kills = 0,            ///< jobs that ended kGuardKilled
      oom_deaths = 0;             ///< jobs that ended kDied with oom_suspected
  std::uint64_t peak_total_pss_bytes = 0;  ///< highest measured total seen in any sample
  std::uint32_t peak_running = 0;
};

/// When to refit predictions from history as a run's jobs finish: after each of the first 8 ok
/// jobs, then at the 16th, 32nd, 64th, ... (the run loop and replay's --cold both follow this, so
/// replay models the loop; O(log n) refits of O(n) each, not one per finished job).
bool refit_due(std::uint32_t ok_jobs);

/// bytes × factor, saturating at the largest value instead of overflowing (a poisoned history's
/// prediction times a margin); every scaling of a prediction or an estimate goes through it.
std::uint64_t scaled_bytes(std::uint64_t bytes, double factor);

class Scheduler {
 public:
  explicit Scheduler(const SchedulerConfig& config);

  /// A job joins the queue. Its id must not be queued or running already. Ids should be small
  /// and dense (1, 2, ...): the scheduler keeps a slot for every id up to the largest.
  void add_job(const JobSpec& job);
  /// Room for ids up to `largest_id` at once (a big corpus's table, not grown by doubling).
  void reserve(JobId largest_id) { jobs_.reserve(largest_id + 1); }
  /// History learned more (a job of the same key finished): a queued job's prediction changes.
  /// For a running job it replaces the cold-start reservation. Never lowers an estimate raised
  /// after a kill. Unknown or finished jobs are ignored.
  void set_prediction(JobId job, std::uint64_t predicted_peak_bytes);
  /// The same for many jobs at once (history refitted: every queued job's prediction moves).
  /// Rebuilds the queue in O(n log n) when most of it changes.
  void set_predictions(const std::vector<std::pair<JobId, std::uint64_t>>& predictions);
  /// A memory reading. May queue Kill decisions for the next poll().
  void on_sample(const MemorySample& sample);
  /// A started job ended (reported by the loop, whatever the cause).
  void on_job_ended(JobId job, const JobOutcome& outcome, std::int64_t now_ms);
  /// Re-checks a pending kill against a fresh reading taken right before acting (the situation may have changed since the sample):
  /// true if the kill should still go ahead. False cancels the kill and the pause it started.
  bool confirm_kill(JobId job, const MemorySample& fresh);

  /// The decisions to carry out now: kills first, then failures, then starts. Started jobs are
  /// counted as running from now_ms.
  std::vector<Decision> poll(std::int64_t now_ms);

  /// Kill and fail decisions waiting for poll(). (A sample makes room for a start only by
  /// lowering idle workers' memory; otherwise, after on_sample only these make poll() worthwhile.)
  std::size_t pending_decisions() const { return pending_kills_.size() + pending_fails_.size(); }
  /// Every job has finished or failed for good, and every decision has been polled.
  bool done() const;
  std::size_t queued() const;
  /// Queued jobs with neither a prediction nor a raised estimate (waiting on slow start).
  std::size_t queued_unpredicted() const { return cold_queue_.size(); }
  std::size_t running() const;
  /// Sum over running jobs of max(predicted, observed) plus idle workers plus the shared weights:
  /// what admission uses.
  std::uint64_t committed_bytes() const;
  /// The same for VRAM (0 when no job declares or shows any).
  std::uint64_t committed_vram_bytes() const { return committed_vram_; }
  /// How many unpredicted jobs may run at once now (slow start: grows as they succeed).
  std::uint32_t cold_start_limit() const;
  /// Admissions are held (after a guard kill) until this time; 0 when never paused.
  std::int64_t paused_until_ms() const { return paused_until_ms_; }
  /// The estimate admission uses for a queued or running job (prediction, raised estimate or
  /// cold-start reservation); none for unknown jobs or queued unpredicted ones.
  std::optional<std::uint64_t> estimate_bytes(JobId job) const;
  const SchedulerStats& stats() const { return stats_; }
  const SchedulerConfig& config() const { return config_; }

 private:
  enum class Where : std::uint8_t { kGone, kQueued, kRunning };
  /// One is held for every job id up to the largest added: 120 bytes, its fields ordered so that
  /// nothing pads them; a crash's error lives in last_errors_. kGone: never added, or ended.
  struct Job {
    JobSpec spec;
    std::uint64_t floor_bytes = 0;       ///< estimate raised after a kill: never predicted below
    std::uint64_t floor_vram_bytes = 0;
    std::uint32_t deaths = 0;            ///< crashes (count against max_attempts)
    std::uint32_t guard_kills = 0;       ///< guard kills and OOM deaths
    Where where = Where::kGone;
    // While running:
    bool cold = false;                   ///< admitted without a prediction
    std::int64_t start_ms = 0;
    std::uint64_t start_seq = 0;
    std::uint64_t reserved_bytes = 0;    ///< what admission counted for it
    std::uint64_t observed_peak_bytes = 0;
    std::uint64_t observed_vram_bytes = 0;
    std::uint64_t observed_pss_now_bytes = 0;
  };
  /// Queue order for predicted jobs: estimate descending, then size descending, then id.
  using PredictedKey = std::tuple<std::uint64_t, std::uint64_t, JobId>;
  struct PredictedOrder {
    bool operator()(const PredictedKey& a, const PredictedKey& b) const;
  };
  /// Queue order for unpredicted jobs: size descending, then id (slow start takes one from the
  /// end early: admit()).
  using ColdKey = std::pair<std::uint64_t, JobId>;
  struct ColdOrder {
    bool operator()(const ColdKey& a, const ColdKey& b) const;
  };

  Job* find(JobId id);  ///< a queued or running job; null when gone or unknown
  const Job* find(JobId id) const;
  Job* find_running(JobId id);
  const Job* find_running(JobId id) const;
  void erase(JobId id);  ///< the job ended for good: its slot goes back to kGone
  std::uint64_t estimate_of(const Job& job) const;
  std::uint64_t vram_estimate_of(const Job& job) const;
  std::uint64_t charge_of(const Job& job) const;
  std::uint64_t vram_charge_of(const Job& job) const;
  std::uint64_t cold_need_bytes() const;
  void enqueue(Job& job);
  void dequeue(const Job& job);
  bool check_fits_alone(Job& job);
  void fail(JobId id, Reason reason);
  void requeue_or_fail(Job& job, std::uint64_t peak_seen_bytes, std::uint64_t peak_vram_seen_bytes,
                       bool raise);
  void start(Job& job, bool cold, std::int64_t now_ms, std::vector<Decision>& out);
  void admit(std::int64_t now_ms, std::vector<Decision>& out);
  std::uint64_t headroom_bytes(bool nothing_running) const;  ///< what admission may still commit
  /// The queue's head can never start beside the shared weights: it fails, decided in this poll.
  void fail_beside_shared(Job& head, std::uint64_t need_bytes, std::vector<Decision>& out);
  Job* first_fit(std::uint64_t headroom);  ///< the largest queued job that fits; null: none
  void observe(Job& job, std::uint64_t pss_bytes, std::uint64_t vram_bytes);
  std::optional<Reason> pressure_reason(const MemorySample& sample, bool lone_job) const;
  bool vram_fits(const Job& job) const;

  SchedulerConfig config_;
  SchedulerStats stats_;
  /// Indexed by id: ids are small and dense (1, 2, ...: the driver's), so a table beats a hash
  /// map's node and bucket per job (1M queued files: 120 MB against 150).
  std::vector<Job> jobs_;
  std::size_t live_jobs_ = 0;  ///< jobs_ not kGone: queued and running
  std::unordered_map<JobId, std::string> last_errors_;  ///< the last crash's error, of jobs that crashed
  std::set<PredictedKey, PredictedOrder> predicted_queue_;
  std::set<ColdKey, ColdOrder> cold_queue_;
  /// Running jobs by (start_ms, start order, id): the youngest is last.
  std::set<std::tuple<std::int64_t, std::uint64_t, JobId>> running_by_start_;
  std::uint64_t next_start_seq_ = 0;
  std::uint64_t committed_jobs_ = 0;     ///< sum of charge_of over running jobs
  std::uint64_t committed_vram_ = 0;
  std::uint64_t idle_pss_bytes_ = 0;
  std::uint32_t idle_workers_ = 0;
  std::uint64_t shared_bytes_ = 0;  ///< MemorySample::shared_bytes of the last sample
  std::uint32_t idle_reused_ = 0;  ///< starts since the last sample, each on an idle worker
  /// Idle workers' memory still charged when `reuses` more of them take jobs.
  std::uint64_t idle_charge_after(std::uint32_t reuses) const;
  std::uint64_t largest_peak_seen_bytes_ = 0;
  std::uint32_t cold_running_ = 0;
  std::uint32_t cold_starts_ = 0;       ///< unpredicted starts so far (admit(): which takes the smallest)
  std::uint32_t cold_succeeded_ = 0;
  std::int64_t paused_until_ms_ = 0;
  std::int64_t pause_before_kill_ms_ = 0;  ///< restored if confirm_kill cancels the kill
  std::optional<JobId> kill_in_flight_;
  JobId overtaken_head_ = 0;
  bool head_known_ = false;
  std::uint32_t overtakes_ = 0;
  std::vector<Decision> pending_kills_;
  std::vector<Decision> pending_fails_;
};

}  // namespace ab
