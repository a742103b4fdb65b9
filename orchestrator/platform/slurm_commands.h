// SlurmCommands: the real SlurmCluster (batch/slurm_cluster.h), Slurm's client tools as processes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"
#include "orchestrator/batch/slurm_cluster.h"

namespace ab {

/// The real cluster: Slurm's client tools on $PATH, as configured ($SLURM_CONF or /etc/slurm).
class SlurmCommands : public SlurmCluster {
 public:
  Result<std::string> submit(const SbatchArray& array) override;
  Result<std::vector<SacctRow>> query(const std::vector<std::string>& array_job_ids) override;
  Result<Done> cancel(const std::vector<std::string>& array_job_ids) override;
  Result<std::vector<NodeGroup>> nodes(const std::string& partition) override;
};

/// What a command printed and how it ended.
struct CommandOutput {
  int exit_code = -1;  ///< -1: could not run, or killed by a signal
  std::string out;
  std::string err;
};

/// Runs `argv` (argv[0] looked up on $PATH) in its own process group, so a Ctrl-C at the terminal
/// reaches align-batch alone, and returns its output. Used for Slurm's client tools.
CommandOutput run_and_capture(const std::vector<std::string>& argv);

}  // namespace ab
