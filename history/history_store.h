// HistoryStore: the SQLite file holding every run, every job's measured peaks and its timeline.
//
// One file per output directory by default (default_history_path), shared safely by concurrent
// align-batch processes: WAL mode, a busy timeout, one IMMEDIATE transaction per write, foreign
// keys on, schema versioned with PRAGMA user_version and marked with PRAGMA application_id.
// Expected failures (corrupt file, newer schema, unwritable place, lock held past the timeout,
// full disk) come back as values whose message names the file and says what to do.
#pragma once

#include "common/result.h"
#include "history/run_sample.h"
#include "history/run_settings.h"
#include "history/timeline.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

struct sqlite3;
struct sqlite3_stmt;

namespace ab {

/// A value or a user-facing error (naming the database file and what to do).
template <class T>
using StoreResult = Result<T>;

/// One align-batch run, as begin_run records it.
struct RunInfo {
  std::int64_t started_at_ms = 0;  ///< Unix ms; 0: now
  std::string host;
  std::uint32_t cores = 0;
  std::uint64_t mem_total_bytes = 0;  ///< /proc/meminfo MemTotal
  std::uint64_t budget_bytes = 0;     ///< the effective budget the scheduler used
  std::string version = AB_VERSION;
  RunSettings settings;  ///< what the run had in force (history/run_settings.h)
};

/// A recorded run, as read back.
struct RunRow {
  std::int64_t id = 0;
  RunInfo info;
  std::optional<std::int64_t> ended_at_ms;  ///< none: still running, or the process died
  std::optional<int> exit_code;
  std::uint32_t job_count = 0;  ///< jobs recorded under this run
  std::uint32_t ok_count = 0;
};

/// How a job ended. Only kOk jobs feed estimates and resume (a killed job's peak is a lower
/// bound, not its peak).
enum class JobStatus { kOk, kFailed, kKilled, kDied };
/// "ok", "failed", "killed", "died".
const char* to_string(JobStatus status);
std::optional<JobStatus> parse_job_status(const std::string& text);

/// One output file a job wrote, as it was right after the job: resume redoes the job when the
/// file is gone or its size or mtime no longer match (someone deleted or edited it).
struct OutputFile {
  std::string path;  ///< absolute; bytes as the file system has them (not necessarily UTF-8)
  std::uint64_t size_bytes = 0;
  std::int64_t mtime_ns = 0;
};

/// One finished job (or one ended attempt, if the caller records attempts separately).
struct JobRecord {
  std::int64_t run_id = 0;
  std::string input_path;
  std::uint64_t input_size_bytes = 0;
  std::int64_t input_mtime_ns = 0;
  std::optional<double> audio_duration_s;
  std::string job_key;  ///< see history/job_key.h
  JobStatus status = JobStatus::kOk;
  std::uint32_t attempts = 1;
  std::uint64_t peak_rss_bytes = 0;
  std::uint64_t peak_pss_bytes = 0;
  std::uint64_t peak_uss_bytes = 0;
  std::uint64_t peak_vram_bytes = 0;
  double wall_s = 0;
  double cpu_s = 0;
  std::optional<int> exit_status;  ///< the worker's exit status, when it exited
  std::optional<int> term_signal;  ///< the signal that ended it, when one did
  std::string error;
  std::int64_t finished_at_ms = 0;  ///< Unix ms; 0: now
  // What resume compares besides the input (schema 2; rows written by schema 1 have an empty task).
  std::string task;  ///< "align" or "transcribe" (built-in engine), "command" (external)
  std::optional<std::string> transcript_hash;  ///< XXH3-128 hex of the transcript's bytes; none: no transcript
  std::vector<OutputFile> outputs;  ///< ok jobs: every file written (read back by last_ok_job only)
  /// Unix ms when this attempt started; none in rows from before schema 3.
  std::optional<std::int64_t> started_at_ms;
  /// History's predicted peak for this attempt when it started (scaled by --margin); none when
  /// history had none. A retry's raised reservation is admission's, not a prediction: not here.
  std::optional<std::uint64_t> predicted_peak_bytes;
  /// It died and the kernel's OOM killer is suspected (the OOM counter rose, or SIGKILL not ours).
  bool oom_suspected = false;
};

/// One job for record_jobs(): its record and its memory timeline.
struct JobWrite {
  JobRecord job;
  std::vector<TimelinePoint> timeline;
};

/// A recorded job, as read back.
struct JobRow : JobRecord {
  std::int64_t id = 0;
};

/// sacct's figures for one Slurm array task of a run (`--executor slurm`): recorded beside the
/// jobs the task's own align-batch measured, which are what predictions use (docs/slurm.md).
struct SlurmTaskRecord {
  std::int64_t run_id = 0;
  std::string task_id;  ///< "123_4"
  std::string job_key;  ///< the key of the run's jobs
  std::string state;    ///< sacct State: COMPLETED, OUT_OF_MEMORY, ...
  int exit_code = 0;
  int exit_signal = 0;
  std::uint64_t req_mem_bytes = 0;
  std::optional<std::uint64_t> max_rss_bytes;  ///< the .batch step's MaxRSS; none: sacct had not shown it
  double elapsed_s = 0;
  std::uint32_t files = 0;
};

/// One row of keys(): what history knows per job key.
struct KeyRow {
  std::string job_key;
  std::uint32_t job_count = 0;  ///< all statuses
  std::uint32_t ok_count = 0;
  std::int64_t last_finished_at_ms = 0;
};

/// `<out_dir>/.align-batch/history.sqlite`: the history sits beside the outputs it describes, so
/// resuming a corpus into the same directory finds it. `--history PATH` overrides it.
std::filesystem::path default_history_path(const std::filesystem::path& out_dir);

/// The schema version this build writes; files with a higher PRAGMA user_version are refused.
constexpr int kHistorySchemaVersion = 5;
/// PRAGMA application_id of align-batch history files ("ABH1"), so that another program's SQLite
/// file is never mistaken for ours.
constexpr std::int32_t kHistoryApplicationId = 0x41424831;
/// 10 s: a write transaction takes well under 10 ms (history_store_test's two-process test), so a
/// lock held longer means something is wrong, and a user should hear about it.
constexpr std::chrono::milliseconds kDefaultBusyTimeout{10000};

/// One connection to the history file. Not for concurrent use from several threads: give each
/// thread (or process) its own HistoryStore; SQLite's locking makes them safe together.
class HistoryStore {
 public:
  /// Whether open() may create a missing file (and its directory).
  enum class Create { kIfMissing, kNever };

