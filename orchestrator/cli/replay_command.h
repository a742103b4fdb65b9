// `align-batch replay`: recorded jobs from history through the real scheduler in simulated time.
#pragma once

#include "history/history_store.h"
#include "memguard/size.h"
#include "orchestrator/batch/replay_run.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace ab {

/// What replay reads from history.
struct ReplaySource {
  std::vector<RecordedJob> jobs;      ///< ok jobs, with timelines and hindsight predictions
  std::uint32_t skipped = 0;          ///< jobs left out: not ok (a killed job's peak is a lower bound)
  std::vector<std::string> keys;      ///< distinct job keys among `jobs`
  std::optional<RunRow> run;          ///< the run replayed, or the newest run of the key's jobs
  std::uint32_t passed_over = 0;      ///< newer runs left out by default: they finished no job
  /// One run replayed: its time before the first job started and after the last one ended
  /// (ReplaySettings::startup_ms, shutdown_ms); 0 when replaying a key's jobs of many runs.
  std::int64_t startup_ms = 0, shutdown_ms = 0;
  /// One run replayed: the machine around its jobs as history sampled it (ReplaySettings::machine).
  std::vector<RunSample> machine;
};

/// Loads the jobs of run `run_id`, or of `key` (all runs), or, with neither, of the newest run
/// that finished a job (a run that found every file done finished none).
/// Each job's prediction is what history, fitted on all of its key's ok jobs, predicts for it.
StoreResult<ReplaySource> load_replay_source(HistoryStore& store, std::optional<std::int64_t> run_id,
                                             const std::string& key);

/// Pure: the budget a run recorded as `info` would have had with `--mem-budget PCT%`: the
/// percentage of min(its cgroup limit, its MemTotal), capped by that minus its reserve (as
/// memguard's effective_budget computes it). None when the run recorded no MemTotal.
std::optional<std::uint64_t> percent_budget_of_run(const BudgetSpec& spec, const RunInfo* info);


/// Registers `align-batch replay [--history PATH | --out DIR] [--key KEY | --run ID]
///   [--mem-budget SIZE] [--cores N] [--workers auto|N] [--high-water F] [--margin F] [--cold]
///   [--scale K] [--seed N] [--sample-ms N] [--sweep [--apply]]`.
/// Sets `exit_code` when it runs (exit_code.h): 0 done; 2 bad usage, no history / no jobs, or the
/// database failed.
void add_replay_command(CLI::App& app, int& exit_code);

}  // namespace ab
