// ProcMemoryProbe: the real MemoryProbe (batch/memory_probe.h), reading /proc and the cgroup.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>

#include "orchestrator/batch/memory_probe.h"

namespace ab {

/// The real probe (memguard ProcSampler, ticked by the caller): per-tree RSS and PSS under `proc_root`, MemAvailable,
/// the cgroup's headroom and oom_kill counter, PSI (memguard/machine_memory.h). `proc_root`'s
/// parent is the root the machine readings use ("/" live).
///
/// With `shared_weights` (the file the workers share their model's tensors in, under /dev/shm),
/// each tree's PSS is charged without its share of shared memory (smaps_rollup's Pss_Shmem), and
/// the file's allocated size is MemorySample::shared_bytes, charged once: history then learns
/// each worker's own memory, and admission does not count the weights once per worker. The charge
/// is never below `expected_shared_bytes` (the model file's size: TorchScript stores tensors
/// uncompressed), so the first admissions, before any worker has written the file, leave room.
class ProcMemoryProbe : public MemoryProbe {
 public:
  explicit ProcMemoryProbe(std::filesystem::path proc_root = "/proc", std::filesystem::path shared_weights = {},
                           std::uint64_t expected_shared_bytes = 0);
  ~ProcMemoryProbe() override;
  ProbeReading read(const std::vector<LiveJob>& live, const std::vector<pid_t>& idle, std::int64_t now_ms,
                    bool exact = false) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ab
