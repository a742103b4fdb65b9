// The run loop in virtual time (tests/testutil/timed_runner.h): a fake clock that only the fake
// runner's wait() moves, so timeouts of a minute, hang detection and the sampling deadline are
// checked to the tick without waiting for any of it.
#include "orchestrator/batch/run_loop.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "history/history_store.h"
#include "tests/testutil/recording_progress.h"
#include "tests/testutil/temp_dir.h"
#include "tests/testutil/timed_runner.h"

namespace fs = std::filesystem;
using namespace ab;

namespace {

constexpr std::uint64_t kMiB = 1ull << 20;

struct VirtualWorld {
  test::TempDir dir{"ab-clock"};
  RunLoopConfig config;
  test::FakeClock clock;
  test::TimedRunner runner{clock};
  test::TimedProbe probe{runner};
  RunLoopStats stats;
  std::int64_t elapsed_ms = 0;
  std::vector<std::string> messages;       ///< the last run's plain messages
  std::vector<std::string> retry_details;  ///< the last run's "retry" ends, their details

  VirtualWorld() {
    config.out_dir = dir.path() / "out";
    config.job_key = "cmd:fake {in}";
    config.command = CommandTemplate::parse({"fake", "{in}", "{out}"}).value();
    config.driver.scheduler.budget_bytes = 4096 * kMiB;
    config.driver.kill_grace_ms = 5000;
  }
  RunSummary run(const std::vector<std::string>& names, HistoryStore* history = nullptr) {
    for (const auto& n : names) dir.write("corpus/" + n + ".wav", std::string(1000, 'x'));
    const Corpus corpus = scan_corpus({(dir.path() / "corpus").string()}, config.out_dir);
    test::RecordingProgress progress;
    RunLoop loop(config, runner, probe, history, progress, nullptr, &clock);
    const std::int64_t t0 = clock.now_ms();
    RunSummary s = loop.run(corpus);
    elapsed_ms = clock.now_ms() - t0;
    stats = loop.stats();
    messages = progress.messages;
    for (const auto& e : progress.ends)
      if (e.status == "retry") retry_details.push_back(e.detail);
    return s;
  }
};

}  // namespace

