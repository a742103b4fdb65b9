// Replay command tests: load_replay_source against a real SQLite history file written through
// HistoryStore, the recorded settings and the command's budget.
#include "orchestrator/cli/replay_command.h"
#include "orchestrator/batch/prediction_policy.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <map>

#include <CLI/CLI.hpp>

#include "history/history_store.h"
#include "tests/testutil/temp_dir.h"

namespace ab {
namespace {

constexpr std::uint64_t kMiB = 1024ull * 1024;
constexpr std::uint64_t kGiB = 1024ull * kMiB;

}  // namespace

TEST_CASE("load_replay_source reads a recorded run's finished jobs, timelines and predictions") {
  test::TempDir dir("ab-replay");
  auto opened = HistoryStore::open(dir.path() / "history.sqlite");
  REQUIRE(opened.ok());
  HistoryStore& store = *opened.value();
  RunInfo info;
  info.cores = 8;
  info.budget_bytes = 6 * kGiB;
  info.mem_total_bytes = 16 * kGiB;
  info.settings.workers = "3";
  auto run = store.begin_run(info);
  REQUIRE(run.ok());
  // Ten ok jobs whose peak grows with size (100 MiB + 2 x size), each ramping up over 1 s.
  for (int i = 1; i <= 10; ++i) {
    JobRecord rec;
    rec.run_id = *run;
    rec.input_path = "corpus/" + std::to_string(i) + ".wav";
    rec.input_size_bytes = static_cast<std::uint64_t>(i) * 50 * kMiB;
    rec.job_key = "cmd:test";
    rec.peak_pss_bytes = 100 * kMiB + 2 * rec.input_size_bytes;
    rec.peak_rss_bytes = rec.peak_pss_bytes + 10 * kMiB;
    rec.wall_s = 2.0 + i;
    rec.cpu_s = 1.0 + i;
    std::vector<TimelinePoint> tl = {{500, 0, rec.peak_pss_bytes / 2, 0},
                                     {1000, 0, rec.peak_pss_bytes, 0},
                                     {static_cast<std::int64_t>(rec.wall_s * 1000), 0, rec.peak_pss_bytes, 0}};
    REQUIRE(store.record_job(rec, tl).ok());
  }
  JobRecord killed;
  killed.run_id = *run;
  killed.input_path = "corpus/killed.wav";
  killed.input_size_bytes = 10 * kMiB;
  killed.job_key = "cmd:test";
  killed.status = JobStatus::kKilled;
  killed.peak_pss_bytes = 50 * kMiB;
  REQUIRE(store.record_job(killed).ok());

  auto loaded = load_replay_source(store, *run, "");
  REQUIRE(loaded.ok());
  const ReplaySource& src = *loaded;
  CHECK(src.jobs.size() == 10);
  CHECK(src.skipped == 1);
  CHECK(src.keys == std::vector<std::string>{"cmd:test"});
  REQUIRE(src.run.has_value());
  CHECK(src.run->info.cores == 8);
  CHECK(src.run->info.budget_bytes == 6 * kGiB);
  std::uint64_t total_peak = 0;
  for (const RecordedJob& j : src.jobs) {
    CHECK(j.key == "cmd:test");
    CHECK(j.duration_s > 2.0);
    CHECK(j.peak_pss_bytes == 100 * kMiB + 2 * j.size_bytes);
    REQUIRE(j.timeline.size() == 3);
    CHECK(j.timeline[1].t_ms == 1000);
    CHECK(j.timeline[1].pss_bytes == j.peak_pss_bytes);
    // History's prediction covers the job (a fitted line with an upper margin), within 50%.
    REQUIRE(j.predicted_peak_bytes.has_value());
    CHECK(*j.predicted_peak_bytes >= j.peak_pss_bytes * 95 / 100);
    CHECK(*j.predicted_peak_bytes <= j.peak_pss_bytes * 3 / 2);
    total_peak += j.peak_pss_bytes;
  }
  CHECK(total_peak > 6 * kGiB);  // more than the budget at once: replay has to pack them

  // The same jobs by key, and as the newest run.
  auto by_key = load_replay_source(store, std::nullopt, "cmd:test");
  REQUIRE(by_key.ok());
  CHECK(by_key->jobs.size() == 10);
  CHECK(by_key->run->id == *run);
  auto newest = load_replay_source(store, std::nullopt, "");
  REQUIRE(newest.ok());
  CHECK(newest->jobs.size() == 10);
  CHECK(newest->passed_over == 0);
  auto missing = load_replay_source(store, 99, "");
  CHECK_FALSE(missing.ok());
  CHECK(missing.error().find("no run 99") != std::string::npos);

  // A later run that found every file done finished nothing: the default passes over it.
  auto empty_run = store.begin_run(info);
  REQUIRE(empty_run.ok());
  REQUIRE(store.end_run(*empty_run, 0).ok());
  auto past_empty = load_replay_source(store, std::nullopt, "");
  REQUIRE(past_empty.ok());
  CHECK(past_empty->jobs.size() == 10);
  CHECK(past_empty->run->id == *run);
  CHECK(past_empty->passed_over == 1);
  auto asked = load_replay_source(store, *empty_run, "");  // asked for by id: that run, empty
  REQUIRE(asked.ok());
  CHECK(asked->jobs.empty());

  // Replayed under the recorded budget and cores: never above the budget, all done.
  ReplaySettings s;
  s.scheduler.budget_bytes = src.run->info.budget_bytes;
  s.cores = src.run->info.cores;
  s.sample_interval_ms = 50;
  ReplayResult r = replay(src.jobs, pick_all(src.jobs.size()), s);
  CHECK(r.ok == 10);
  CHECK(r.peak_total_bytes <= 6 * kGiB);
  CHECK(r.stats.peak_running >= 2);

  // The command: `replay --sweep --apply` stores the recommended settings for the key.
  const std::string history = (dir.path() / "history.sqlite").string();
  auto run_cli = [&](std::vector<const char*> args) {
    CLI::App app;
    int exit_code = -1;
    add_replay_command(app, exit_code);
    args.insert(args.begin(), "align-batch");
    app.parse(static_cast<int>(args.size()), args.data());
    return exit_code;
  };
  CHECK(store.tuned_settings("cmd:test")->is_null());
  CHECK(run_cli({"replay", "--history", history.c_str(), "--sweep", "--apply"}) == 0);
  auto tuned = store.tuned_settings("cmd:test");
  REQUIRE(tuned.ok());
  REQUIRE(tuned->is_object());
  CHECK((*tuned)["source"] == "align-batch replay --sweep");
  CHECK((*tuned)["budget_bytes"] == 6 * kGiB);
  CHECK((*tuned)["cores"] == 8);
  CHECK((*tuned)["replayed_jobs"] == 10);
  CHECK((*tuned)["high_water"].get<double>() >= 0.85);
  // Bad usage and a missing run are reported with their exit codes.
  CHECK(run_cli({"replay", "--history", history.c_str(), "--workers", "many"}) == 2);
  CHECK(run_cli({"replay", "--history", history.c_str(), "--run", "99"}) == 2);
  CHECK(run_cli({"replay", "--history", (dir.path() / "none.sqlite").string().c_str()}) == 2);
}

TEST_CASE("replay predicts from recorded audio durations as the real loop does, loaded and --cold") {
  test::TempDir dir("ab-replay");
  auto opened = HistoryStore::open(dir.path() / "history.sqlite");
  REQUIRE(opened.ok());
  HistoryStore& store = *opened.value();
  auto run = store.begin_run(RunInfo{});
  REQUIRE(run.ok());
  // Peak = 100 MiB + 20 MiB per audio second; bytes per second alternate 32000 / 16000 (16 kHz and
  // 8 kHz WAV), so the same bytes hold different audio: a bytes line cannot tell them apart.
  for (int i = 1; i <= 12; ++i) {
    const double seconds = 1.5 * i;
    JobRecord rec;
    rec.run_id = *run;
    rec.input_path = "corpus/" + std::to_string(i) + ".wav";
    rec.input_size_bytes = static_cast<std::uint64_t>((i % 2 ? 32000 : 16000) * seconds);
    rec.audio_duration_s = seconds;
    rec.job_key = "cmd:test";
    rec.peak_pss_bytes = static_cast<std::uint64_t>((100 + 20 * seconds) * static_cast<double>(kMiB));
    rec.wall_s = 1;
    REQUIRE(store.record_job(rec).ok());
  }
  auto loaded = load_replay_source(store, *run, "");
  REQUIRE(loaded.ok());
  REQUIRE(loaded->jobs.size() == 12);
  for (const RecordedJob& j : loaded->jobs) {
    REQUIRE(j.audio_duration_s.has_value());
    REQUIRE(j.predicted_peak_bytes.has_value());
    CAPTURE(*j.audio_duration_s);
    CHECK(static_cast<double>(*j.predicted_peak_bytes) == doctest::Approx(static_cast<double>(j.peak_pss_bytes)).epsilon(0.01));
  }
  // --cold: the driver's policy, having learned the first 8 as they finished (from what replay
  // loaded: sizes, durations, peaks), gives the queued 4 duration-line predictions.
  PredictionPolicy policy({});
  for (std::size_t i = 0; i < 8; ++i) {
    JobRow row;
    row.status = JobStatus::kOk;
    row.input_size_bytes = loaded->jobs[i].size_bytes;
    row.audio_duration_s = loaded->jobs[i].audio_duration_s;
    row.peak_pss_bytes = loaded->jobs[i].peak_pss_bytes;
    (void)policy.learn(row);
  }
  for (std::size_t i = 8; i < 12; ++i) {
    const auto learned = policy.predict(loaded->jobs[i].size_bytes, loaded->jobs[i].audio_duration_s);
    REQUIRE(learned.has_value());
    CHECK(static_cast<double>(*learned) == doctest::Approx(static_cast<double>(loaded->jobs[i].peak_pss_bytes)).epsilon(0.01));
  }
}

TEST_CASE("replay spends the recorded run's time outside its jobs: start-up before the first, the workers' exit after the last") {
  test::TempDir dir("ab-replay");
  auto opened = HistoryStore::open(dir.path() / "history.sqlite");
  REQUIRE(opened.ok());
  HistoryStore& store = *opened.value();
  RunInfo info;
  info.started_at_ms = 1'700'000'000'000;
  info.budget_bytes = 4 * kGiB;
  auto run = store.begin_run(info);
  REQUIRE(run.ok());
  // Two jobs of 1 s side by side, 100 ms after the run began; the run ends 400 ms after them.
  for (int i = 0; i < 2; ++i) {
    JobRecord rec;
    rec.run_id = *run;
    rec.input_path = "corpus/" + std::to_string(i) + ".wav";
    rec.input_size_bytes = 1000;
    rec.job_key = "cmd:test";
    rec.peak_pss_bytes = 100 * kMiB;
    rec.wall_s = 1.0;
    rec.started_at_ms = info.started_at_ms + 100;
    REQUIRE(store.record_job(rec).ok());
  }
  REQUIRE(store.end_run(*run, 0, info.started_at_ms + 1500).ok());
  std::vector<RunSample> machine(2);
  machine[0].t_ms = 0;
  machine[1].t_ms = 1000;
  machine[1].ours_bytes = 200 * kMiB;
  machine[1].mem_available_bytes = kGiB;
  REQUIRE(store.record_run_samples(*run, machine).ok());
  auto loaded = load_replay_source(store, *run, "");
  REQUIRE(loaded.ok());
  CHECK(loaded->startup_ms == 100);
  CHECK(loaded->shutdown_ms == 400);
  // The run's machine comes with it; a key's jobs, of many runs, have none.
  REQUIRE(loaded->machine.size() == 2);
  CHECK(loaded->machine[1].mem_available_bytes == std::optional<std::uint64_t>(kGiB));
  auto by_key = load_replay_source(store, std::nullopt, "cmd:test");
  REQUIRE(by_key.ok());
  CHECK(by_key->machine.empty());
  ReplaySettings s;
  s.scheduler.budget_bytes = info.budget_bytes;
  s.startup_ms = loaded->startup_ms;
  s.shutdown_ms = loaded->shutdown_ms;
  const ReplayResult r = replay(loaded->jobs, pick_all(loaded->jobs.size()), s);
  CHECK(r.ok == 2);
  CHECK(r.makespan_s == doctest::Approx(1.5));  // the real run's wall time, not its jobs' 1.0 s
}

}  // namespace ab

