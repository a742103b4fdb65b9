// Slurm executor, pure parts: shards files by predicted peak into job arrays with per-task --mem,
// builds sbatch's arguments and the task script, parses sacct/sinfo text, maps Slurm states.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ab {

/// One file to place, as the planner sees it.
struct ShardFile {
  std::size_t index = 0;         ///< the caller's own index (into its file table)
  std::uint64_t need_bytes = 0;  ///< predicted peak with the margin, or a raised need after an OOM
  /// Files share a task only within one group: the submitter's is the output directory, since a
  /// task's align-batch writes every file of its list into one --out.
  std::size_t group = 0;
  /// 1 / how many tasks of its size the cluster runs at once (task_slots); 0: unknown. Tasks run
  /// in need order, so the waves of a class and the smaller ones after it are what is left of
  /// the run when the class starts: its tasks get fewer files when little is left (the tail).
  double waves = 0;
};

/// How tasks are sized.
struct SlurmPlanConfig {
  std::uint32_t concurrency = 1;        ///< jobs one task runs at once (its --workers)
  std::uint64_t worker_idle_bytes = 0;  ///< built-in engine: one idle worker (model loaded)
  /// The task's own align-batch parent and its --reserve. 24 MiB: the parent's RSS in a task
  /// measured 9-14 MiB; the rest is slack below the job's limit for page cache and reaction time.
  std::uint64_t task_overhead_bytes = 24ull << 20;
  /// The tasks' --high-water: their guard stops a job above this share of the budget, so the
  /// budget must hold need / high_water.
  double high_water = 0.9;
  std::size_t files_per_task = 1;
  /// Tasks whose requests are within this factor share one array, at the larger request: every
  /// array has one --mem, so the waste per task is below 15%.
  double class_step = 1.15;
};

/// One array task: its files (largest need first) and its request.
struct PlannedTask {
  std::vector<std::size_t> files;
  std::uint64_t largest_need_bytes = 0;
};

/// One job array: one --mem for every task.
struct PlannedArray {
  std::uint64_t mem_bytes = 0;
  std::vector<PlannedTask> tasks;
};

/// What a task of largest need `need_bytes` holding `files` files requests: need × min(files,
/// concurrency) / high_water + one idle worker + the task's overhead, rounded up to whole MiB.
std::uint64_t task_mem_bytes(std::uint64_t need_bytes, std::size_t files, const SlurmPlanConfig& config);

/// Groups `files` by need (largest first) into arrays whose tasks' requests are within
/// class_step of each other, at most files_per_task files (of one group) a task, and at most half
/// the waves left from its class on (ShardFile::waves), so the last tasks to start are short.
/// Empty: no arrays.
std::vector<PlannedArray> plan_arrays(std::vector<ShardFile> files, const SlurmPlanConfig& config);

/// Files per task for `file_count` files: one each up to kTargetTasks tasks, more beyond, so a
/// 65,000-file corpus makes 256 tasks a wave, not 65,000.
std::size_t files_per_task_for(std::size_t file_count);
constexpr std::size_t kTargetTasks = 256;

/// Nodes of one size in a partition (a line of `sinfo -h -o "%m %c %D"`).
struct NodeGroup {
  std::uint64_t mem_bytes = 0;
  std::uint32_t cpus = 0;
  std::uint32_t count = 0;
};

/// Pure: `sinfo -h -o "%m %c %D"` output ("2000 8 1" a line; "2000+" and "8+" read as 2000 and 8).
std::vector<NodeGroup> parse_sinfo_nodes(std::string_view text);

/// Pure: how many tasks of `mem_bytes` and `cpus` each the nodes run at once.
std::uint64_t task_slots(const std::vector<NodeGroup>& nodes, std::uint64_t mem_bytes, std::uint32_t cpus);

/// Pure: files per task so that each task's fixed cost (Slurm's start and end of a task, the task's
/// own start-up: `task_overhead_s`) is paid once for several files when the cluster would
/// otherwise run `waves` tasks one after another in each slot (waves: the sum over files of
/// 1 / the slots of its task). Balances that cost, waves × overhead / files a task, against the
/// tail a longer task leaves at the end, about half a task (files × `job_s` / 2): the minimum is
/// at sqrt(2 × waves × overhead / job_s). 1 when the cluster runs every file at once (waves <= 1)
/// or a job's length is unknown.
std::size_t files_per_task_for_overhead(double waves, double task_overhead_s, double job_s);

/// The first wave without history: up to `count` files spread evenly over the size order
/// (the smallest and the largest included), so the estimator's first fit spans the corpus.
/// Returns positions into `sizes_bytes`.
std::vector<std::size_t> pick_cold_wave(const std::vector<std::uint64_t>& sizes_bytes, std::size_t count);

