// SlurmExecutor: `--executor slurm`: the corpus as Slurm job arrays, each task an align-batch run
// over its shard with its own history, merged back into the main history as tasks end.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "orchestrator/batch/corpus.h"
#include "orchestrator/batch/progress_sink.h"
#include "orchestrator/batch/run_loop.h"
#include "orchestrator/batch/slurm_cluster.h"
#include "orchestrator/core/slurm_plan.h"

namespace ab {

class HistoryStore;
struct JobRow;

/// Settings of a Slurm run beyond the local run's (RunLoopConfig: key, task, force, margin).
struct SlurmConfig {
  std::string align_batch_path;          ///< the binary every task runs (this one)
  std::vector<std::string> task_options; ///< the tasks' options (--out, --workers, --reserve, engine options)
  std::vector<std::string> tail;         ///< "--" and the command after it; empty: the built-in engine
  SlurmPlanConfig plan;  ///< its files_per_task is set per plan (files_per_task()) unless files_per_task is
  std::size_t files_per_task = 0;  ///< files a task; 0: files_per_task() chooses
  std::string partition;                 ///< --slurm-partition; empty: the cluster's default
  std::uint32_t max_tasks = 0;           ///< --slurm-max-tasks: each array's %N; 0: no throttle
  std::vector<std::string> sbatch_args;  ///< --slurm-arg, unchanged
  int poll_ms = 1000;                    ///< sacct is asked this often
  /// OUT_OF_MEMORY: a file is resubmitted at most this many times, its need raised each time.
  std::uint32_t max_oom_resubmits = 3;
  /// Each resubmission asks for at least this times the last request's need (or the peak the task
  /// saw, if higher). 2: three resubmissions cover a prediction 8 x too low; at most half of
  /// the last request is wasted.
  double oom_raise = 2.0;
  /// What one task costs beyond its jobs: Slurm starting and ending it and its align-batch's own
  /// start and end, during which its request is held. 1 s: measured on the test node at load ~7
  /// (bench/slurm_timeline.py): 0.5 s from a task's end to the next task's start in its slot (the
  /// controller schedules every second), 0.4 s from Slurm's start to the first job and from the
  /// last job to Slurm's end. Sets how many files a task runs (files_per_task_for_overhead).
  double task_overhead_s = 1.0;
  /// Without history, the first wave: this many files (spread over sizes), one per task, each
  /// asking for half the largest node: enough for the estimator's first fit (min_fit_jobs).
  std::size_t cold_wave_files = 5;
  /// A task's files are decided as soon as its State is terminal; its sacct figures (MaxRSS of
  /// the .batch step, which lags the end by ~3 s) are recorded once they show, or this long
  /// after the State turned terminal, without holding anything up: a run whose last tasks' MaxRSS
  /// has not shown by the time every file is decided records them without it.
  int settle_ms = 8000;
  /// Ctrl-C: how long to wait for cancelled tasks to end before giving up on them.
  int cancel_wait_ms = 30000;
  bool live_line = false;  ///< a terminal: redraw one status line; else a line when counts change
};

/// What the Slurm run did beyond the summary (tests, benchmarks, the closing line).
struct SlurmStats {
  std::uint32_t arrays = 0;
  std::uint32_t tasks = 0;
  std::uint32_t out_of_memory_tasks = 0;
  std::uint32_t resubmitted_files = 0;
  double requested_mib_s = 0;  ///< sum over ended tasks of ReqMem × elapsed
  double used_mib_s = 0;       ///< sum over ended tasks of MaxRSS × elapsed (sacct)
  /// Tasks recorded before sacct showed their MaxRSS (counted as 0 in used_mib_s): the run ended,
  /// or settle_ms passed, first.
  std::uint32_t tasks_without_max_rss = 0;
};

class SlurmExecutor {
 public:
  /// `history` must not be null: predictions, done-ness and every task's peaks live there.
  SlurmExecutor(RunLoopConfig loop, SlurmConfig config, SlurmCluster& cluster, HistoryStore* history,
                ProgressSink& progress, std::function<int()> interrupts);

