// Replay replays what ran: one workload through the real run loop (fake processes in virtual time,
// tests/testutil/timed_runner.h, and a real SQLite history), then the recorded run through
// replay() under the same settings. Both are the same BatchDriver over the same Scheduler, with
// only the seams simulated, so they must take the same decisions: as many starts, the same most jobs at once, the same guard kills, the same makespan.
#include "orchestrator/cli/replay_command.h"

#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "history/history_store.h"
#include "orchestrator/batch/run_loop.h"
#include "orchestrator/cli/progress.h"
#include "orchestrator/batch/replay_run.h"
#include "tests/testutil/temp_dir.h"
#include "tests/testutil/timed_runner.h"

using namespace ab;

namespace {

constexpr std::uint64_t kMiB = 1ull << 20;

struct Recorded {
  RunSummary summary;
  RunLoopStats stats;
  std::int64_t run_id = 0;
  std::int64_t elapsed_ms = 0;
  std::size_t starts = 0;
};

/// Twelve files whose peaks (150-350 MiB) follow their sizes, 1-3 s each, under 1000 MiB: memory,
/// not a cap, decides how many run at once.
Recorded run_for_real(test::TempDir& dir, HistoryStore& history, const RunLoopConfig& config) {
  for (int i = 0; i < 12; ++i) {
    const int mib = 150 + 50 * (i % 5);
    const int ms = 1000 + 500 * (i % 4);
    dir.write("corpus/d" + std::to_string(i) + "/ok-" + std::to_string(mib) + "-" + std::to_string(ms) + ".wav",
              std::string(static_cast<std::size_t>(mib) * 1000, 'x'));
  }
  const Corpus corpus = scan_corpus({(dir.path() / "corpus").string()}, config.out_dir);
  test::FakeClock clock;
  test::TimedRunner runner(clock);
  test::TimedProbe probe(runner);
  Progress progress(Progress::Mode::kQuiet, stderr, stdout);
  RunLoop loop(config, runner, probe, &history, progress, nullptr, &clock);
  const std::int64_t t0 = clock.now_ms();
  Recorded r;
  r.summary = loop.run(corpus);
  r.elapsed_ms = clock.now_ms() - t0;
  r.stats = loop.stats();
  r.run_id = loop.run_id();
  r.starts = runner.starts.size();
  return r;
}

ReplaySettings settings_of(const RunLoopConfig& config) {
  ReplaySettings s;
  s.scheduler = config.driver.scheduler;
  s.prediction_scale = config.prediction_scale;
  s.sample_interval_ms = config.driver.tick_ms;
  s.cores = 0;  // the fake jobs use no CPU
  return s;
}

void check_same_decisions(const Recorded& real, const ReplayResult& replayed) {
  CHECK(real.summary.done == 12);
  CHECK(replayed.ok == 12);
  CHECK(replayed.failed == 0);
  CHECK(replayed.stats.started == real.starts);
  CHECK(replayed.stats.peak_running == real.stats.peak_running);
  CHECK(replayed.stats.guard_kills == real.summary.guard_killed);
  CHECK(replayed.stats.retried == real.summary.retried);
  const double real_s = static_cast<double>(real.elapsed_ms) / 1000.0;
  CHECK(std::abs(replayed.makespan_s - real_s) <= 0.05 * real_s);
}

}  // namespace

TEST_CASE("replay of a first run (--cold) and of a run with history takes the real loop's decisions") {
  test::TempDir dir("ab-fidelity");
  auto opened = HistoryStore::open(dir.path() / "history.sqlite");
  REQUIRE(opened.ok());
  HistoryStore& history = *opened.value();
  RunLoopConfig config;
  config.out_dir = dir.path() / "out";
  config.job_key = "cmd:fake {in}";
  config.command = CommandTemplate::parse({"fake", "{in}", "{out}"}).value();
  config.driver.scheduler.budget_bytes = 1000 * kMiB;
  config.driver.tick_ms = 50;

  SUBCASE("a first run, without history") {
    const Recorded real = run_for_real(dir, history, config);
    REQUIRE(real.run_id != 0);
    auto src = load_replay_source(history, real.run_id, "");
    REQUIRE(src.ok());
    REQUIRE(src.value().jobs.size() == 12);
    ReplaySettings s = settings_of(config);
    s.cold = true;
    const std::vector<RecordedJob>& jobs = src.value().jobs;
    check_same_decisions(real, replay(jobs, pick_all(jobs.size()), s));
  }
  SUBCASE("a second run, predicted from the first") {
    (void)run_for_real(dir, history, config);
    config.force = true;
    const Recorded real = run_for_real(dir, history, config);
    REQUIRE(real.run_id != 0);
    CHECK(real.stats.peak_running > 2);  // predictions let it past the cold start's two
    auto src = load_replay_source(history, real.run_id, "");
    REQUIRE(src.ok());
    const std::vector<RecordedJob>& jobs = src.value().jobs;
    REQUIRE(jobs.size() == 12);
    check_same_decisions(real, replay(jobs, pick_all(jobs.size()), settings_of(config)));
  }
}