  /// Opens the history at `path`, creating it (and missing parent directories) when allowed,
  /// migrating an older schema forward. Never recreates or rewrites a file it cannot read.
  static StoreResult<std::unique_ptr<HistoryStore>> open(
      const std::filesystem::path& path, Create create = Create::kIfMissing,
      std::chrono::milliseconds busy_timeout = kDefaultBusyTimeout);

  ~HistoryStore();
  HistoryStore(const HistoryStore&) = delete;
  HistoryStore& operator=(const HistoryStore&) = delete;

  const std::filesystem::path& path() const { return path_; }

  /// Records a run's start; returns its id.
  StoreResult<std::int64_t> begin_run(const RunInfo& run);
  /// Records a run's end (ended_at_ms 0: now).
  StoreResult<Done> end_run(std::int64_t run_id, int exit_code, std::int64_t ended_at_ms = 0);

  /// Records one job and its timeline (down-sampled to `max_points`, keeping the peak) in one
  /// transaction, committed before returning; returns the job's id.
  StoreResult<std::int64_t> record_job(const JobRecord& job,
                                       const std::vector<TimelinePoint>& timeline = {},
                                       std::size_t max_points = kDefaultTimelinePoints);

  /// Records `jobs` as record_job does, all in one transaction (all or none); returns their ids
  /// in order. A run records its jobs in batches: one commit per job made the database the
  /// bottleneck of tiny jobs (run_loop.cpp).
  StoreResult<std::vector<std::int64_t>> record_jobs(const std::vector<JobWrite>& jobs,
                                                     std::size_t max_points = kDefaultTimelinePoints);

  /// Resume: true if an ok job exists for this input path, size, mtime and key.
  StoreResult<bool> find_done(const std::string& input_path, std::uint64_t size_bytes,
                              std::int64_t mtime_ns, const std::string& job_key);

  /// Resume: the newest ok job for this input path and key, with its outputs; none if there is none.
  StoreResult<std::optional<JobRow>> last_ok_job(const std::string& input_path, const std::string& job_key);
  /// True if an ok job exists for this input path under a key other than `job_key` (the model or
  /// command changed since it was done).
  StoreResult<bool> ok_under_other_key(const std::string& input_path, const std::string& job_key);

  /// The key's most recent jobs (newest first), at most `limit`.
  StoreResult<std::vector<JobRow>> jobs_for_key(const std::string& job_key,
                                                std::size_t limit = 1000);
  /// One run's jobs in the order they finished.
  StoreResult<std::vector<JobRow>> jobs_for_run(std::int64_t run_id);
  /// A job's stored (down-sampled) timeline, in time order.
  StoreResult<std::vector<TimelinePoint>> timeline(std::int64_t job_id);
  /// Every run, newest first, at most `limit`.
  StoreResult<std::vector<RunRow>> runs(std::size_t limit = 1000);
  /// One run; std::nullopt inside the result if there is no such run.
  StoreResult<std::optional<RunRow>> run(std::int64_t run_id);
  /// Per key: job counts and last use, most recently used first.
  StoreResult<std::vector<KeyRow>> keys();
  /// Deletes a key's jobs, their timelines and its tuned settings; returns the jobs deleted.
  StoreResult<std::uint32_t> forget_key(const std::string& job_key);

  /// Tuned settings for a key (written by `replay --apply`), or null JSON when none.
  StoreResult<nlohmann::json> tuned_settings(const std::string& job_key);
  /// One Slurm task's sacct figures (replaces an earlier row of the same run and task).
  StoreResult<Done> record_slurm_task(const SlurmTaskRecord& task);
  /// Appends `samples` to run `run_id`'s (one transaction).
  StoreResult<Done> record_run_samples(std::int64_t run_id, const std::vector<RunSample>& samples);
  /// A run's samples in time order; none for runs recorded before they were.
  StoreResult<std::vector<RunSample>> run_samples(std::int64_t run_id);
  /// A run's Slurm tasks, in the order they were recorded.
  StoreResult<std::vector<SlurmTaskRecord>> slurm_tasks_for_run(std::int64_t run_id);
  StoreResult<Done> store_tuned_settings(const std::string& job_key,
                                         const nlohmann::json& settings);

 private:
  HistoryStore(std::filesystem::path path, sqlite3* db, std::chrono::milliseconds busy_timeout);
  std::string failure(const std::string& what) const;

  std::filesystem::path path_;
  sqlite3* db_ = nullptr;
  std::chrono::milliseconds busy_timeout_;
  // find_done runs once per corpus file at startup: prepared once (measured 52 -> 4-15 us per lookup on a loaded 2-core box).
  sqlite3_stmt* find_done_stmt_ = nullptr;
  sqlite3_stmt* last_ok_stmt_ = nullptr;      ///< last_ok_job, once per corpus file: prepared once too
  sqlite3_stmt* outputs_stmt_ = nullptr;
  sqlite3_stmt* other_key_stmt_ = nullptr;
};

}  // namespace ab
