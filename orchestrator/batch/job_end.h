// How a job's end maps to the scheduler's outcome: the one place that tells a failure of the file
// from a crash to retry, a guard kill, an OOM death, a timeout and a hung worker.
#pragma once

#include <cstdint>
#include <optional>

#include "orchestrator/batch/worker_runner.h"
#include "orchestrator/core/scheduler.h"

namespace ab {

/// What the loop knew of one attempt when it ended, beyond what the runner reports (JobEnd).
struct AttemptFacts {
  bool timed_out = false;           ///< the loop stopped it at the per-job timeout
  bool hung = false;                ///< the loop killed it because its worker's heartbeat stopped
  bool guard_kill = false;          ///< the loop stopped it to keep memory inside the budget
  bool oom_rose = false;            ///< the cgroup's (or the machine's) oom_kill counter rose during it
  std::uint64_t peak_pss_bytes = 0; ///< its highest reading (or its own peak RSS, if none)
  std::uint64_t last_pss_bytes = 0; ///< its last reading; 0: none
  std::uint64_t in_use_bytes = 0;   ///< everything in use at the last reading, it included
  std::optional<std::uint64_t> cgroup_limit_bytes;
  std::int64_t timeout_ms = 0;      ///< the per-job timeout, for the reason
  std::int64_t hang_ms = 0;         ///< the heartbeat's allowance, for the reason
};

/// The outcome of an attempt that ended as `end` says, while the run was not being stopped. Its
/// `error` is the end's own; when the loop knows better (a timeout, a hung worker, a SIGKILL from
/// elsewhere) its `reason` says so, for the progress sink to word. kOk here still needs its
/// outputs moved into place.
JobOutcome classify_end(const JobEnd& end, const AttemptFacts& facts);

}  // namespace ab
