// RunLoop: wires corpus → predictions → Scheduler → WorkerRunner, with memory guarding and history.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "history/run_settings.h"
#include "orchestrator/batch/batch_driver.h"
#include "orchestrator/batch/clock.h"
#include "orchestrator/batch/command_template.h"
#include "orchestrator/batch/corpus.h"
#include "orchestrator/batch/memory_probe.h"
#include "orchestrator/batch/progress_sink.h"
#include "orchestrator/core/scheduler.h"
#include "orchestrator/batch/worker_runner.h"
#include "protocol/transcript.h"

namespace ab {

class HistoryStore;

/// Built-in engine: what the parent needs to know an alignment's least memory before it starts
/// (protocol/alignment_size.h): the model's labels and frame geometry (its sidecar), and the
/// workers' --max-trellis-mib.
struct AlignmentLimit {
  LabelSet labels;
  int sample_rate_hz = 16000;
  int samples_per_frame = 320;
  std::uint64_t cap_bytes = 0;
};

/// Why `file` cannot be aligned within `limit`, known before it starts from its header's length
/// and its transcript's tokens (the worker's own check, the same figure and advice), or nothing
/// when it fits or cannot be told here (no duration, no readable transcript: the job says why).
/// The transcript is read only when a bound from its size alone does not settle it.
std::optional<std::string> alignment_refusal(const CorpusFile& file, const AlignmentLimit& limit);

/// Settings of one run (from the command line).
struct RunLoopConfig {
  /// The driver's settings: scheduler, sampling, grace periods, timeout, hang detection.
  /// `persistent_workers` is set by the loop (the built-in engine's workers load a model).
  DriverConfig driver;
  std::filesystem::path out_dir;
  std::string job_key;                     ///< history/job_key.h: model or command key
  std::optional<CommandTemplate> command;  ///< external-command engine; none: built-in worker
  std::string task = "auto";               ///< built-in engine: align, transcribe or auto
  /// Built-in engine: align jobs whose alignment cannot fit are failed in the plan, unstarted.
  std::optional<AlignmentLimit> alignment_limit;
  bool force = false;                      ///< ignore history's "done" (redo everything)
  std::uint32_t timeline_points = 64;
  /// History's predicted peaks are multiplied by this (--margin, or a key's tuned settings).
  double prediction_scale = 1.0;
  std::uint64_t mem_total_bytes = 0;  ///< recorded with the run in history
  RunSettings settings;  ///< recorded with the run in history
};

/// One file's plan (--dry-run prints it; run() follows it).
struct PlannedFile {
  std::size_t file = 0;                        ///< its index in the corpus (Corpus::files)
  bool skip = false;                           ///< done in history already (resume.h)
  std::string reason;                          ///< why it runs: "new", "transcript changed", ... (resume.h)
  std::string task;                            ///< "align", "transcribe" (built-in engine) or "command"
  /// --task auto: transcribed because it has no transcript, while other files of the corpus have one.
  bool transcribed_for_want = false;
  std::optional<std::uint64_t> predicted_peak_bytes;
};

/// What the loop did beyond the summary (for tests and benchmarks).
struct RunLoopStats {
  std::uint32_t refits = 0;                ///< times predictions were refitted from history
  std::uint64_t predictions_updated = 0;   ///< queued jobs handed a refitted prediction, in total
  std::uint32_t workers_retired = 0;       ///< idle workers let go (WorkerRunner::retire_idle)
  std::uint32_t peak_running = 0;          ///< most jobs running at once (the scheduler's count)
  std::uint32_t memory_reads = 0;          ///< MemoryProbe::read calls (ticks, kill confirmations, deaths)
};

class RunLoop {
 public:
  /// `history` may be null (no history: no resume, no predictions). `interrupts` returns how
  /// many SIGINT/SIGTERM have arrived (signals.h); the loop polls it every tick. `clock` null:
  /// the machine's (SystemClock); tests pass a fake one that their runner's wait() advances.
  RunLoop(RunLoopConfig config, WorkerRunner& runner, MemoryProbe& probe, HistoryStore* history,
          ProgressSink& progress, std::function<int()> interrupts, Clock* clock = nullptr);

  /// Predictions and resume decisions for every file, without running anything.
  std::vector<PlannedFile> plan(const Corpus& corpus, std::vector<FailedFile>& errors);

  /// Runs the batch to the end (or to an interrupt) and returns the summary. Every ended attempt
  /// is recorded in history as it ends.
  RunSummary run(const Corpus& corpus);

  const RunLoopStats& stats() const { return stats_; }
  /// The run's id in history after run(); 0 without history (or when it could not be recorded).
  std::int64_t run_id() const { return run_id_; }

 private:
  struct Job;
  struct Attempt;  ///< a job's attempt under way (run_loop.cpp)
  struct Pass;  ///< one run's state and steps (run_loop.cpp)
  RunnerJob make_runner_job(Job& job, const CorpusFile& file);
  Result<Done> finish_outputs(Job& job, const CorpusFile& file, const JobEnd& end);
  std::string task_for(const CorpusFile& file) const;
  /// Jobs name their task by its index in task_names_ (a string each cost 32 bytes a file).
  std::uint8_t task_index(const std::string& task);
  const std::string& task_of(const Job& job) const;
  /// External engine: a staging directory for `job`'s attempt, from the pool (or a new one).
  void take_staging(Job& job);
  /// Empties `job`'s staging directory (unless `known_empty`) and returns it to the pool.
  void release_staging(Job& job, bool known_empty);
  DriverConfig driver_config() const;

  RunLoopConfig config_;
  WorkerRunner& runner_;
  MemoryProbe& probe_;
  HistoryStore* history_;
  ProgressSink& progress_;
  std::function<int()> interrupts_;
  Clock& clock_;
  RunLoopStats stats_;
  std::int64_t run_id_ = 0;
  std::filesystem::path staging_dir_;
  std::vector<std::filesystem::path> free_staging_;
  std::size_t staging_made_ = 0;
  std::vector<std::string> task_names_;
};

/// Removes staging directories under `out_dir`/.align-batch/staging left by runs that died
/// (their pid no longer exists). Returns how many were removed.
std::size_t clean_stale_staging(const std::filesystem::path& out_dir);

}  // namespace ab
