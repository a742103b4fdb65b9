// SlurmCluster: the Slurm executor's one seam to Slurm (submit, query, cancel, the nodes); the
// real one (platform/slurm_commands.h) runs sbatch, sacct, scancel and sinfo, the tests' fake scripts task outcomes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"
#include "orchestrator/core/slurm_plan.h"

namespace ab {

class SlurmCluster {
 public:
  virtual ~SlurmCluster() = default;
  /// Submits one job array; returns its job id ("123").
  virtual Result<std::string> submit(const SbatchArray& array) = 0;
  /// What sacct knows of these arrays: one row per task, and per step (".batch" holds MaxRSS).
  virtual Result<std::vector<SacctRow>> query(const std::vector<std::string>& array_job_ids) = 0;
  /// Cancels these arrays (only these: the caller passes what it submitted).
  virtual Result<Done> cancel(const std::vector<std::string>& array_job_ids) = 0;
  /// The nodes of `partition` (empty: the default partition), by size; never empty on success.
  virtual Result<std::vector<NodeGroup>> nodes(const std::string& partition) = 0;
};

}  // namespace ab
