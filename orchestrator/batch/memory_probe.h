// MemoryProbe: the seam for the run loop's memory readings per running job, idle workers, machine and cgroup.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "orchestrator/core/scheduler.h"
#include "orchestrator/batch/worker_runner.h"

namespace ab {

/// One reading: the scheduler's sample plus what the loop keeps for timelines and OOM detection.
struct ProbeReading {
  MemorySample sample;
  std::map<JobId, std::uint64_t> rss_bytes;    ///< per running job, its whole tree
  std::optional<std::uint64_t> oom_kill_count; ///< the parent's memory cgroup's counter
  std::optional<std::uint64_t> cgroup_limit_bytes;
  /// Replay's simulated probe only: every job's reading is within what admission reserved for it
  /// and idle memory did not move, so the reading cannot change a decision unless unpredicted
  /// jobs wait (their charge follows the largest peak seen); the driver then spares the
  /// scheduler the sample. A real probe cannot know this and leaves it false.
  bool within_reservations = false;
};

/// Reads memory for the loop. The real one reads /proc and the parent's cgroup; tests use a fake
/// driven by their fake runner.
class MemoryProbe {
 public:
  virtual ~MemoryProbe() = default;
  /// Reads every running job's worker tree and the idle workers now. `exact`: measure every
  /// job's PSS now (smaps_rollup), not an estimate; taken right before a kill (the situation may have changed since the last tick).
  virtual ProbeReading read(const std::vector<LiveJob>& live, const std::vector<pid_t>& idle, std::int64_t now_ms,
                            bool exact = false) = 0;
};

/// A probe that reads nothing: RunLoop::plan() (done-ness, predictions) needs a probe it never
/// calls, like PlanOnlyRunner.
struct NoMemoryProbe : MemoryProbe {
  ProbeReading read(const std::vector<LiveJob>&, const std::vector<pid_t>&, std::int64_t, bool) override { return {}; }
};


}  // namespace ab
