// Replay tests: the simulation's clock, CPU sharing, memory timelines, kills, scaling and sweeps.
#include "orchestrator/batch/replay_run.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <random>

namespace ab {
namespace {

constexpr std::uint64_t kMiB = 1024ull * 1024;
constexpr std::uint64_t kGiB = 1024ull * kMiB;

RecordedJob flat_job(std::uint64_t peak_bytes, double duration_s, double cpu_s = 0) {
  RecordedJob j;
  j.size_bytes = peak_bytes / 100;
  j.duration_s = duration_s;
  j.cpu_s = cpu_s;
  j.peak_pss_bytes = peak_bytes;
  j.predicted_peak_bytes = peak_bytes;
  return j;
}

/// Memory rising linearly to the peak over the first half of the job, then held.
RecordedJob ramp_job(std::uint64_t peak_bytes, double duration_s) {
  RecordedJob j = flat_job(peak_bytes, duration_s);
  const auto half_ms = static_cast<std::int64_t>(duration_s * 500);
  j.timeline = {{half_ms, peak_bytes}, {static_cast<std::int64_t>(duration_s * 1000), peak_bytes}};
  return j;
}

ReplaySettings settings_with(std::uint64_t budget_bytes, std::uint32_t cores = 0) {
  ReplaySettings s;
  s.scheduler.budget_bytes = budget_bytes;
  s.cores = cores;
  s.sample_interval_ms = 100;
  return s;
}

}  // namespace

TEST_CASE("replay: one job alone takes its recorded time and shows its recorded peak") {
  std::vector<RecordedJob> rec{ramp_job(2 * kGiB, 12.0)};
  ReplayResult r = replay(rec, pick_all(1), settings_with(10 * kGiB));
  CHECK(r.ok == 1);
  CHECK(r.failed == 0);
  CHECK(r.makespan_s == doctest::Approx(12.0));
  CHECK(r.peak_total_bytes == 2 * kGiB);
  CHECK(r.average_concurrency == doctest::Approx(1.0));
  CHECK(r.stats.guard_kills == 0);
}

TEST_CASE("replay: the budget packs jobs, and the figures follow from it") {
  std::vector<RecordedJob> rec(4, flat_job(3 * kGiB, 10.0));
  ReplayResult r = replay(rec, pick_all(4), settings_with(10 * kGiB));
  // Three fit in 10 GiB, the fourth runs after them.
  CHECK(r.ok == 4);
  CHECK(r.makespan_s == doctest::Approx(20.0));
  CHECK(r.stats.peak_running == 3);
  CHECK(r.peak_total_bytes == 9 * kGiB);
  CHECK(r.average_concurrency == doctest::Approx(2.0));  // 40 job-seconds over 20 s
  // Memory used: 9 GiB for 10 s then 3 GiB for 10 s, of 10 GiB x 20 s: 40% idle.
  CHECK(r.idle_budget_fraction == doctest::Approx(0.4).epsilon(0.02));
}

TEST_CASE("replay: more CPU-bound jobs than cores share the cores") {
  std::vector<RecordedJob> rec(4, flat_job(kGiB, 10.0, /*cpu_s=*/10.0));
  ReplayResult two = replay(rec, pick_all(4), settings_with(100 * kGiB, /*cores=*/2));
  CHECK(two.stats.peak_running == 4);
  CHECK(two.makespan_s == doctest::Approx(20.0));  // 40 core-seconds on 2 cores
  ReplayResult eight = replay(rec, pick_all(4), settings_with(100 * kGiB, /*cores=*/8));
  CHECK(eight.makespan_s == doctest::Approx(10.0));
  // Jobs that mostly wait (a tenth of a core each) are not slowed by 2 cores.
  std::vector<RecordedJob> waiting(4, flat_job(kGiB, 10.0, /*cpu_s=*/1.0));
  CHECK(replay(waiting, pick_all(4), settings_with(100 * kGiB, 2)).makespan_s ==
        doctest::Approx(10.0));
}

TEST_CASE("replay: predictions below the truth cause guard kills; a larger margin removes them") {
  std::vector<RecordedJob> rec;
  for (int i = 0; i < 12; ++i) {
    RecordedJob j = ramp_job((2 + i % 3) * kGiB, 20.0 + i);
    j.predicted_peak_bytes = *j.predicted_peak_bytes / 2;  // history is wrong by half
    rec.push_back(j);
  }
  ReplaySettings s = settings_with(10 * kGiB);
  s.scheduler.max_guard_kills = 100;
  ReplayResult low = replay(rec, pick_all(rec.size()), s);
  CHECK(low.ok == rec.size());
  CHECK(low.stats.guard_kills > 0);
  CHECK(low.lost_work_s > 0);
  CHECK(low.peak_total_bytes <= 10 * kGiB);

  s.prediction_scale = 2.0;
  ReplayResult right = replay(rec, pick_all(rec.size()), s);
  CHECK(right.ok == rec.size());
  CHECK(right.stats.guard_kills == 0);
  CHECK(right.peak_total_bytes <= 10 * kGiB);
}

TEST_CASE("replay: without history the scheduler's slow start is replayed") {
  std::vector<RecordedJob> rec(6, flat_job(kGiB, 10.0));
  ReplaySettings s = settings_with(100 * kGiB);
  s.use_predictions = false;
  s.scheduler.cold_start_jobs = 1;
  ReplayResult r = replay(rec, pick_all(6), s);
  // 1 alone, then 2 (limit 1 + 1 success), then 3: 6 jobs in three rounds of 10 s.
  CHECK(r.ok == 6);
  CHECK(r.makespan_s == doctest::Approx(30.0));
  CHECK(r.stats.peak_running == 3);
}

TEST_CASE("replay: a first run (cold) learns as the real loop does: predictions after the first jobs end") {
  // Peaks follow sizes exactly; without predictions the scheduler starts one job (slow start);
  // once it has ended, the driver's PredictionPolicy fits it and the queued jobs get predictions.
  std::vector<RecordedJob> rec;
  for (int i = 0; i < 12; ++i) rec.push_back(flat_job((1 + i % 3) * kGiB, 10.0));
  ReplaySettings s = settings_with(100 * kGiB);
  s.scheduler.cold_start_jobs = 1;
  s.cold = true;
  ReplayResult r = replay(rec, pick_all(rec.size()), s);
  CHECK(r.ok == 12);
  CHECK(r.failed == 0);
  CHECK(r.stats.guard_kills == 0);
  // The first round runs one job alone (slow start); a fitted prediction then lets the rest past
  // the cold start's ramp (1, 2, 4, 5 jobs: 4 rounds of 10 s without predictions, below).
  CHECK(r.stats.peak_running > 4);
  CHECK(r.makespan_s < 40.0);

  ReplaySettings never = s;
  never.use_predictions = false;
  ReplayResult slow = replay(rec, pick_all(rec.size()), never);
  CHECK(slow.makespan_s == doctest::Approx(40.0));  // 1, 2, 4, 5 jobs, 10 s each round
}

TEST_CASE("replay: a job larger than the budget fails with the scheduler's reason") {
  std::vector<RecordedJob> rec{flat_job(6 * kGiB, 5.0), flat_job(kGiB, 5.0)};
  ReplayResult r = replay(rec, pick_all(2), settings_with(4 * kGiB));
  CHECK(r.ok == 1);
  CHECK(r.failed == 1);
  REQUIRE(r.fail_reasons.size() == 1);
  CHECK(r.fail_reasons[0].kind == Reason::Kind::kNeedsMoreThanBudget);
  CHECK(r.fail_reasons[0].need_bytes == 6 * kGiB);
  CHECK(r.fail_reasons[0].limit_bytes == 4 * kGiB);
}

TEST_CASE("pick_scaled draws K times the jobs from the recorded ones, reproducibly") {
  auto a = pick_scaled(10, 100.0, 7);
  auto b = pick_scaled(10, 100.0, 7);
  auto c = pick_scaled(10, 100.0, 8);
  CHECK(a.size() == 1000);
  CHECK(a == b);
  CHECK(a != c);
  std::map<std::uint32_t, int> counts;
  for (auto i : a) ++counts[i];
  CHECK(counts.size() == 10);
  for (auto& [i, n] : counts) {
    CHECK(i < 10);
    CHECK(n > 50);  // expected 100 each; 50 is > 5 standard deviations away
    CHECK(n < 150);
  }
  CHECK(pick_scaled(3, 0.5, 1).size() == 2);
  CHECK(pick_scaled(0, 10, 1).empty());
}

TEST_CASE("sweep: the recommended row is the fastest without guard kills") {
  std::vector<RecordedJob> rec;
  for (int i = 0; i < 10; ++i) {
    RecordedJob j = ramp_job((1 + i % 4) * kGiB, 10.0 + i);
    j.predicted_peak_bytes = *j.predicted_peak_bytes * 7 / 10;
    rec.push_back(j);
  }
  ReplaySettings base = settings_with(8 * kGiB);
  base.scheduler.max_guard_kills = 100;
  SweepGrid grid;
  grid.max_workers = {0, 1};
  grid.high_water = {0.9};
  grid.prediction_scale = {1.0, 1.5};
  auto rows = sweep(rec, pick_all(rec.size()), base, grid);
  REQUIRE(rows.size() == 4);
  // cap 0 with predictions at 70% of the truth kills; with a 1.5x margin it does not.
  CHECK(rows[0].result.stats.guard_kills > 0);
  CHECK(rows[1].result.stats.guard_kills == 0);
  // One worker at a time never kills, but is slower than packing.
  CHECK(rows[2].result.stats.guard_kills == 0);
  CHECK(rows[2].result.makespan_s > rows[1].result.makespan_s);
  const std::size_t best = recommend(rows);
  CHECK(best == 1);
  CHECK(recommend({}) == 0);
  // On a tie, the safer setting wins (a lower high-water mark here), even over the settings in use.
  std::vector<SweepRow> tie = {rows[1], rows[1]};
  tie[0].high_water = 0.85;
  tie[1].high_water = base.scheduler.high_water;
  tie[1].prediction_scale = base.prediction_scale;
  tie[1].max_workers = base.scheduler.max_workers;
  CHECK(recommend(tie) == 0);
}

TEST_CASE("sweep: makespans within the tie fraction go to fewer workers, a real gain to more") {
  auto row = [](std::uint32_t workers, double makespan_s) {
    SweepRow r;
    r.max_workers = workers;
    r.high_water = 0.9;
    r.prediction_scale = 1.0;
    r.result.makespan_s = makespan_s;
    return r;
  };
  // 4 workers 1% faster than 2: a tie, so 2. Memory alone (0) counts as the most workers.
  CHECK(recommend({row(4, 99.0), row(2, 100.0), row(0, 98.5)}) == 1);
  // 4 workers 10% faster: a real gain.
  CHECK(recommend({row(4, 90.0), row(2, 100.0)}) == 0);
  // A guard kill still loses to a slower row without one.
  std::vector<SweepRow> kills = {row(1, 50.0), row(2, 100.0)};
  kills[0].result.stats.guard_kills = 1;
  CHECK(recommend(kills) == 1);
}

TEST_CASE("default sweep grid scales the caps with the cores, never past them for CPU-bound jobs") {
  SweepGrid g = default_sweep_grid(16, false);
  CHECK(g.max_workers == std::vector<std::uint32_t>{0, 16, 32, 64});
  CHECK(g.high_water.size() == 3);
  CHECK(g.prediction_scale == std::vector<double>{0.9, 1.0, 1.15, 1.3});
  CHECK(default_sweep_grid(16, true).max_workers == std::vector<std::uint32_t>{1, 8, 16});
  CHECK(default_sweep_grid(2, true).max_workers == std::vector<std::uint32_t>{1, 2});
  CHECK(default_sweep_grid(1, true).max_workers == std::vector<std::uint32_t>{1});
}

// A world where each job's memory ramps linearly to its true peak over the first half of its run
// and holds there, while predictions say half the truth. Driven through the batch driver (replay:
// the real loop over a simulated machine) with readings every 100 ms, the measured total never
// exceeds the budget, because the guard preempts as the truth shows; without preemption it does.
TEST_CASE("simulation: with predictions half the truth, preemption keeps memory inside the budget") {
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<std::uint64_t> peak_mib(1024, 6 * 1024);
  std::uniform_int_distribution<int> duration_ms(20'000, 60'000);
  std::vector<RecordedJob> world;
  for (int i = 0; i < 60; ++i) {
    RecordedJob j = ramp_job(peak_mib(rng) * kMiB, duration_ms(rng) / 1000.0);
    j.size_bytes = j.peak_pss_bytes;
    j.predicted_peak_bytes = j.peak_pss_bytes / 2;
    world.push_back(j);
  }
  ReplaySettings s = settings_with(16 * kGiB);
  s.scheduler.max_guard_kills = 100;
  const ReplayResult guarded = replay(world, pick_all(world.size()), s);
  CHECK(guarded.ok == world.size());
  CHECK(guarded.failed == 0);
  CHECK(guarded.stats.guard_kills > 0);  // the low predictions did need correcting
  CHECK(guarded.peak_total_bytes <= s.scheduler.budget_bytes);
  MESSAGE("guarded: worst total " << guarded.peak_total_bytes / kMiB << " MiB of " << s.scheduler.budget_bytes / kMiB
                                  << " MiB, guard kills " << guarded.stats.guard_kills << ", peak running "
                                  << guarded.stats.peak_running);

  // The same world with the guard switched off overruns the budget: the check above can fail.
  ReplaySettings off = s;
  off.scheduler.high_water = 1e9;
  const ReplayResult unguarded = replay(world, pick_all(world.size()), off);
  CHECK(unguarded.ok == world.size());
  CHECK(unguarded.stats.guard_kills == 0);
  CHECK(unguarded.peak_total_bytes > s.scheduler.budget_bytes);
}

}  // namespace ab