/// What sbatch is given for one array.
struct SbatchArray {
  std::string name = "align-batch";
  std::uint64_t mem_bytes = 0;
  std::size_t task_count = 0;
  std::uint32_t max_running = 0;  ///< --array's %N; 0: no throttle
  std::uint32_t cpus_per_task = 1;
  std::string partition;          ///< empty: the cluster's default
  std::vector<std::string> extra_args;  ///< --slurm-arg, unchanged
  std::string log_pattern;        ///< --output, e.g. DIR/%a.log
  std::string script_path;
};

/// Pure: sbatch's argv (with "sbatch" first) for `array`.
std::vector<std::string> sbatch_argv(const SbatchArray& array);

/// Pure: the batch script every task of an array runs: `task_argv` (the align-batch command line
/// up to the corpus), then `--history DIR/$SLURM_ARRAY_TASK_ID.sqlite --slurm-task
/// DIR/$SLURM_ARRAY_TASK_ID.shard` (its --out and files: shard_text), then `tail_argv` (`--` and
/// the command, if any); once that exits, it leaves DIR/$SLURM_ARRAY_TASK_ID.ended and exits with
/// its status. Every word is shell-quoted.
std::string task_script(const std::vector<std::string>& task_argv, const std::string& shard_dir,
                        const std::vector<std::string>& tail_argv);

/// What one array task runs on: its --out and its files.
struct Shard {
  std::string out_dir;
  std::vector<std::string> files;
};

/// Pure: a task's shard file: its --out, then each file, every one ended by a NUL. A Linux file
/// name holds any byte but NUL and '/', newlines included, so no name can break the list.
std::string shard_text(const Shard& shard);
/// Pure: the reverse of shard_text; none when `text` is not one (empty, or its last entry not
/// NUL-ended: a file cut short).
std::optional<Shard> parse_shard(std::string_view text);

/// Pure: `word` quoted for sh.
std::string shell_quote(std::string_view word);

/// One row of `sacct -n -P -o JobID,State,ExitCode,ReqMem,MaxRSS,ElapsedRaw`.
struct SacctRow {
  std::string array_job_id;  ///< "123" of "123_4"
  std::optional<std::uint32_t> task;  ///< 4 of "123_4"; none for a pending range or a plain job
  std::vector<std::uint32_t> pending_tasks;  ///< "123_[5-7,9%2]": 5, 6, 7, 9
  std::string step;          ///< "batch" of "123_4.batch"; empty for the task's own row
  std::string state;         ///< first word: "CANCELLED by 0" → "CANCELLED"
  int exit_code = 0;
  int exit_signal = 0;
  std::optional<std::uint64_t> req_mem_bytes;
  std::optional<std::uint64_t> max_rss_bytes;
  double elapsed_s = 0;
};

/// Pure: parses sacct's parsable output; lines it cannot read are skipped.
std::vector<SacctRow> parse_sacct(std::string_view text);

/// Pure: parses `squeue -h -r -t all -O JobArrayID:|,State:|,exit_code:` ("123_4|COMPLETED|768"
/// a line: the task, its State, its raw wait status) into task rows with State, exit code and
/// signal; lines it cannot read are skipped.
std::vector<SacctRow> parse_squeue(std::string_view text);

/// Pure: sacct's rows with each task's State (and exit) taken from the controller's (squeue)
/// where it knows the task: slurmdbd, which sacct reads, lags slurmctld by seconds under load
/// (measured on the test node at load ~7: a new array absent from sacct for 4 s, the last array's
/// end shown 5 s after its tasks had ended). A terminal State wins over a running one either way
/// (the task's align-batch has exited); a task only the controller knows gains a row.
std::vector<SacctRow> merge_controller_states(std::vector<SacctRow> sacct, const std::vector<SacctRow>& controller);

/// Pure: sacct and sinfo sizes: "129860K", "200M", "1.5G", "2000" (MiB, sinfo's unit), "0".
std::optional<std::uint64_t> parse_slurm_size_bytes(std::string_view text, std::uint64_t default_unit_bytes);

/// What a Slurm task's end means for its files.
enum class TaskFate {
  kRunning,      ///< not ended (PENDING, RUNNING, CONFIGURING, COMPLETING, REQUEUED, ...)
  kCompleted,    ///< exit 0: its files ended as its history says
  kFailed,       ///< its align-batch exited non-zero: its history says which files failed and why
  kOutOfMemory,  ///< OUT_OF_MEMORY: unfinished files are resubmitted with a raised request
  kLost,         ///< NODE_FAIL, BOOT_FAIL, PREEMPTED: not the files' fault; resubmitted as they were
  kCancelled,    ///< CANCELLED (ours on Ctrl-C, or someone's scancel)
  kTimeout,      ///< TIMEOUT or DEADLINE: the --time given through --slurm-arg was too short
};

/// Pure: the fate of a task in State `state`.
TaskFate task_fate(std::string_view state);
/// "completed", "failed", ...
const char* to_string(TaskFate fate);

}  // namespace ab
