// Level-3 tests: the run loop with real processes (ProcessRunner) and real /proc readings
// (ProcMemoryProbe, in one test behind a counting decorator), a real corpus directory and a real SQLite history.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <set>

#include "history/history_store.h"
#include "orchestrator/batch/exit_code.h"
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

constexpr std::uint64_t kGiB = 1ull << 30;

/// An external command's run as align-batch sets one up: a corpus directory, --out, a real
/// SQLite history beside them, and the real runner's logs under --out.
struct CommandRun {
  test::TempDir dir;
  RunLoopConfig config;
  std::unique_ptr<HistoryStore> history;
  ProcessRunnerConfig runner_config;

  CommandRun(const std::vector<std::string>& command, std::string job_key) {
    config.out_dir = dir.path() / "out";
    config.job_key = std::move(job_key);
    config.command = CommandTemplate::parse(command).value();
    auto opened = HistoryStore::open(dir.path() / "history.sqlite");
    REQUIRE(opened.ok());
    history = std::move(opened.value());
    runner_config.log_dir = config.out_dir / ".align-batch" / "logs";
    fs::create_directories(runner_config.log_dir);
  }
  Corpus corpus() const { return scan_corpus({(dir.path() / "corpus").string()}, config.out_dir); }
  /// The regular files under --out, by their path under it, but for the runner's logs.
  std::set<std::string> outputs() const {
    std::set<std::string> found;
    for (auto it = fs::recursive_directory_iterator(config.out_dir); it != fs::recursive_directory_iterator(); ++it) {
      if (it->path() == runner_config.log_dir) it.disable_recursion_pending();
      else if (it->is_regular_file()) found.insert(fs::relative(it->path(), config.out_dir).string());
    }
    return found;
  }

  struct Ran {
    RunSummary summary;
    RunLoopStats stats;
    std::int64_t run_id = 0;
  };
  /// The corpus run by the real runner, with the readings of `probe`; as in align-batch, a child's
  /// exit (SIGCHLD) wakes the loop's wait at once.
  Ran run(MemoryProbe& probe, test::RecordingProgress& progress) const {
    ProcessRunner runner(runner_config);
    SignalWatcher signals;
    RunLoop loop(config, runner, probe, history.get(), progress, &SignalWatcher::interrupts);
    RunSummary summary = loop.run(corpus());
    return {std::move(summary), loop.stats(), loop.run_id()};
  }
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

TEST_CASE("a command that leaves its staging directory unlistable: its file fails with the reason, is not done, and "
          "leaves nothing under --out; the files after it are unharmed") {
  // Every job copies its input to {out}.copy. bad.wav's then replaces its staging directory (the
  // directory of {out}) with a regular file, so listing it for the outputs fails with ENOTDIR.
  CommandRun w({"/bin/sh", "-c",
                "cp \"$0\" \"$1.copy\" && case \"$0\" in */bad.wav) d=$(dirname \"$1\"); rm -rf \"$d\"; "
                "printf x > \"$d\";; esac",
                "{in}", "{out}"},
               "cmd:copy-or-wreck-staging");
  // The largest file starts first (no history: slow start, largest first), and with one worker the
  // good files' jobs take the staging directory bad.wav's job had.
  w.dir.write("corpus/bad.wav", std::string(300, 'x'));
  w.dir.write("corpus/good1.wav", std::string(200, 'x'));
  w.dir.write("corpus/good2.wav", std::string(100, 'x'));
  w.config.driver.scheduler.budget_bytes = 4 * kGiB;
  w.config.driver.scheduler.max_workers = 1;
  ProcMemoryProbe probe;
  test::RecordingProgress progress;
  const CommandRun::Ran ran = w.run(probe, progress);
  const RunSummary& s = ran.summary;

  REQUIRE(progress.starts.size() == 3);
  CHECK(progress.starts[0].name == "bad.wav");
  CHECK(s.exit_code() == kExitFilesFailed);
  CHECK(s.done == 2);
  CHECK(s.retried == 0);
  REQUIRE(s.failed.size() == 1);
  CHECK(fs::path(s.failed[0].path).filename() == "bad.wav");
  const std::string staging =
      (w.config.out_dir / ".align-batch" / "staging" / std::to_string(::getpid()) / "s1").string();
  const std::string reason =
      "cannot list the command's outputs in " + staging + ": " + std::strerror(ENOTDIR);
  CHECK(s.failed[0].reason == reason);

  auto rows = w.history->jobs_for_run(ran.run_id);
  REQUIRE(rows.ok());
  REQUIRE(rows.value().size() == 3);
  for (const auto& row : rows.value()) {
    CAPTURE(row.input_path);
    if (fs::path(row.input_path).filename() == "bad.wav") {
      CHECK(row.status == JobStatus::kFailed);
      CHECK(row.error == reason);
    } else {
      CHECK(row.status == JobStatus::kOk);
    }
  }
  // bad.wav's copy went with its staging directory; the run's staging is gone.
  CHECK(w.outputs() == std::set<std::string>{"good1.copy", "good2.copy"});
  CHECK_FALSE(fs::exists(w.config.out_dir / ".align-batch" / "staging" / std::to_string(::getpid())));
}

namespace {

/// Three 100-byte files, whose key's history says each needs 2 GiB at peak, run by a command that
/// holds a few MiB for 50 ms in a 7 GiB budget, with the memory readings of `probe`.
struct ThreeJobsIn7GiB {
  CommandRun w{{"/bin/sh", "-c", "sleep 0.05", "{in}"}, "cmd:sleep"};
  RunSummary summary;
  std::uint32_t peak_running = 0;
  std::vector<RunSample> samples;