namespace ab {
namespace {

/// The machine around the jobs, as history samples it once a second from 0 to `until_s`: the run's
/// own use `ours` and `available` left, `psi` for readings in [from_s, to_s) (else 0).
std::vector<RunSample> machine_samples(int until_s, std::uint64_t ours, std::uint64_t available,
                                       std::uint64_t shared = 0) {
  std::vector<RunSample> out;
  for (int t = 0; t <= until_s; ++t) out.push_back({t * 1000LL, ours, shared, available, 0.0});
  return out;
}

}  // namespace

TEST_CASE("replay of a run's machine: others' memory the recording saw starves the reserve and kills, as it did") {
  // Two 1 GiB jobs of 10 s under a 10 GiB budget, a 256 MiB reserve. The real run held 2 GiB
  // and saw 3 GiB available, until another program took all but 100 MiB of it from 4 s to 6 s.
  std::vector<RecordedJob> rec(2, flat_job(kGiB, 10.0));
  ReplaySettings s = settings_with(10 * kGiB);
  s.scheduler.reserve_bytes = 256 * kMiB;  // admissions pause 2 s after a kill (the default)
  const ReplayResult alone = replay(rec, pick_all(2), s);
  CHECK(alone.stats.guard_kills == 0);
  CHECK(alone.makespan_s == doctest::Approx(10.0));

  s.machine = machine_samples(30, 2 * kGiB, 3 * kGiB);
  const ReplayResult quiet = replay(rec, pick_all(2), s);
  CHECK(quiet.stats.guard_kills == 0);  // 3 GiB left of the reserve's 256 MiB: nothing to do
  CHECK(quiet.makespan_s == doctest::Approx(10.0));

  for (int t = 4; t < 6; ++t) s.machine[t].mem_available_bytes = 100 * kMiB;
  const ReplayResult crowded = replay(rec, pick_all(2), s);
  CHECK(crowded.stats.guard_kills >= 1);
  CHECK(crowded.ok == 2);
  CHECK(crowded.makespan_s > 10.5);  // a killed job's work was lost and done again
  CHECK(crowded.lost_work_s > 0);
}

TEST_CASE("replay of a run's machine: memory pressure above the limit kills, as it did") {
  std::vector<RecordedJob> rec(2, flat_job(kGiB, 10.0));
  ReplaySettings s = settings_with(10 * kGiB);
  s.scheduler.pause_after_kill_ms = 0;
  s.machine = machine_samples(30, 2 * kGiB, 6 * kGiB);
  s.machine[3].psi_full_avg10 = s.scheduler.psi_full_avg10_limit - 1;
  CHECK(replay(rec, pick_all(2), s).stats.guard_kills == 0);
  s.machine[3].psi_full_avg10 = s.scheduler.psi_full_avg10_limit + 5;
  CHECK(replay(rec, pick_all(2), s).stats.guard_kills >= 1);
}

TEST_CASE("replay of a run's machine: past the recording the weights and others' memory hold, the pressure does not") {
  // The recording ends at 3 s under pressure above the limit, and with 3 GiB of shared weights;
  // the replayed jobs run 10 s. Inside the recording the pressure kills; past it, it must not.
  std::vector<RecordedJob> rec(4, flat_job(3 * kGiB, 10.0));
  ReplaySettings s = settings_with(10 * kGiB);
  s.machine = machine_samples(3, 9 * kGiB, 10 * kGiB, /*shared=*/3 * kGiB);
  const ReplayResult calm = replay(rec, pick_all(4), s);
  CHECK(calm.stats.guard_kills == 0);
  CHECK(calm.stats.peak_running == 2);  // the weights still count after the recording ends
  CHECK(calm.peak_total_bytes == 9 * kGiB);
  s.machine.back().psi_full_avg10 = s.scheduler.psi_full_avg10_limit + 5;
  const ReplayResult pressed = replay(rec, pick_all(4), s);
  CHECK(pressed.stats.guard_kills >= 1);  // at 3 s, within the recording
  CHECK(pressed.ok == 4);
  CHECK(pressed.stats.guard_kills <= 2);  // and not again for the rest of the replay
}

TEST_CASE("replay of a run's machine: shared weights are charged once, so fewer jobs fit beside them") {
  // 3 GiB jobs under a 10 GiB budget: three at once; beside 3 GiB of shared weights, two.
  std::vector<RecordedJob> rec(6, flat_job(3 * kGiB, 10.0));
  ReplaySettings s = settings_with(10 * kGiB);
  CHECK(replay(rec, pick_all(6), s).stats.peak_running == 3);
  s.machine = machine_samples(60, 9 * kGiB, 10 * kGiB, /*shared=*/3 * kGiB);
  const ReplayResult beside = replay(rec, pick_all(6), s);
  CHECK(beside.stats.peak_running == 2);
  CHECK(beside.stats.guard_kills == 0);
  CHECK(beside.ok == 6);
  CHECK(beside.peak_total_bytes == 9 * kGiB);  // two jobs and the weights, as the real run would show
}

}  // namespace ab