TEST_CASE("replay --mem-budget PCT resolves against what the recorded run had: its cgroup limit, MemTotal, reserve") {
  constexpr std::uint64_t kMiB = 1ull << 20;
  const ab::BudgetSpec pct75{0, 75, true}, pct100{0, 100, true};
  ab::RunInfo info;
  info.mem_total_bytes = 24576 * kMiB;
  info.settings.cgroup_limit_bytes = 1024 * kMiB;
  info.settings.reserve_bytes = 64 * kMiB;
  CHECK(ab::percent_budget_of_run(pct75, &info) == 768 * kMiB);           // of the cgroup limit
  CHECK(ab::percent_budget_of_run(pct100, &info) == (1024 - 64) * kMiB);  // capped by limit - reserve
  info.settings.cgroup_limit_bytes.reset();
  info.settings.reserve_bytes = 1024 * kMiB;
  CHECK(ab::percent_budget_of_run(pct75, &info) == 18432 * kMiB);  // of MemTotal
  CHECK(ab::percent_budget_of_run(pct100, &info) == (24576 - 1024) * kMiB);
  info.mem_total_bytes = 0;  // a run recorded without MemTotal: nothing to take a percentage of
  CHECK_FALSE(ab::percent_budget_of_run(pct75, &info).has_value());
  CHECK_FALSE(ab::percent_budget_of_run(pct75, nullptr).has_value());
}
