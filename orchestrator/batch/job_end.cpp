#include "orchestrator/batch/job_end.h"

#include <signal.h>

#include <algorithm>

namespace ab {
namespace {

// A job the loop stopped for overrunning an allowance of `limit_ms`.
Reason overran(Reason::Kind kind, std::int64_t limit_ms) {
  Reason r;
  r.kind = kind;
  r.limit_s = static_cast<double>(limit_ms) / 1000.0;
  return r;
}

}  // namespace

JobOutcome classify_end(const JobEnd& end, const AttemptFacts& facts) {
  JobOutcome outcome;
  outcome.peak_pss_bytes = facts.peak_pss_bytes;
  outcome.error = end.error;
  if (end.ok) {
    outcome.kind = JobOutcome::Kind::kOk;
  } else if (end.job_error) {
    outcome.kind = JobOutcome::Kind::kFailed;
  } else if (facts.timed_out) {
    outcome.kind = JobOutcome::Kind::kFailed;
    outcome.reason = overran(Reason::Kind::kTimedOut, facts.timeout_ms);
  } else if (facts.hung) {
    // Not the file's fault as far as we know, but not the memory guard's either: a crash.
    outcome.kind = JobOutcome::Kind::kDied;
    outcome.reason = overran(Reason::Kind::kHung, facts.hang_ms);
  } else if (facts.guard_kill && end.killed_by_us) {
    outcome.kind = JobOutcome::Kind::kGuardKilled;
  } else if (end.term_signal != 0 || facts.oom_rose) {
    outcome.kind = JobOutcome::Kind::kDied;
    // OOM only with evidence: the cgroup's (or the machine's) oom_kill counter rose during the
    // job. A bare SIGKILL may be a user's `kill -9`; calling it OOM would raise its estimate.
    outcome.oom_suspected = facts.oom_rose;
    if (end.term_signal == SIGKILL && !end.killed_by_us && !facts.oom_rose) {
      outcome.reason.kind = Reason::Kind::kKilledByOther;
      outcome.reason.last_error = end.error;
    }
    if (outcome.oom_suspected && facts.cgroup_limit_bytes) {
      // The kernel stopped it, so it needed at least what the cgroup left it: the limit minus
      // everything else in use. A burst faster than sampling shows no peak of its own, and
      // requeueing it at "0 B" would only feed it to the OOM killer again.
      const std::uint64_t others = facts.in_use_bytes > facts.last_pss_bytes ? facts.in_use_bytes - facts.last_pss_bytes : 0;
      if (*facts.cgroup_limit_bytes > others)
        outcome.peak_pss_bytes = std::max(outcome.peak_pss_bytes, *facts.cgroup_limit_bytes - others);
    }
  } else {
    outcome.kind = JobOutcome::Kind::kFailed;  // the command itself failed (non-zero exit)
  }
  return outcome;
}

}  // namespace ab