  explicit ThreeJobsIn7GiB(MemoryProbe& probe) {
    seed_history();
    for (const char* name : {"a.wav", "b.wav", "c.wav"}) w.dir.write(std::string("corpus/") + name, std::string(100, 'x'));
    w.config.driver.scheduler.budget_bytes = 7 * kGiB;
    // The machine's own pressure is not under test: only a plan that no longer fits stops a job.
    w.config.driver.scheduler.psi_full_avg10_limit = 100;
    test::RecordingProgress progress;
    CommandRun::Ran ran = w.run(probe, progress);
    summary = std::move(ran.summary);
    peak_running = ran.stats.peak_running;
    REQUIRE(progress.starts.size() == 3);
    for (const auto& start : progress.starts) CHECK(start.estimate_bytes == 2 * kGiB);  // history's prediction
    auto recorded = w.history->run_samples(ran.run_id);
    REQUIRE(recorded.ok());
    samples = recorded.value();
  }

  void seed_history() {
    auto run_id = w.history->begin_run(RunInfo{});
    REQUIRE(run_id.ok());
    for (int i = 0; i < 5; ++i) {
      JobRecord rec;
      rec.run_id = run_id.value();
      rec.input_path = "/old/" + std::to_string(i) + ".wav";
      rec.input_size_bytes = 100;
      rec.input_mtime_ns = 1;
      rec.job_key = w.config.job_key;
      rec.task = "command";
      rec.peak_pss_bytes = rec.peak_rss_bytes = 2 * kGiB;
      REQUIRE(w.history->record_job(rec).ok());
    }
  }
};

}  // namespace

TEST_CASE("the shared weights of the reading before any job count in the first admissions: two 2 GiB jobs start "
          "beside 2 GiB of weights in a 7 GiB budget, where three fit without them") {
  SUBCASE("with shared weights: 2 + 2 x 2 GiB fit, a third would not") {
    test::TempDir shm;
    const fs::path weights = shm.write("weights", "");  // as the run makes it, before a worker fills it
    ProcMemoryProbe probe("/proc", weights, 2 * kGiB);   // the model file's size holds the room
    ThreeJobsIn7GiB run(probe);
    CHECK(run.peak_running == 2);
    CHECK(run.summary.guard_killed == 0);
    CHECK(run.summary.retried == 0);
    CHECK(run.summary.done == 3);
    // The first reading, recorded for replay, carried the weights.
    REQUIRE_FALSE(run.samples.empty());
    CHECK(run.samples.front().shared_bytes == 2 * kGiB);
  }
  SUBCASE("without: all three start at once") {
    ProcMemoryProbe probe;
    ThreeJobsIn7GiB run(probe);
    CHECK(run.peak_running == 3);
    CHECK(run.summary.guard_killed == 0);
    CHECK(run.summary.done == 3);
  }
}
