// The main command: `align-batch [OPTIONS] CORPUS... [-- COMMAND ARGS...]` — options and driver.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "memguard/nvml.h"

namespace CLI {
class App;
}

namespace ab {

/// The main command's options as CLI11 fills them.
struct RunOptions {
  std::vector<std::string> corpus;
  std::string workers = "auto";
  std::string mem_budget;
  std::string reserve;
  std::string vram_budget;
  std::string out = "aligned";
  std::string history;
  bool no_history = false;
  std::string model;
  std::string task = "auto";
  std::uint32_t retries = 2;
  std::string timeout;
  std::string hang_timeout = "60s";
  bool force = false;
  bool dry_run = false;
  bool no_report = false;  ///< skip writing OUT/.align-batch/report-RUN.html at the end
  std::string progress = "auto";
  int sample_ms = 50;
  double high_water = 0.90;
  double margin = 1.0;  ///< history's predicted peaks are multiplied by this
  /// Built-in engine: each worker's --max-trellis-mib; 0: not given (kDefaultMaxTrellisMib).
  std::uint32_t max_trellis_mib = 0;
  /// Built-in engine: "on" (default) gives all workers one shared read-only copy of the model's
  /// weights (worker/shared_weights.h); "off" lets each worker keep its own.
  std::string shared_weights = "on";
  /// --executor local|slurm and the Slurm executor's options (orchestrator/slurm_command.h).
  std::string executor = "local";
  std::string slurm_partition;
  std::uint32_t slurm_max_tasks = 0;
  std::vector<std::string> slurm_args;
  /// Hidden --slurm-task SHARD, set on the runs inside Slurm array tasks: their --out and files
  /// come from SHARD (read_slurm_shard), and they share --out with their submitter and each other
  /// by design (each in its own job cgroup), so they skip its lock.
  std::string slurm_task;
  /// Options the user set (command line or --config), e.g. "--workers": tuned settings from
  /// history never override these. Filled by note_explicit_options() after parsing.
  std::set<std::string> explicit_options;
};

/// The worker's own --max-trellis-mib default (worker/worker_loop.h WorkerConfig::max_trellis_bytes,
/// 32 MiB); align-batch passes it to every worker when --max-trellis-mib is not given.
constexpr std::uint32_t kDefaultMaxTrellisMib = 32;

/// Pure: the built-in engine's job key for `model_key` (history/job_key.h) with workers capped at
/// `max_trellis_mib`: unchanged for 0 (not given) or the default, else `model_key + ":trellis=N"`,
/// since the cap changes the workers' memory and history must not mix runs with different caps.
/// `shared_weights` false (--shared-weights off) appends ":weights=private": a worker's peak then
/// holds its own copy of the weights, which shared workers' peaks leave out (charged once).
std::string model_job_key(const std::string& model_key, std::uint32_t max_trellis_mib, bool shared_weights = true);

/// Records in `options.explicit_options` which tunable options `app` was given (CLI11's count()).
void note_explicit_options(const CLI::App& app, RunOptions& options);

/// What apply_tuned_settings() did.
struct TunedApplied {
  std::vector<std::string> applied;  ///< e.g. "--workers 2", "--high-water 0.85", "prediction margin x1.15"
  std::vector<std::string> kept;     ///< tuned but set on the command line, e.g. "--workers"
  std::vector<std::string> ignored;  ///< present but unusable, with why
  double prediction_scale = 1.0;     ///< multiply history's predictions by this
};

/// Pure: applies `tuned` (a key's settings stored by `replay --sweep --apply`: workers,
/// high_water, prediction_scale, budget_bytes) to every option of `options` not in
/// `options.explicit_options`. Null or non-object JSON applies nothing.
TunedApplied apply_tuned_settings(const nlohmann::json& tuned, RunOptions& options);

/// Adds the main command's options and CORPUS positionals to `app` (the top level, so that
/// `align-batch corpus/` needs no subcommand name), and `--config FILE`.
void add_run_options(CLI::App& app, RunOptions& options);

/// Runs the batch: `command` is everything after `--` (empty: the built-in engine), `dashdash`
/// whether `--` was given. Returns the exit status (0, 1, 2, 130) after printing the summary.
int run_batch(const RunOptions& options, const std::vector<std::string>& command, bool dashdash);

/// The GPU budget when --vram-budget is not given.
struct VramDefault {
  std::uint64_t budget_bytes = 0;  ///< 0: no GPU, VRAM is not budgeted
  std::string why;                 ///< for the log: devices and the rule, or why there is none
};

/// Pure: the default --vram-budget from what NVML reports: over every device, its memory not in
/// use now minus a reserve of max(256 MiB, 5% of the device), summed. No NVML or no device: 0.
VramDefault default_vram_budget(const NvmlProbe& probe);

/// Pure: "90" (seconds), "90s", "1.5m", "2h", "500ms" → milliseconds; nullopt for anything else,
/// zero or negatives.
std::optional<std::int64_t> parse_duration_ms(const std::string& text);

/// Pure: "auto" → 0 (memory alone decides), "N" ≥ 1 → N; nullopt otherwise.
std::optional<std::uint32_t> parse_workers(const std::string& text);

/// Pure: the name in `names` closest to `given` (edit distance), or empty when none is close
/// enough to be a likely typo (at most 2 edits, or a third of the name's length if longer).
std::string closest_name(const std::string& given, const std::vector<std::string>& names);

/// Turns a CLI11 parse error into align-batch's message: an unknown option or --config key named,
/// with the closest real one suggested ("--workerz: unknown option; did you mean --workers?").
/// Empty for errors CLI11's own message already says well.
std::string explain_parse_error(const CLI::App& app, const std::exception& error);

/// Splits argv at the first "--": the part before (with argv[0]) for CLI11, the command after.
struct SplitArgs {
  std::vector<std::string> cli;
  std::vector<std::string> command;
  bool dashdash = false;
};
SplitArgs split_at_dashdash(int argc, const char* const* argv);

}  // namespace ab
