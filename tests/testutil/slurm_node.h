// SlurmNode: a private single-node Slurm for one test binary (scripts/slurm-node.sh start/stop).
#pragma once

#include <filesystem>
#include <string>

namespace ab::test {

/// Starts munged, mariadbd + slurmdbd, slurmctld and slurmd with every file under a temporary
/// directory, sets $SLURM_CONF for this process (and so its children), and stops them (removing
/// their node's cgroups) on destruction. `error()` says why when it could not start.
class SlurmNode {
 public:
  SlurmNode(const std::filesystem::path& script, int real_memory_mb, int cpus);
  ~SlurmNode();
  SlurmNode(const SlurmNode&) = delete;
  SlurmNode& operator=(const SlurmNode&) = delete;
  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  const std::string& node_name() const { return node_; }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path script_, dir_;
  std::string node_, error_;
  bool started_ = false;
};

/// Runs `command` through /bin/sh, returns its stdout (stderr folded in); `exit_code` set.
std::string shell_output(const std::string& command, int* exit_code = nullptr);

}  // namespace ab::test
