// classify_end: every way a job ends, and the outcome the scheduler is told.
#include "orchestrator/batch/job_end.h"

#include <signal.h>

#include <doctest/doctest.h>

#include <string>

using namespace ab;

namespace {

constexpr std::uint64_t kMiB = 1ull << 20;

JobEnd killed(int sig, bool by_us) {
  JobEnd e;
  e.term_signal = sig;
  e.killed_by_us = by_us;
  e.error = "worker killed by signal " + std::to_string(sig);
  return e;
}

}  // namespace

TEST_CASE("classify_end: ok, the job's own failure and a failing command end the file; their errors are kept") {
  JobEnd ok;
  ok.ok = true;
  CHECK(classify_end(ok, {}).kind == JobOutcome::Kind::kOk);
  JobEnd job_error;
  job_error.job_error = true;
  job_error.error = "a.wav: no speech";
  const JobOutcome o = classify_end(job_error, {});
  CHECK(o.kind == JobOutcome::Kind::kFailed);
  CHECK(o.error == "a.wav: no speech");
  JobEnd exit1;
  exit1.exit_code = 1;
  exit1.error = "command exited with status 1";
  CHECK(classify_end(exit1, {}).kind == JobOutcome::Kind::kFailed);
}

TEST_CASE("classify_end: a timeout fails the file with its allowance; a hung worker is a crash to retry") {
  AttemptFacts f;
  f.timed_out = true;
  f.timeout_ms = 90'000;
  const JobOutcome t = classify_end(killed(SIGTERM, true), f);
  CHECK(t.kind == JobOutcome::Kind::kFailed);
  CHECK(t.reason.kind == Reason::Kind::kTimedOut);
  CHECK(t.reason.limit_s == doctest::Approx(90.0));
  AttemptFacts h;
  h.hung = true;
  h.hang_ms = 30'000;
  const JobOutcome d = classify_end(killed(SIGKILL, true), h);
  CHECK(d.kind == JobOutcome::Kind::kDied);
  CHECK_FALSE(d.oom_suspected);
  CHECK(d.reason.kind == Reason::Kind::kHung);
  CHECK(d.reason.limit_s == doctest::Approx(30.0));
}

TEST_CASE("classify_end: a guard kill is the guard's only when we sent it") {
  AttemptFacts g;
  g.guard_kill = true;
  g.peak_pss_bytes = 700 * kMiB;
  const JobOutcome o = classify_end(killed(SIGTERM, true), g);
  CHECK(o.kind == JobOutcome::Kind::kGuardKilled);
  CHECK(o.peak_pss_bytes == 700 * kMiB);
  // Killed by something else before our signal landed: a crash.
  CHECK(classify_end(killed(SIGSEGV, false), g).kind == JobOutcome::Kind::kDied);
}

TEST_CASE("classify_end: a SIGKILL we did not send is OOM only with the counter's evidence") {
  const JobOutcome bare = classify_end(killed(SIGKILL, false), {});
  CHECK(bare.kind == JobOutcome::Kind::kDied);
  CHECK_FALSE(bare.oom_suspected);
  CHECK(bare.reason.kind == Reason::Kind::kKilledByOther);
  CHECK(bare.reason.last_error == "worker killed by signal 9");

  AttemptFacts oom;
  oom.oom_rose = true;
  oom.peak_pss_bytes = 0;  // a burst faster than sampling
  oom.last_pss_bytes = 100 * kMiB;
  oom.in_use_bytes = 400 * kMiB;  // 300 MiB of others
  oom.cgroup_limit_bytes = 1000 * kMiB;
  const JobOutcome o = classify_end(killed(SIGKILL, false), oom);
  CHECK(o.kind == JobOutcome::Kind::kDied);
  CHECK(o.oom_suspected);
  CHECK(o.error == "worker killed by signal 9");
  CHECK(o.reason.kind == Reason::Kind::kNone);
  // It needed at least what the cgroup left it.
  CHECK(o.peak_pss_bytes == 700 * kMiB);
}