  /// Asks the cluster for its nodes (the largest caps every request); an error message (for exit 2) or empty.
  std::string prepare();
  /// --dry-run: prints the sbatch commands and every task's files and --mem to `out`; submits nothing.
  void dry_run(const Corpus& corpus, std::FILE* out);
  /// Submits, waits, merges, resubmits; returns the summary (exit codes as a local run's).
  RunSummary run(const Corpus& corpus);

  const SlurmStats& stats() const { return stats_; }
  /// The submitter's run in the main history (0 before run()).
  std::int64_t run_id() const { return run_id_; }

 private:
  struct File;
  struct Task;
  struct Array;
  std::vector<File> plan_files(const Corpus& corpus, RunSummary& summary);
  /// History's mean length of a finished job of this key, for the tasks' size (0: none yet).
  void learn_job_seconds();
  /// Files per task for the waiting `known` files: the overhead rule, at least files_per_task_for;
  /// sets each file's waves (plan_arrays shortens the last tasks by them).
  std::size_t files_per_task(std::vector<ShardFile>& known, const SlurmPlanConfig& plan) const;
  std::vector<PlannedArray> plan_waiting(std::vector<File>& files, bool cold, std::vector<std::size_t>& unplanned);
  SbatchArray sbatch_array(const PlannedArray& planned, const std::filesystem::path& dir) const;
  Result<Done> submit(const PlannedArray& planned, std::vector<File>& files, std::vector<Array>& arrays,
                      std::vector<Task>& tasks);
  void finish_task(Task& task, const SacctRow* row, const SacctRow* batch, std::vector<File>& files, RunSummary& summary,
                   bool stopping);
  // The steps of finish_task.
  struct TaskEnd;
  struct LastAttempt;
  /// The ended task's own history into the main one, under this run; each of its files' attempts.
  std::map<std::size_t, LastAttempt> merge_task_history(const Task& task, const std::vector<File>& files,
                                                        RunSummary& summary);
  /// One row of a task's history (with its outputs, if the newest ok one, and its timeline) into the main one.
  void merge_job_row(HistoryStore& task_history, const JobRow& row);
  /// One file of an ended task: done, failed, or waiting again.
  void settle_file(const Task& task, const TaskEnd& end, const LastAttempt& last, File& file, RunSummary& summary);
  /// A file that ran out of memory: waiting again with a bigger need, or failed if it cannot get one.
  void resubmit_for_memory(const Task& task, const TaskEnd& end, const LastAttempt& last, File& file,
                           RunSummary& summary);
  /// sacct's figures for an ended task: the stats, a history row and a tasks.jsonl line.
  void record_sacct(Task& task);
  // The steps of run(), over its state.
  struct Run;
  bool begin(const Corpus& corpus, Run& run);
  void refresh_predictions(Run& run);
  void submit_waiting(Run& run);
  void cancel_all(Run& run);
  /// Asks Slurm where the tasks stand; decides ended tasks' files. True: a task ended.
  bool poll(Run& run);
  void show_status(Run& run);
  void wait_for_next_poll(Run& run, int interrupts);
  void finish(Run& run);

  RunLoopConfig loop_;
  SlurmConfig config_;
  SlurmCluster& cluster_;
  HistoryStore* history_;
  ProgressSink& progress_;
  std::function<int()> interrupts_;
  SlurmStats stats_;
  std::vector<NodeGroup> nodes_;    ///< the partition's nodes (prepare)
  std::uint64_t node_mem_bytes_ = 0;  ///< the largest of them
  double job_s_ = 0;                  ///< learn_job_seconds
  std::int64_t run_id_ = 0;
  std::filesystem::path run_dir_;  ///< OUT/.align-batch/slurm/<run id>: scripts, lists, task histories, logs
};

}  // namespace ab
