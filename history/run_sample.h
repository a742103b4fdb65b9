// RunSample: one reading of the machine around a run's jobs, as history keeps it (run_samples).
#pragma once

#include <cstdint>
#include <optional>

namespace ab {

/// The machine around a run's jobs, once a second (run_samples): what the run's own workers held
/// and what the kernel said was left. Replay holds the rest of the machine's use (the memory
/// that was neither available nor ours) as it was at each moment (docs/orchestrator.md, "replay").
struct RunSample {
  std::int64_t t_ms = 0;            ///< since the run's start
  std::uint64_t ours_bytes = 0;     ///< every job, idle worker and shared weights of the run (PSS)
  std::uint64_t shared_bytes = 0;   ///< of which the shared weights file, charged once
  std::optional<std::uint64_t> mem_available_bytes;  ///< machine or cgroup, whichever is lower
  std::optional<double> psi_full_avg10;              ///< percent, where the kernel has PSI
};

/// A run records one RunSample a second at most: a 1M-file run of 12 minutes writes 720 rows,
/// and replay's view of the neighbours is a second old at most.
constexpr std::int64_t kRunSampleEveryMs = 1000;

}  // namespace ab