TEST_CASE("virtual time: --timeout stops a job at the first reading past it, and spares one just under it") {
  VirtualWorld w;
  w.config.driver.timeout_ms = 60'000;
  w.config.driver.tick_ms = 1000;
  auto s = w.run({"slow-10-0", "ok-10-59000"});
  CHECK(s.done == 1);
  REQUIRE(s.failed.size() == 1);
  CHECK(s.failed[0].path.find("slow-10-0") != std::string::npos);
  CHECK(s.failed[0].reason.rfind(test::RecordingProgress::words_of(Reason::Kind::kTimedOut), 0) == 0);
  CHECK(s.failed[0].reason.find(", limit_ms 60000") != std::string::npos);
  REQUIRE(w.runner.kills.size() == 1);
  CHECK(w.runner.kills[0].stem == "slow-10-0");
  // Readings come once a tick, so the kill lands within one tick after the minute.
  CHECK(w.runner.kills[0].after_ms > 60'000);
  CHECK(w.runner.kills[0].after_ms <= 61'000);
  // A minute of virtual time, in a number of waits set by the ticks, not by real time.
  CHECK(w.elapsed_ms >= 60'000);
  CHECK(w.elapsed_ms < 62'000);
}

TEST_CASE("virtual time: a worker whose heartbeat stops is killed after --hang-ms and its file retried") {
  VirtualWorld w;
  w.config.driver.hang_ms = 30'000;
  w.config.driver.tick_ms = 1000;
  // hang: its first attempt's worker is silent; ok-10-45000 runs longer than hang_ms, beating.
  auto s = w.run({"hang-10-5000", "ok-10-45000"});
  CHECK(s.exit_code() == 0);
  CHECK(s.done == 2);
  CHECK(s.retried == 1);
  REQUIRE(w.runner.kills.size() == 1);
  CHECK(w.runner.kills[0].stem == "hang-10-5000");
  CHECK(w.runner.kills[0].after_ms > 30'000);
  CHECK(w.runner.kills[0].after_ms <= 31'000);
  CHECK(std::count(w.runner.starts.begin(), w.runner.starts.end(), "hang-10-5000") == 2);
  // The notice is typed (cli/ words it): its worker's silence, then the crash the retry reports.
  REQUIRE(w.messages.size() == 1);
  CHECK(w.messages[0].rfind("hang-10-5000.wav: " + test::RecordingProgress::words_of(Reason::Kind::kWorkerSilent), 0) == 0);
  CHECK(w.retry_details == std::vector<std::string>{test::RecordingProgress::words_of(Reason::Kind::kHung) +
                                                    "need 0, limit 0, limit_ms 30000"});
}

TEST_CASE("virtual time: memory is read on the tick's deadline, not at every job end, and admission does not wait for it") {
  VirtualWorld w;
  w.config.driver.tick_ms = 200;
  w.config.driver.scheduler.max_workers = 4;
  std::vector<std::string> names;
  for (int i = 0; i < 40; ++i) names.push_back("ok-5-" + std::to_string(20 + i % 3));  // 20-22 ms each
  // Distinct files: the stem names the script, the directory keeps them apart.
  for (int i = 0; i < 40; ++i) names[i] = "d" + std::to_string(i) + "/" + names[i];
  auto s = w.run(names);
  CHECK(s.done == 40);
  // Waiting for a reading before each start would take 40 / 4 x 200 ms at least.
  CHECK(w.elapsed_ms < 1000);
  // One reading before the first start, then one per elapsed tick (the last may fall at the end).
  CHECK(w.stats.memory_reads == w.probe.reads);
  CHECK(w.probe.reads >= 1 + static_cast<std::size_t>(w.elapsed_ms / 200) - 1);
  CHECK(w.probe.reads <= 2 + static_cast<std::size_t>(w.elapsed_ms / 200));
  CHECK(w.runner.max_running <= 4);
}

TEST_CASE("virtual time: history records when each job started and ended, not when its batch was written") {
  VirtualWorld w;
  w.config.driver.tick_ms = 1000;
  auto opened = HistoryStore::open(w.dir.path() / "history.sqlite");
  REQUIRE(opened.ok());
  HistoryStore& history = *opened.value();
  auto s = w.run({"ok-10-3000", "ok-10-500", "ok-10-1200"}, &history);
  CHECK(s.done == 3);
  auto runs = history.runs();
  REQUIRE(runs.ok());
  REQUIRE(runs->size() == 1);
  auto rows = history.jobs_for_run(runs->front().id);
  REQUIRE(rows.ok());
  REQUIRE(rows->size() == 3);
  for (const JobRow& row : *rows) {
    CAPTURE(row.input_path);
    REQUIRE(row.started_at_ms);
    const std::int64_t duration_ms = std::stoll(row.input_path.substr(row.input_path.rfind('-') + 1));
    // The fake clock's Unix time: a job's end is seen at the wait that reaches it.
    CHECK(row.finished_at_ms - *row.started_at_ms == duration_ms);
    CHECK(row.finished_at_ms <= w.clock.unix_ms());
  }
}

TEST_CASE("virtual time: history keeps the machine around the jobs once a second, from the run's start") {
  VirtualWorld w;
  w.config.driver.tick_ms = 200;
  w.config.driver.scheduler.max_workers = 1;  // one after another: 10 s of jobs
  w.probe.shared_bytes = 100 * kMiB;
  w.probe.mem_available_bytes = 3000 * kMiB;
  w.probe.psi_full_avg10 = 1.5;
  auto opened = HistoryStore::open(w.dir.path() / "history.sqlite");
  REQUIRE(opened.ok());
  HistoryStore& history = *opened.value();
  auto s = w.run({"ok-10-4000", "ok-20-6000"}, &history);
  CHECK(s.done == 2);
  auto runs = history.runs();
  REQUIRE(runs.ok());
  auto samples = history.run_samples(runs->front().id);
  REQUIRE(samples.ok());
  CAPTURE(w.elapsed_ms);
  // The first reading (before any job), then one a second: 10 s of jobs, 10 or 11 more.
  REQUIRE(samples->size() >= 10);
  CHECK(samples->size() <= 12);
  CHECK(samples->front().t_ms >= 0);
  CHECK(samples->front().t_ms < 200);
  CHECK(samples->front().ours_bytes == 100 * kMiB);  // the weights alone: nothing runs yet
  for (std::size_t i = 1; i < samples->size(); ++i) {
    const RunSample& x = samples->at(i);
    CAPTURE(x.t_ms);
    CHECK(x.t_ms - samples->at(i - 1).t_ms >= 1000);
    CHECK(x.t_ms - samples->at(i - 1).t_ms <= 1200);  // the first reading past the second
    CHECK(x.shared_bytes == 100 * kMiB);
    CHECK(x.mem_available_bytes == std::optional<std::uint64_t>(3000 * kMiB));
    CHECK(x.psi_full_avg10 == std::optional<double>(1.5));
  }
  // While the 20 MiB job ran (from 4 s): the weights and it.
  CHECK(samples->at(6).ours_bytes == 120 * kMiB);
  CHECK(samples->back().t_ms <= w.elapsed_ms + 1000);
}
