// `--executor slurm` from the main command: its options, and the branch run_batch takes for it.
#pragma once

#include <string>
#include <vector>

#include "orchestrator/batch/corpus.h"
#include "orchestrator/cli/progress.h"
#include "orchestrator/batch/run_loop.h"

namespace ab {

struct RunOptions;
class HistoryStore;

/// Pure: what is wrong with the Slurm options of `options` (empty: nothing), checked before
/// anything is read or written.
std::string check_slurm_options(const RunOptions& options);

/// Inside a Slurm array task (hidden --slurm-task SHARD): sets `options`' --out and corpus from the
/// shard file its submitter wrote (slurm_plan.h shard_text; NUL-separated, so any file name
/// survives). Empty: done, or not a task; else what is wrong, for a usage error.
std::string read_slurm_shard(RunOptions& options);

/// Runs the batch on Slurm (or prints its plan for --dry-run): `config` as run_batch built it for a
/// local run, `model_path` the built-in engine's absolute model path (empty with a command).
/// Returns the exit status (0, 1, 2, 130) after printing the summary.
int run_slurm_batch(const RunOptions& options, const RunLoopConfig& config, const Corpus& corpus, HistoryStore* history,
                    Progress& progress, const std::vector<std::string>& command, bool dashdash,
                    const std::string& model_path, bool tty);

}  // namespace ab
