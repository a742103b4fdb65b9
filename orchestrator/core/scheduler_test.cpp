// Scheduler tests: the state machine driven by events alone, no processes (like ninja's build_test).
#include "orchestrator/core/scheduler.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <limits>
#include <string>
#include <vector>

namespace ab {
namespace {

constexpr std::uint64_t kMiB = 1024ull * 1024;
constexpr std::uint64_t kGiB = 1024ull * kMiB;

JobSpec predicted(JobId id, std::uint64_t peak_bytes, std::uint64_t size_bytes = 0) {
  JobSpec s;
  s.id = id;
  s.size_bytes = size_bytes;
  s.predicted_peak_bytes = peak_bytes;
  return s;
}

JobSpec unpredicted(JobId id, std::uint64_t size_bytes) {
  JobSpec s;
  s.id = id;
  s.size_bytes = size_bytes;
  return s;
}

std::vector<JobId> ids_of(const std::vector<Decision>& ds, Decision::Kind kind) {
  std::vector<JobId> out;
  for (const auto& d : ds) {
    if (d.kind == kind) out.push_back(d.job);
  }
  return out;
}

std::vector<JobId> starts(const std::vector<Decision>& ds) { return ids_of(ds, Decision::Kind::kStart); }
std::vector<JobId> kills(const std::vector<Decision>& ds) { return ids_of(ds, Decision::Kind::kKill); }
std::vector<JobId> fails(const std::vector<Decision>& ds) { return ids_of(ds, Decision::Kind::kFail); }

JobOutcome ok(std::uint64_t peak_bytes) {
  JobOutcome o;
  o.kind = JobOutcome::Kind::kOk;
  o.peak_pss_bytes = peak_bytes;
  return o;
}

JobOutcome ended(JobOutcome::Kind kind, std::uint64_t peak_bytes, std::string error = {},
                 bool oom = false) {
  JobOutcome o;
  o.kind = kind;
  o.peak_pss_bytes = peak_bytes;
  o.error = std::move(error);
  o.oom_suspected = oom;
  return o;
}

MemorySample sample(std::int64_t now_ms, std::vector<std::pair<JobId, std::uint64_t>> jobs,
                    std::uint64_t idle_bytes = 0) {
  MemorySample s;
  s.now_ms = now_ms;
  for (auto& [id, pss] : jobs) s.jobs.push_back({id, pss, 0});
  s.idle_pss_bytes = idle_bytes;
  return s;
}

SchedulerConfig budget_of(std::uint64_t bytes) {
  SchedulerConfig c;
  c.budget_bytes = bytes;
  return c;
}

}  // namespace

TEST_CASE("scaled_bytes multiplies and saturates instead of overflowing") {
  CHECK(scaled_bytes(1000, 1.5) == 1500);
  CHECK(scaled_bytes(0, 4.0) == 0);
  CHECK(scaled_bytes(std::uint64_t{1} << 63, 2.5) == std::numeric_limits<std::uint64_t>::max());
  CHECK(scaled_bytes(std::numeric_limits<std::uint64_t>::max(), 1.3) == std::numeric_limits<std::uint64_t>::max());
}

TEST_CASE("admission: starts jobs only while their predicted peaks fit the budget") {
  Scheduler s(budget_of(10 * kGiB));
  for (JobId id = 1; id <= 3; ++id) s.add_job(predicted(id, 4 * kGiB));
  auto d = s.poll(0);
  CHECK(starts(d).size() == 2);  // 4 + 4 fit in 10, a third 4 would make 12
  CHECK(s.running() == 2);
  CHECK(s.queued() == 1);
  CHECK(s.committed_bytes() == 8 * kGiB);
  CHECK(starts(s.poll(10)).empty());

  s.on_job_ended(starts(d)[0], ok(4 * kGiB), 100);
  CHECK(starts(s.poll(100)).size() == 1);
  CHECK(s.stats().started == 3);
  CHECK(s.stats().peak_running == 2);
}

TEST_CASE("admission: idle workers' memory and observed overruns count against the budget") {
  Scheduler s(budget_of(10 * kGiB));
  s.add_job(predicted(1, 3 * kGiB));
  s.add_job(predicted(2, 3 * kGiB));
  s.add_job(predicted(3, 3 * kGiB));
  CHECK(starts(s.poll(0)) == std::vector<JobId>{1, 2, 3});
  s.add_job(predicted(4, 1 * kGiB));
  // Job 1 shows 3.5 GiB (above its prediction), idle workers 0.5 GiB: 3.5 + 3 + 3 + 0.5 = 10.
  s.on_sample(sample(50, {{1, 3 * kGiB + 512 * kMiB}, {2, kGiB}, {3, kGiB}}, 512 * kMiB));
  CHECK(s.committed_bytes() == 10 * kGiB);
  CHECK(starts(s.poll(60)).empty());
  // Observed peaks stay charged even after the job's memory falls again.
  s.on_sample(sample(70, {{1, kGiB}, {2, kGiB}, {3, kGiB}}, 0));
  CHECK(s.committed_bytes() == 9 * kGiB + 512 * kMiB);
  CHECK(starts(s.poll(80)).empty());
  s.on_sample(sample(90, {{1, kGiB}, {2, kGiB}, {3, kGiB}}, 0));
  s.on_job_ended(2, ok(3 * kGiB), 100);
  CHECK(starts(s.poll(100)) == std::vector<JobId>{4});
}

TEST_CASE("admission: shared weights are charged once, not once per worker") {
  // Four workers of one model share 4 GiB of weights; each job's own memory is 1 GiB. Charged
  // per worker (5 GiB each) a 12 GiB budget would take two jobs; charged once, 4 + 4 × 1 = 8 GiB.
  Scheduler s(budget_of(12 * kGiB));
  for (JobId id = 1; id <= 10; ++id) s.add_job(predicted(id, kGiB));
  MemorySample m = sample(0, {});
  m.shared_bytes = 4 * kGiB;
  s.on_sample(m);
  CHECK(s.committed_bytes() == 4 * kGiB);
  CHECK(starts(s.poll(10)).size() == 8);  // 4 + 8 × 1 = 12 GiB
  CHECK(s.committed_bytes() == 12 * kGiB);
  CHECK(s.stats().peak_total_pss_bytes == 4 * kGiB);
  // The weights count toward the measured total too: above the mark with a job overrunning.
  MemorySample over = sample(30, {{1, 2 * kGiB}, {2, kGiB}, {3, kGiB}, {4, kGiB}, {5, kGiB}, {6, kGiB}, {7, kGiB},
                                   {8, kGiB}});
  over.shared_bytes = 4 * kGiB;
  s.on_sample(over);
  CHECK(kills(s.poll(40)).size() == 1);
}

TEST_CASE("admission: a job that fits the budget but not beside the shared weights fails, naming both") {
  Scheduler s(budget_of(10 * kGiB));
  s.add_job(predicted(1, 8 * kGiB));
  s.add_job(predicted(2, kGiB));
  MemorySample m = sample(0, {});
  m.shared_bytes = 4 * kGiB;
  s.on_sample(m);
  const auto d = s.poll(10);
  CHECK(fails(d) == std::vector<JobId>{1});
  CHECK(starts(d) == std::vector<JobId>{2});
  REQUIRE(d.size() == 2);
  for (const auto& x : d)
    if (x.kind == Decision::Kind::kFail) {
      CHECK(x.reason.kind == Reason::Kind::kNeedsMoreBesideShared);
      CHECK(x.reason.need_bytes == 8 * kGiB);
      CHECK(x.reason.shared_bytes == 4 * kGiB);
      CHECK(x.reason.limit_bytes == 10 * kGiB);
    }
}

TEST_CASE("admission: a job that reuses an idle worker is not charged that worker's memory twice") {
  // Persistent workers: a job's predicted peak is its worker tree's, model included, so the idle
  // worker it takes over stops counting as idle memory. Budget 10; job 1 runs at 3; two idle
  // workers hold 2 each.
  auto setup = [](std::uint32_t idle_workers) {
    Scheduler s(budget_of(10 * kGiB));
    s.add_job(predicted(1, 3 * kGiB));
    REQUIRE(starts(s.poll(0)) == std::vector<JobId>{1});
    s.add_job(predicted(2, 5 * kGiB));
    s.add_job(predicted(3, 5 * kGiB));
    MemorySample m = sample(50, {{1, 3 * kGiB}}, 4 * kGiB);
    m.idle_workers = idle_workers;
    s.on_sample(m);
    return s;
  };
  // Counted once: 3 running + 2 for the idle worker left + 5 for job 2 = 10 fits; job 3 would
  // make 3 + 5 + 0 + 5 = 13.
  Scheduler reuse = setup(2);
  CHECK(reuse.committed_bytes() == 7 * kGiB);
  CHECK(starts(reuse.poll(60)) == std::vector<JobId>{2});
  CHECK(reuse.committed_bytes() == 10 * kGiB);  // 3 + 5 + the one idle worker still idle
  // Unknown count (external commands have no idle workers to reuse): all idle memory counts,
  // 3 + 4 + 5 = 12 does not fit.
  Scheduler unknown = setup(0);
  CHECK(starts(unknown.poll(60)).empty());
  // A new sample resets what was reused: job 2 runs on one worker, one idle worker of 2 remains.
  MemorySample m = sample(70, {{1, 3 * kGiB}, {2, 5 * kGiB}}, 2 * kGiB);
  m.idle_workers = 1;
  reuse.on_sample(m);
  CHECK(reuse.committed_bytes() == 10 * kGiB);
  CHECK(starts(reuse.poll(80)).empty());
}

TEST_CASE("ordering: large jobs first, smaller ones fill the gaps (first-fit decreasing)") {
  Scheduler s(budget_of(10 * kGiB));
  s.add_job(predicted(1, 1 * kGiB));
  s.add_job(predicted(2, 3 * kGiB));
  s.add_job(predicted(3, 5 * kGiB));
  s.add_job(predicted(4, 6 * kGiB));
  // 6 first; 5 does not fit the 4 left; 3 does, then 1.
  CHECK(starts(s.poll(0)) == std::vector<JobId>{4, 2, 1});
  s.on_job_ended(4, ok(6 * kGiB), 1000);
  CHECK(starts(s.poll(1000)) == std::vector<JobId>{3});
}

TEST_CASE("ordering: without predictions, larger files first; equal estimates break ties by size") {
  SchedulerConfig c = budget_of(100 * kGiB);
  c.cold_start_jobs = 1;
  Scheduler s(c);
  s.add_job(unpredicted(1, 10));
  s.add_job(unpredicted(2, 30));
  s.add_job(unpredicted(3, 20));
  CHECK(starts(s.poll(0)) == std::vector<JobId>{2});

  Scheduler t(budget_of(100 * kGiB));
  t.add_job(predicted(1, kGiB, 10));
  t.add_job(predicted(2, kGiB, 30));
  t.add_job(predicted(3, kGiB, 20));
  CHECK(starts(t.poll(0)) == std::vector<JobId>{2, 3, 1});
}

TEST_CASE("slow start: few unpredicted jobs at once, ramping up as measurements and predictions arrive") {
  SchedulerConfig c = budget_of(100 * kGiB);
  c.cold_start_jobs = 1;
  Scheduler s(c);
  for (JobId id = 1; id <= 8; ++id) s.add_job(unpredicted(id, 100 - id));
  CHECK(s.cold_start_limit() == 1);
  CHECK(starts(s.poll(0)) == std::vector<JobId>{1});
  CHECK(starts(s.poll(10)).empty());
  s.on_job_ended(1, ok(2 * kGiB), 1000);
  CHECK(s.cold_start_limit() == 2);
  // The first start after the opening one is the smallest (8): both ends of the corpus early.
  CHECK(starts(s.poll(1000)) == std::vector<JobId>{8, 2});
  s.on_job_ended(2, ok(2 * kGiB), 2000);
  CHECK(starts(s.poll(2000)) == std::vector<JobId>{3, 4});  // limit 3: 8, 3, 4 running
  // History has learned: predictions arrive for the rest, which are then packed by the budget.
  for (JobId id = 5; id <= 7; ++id) s.set_prediction(id, 2 * kGiB);
  CHECK(starts(s.poll(2100)) == std::vector<JobId>{5, 6, 7});
  CHECK(s.running() == 6);
}

TEST_CASE("slow start by default: two unpredicted jobs, largest first, then the smallest on a worker that has run one") {
  Scheduler s(budget_of(100 * kGiB));
  for (JobId id = 1; id <= 5; ++id) s.add_job(unpredicted(id, 100 * id));
  CHECK(starts(s.poll(0)) == std::vector<JobId>{5, 4});
  CHECK(starts(s.poll(10)).empty());
  s.on_job_ended(5, ok(1 * kGiB), 1000);
  // Limit 3 after one success: the first start after the opening two is the smallest (both
  // ends of the corpus early), then largest first again.
  CHECK(starts(s.poll(1000)) == std::vector<JobId>{1, 3});
}

TEST_CASE("slow start: an unpredicted job is charged as the largest peak seen so far") {
  SchedulerConfig c = budget_of(10 * kGiB);
  c.cold_start_jobs = 4;
  Scheduler s(c);
  for (JobId id = 1; id <= 4; ++id) s.add_job(unpredicted(id, 100 - id));
  // Nothing measured yet and no floor: each is charged 0, so the cold-start cap of 4 decides.
  // With a floor the budget decides instead (the next scheduler).
  CHECK(starts(s.poll(0)).size() == 4);

  c.cold_start_floor_bytes = 3 * kGiB;
  Scheduler t(c);
  for (JobId id = 1; id <= 5; ++id) t.add_job(unpredicted(id, 100 - id));
  CHECK(starts(t.poll(0)) == std::vector<JobId>{1, 2, 3});  // 3 x 3 GiB floor fits 10 GiB
  t.on_sample(sample(100, {{1, 4 * kGiB}, {2, kGiB}, {3, kGiB}}));
  // Job 1 showed 4 GiB: it is charged 4, and any new cold job is charged 4 too.
  CHECK(t.committed_bytes() == 10 * kGiB);
  t.on_job_ended(2, ok(kGiB), 200);
  CHECK(t.committed_bytes() == 7 * kGiB);
  CHECK(starts(t.poll(200)).empty());  // 7 + 4 > 10
  t.on_job_ended(3, ok(kGiB), 300);
  CHECK(starts(t.poll(300)) == std::vector<JobId>{4});
}

TEST_CASE("set_predictions in bulk decides exactly as one set_prediction per job") {
  SchedulerConfig c = budget_of(20 * kGiB);
  c.cold_start_jobs = 2;
  Scheduler one(c), bulk(c);
  std::vector<std::pair<JobId, std::uint64_t>> updates;
  for (JobId id = 1; id <= 300; ++id) {
    one.add_job(unpredicted(id, id * 37 % 101));
    bulk.add_job(unpredicted(id, id * 37 % 101));
    // Peaks from 0.1 to 3 GiB, and one job (id 150) larger than the budget.
    const std::uint64_t peak = id == 150 ? 25 * kGiB : (id * 53 % 30 + 1) * kGiB / 10;
    updates.emplace_back(id, peak);
  }
  CHECK(starts(one.poll(0)) == starts(bulk.poll(0)));  // two cold jobs each
  for (const auto& [id, bytes] : updates) one.set_prediction(id, bytes);
  bulk.set_predictions(updates);
  CHECK(one.queued() == bulk.queued());
  auto a = one.poll(10), b = bulk.poll(10);
  CHECK(fails(a) == std::vector<JobId>{150});
  CHECK(fails(b) == fails(a));
  CHECK(starts(a).size() > 5);
  CHECK(starts(b) == starts(a));
  CHECK(one.committed_bytes() == bulk.committed_bytes());

  // Refits of jobs already predicted: a law that keeps the queue's order (all x1.5: the bulk
  // path merges) and one that reverses it (the bulk path sorts). The next starts agree.
  std::vector<JobId> running = starts(a);
  std::int64_t now = 10;
  for (int law = 0; law < 2; ++law) {
    updates.clear();
    for (JobId id = 1; id <= 300; ++id) {
      const std::uint64_t peak = (id * 53 % 30 + 1) * kGiB / 10;
      if (id != 150) updates.emplace_back(id, law == 0 ? peak * 3 / 2 : 3 * kGiB + kGiB / 10 - peak);
    }
    for (const auto& [id, bytes] : updates) one.set_prediction(id, bytes);
    bulk.set_predictions(updates);
    CHECK(one.queued() == bulk.queued());
    now += 10;
    for (JobId id : running) {
      one.on_job_ended(id, ok(kGiB), now);
      bulk.on_job_ended(id, ok(kGiB), now);
    }
    auto next_one = one.poll(now), next_bulk = bulk.poll(now);
    CHECK(starts(next_one).size() > 3);
    CHECK(starts(next_bulk) == starts(next_one));
    CHECK(one.committed_bytes() == bulk.committed_bytes());
    running = starts(next_one);
  }
}

TEST_CASE("max_workers caps concurrency even when memory would allow more") {
  SchedulerConfig c = budget_of(100 * kGiB);
  c.max_workers = 3;
  Scheduler s(c);
  for (JobId id = 1; id <= 5; ++id) s.add_job(predicted(id, kGiB));
  CHECK(starts(s.poll(0)).size() == 3);
  s.on_job_ended(1, ok(kGiB), 10);
  CHECK(starts(s.poll(10)).size() == 1);
  CHECK(s.stats().peak_running == 3);
}

TEST_CASE("a job that cannot fit even alone fails at once, naming its need and the budget") {
  Scheduler s(budget_of(4 * kGiB));
  s.add_job(predicted(1, 6 * kGiB + 100 * kMiB));
  s.add_job(predicted(2, kGiB));
  auto d = s.poll(0);
  REQUIRE(fails(d) == std::vector<JobId>{1});
  CHECK(d[0].reason.kind == Reason::Kind::kNeedsMoreThanBudget);
  CHECK(d[0].reason.need_bytes == 6 * kGiB + 100 * kMiB);
  CHECK(d[0].reason.limit_bytes == 4 * kGiB);
  CHECK(starts(d) == std::vector<JobId>{2});
  CHECK(s.stats().failed == 1);
  // A prediction that arrives later and exceeds the budget fails the queued job the same way.
  s.add_job(unpredicted(3, 10));
  s.set_prediction(3, 5 * kGiB);
  CHECK(fails(s.poll(1)) == std::vector<JobId>{3});
  s.on_job_ended(2, ok(kGiB), 2);
  CHECK(s.done());
  CHECK(s.stats().failed == 2);
}

TEST_CASE("preemption: crossing the high-water mark kills the youngest job, once per kill") {
  Scheduler s(budget_of(10 * kGiB));
  s.add_job(predicted(1, 3 * kGiB));
  CHECK(starts(s.poll(0)) == std::vector<JobId>{1});
  s.add_job(predicted(2, 3 * kGiB));
  CHECK(starts(s.poll(100)) == std::vector<JobId>{2});
  s.add_job(predicted(3, 3 * kGiB));
  CHECK(starts(s.poll(200)) == std::vector<JobId>{3});
  // 8.9 GiB is under 90% of 10 GiB (9.0): nothing.
  s.on_sample(sample(300, {{1, 3 * kGiB}, {2, 3 * kGiB}, {3, 2 * kGiB + 900 * kMiB}}));
  CHECK(kills(s.poll(300)).empty());
  // 9.5 GiB: the youngest (job 3, started last) is killed even though job 1 is the largest.
  s.on_sample(sample(400, {{1, 4 * kGiB}, {2, 3 * kGiB}, {3, 2 * kGiB + 512 * kMiB}}));
  auto d = s.poll(400);
  REQUIRE(kills(d) == std::vector<JobId>{3});
  CHECK(d[0].reason.kind == Reason::Kind::kMemoryAboveMark);
  CHECK(d[0].reason.used_bytes == 9 * kGiB + 512 * kMiB);
  CHECK(d[0].reason.line_bytes == 9 * kGiB);  // 90% of 10 GiB
  CHECK(d[0].reason.percent == doctest::Approx(90));
  CHECK(d[0].reason.limit_bytes == 10 * kGiB);
  CHECK(d[0].reason.job_bytes == 2 * kGiB + 512 * kMiB);  // the youngest's own use
  // No second kill while the first is under way, however bad the next sample is.
  s.on_sample(sample(450, {{1, 5 * kGiB}, {2, 3 * kGiB}, {3, 2 * kGiB}}));
  CHECK(kills(s.poll(450)).empty());
  s.on_job_ended(3, ended(JobOutcome::Kind::kGuardKilled, 2 * kGiB + 512 * kMiB), 500);
  CHECK(s.stats().guard_kills == 1);
  // Now the next youngest (job 2) can be chosen if memory is still too high.
  s.on_sample(sample(600, {{1, 5 * kGiB}, {2, 4 * kGiB + 512 * kMiB}}));
  CHECK(kills(s.poll(600)) == std::vector<JobId>{2});
}

TEST_CASE("preemption: jobs within their predictions are left alone above the high-water mark") {
  Scheduler s(budget_of(10 * kGiB));
  s.add_job(predicted(1, 5 * kGiB));
  s.add_job(predicted(2, 5 * kGiB));
  CHECK(starts(s.poll(0)) == std::vector<JobId>{1, 2});
  // 9.8 GiB is above the 9 GiB mark, but each job is within the 5 GiB admission counted for it:
  // together they cannot pass the budget, so nobody is killed.
  s.on_sample(sample(100, {{1, 5 * kGiB}, {2, 4 * kGiB + 800 * kMiB}}));
  CHECK(kills(s.poll(100)).empty());
  // Job 1 goes past its prediction: now the plan is wrong and the youngest goes.
  s.on_sample(sample(200, {{1, 5 * kGiB + 100 * kMiB}, {2, 4 * kGiB + 800 * kMiB}}));
  CHECK(kills(s.poll(200)) == std::vector<JobId>{2});
  s.on_job_ended(2, ended(JobOutcome::Kind::kGuardKilled, 4 * kGiB + 800 * kMiB), 250);
  // Idle workers pushing the total past the budget itself also count, plan or not.
  Scheduler t(budget_of(10 * kGiB));
  t.add_job(predicted(1, 4 * kGiB));
  t.add_job(predicted(2, 4 * kGiB));
  CHECK(starts(t.poll(0)).size() == 2);
  t.on_sample(sample(100, {{1, 4 * kGiB}, {2, 4 * kGiB}}, 2 * kGiB + kMiB));
  CHECK(kills(t.poll(100)) == std::vector<JobId>{2});
}

TEST_CASE("preemption: a job a few MiB over its prediction, with room left, is not killed") {
  Scheduler s(budget_of(10 * kGiB));
  s.add_job(predicted(1, 4 * kGiB));
  s.add_job(predicted(2, 4 * kGiB));
  CHECK(starts(s.poll(0)).size() == 2);
  // 9.05 GiB with idle workers is above the 9 GiB mark; job 1 is 50 MiB over its 4 GiB, within
  // the slack (2% + 8 MiB = 90 MiB), and the corrected plan (9.05 GiB) fits: no kill.
  s.on_sample(sample(100, {{1, 4 * kGiB + 50 * kMiB}, {2, 4 * kGiB}}, kGiB));
  CHECK(kills(s.poll(100)).empty());
  // 200 MiB over: it clearly outgrew its prediction and may keep growing.
  s.on_sample(sample(200, {{1, 4 * kGiB + 200 * kMiB}, {2, 4 * kGiB}}, kGiB));
  CHECK(kills(s.poll(200)) == std::vector<JobId>{2});
}

TEST_CASE("preemption: the killed job is requeued with its estimate raised to what it showed") {
  SchedulerConfig c = budget_of(10 * kGiB);
  c.raise_factor = 1.25;
  Scheduler s(c);
  s.add_job(predicted(1, 4 * kGiB));
  s.add_job(predicted(2, 2 * kGiB));
  CHECK(starts(s.poll(0)) == std::vector<JobId>{1, 2});
  s.on_sample(sample(100, {{1, 5 * kGiB + 512 * kMiB}, {2, 4 * kGiB}}));  // 9.5 > 9
  CHECK(kills(s.poll(100)) == std::vector<JobId>{2});
  s.on_job_ended(2, ended(JobOutcome::Kind::kGuardKilled, 4 * kGiB), 150);
  CHECK(s.queued() == 1);
  CHECK(s.estimate_bytes(2) == 5 * kGiB);  // 1.25 x 4 GiB
  CHECK(s.stats().retried == 1);
  // A later, lower prediction from history does not undo the raise.
  s.set_prediction(2, kGiB);
  CHECK(s.estimate_bytes(2) == 5 * kGiB);
}

TEST_CASE("preemption: admissions pause after a kill, then resume") {
  SchedulerConfig c = budget_of(10 * kGiB);
  c.pause_after_kill_ms = 2000;
  Scheduler s(c);
  s.add_job(predicted(1, 4 * kGiB));
  s.add_job(predicted(2, 4 * kGiB));
  CHECK(starts(s.poll(0)).size() == 2);
  s.on_sample(sample(1000, {{1, 6 * kGiB}, {2, 4 * kGiB}}));
  CHECK(kills(s.poll(1000)) == std::vector<JobId>{2});
  CHECK(s.paused_until_ms() == 3000);
  s.on_job_ended(2, ended(JobOutcome::Kind::kGuardKilled, 4 * kGiB), 1100);
  s.add_job(predicted(3, kGiB));
  s.on_sample(sample(1200, {{1, 3 * kGiB}}));
  CHECK(starts(s.poll(1200)).empty());
  CHECK(starts(s.poll(2999)).empty());
  // 10 - 6 (job 1's observed peak) leaves 4: job 3 (1 GiB) fits, job 2 (now 5 GiB) does not.
  CHECK(starts(s.poll(3000)) == std::vector<JobId>{3});
}

TEST_CASE("preemption: MemAvailable below the reserve and PSI above the limit also trigger it") {
  SchedulerConfig c = budget_of(100 * kGiB);
  c.reserve_bytes = 512 * kMiB;
  c.psi_full_avg10_limit = 20.0;
  Scheduler s(c);
  s.add_job(predicted(1, kGiB));
  s.add_job(predicted(2, kGiB));
  CHECK(starts(s.poll(0)).size() == 2);
  MemorySample m = sample(100, {{1, kGiB}, {2, kGiB}});
  m.mem_available_bytes = 600 * kMiB;
  m.psi_full_avg10 = 19.5;
  s.on_sample(m);
  CHECK(kills(s.poll(100)).empty());

  m.now_ms = 200;
  m.mem_available_bytes = 400 * kMiB;
  s.on_sample(m);
  auto d = s.poll(200);
  REQUIRE(kills(d) == std::vector<JobId>{2});
  CHECK(d[0].reason.kind == Reason::Kind::kAvailableBelowReserve);
  CHECK(d[0].reason.used_bytes == 400 * kMiB);
  CHECK(d[0].reason.limit_bytes == 512 * kMiB);
  s.on_job_ended(2, ended(JobOutcome::Kind::kGuardKilled, kGiB), 250);

  m = sample(300, {{1, kGiB}});
  m.psi_full_avg10 = 35.0;
  s.on_sample(m);
  d = s.poll(300);
  REQUIRE(kills(d) == std::vector<JobId>{1});
  CHECK(d[0].reason.kind == Reason::Kind::kPressureStall);
  CHECK(d[0].reason.percent == doctest::Approx(35.0));
  CHECK(d[0].reason.limit_percent == doctest::Approx(20.0));
}

TEST_CASE("confirm_kill: a fresh reading that is fine cancels the kill and its pause") {
  SchedulerConfig c = budget_of(10 * kGiB);
  Scheduler s(c);
  s.add_job(predicted(1, 4 * kGiB));
  s.add_job(predicted(2, 4 * kGiB));
  CHECK(starts(s.poll(0)).size() == 2);
  s.on_sample(sample(100, {{1, 5 * kGiB}, {2, 4 * kGiB + 512 * kMiB}}));
  CHECK(kills(s.poll(100)) == std::vector<JobId>{2});
  CHECK_FALSE(s.confirm_kill(1, sample(110, {{1, 5 * kGiB}, {2, 5 * kGiB}})));  // not the target
  CHECK(s.confirm_kill(2, sample(110, {{1, 5 * kGiB}, {2, 4 * kGiB + 512 * kMiB}})));
  // The spike passed: the fresh reading is 7 GiB, under the 9 GiB mark.
  CHECK_FALSE(s.confirm_kill(2, sample(120, {{1, 4 * kGiB}, {2, 3 * kGiB}})));
  CHECK(s.paused_until_ms() == 0);
  CHECK(s.running() == 2);
  // The cancelled kill no longer blocks the next one.
  s.on_sample(sample(200, {{1, 5 * kGiB}, {2, 5 * kGiB}}));
  CHECK(kills(s.poll(200)) == std::vector<JobId>{2});
}

TEST_CASE("a lone job is killed only when it overruns the whole budget, then fails as too large") {
  SchedulerConfig c = budget_of(4 * kGiB);
  Scheduler s(c);
  s.add_job(predicted(1, 3 * kGiB));
  CHECK(starts(s.poll(0)) == std::vector<JobId>{1});
  s.on_sample(sample(100, {{1, 3 * kGiB + 800 * kMiB}}));  // 95% of budget: alone, it may go on
  CHECK(kills(s.poll(100)).empty());
  s.on_sample(sample(200, {{1, 4 * kGiB + 200 * kMiB}}));
  CHECK(kills(s.poll(200)) == std::vector<JobId>{1});
  s.on_job_ended(1, ended(JobOutcome::Kind::kGuardKilled, 4 * kGiB + 200 * kMiB), 250);
  auto d = s.poll(5000);
  REQUIRE(fails(d) == std::vector<JobId>{1});
  CHECK(d[0].reason.kind == Reason::Kind::kNeedsMoreThanBudget);
  CHECK(static_cast<double>(d[0].reason.need_bytes) / kGiB == doctest::Approx(5.2).epsilon(0.01));
  CHECK(d[0].reason.limit_bytes == 4 * kGiB);
  CHECK(s.done());
}

TEST_CASE("retries: crashes are retried up to max_attempts, failures never") {
  SchedulerConfig c = budget_of(10 * kGiB);
  c.max_attempts = 3;
  Scheduler s(c);
  s.add_job(predicted(1, kGiB));
  s.add_job(predicted(2, kGiB));
  CHECK(starts(s.poll(0)).size() == 2);
  s.on_job_ended(2, ended(JobOutcome::Kind::kFailed, kGiB, "corpus/b.wav: not a sound file"), 10);
  CHECK(s.stats().failed == 1);
  CHECK(s.queued() == 0);  // never retried

  s.on_job_ended(1, ended(JobOutcome::Kind::kDied, kGiB, "killed by signal 11 (SIGSEGV)"), 20);
  CHECK(starts(s.poll(20)) == std::vector<JobId>{1});
  s.on_job_ended(1, ended(JobOutcome::Kind::kDied, kGiB, "killed by signal 11 (SIGSEGV)"), 30);
  CHECK(starts(s.poll(30)) == std::vector<JobId>{1});
  s.on_job_ended(1, ended(JobOutcome::Kind::kDied, kGiB, "killed by signal 6 (SIGABRT)"), 40);
  auto d = s.poll(40);
  REQUIRE(fails(d) == std::vector<JobId>{1});
  CHECK(d[0].reason.kind == Reason::Kind::kCrashedTooOften);
  CHECK(d[0].reason.count == 3);
  CHECK(d[0].reason.last_error == "killed by signal 6 (SIGABRT)");
  CHECK(s.stats().retried == 2);
  CHECK(s.stats().started == 4);
  CHECK(s.stats().failed == 2);
  CHECK(s.done());
}

TEST_CASE("an OOM death is requeued with a raised estimate and does not use up attempts") {
  SchedulerConfig c = budget_of(10 * kGiB);
  c.max_attempts = 1;
  Scheduler s(c);
  s.add_job(predicted(1, kGiB));
  CHECK(starts(s.poll(0)) == std::vector<JobId>{1});
  s.on_job_ended(1, ended(JobOutcome::Kind::kDied, 2 * kGiB, "killed by SIGKILL", true), 10);
  CHECK(s.stats().oom_deaths == 1);
  CHECK(s.stats().guard_kills == 0);
  CHECK(s.estimate_bytes(1) == 2 * kGiB + 512 * kMiB);
  CHECK(starts(s.poll(10)) == std::vector<JobId>{1});
  s.on_job_ended(1, ok(2 * kGiB), 20);
  CHECK(s.stats().finished_ok == 1);
  CHECK(s.done());
}

TEST_CASE("guard kills of one job are bounded") {
  SchedulerConfig c = budget_of(100 * kGiB);
  c.max_guard_kills = 2;
  c.pause_after_kill_ms = 0;
  Scheduler s(c);
  s.add_job(predicted(1, kGiB));
  for (int i = 0; i < 2; ++i) {
    CHECK(starts(s.poll(i * 10)) == std::vector<JobId>{1});
    s.on_job_ended(1, ended(JobOutcome::Kind::kGuardKilled, kGiB), i * 10 + 5);
  }
  CHECK(starts(s.poll(30)) == std::vector<JobId>{1});
  s.on_job_ended(1, ended(JobOutcome::Kind::kGuardKilled, kGiB), 35);
  auto d = s.poll(40);
  REQUIRE(fails(d) == std::vector<JobId>{1});
  CHECK(d[0].reason.kind == Reason::Kind::kGuardKilledTooOften);
  CHECK(d[0].reason.count == 3);
}

TEST_CASE("VRAM budget: admission and preemption count GPU memory too") {
  SchedulerConfig c = budget_of(100 * kGiB);
  c.vram_budget_bytes = 8 * kGiB;
  Scheduler s(c);
  for (JobId id = 1; id <= 3; ++id) {
    JobSpec j = predicted(id, kGiB, 100 - id);
    j.predicted_vram_bytes = 3 * kGiB;
    s.add_job(j);
  }
  JobSpec huge = predicted(9, kGiB);
  huge.predicted_vram_bytes = 9 * kGiB;
  s.add_job(huge);
  auto d = s.poll(0);
  CHECK(fails(d) == std::vector<JobId>{9});
  CHECK(d[0].reason.kind == Reason::Kind::kNeedsMoreThanVramBudget);
  CHECK(d[0].reason.need_bytes == 9 * kGiB);
  CHECK(d[0].reason.limit_bytes == 8 * kGiB);
  CHECK(starts(d) == std::vector<JobId>{1, 2});  // 3 + 3 fit in 8, a third 3 does not
  CHECK(s.committed_vram_bytes() == 6 * kGiB);

  MemorySample m = sample(100, {{1, kGiB}, {2, kGiB}});
  m.jobs[0].vram_bytes = 3 * kGiB;
  m.jobs[1].vram_bytes = 4 * kGiB + 512 * kMiB;  // 7.5 GiB > 90% of 8
  s.on_sample(m);
  d = s.poll(100);
  REQUIRE(kills(d) == std::vector<JobId>{2});
  CHECK(d[0].reason.kind == Reason::Kind::kVramAboveMark);
  CHECK(d[0].reason.used_bytes == 7 * kGiB + 512 * kMiB);
}

TEST_CASE("no starvation: a large job waits for at most max_overtakes smaller ones") {
  SchedulerConfig c = budget_of(10 * kGiB);
  c.max_overtakes = 3;
  Scheduler s(c);
  s.add_job(predicted(1, 3 * kGiB));
  CHECK(starts(s.poll(0)) == std::vector<JobId>{1});  // a long job holds 3 GiB
  s.add_job(predicted(100, 8 * kGiB));                // does not fit beside it
  JobId next_small = 2;
  for (int i = 0; i < 10; ++i) s.add_job(predicted(next_small++, 2 * kGiB));
  std::vector<JobId> small_started = starts(s.poll(10));
  CHECK(small_started == std::vector<JobId>{2, 3, 4});  // 3 + 2 + 2 + 2 = 9: three overtakes
  // Smaller jobs finish; without the limit another would start each time, and the large job
  // would wait as long as small ones keep coming.
  for (JobId id : small_started) s.on_job_ended(id, ok(2 * kGiB), 20);
  CHECK(starts(s.poll(20)).empty());
  s.on_job_ended(1, ok(3 * kGiB), 30);
  CHECK(starts(s.poll(30)) == std::vector<JobId>{100, 5});
}

}  // namespace ab
