// Level-3 tests: the run loop with real processes (ProcessRunner) and real /proc readings
// (ProcMemoryProbe behind a counting decorator), a real corpus directory and a real SQLite history.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "history/history_store.h"
#include "tests/testutil/recording_progress.h"
#include "orchestrator/platform/proc_memory_probe.h"
#include "orchestrator/platform/process_runner.h"
#include "orchestrator/batch/run_loop.h"
#include "orchestrator/platform/signals.h"
#include "tests/testutil/temp_dir.h"

namespace fs = std::filesystem;
using namespace ab;

namespace {

/// The real probe, counting its reads (the loop's sampling rate is what is under test) and, via
/// `starts`, how many jobs started between one reading and the next.
class CountingProbe : public MemoryProbe {
 public:
  explicit CountingProbe(const int& starts) : starts_(starts) {}
  ProbeReading read(const std::vector<LiveJob>& live, const std::vector<pid_t>& idle, std::int64_t now_ms,
                    bool exact) override {
    ++reads;
    if (exact) ++exact_reads;
    if (!live.empty()) ++reads_with_jobs;
    most_starts_between_reads = std::max(most_starts_between_reads, starts_ - starts_at_last_read_);
    starts_at_last_read_ = starts_;
    return real_.read(live, idle, now_ms, exact);
  }
  int reads = 0;
  int exact_reads = 0;
  int reads_with_jobs = 0;
  int most_starts_between_reads = 0;

 private:
  ProcMemoryProbe real_;
  const int& starts_;
  int starts_at_last_read_ = 0;
};

/// The real runner, counting job starts.
class CountingRunner : public ProcessRunner {
 public:
  using ProcessRunner::ProcessRunner;
  Result<Done> start(const RunnerJob& job) override {
    Result<Done> started = ProcessRunner::start(job);
    if (started) ++starts;
    return started;
  }
  int starts = 0;
};

}  // namespace

TEST_CASE("40 short jobs: memory is read once per tick, not once per job end; admission does not wait for it; results unchanged") {
  test::TempDir dir;
  constexpr int kJobs = 40;
  for (int i = 0; i < kJobs; ++i) dir.write("corpus/f" + std::to_string(i) + ".wav", std::string(100 + i, 'x'));
  RunLoopConfig config;
  config.out_dir = dir.path() / "out";
  // Each job: 20 ms, then a copy of its input (a result to check).
  const std::vector<std::string> command = {"/bin/sh", "-c", "sleep 0.02; exec cp \"$0\" \"$1.copy\"", "{in}", "{out}"};
  config.job_key = "cmd:sleep-copy";
  config.command = CommandTemplate::parse(command).value();
  REQUIRE(config.command);
  config.driver.scheduler.budget_bytes = 4ull << 30;
  config.driver.scheduler.max_workers = 4;
  config.driver.tick_ms = 200;
  auto history = HistoryStore::open(dir.path() / "history.sqlite");
  REQUIRE(history.ok());
  const Corpus corpus = scan_corpus({(dir.path() / "corpus").string()}, config.out_dir);
  REQUIRE(corpus.files.size() == kJobs);

  ProcessRunnerConfig runner_config;
  runner_config.log_dir = config.out_dir / ".align-batch" / "logs";
  fs::create_directories(runner_config.log_dir);
  CountingRunner runner(runner_config);
  CountingProbe probe(runner.starts);
  test::RecordingProgress progress;
  // As align-batch does: a child's exit (SIGCHLD) wakes the loop's wait at once.
  SignalWatcher signals;
  RunLoop loop(config, runner, probe, history.value().get(), progress, &SignalWatcher::interrupts);
  const auto t0 = std::chrono::steady_clock::now();
  const RunSummary s = loop.run(corpus);
  const double elapsed_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  MESSAGE(kJobs << " jobs in " << elapsed_ms << " ms: " << probe.reads << " memory reads ("
                << probe.reads / (elapsed_ms / 1000.0) << " per second, " << probe.reads_with_jobs
                << " with jobs running), tick " << config.driver.tick_ms << " ms; at most "
                << probe.most_starts_between_reads << " starts between two reads");
  // The results: every file copied and recorded ok.
  CHECK(s.exit_code() == 0);
  CHECK(s.done == kJobs);
  CHECK(s.failed.empty());
  CHECK(s.retried == 0);
  for (const auto& f : corpus.files) {
    CAPTURE(f.audio);
    CHECK(fs::file_size(f.out_base.string() + ".copy") == f.size_bytes);
  }
  auto runs = history.value()->runs();
  REQUIRE(runs.ok());
  auto rows = history.value()->jobs_for_run(runs.value().at(0).id);
  REQUIRE(rows.ok());
  CHECK(rows.value().size() == kJobs);
  for (const auto& row : rows.value()) CHECK(row.status == JobStatus::kOk);
  // The sampling rate: one reading before anything starts, then at most one per tick (the first
  // at once). Before, every job's end woke the loop into a reading: about one per job.
  CHECK(probe.exact_reads == 0);  // nothing came near the budget: no kill to confirm
  CHECK(probe.reads <= elapsed_ms / config.driver.tick_ms + 2);
  // Admission did not wait for the readings: a job's end let the next one start at once, so more
  // jobs started between two readings than --workers allows at once (about 4 x 10 rounds of 20 ms
  // jobs fit in a 200 ms tick).
  CHECK(runner.starts == kJobs);
  CHECK(probe.most_starts_between_reads > static_cast<int>(config.driver.scheduler.max_workers));
}
