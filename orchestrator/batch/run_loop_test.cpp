// Level-2 tests: the run loop with a fake worker runner and a fake memory probe (no processes),
// a real corpus directory and a real SQLite history.
#include "tests/testutil/recording_progress.h"
#include "orchestrator/batch/run_loop.h"

#include <signal.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <fstream>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "history/history_store.h"
#include "tests/testutil/audio_gen.h"
#include "tests/testutil/scripted_jobs.h"
#include "tests/testutil/temp_dir.h"

namespace fs = std::filesystem;
using namespace ab;

namespace {

constexpr std::uint64_t kMiB = 1ull << 20;

/// Scripts each job from its file name "<kind>-<mib>-<ticks>.wav": it grows linearly to <mib>
/// MiB over <ticks> wait() calls, then ends. Kinds: ok; fail (exit 1); crash (SIGSEGV half-way,
/// first attempt only); oom (the "kernel" SIGKILLs it half-way, first attempt only, and the OOM
/// counter the probe reports rises); kill9 (a SIGKILL from someone else half-way, first attempt
/// only, no OOM record); slow (never
/// ends by itself); edge (ok, but the worker says band_limited); blip (ok at its first wait(), before
/// any sample, reporting its own peak RSS of <mib> as a worker or wait4 would).
class FakeRunner : public WorkerRunner {
 public:
  struct Running {
    std::string kind;
    std::uint64_t mib = 0;
    int ticks = 0;
    int age = 0;
    bool killed = false;
    int kill_in = -1;
    int loading_left = 0;  ///< wait()s before its new worker is ready (it holds loading_mib meanwhile)
  };

  std::uint64_t oom_kills_ = 0;  ///< the "kernel's" OOM kill counter (FakeProbe reports it)

  Result<Done> start(const RunnerJob& job) override {
    const test::ScriptedName script = test::parse_scripted_name(job.name);
    const std::string& stem = script.stem;
    Running r;
    r.kind = script.kind;
    r.mib = script.mib;
    r.ticks = static_cast<int>(script.n);
    if (persistent && idle_.empty()) r.loading_left = loading_ticks;  // a new worker loads its model first
    running_[job.id] = r;
    if (persistent && !idle_.empty()) idle_.pop_back();  // reuses an idle worker
    ++launches_[stem];
    max_concurrent_ = std::max(max_concurrent_, running_.size());
    return Done{};
  }

  std::vector<JobEnd> wait(int) override {
    ++now_tick_;
    idle_at_tick_[now_tick_] = idle_.size();
    std::vector<JobEnd> ends;
    for (auto it = running_.begin(); it != running_.end();) {
      Running& r = it->second;
      if (r.loading_left > 0 && !r.killed) {
        --r.loading_left;
        ++it;
        continue;
      }
      ++r.age;
      JobEnd e;
      e.id = it->first;
      e.wall_s = r.age * 0.05;
      bool ended = false;
      const std::string stem = r.kind + "-" + std::to_string(r.mib) + "-" + std::to_string(r.ticks);
      const bool first = launches_[stem] == 1;
      if (r.killed && --r.kill_in <= 0) {
        e.killed_by_us = true;
        e.term_signal = SIGTERM;
        ended = true;
      } else if (r.kind == "crash" && first && r.age >= r.ticks / 2) {
        e.term_signal = SIGSEGV;
        e.error = "worker killed by signal 11";
        ended = true;
      } else if ((r.kind == "oom" || r.kind == "kill9") && first && r.age >= r.ticks / 2) {
        e.term_signal = SIGKILL;
        e.error = "worker killed by signal 9";
        if (r.kind == "oom") ++oom_kills_;
        ended = true;
      } else if (r.kind != "slow" && r.age >= r.ticks) {
        e.ok = r.kind != "fail";
        e.band_limited = r.kind == "edge";
        if (e.ok && !outputs_dir.empty()) {  // a built-in worker reports what it wrote
          const fs::path out = outputs_dir / (stem + ".TextGrid");
          if (r.kind == "ghost") e.outputs.push_back((outputs_dir / (stem + ".gone")).string());  // never written
          else if (r.kind != "bare") {
            fs::create_directories(outputs_dir);
            std::ofstream(out) << "aligned\n";
            e.outputs.push_back(out.string());
          }
        }
        if (r.kind == "blip") e.peak_rss_bytes = r.mib * kMiB;
        e.exit_code = e.ok ? 0 : 1;
        if (!e.ok) e.error = "command exited with status 1";
        ended = true;
      }
      if (ended) {
        // A persistent worker outlives a job that ended by itself (ok or failed), not a kill or crash.
        if (persistent && e.term_signal == 0) idle_.push_back(static_cast<pid_t>(5000 + e.id));
        ends.push_back(e);
        it = running_.erase(it);
      } else {
        ++it;
      }
    }
    return ends;
  }
  void kill(JobId id, int) override {
    auto it = running_.find(id);
    if (it != running_.end() && !it->second.killed) {
      it->second.killed = true;
      it->second.kill_in = 1;
      ++kills_;
    }
  }
  std::vector<LiveJob> live() const override {
    std::vector<LiveJob> out;
    for (auto& [id, r] : running_) out.push_back({id, static_cast<pid_t>(1000 + id), r.loading_left > 0});
    return out;
  }
  std::vector<pid_t> idle_pids() const override { return idle_; }
  std::size_t retire_idle(std::size_t keep) override {
    std::size_t told = 0;
    while (idle_.size() > keep) {
      idle_.pop_back();
      ++told;
    }
    retired_ += static_cast<int>(told);
    return told;
  }
  std::vector<JobEnd> shutdown(int) override { return test::stop_all(running_); }

  std::uint64_t pss_bytes(JobId id) const {
    const Running& r = running_.at(id);
    if (r.loading_left > 0) return loading_mib * kMiB;
    const int t = std::min(r.age, std::max(1, r.ticks));
    return r.mib * kMiB * static_cast<std::uint64_t>(t) / static_cast<std::uint64_t>(std::max(1, r.ticks));
  }

  std::string setup_error() const override {
    return setup_error_at_tick >= 0 && now_tick_ >= setup_error_at_tick ? "fake: the second worker cannot load the model"
                                                                          : std::string();
  }

  bool persistent = false;  ///< jobs run on workers that stay (idle) after a job, as align-batch-worker does
  /// Built-in engine: ok jobs write and report OUTPUTS_DIR/<stem>.TextGrid ("ghost": reports a file
  /// it never wrote; "bare": reports none). Empty: a command's (nothing reported).
  fs::path outputs_dir;
  int setup_error_at_tick = -1;  ///< from this wait() on, setup_error() says the run cannot go on
  int loading_ticks = 0;        ///< persistent: a new worker is loading (not ready) for this many wait()s
  std::uint64_t loading_mib = 0;  ///< what a loading worker holds
  std::vector<pid_t> idle_;
  int retired_ = 0;
  std::map<int, std::size_t> idle_at_tick_;  ///< idle workers at each wait()
  std::map<JobId, Running> running_;
  std::map<std::string, int> launches_;
  std::size_t max_concurrent_ = 0;
  int kills_ = 0;
  int now_tick_ = 0;
};

/// Memory as the fake runner's scripts say; records the highest total it reported.
class FakeProbe : public MemoryProbe {
 public:
  explicit FakeProbe(const FakeRunner& runner) : runner_(runner) {}
  ProbeReading read(const std::vector<LiveJob>& live, const std::vector<pid_t>& idle, std::int64_t now_ms,
                    bool = false) override {
    std::uint64_t total = 0;
    ProbeReading r = test::scripted_reading(runner_, live, now_ms, total);
    r.sample.idle_pss_bytes = idle.size() * idle_mib * kMiB;
    max_total_bytes = std::max(max_total_bytes, total);
    r.oom_kill_count = runner_.oom_kills_;
    return r;
  }
  std::uint64_t max_total_bytes = 0;
  std::uint64_t idle_mib = 0;  ///< each idle worker's PSS

 private:
  const FakeRunner& runner_;
};

struct World {
  test::TempDir dir;
  std::unique_ptr<HistoryStore> history;
  RunLoopConfig config;

  World() {
    auto h = HistoryStore::open(dir.path() / "history.sqlite");
    REQUIRE(h.ok());
    history = std::move(h.value());
    config.out_dir = dir.path() / "out";
    config.job_key = "cmd:fake {in}";
    config.command = CommandTemplate::parse({"fake", "{in}", "{out}"}).value();
    config.driver.scheduler.budget_bytes = 300 * kMiB;
    config.driver.scheduler.pause_after_kill_ms = 0;
    config.driver.tick_ms = 0;
    config.driver.kill_grace_ms = 0;
  }
  Corpus corpus(const std::vector<std::string>& names) {
    for (const auto& n : names) dir.write("corpus/" + n + ".wav", std::string(1000, 'x'));
    return scan_corpus({(dir.path() / "corpus").string()}, config.out_dir);
  }
  RunSummary run(const Corpus& c, FakeRunner& runner, FakeProbe& probe, std::function<int()> interrupts = nullptr) {
    test::RecordingProgress progress;
    RunLoop loop(config, runner, probe, history.get(), progress, std::move(interrupts));
    return loop.run(c);
  }
  std::map<std::string, int> statuses() {
    std::map<std::string, int> out;
    auto runs = history->runs();
    REQUIRE(runs.ok());
    for (const auto& run : runs.value()) {
      auto jobs = history->jobs_for_run(run.id);
      REQUIRE(jobs.ok());
      for (const auto& j : jobs.value())
        ++out[fs::path(j.input_path).stem().string() + ":" + to_string(j.status)];
    }
    return out;
  }
};

/// Writes `seconds` of a tone as 16-bit mono WAV at `rate_hz`: 2 × rate_hz bytes per second, so
/// files at different rates hold different audio for the same bytes.
fs::path write_wav(const test::TempDir& dir, const std::string& relative, int rate_hz, double seconds) {
  const fs::path path = dir.path() / relative;
  fs::create_directories(path.parent_path());
  const auto formats = test::audio_formats();
  const auto wav = std::find_if(formats.begin(), formats.end(), [](const auto& f) { return f.name == "wav"; });
  REQUIRE(wav != formats.end());
  REQUIRE(test::write_tones(path.string(), *wav, rate_hz, 1, {{440.0, seconds, 0.5}}) == "");
  return path;
}

}  // namespace

TEST_CASE("with history, admission keeps predicted peaks inside the budget and runs jobs side by side") {
  World w;
  std::vector<std::string> names;
  for (int i = 0; i < 8; ++i) names.push_back("ok-100-" + std::to_string(10 + i));
  auto corpus = w.corpus(names);
  {
    FakeRunner runner;
    FakeProbe probe(runner);
    auto s = w.run(corpus, runner, probe);  // cold start: learns 100 MiB per job
    CHECK(s.done == 8);
    // The first finished job's peak became the others' prediction within this same run
    // (set_prediction), so the run ramped up past the cold start's two jobs: 3 x 100 MiB fit.
    CHECK(runner.max_concurrent_ >= 3);
    CHECK(probe.max_total_bytes <= 300 * kMiB);
  }
  // Every job's timeline went to history with its peak kept.
  {
    auto runs = w.history->runs();
    REQUIRE(runs.ok());
    auto jobs = w.history->jobs_for_run(runs.value().at(0).id);
    REQUIRE(jobs.ok());
    REQUIRE(jobs.value().size() == 8);
    for (const auto& j : jobs.value()) {
      // The last sample is one tick before the end: (ticks - 1) / ticks of 100 MiB, ticks >= 10.
      CHECK(j.peak_pss_bytes >= 90 * kMiB);
      CHECK(j.peak_pss_bytes < 100 * kMiB);
      auto points = w.history->timeline(j.id);
      REQUIRE(points.ok());
      CHECK(points.value().size() >= 2);
      std::uint64_t top = 0;
      for (const auto& p : points.value()) top = std::max(top, p.pss_bytes);
      CHECK(top == j.peak_pss_bytes);
    }
  }
  FakeRunner runner;
  FakeProbe probe(runner);
  w.config.force = true;
  auto s = w.run(corpus, runner, probe);
  CHECK(s.exit_code() == 0);
  CHECK(s.done == 8);
  CHECK(runner.max_concurrent_ >= 2);  // learned: 300 MiB holds more than one 100 MiB job
  CHECK(runner.max_concurrent_ <= 3);  // and never more than fit
  CHECK(probe.max_total_bytes <= 300 * kMiB);
  CHECK(runner.kills_ == 0);
  // Each job of the second run went to history with the prediction it started under (history's
  // 100 MiB) and its start time, so a report of this run can be drawn later.
  auto runs = w.history->runs();
  REQUIRE(runs.ok());
  auto jobs = w.history->jobs_for_run(runs.value().at(0).id);
  REQUIRE(jobs.ok());
  REQUIRE(jobs.value().size() == 8);
  for (const auto& j : jobs.value()) {
    REQUIRE(j.predicted_peak_bytes);
    CHECK(*j.predicted_peak_bytes >= 90 * kMiB);
    CHECK(*j.predicted_peak_bytes <= 150 * kMiB);
    REQUIRE(j.started_at_ms);
    CHECK(*j.started_at_ms <= j.finished_at_ms);
    CHECK(*j.started_at_ms >= j.finished_at_ms - 10000);
  }
}

TEST_CASE("a job growing past the budget is stopped by the guard and fails clearly; the rest finish") {
  World w;
  auto corpus = w.corpus({"ok-100-4", "ok-150-4", "ok-800-20", "ok-50-4"});
  FakeRunner runner;
  FakeProbe probe(runner);
  auto s = w.run(corpus, runner, probe);
  CHECK(s.exit_code() == 1);
  CHECK(s.done == 3);
  REQUIRE(s.failed.size() == 1);
  CHECK(s.failed[0].path.find("ok-800-20.wav") != std::string::npos);
  // The scheduler's reason (cli/ words it): needs more than the 300 MiB budget.
  const std::string needs_more = "reason " + std::to_string(static_cast<int>(Reason::Kind::kNeedsMoreThanBudget));
  CHECK(s.failed[0].reason.rfind(needs_more + ", need ", 0) == 0);
  CHECK(s.failed[0].reason.find(", limit " + std::to_string(300 * kMiB)) != std::string::npos);
  CHECK(s.guard_killed >= 1);
  CHECK(probe.max_total_bytes <= 300 * kMiB + 60 * kMiB);  // one tick of growth past the mark, no more
  auto st = w.statuses();
  CHECK(st["ok-800-20:killed"] >= 1);
  CHECK(st["ok-800-20:ok"] == 0);
  CHECK(st["ok-100-4:ok"] == 1);
}

TEST_CASE("a job too short for any sample records the peak its process reported, not 0") {
  World w;
  auto corpus = w.corpus({"blip-50-1"});
  FakeRunner runner;
  FakeProbe probe(runner);
  auto s = w.run(corpus, runner, probe);
  CHECK(s.done == 1);
  auto runs = w.history->runs();
  REQUIRE(runs.ok());
  auto jobs = w.history->jobs_for_run(runs.value().at(0).id);
  REQUIRE(jobs.ok());
  REQUIRE(jobs.value().size() == 1);
  CHECK(jobs.value()[0].peak_pss_bytes == 50 * kMiB);  // RSS stands in: an upper bound of PSS
  CHECK(jobs.value()[0].peak_rss_bytes == 50 * kMiB);
}

TEST_CASE("a crashed job is retried and finishes; a failing command is not retried") {
  World w;
  auto corpus = w.corpus({"crash-50-6", "fail-10-2", "ok-20-2"});
  FakeRunner runner;
  FakeProbe probe(runner);
  auto s = w.run(corpus, runner, probe);
  CHECK(s.exit_code() == 1);
  CHECK(s.done == 2);
  CHECK(s.retried == 1);
  REQUIRE(s.failed.size() == 1);
  CHECK(s.failed[0].path.find("fail-10-2.wav") != std::string::npos);
  CHECK(s.failed[0].reason.find("exited with status 1") != std::string::npos);
  CHECK(runner.launches_["crash-50-6"] == 2);
  CHECK(runner.launches_["fail-10-2"] == 1);
  auto st = w.statuses();
  CHECK(st["crash-50-6:died"] == 1);
  CHECK(st["crash-50-6:ok"] == 1);
  CHECK(st["fail-10-2:failed"] == 1);
}

TEST_CASE("a SIGKILL we did not send, without an OOM record, is a crash said as such: retried, never called OOM") {
  World w;
  auto corpus = w.corpus({"kill9-100-6", "ok-10-2"});
  FakeRunner runner;
  FakeProbe probe(runner);
  auto s = w.run(corpus, runner, probe);
  CHECK(s.exit_code() == 0);
  CHECK(s.done == 2);
  CHECK(s.oom_deaths == 0);
  CHECK(s.retried == 1);
  CHECK(runner.launches_["kill9-100-6"] == 2);
  auto jobs = w.history->jobs_for_run(w.history->runs().value().at(0).id);
  REQUIRE(jobs.ok());
  for (const auto& j : jobs.value()) CHECK_FALSE(j.oom_suspected);
  // The died attempt's row holds the loop's reason (cli/ words it), with the end's own error.
  const std::string by_other = test::RecordingProgress::words_of(Reason::Kind::kKilledByOther);
  const auto said = std::count_if(jobs.value().begin(), jobs.value().end(), [&](const JobRow& j) {
    return j.error.rfind(by_other, 0) == 0 && j.error.find(", last error worker killed by signal 9") != std::string::npos;
  });
  CHECK(said == 1);
}

TEST_CASE("a SIGKILL we did not send, with the OOM counter risen, counts as an OOM death: requeued, then done") {
  World w;
  auto corpus = w.corpus({"oom-100-6", "ok-10-2"});
  FakeRunner runner;
  FakeProbe probe(runner);
  auto s = w.run(corpus, runner, probe);
  CHECK(s.exit_code() == 0);
  CHECK(s.done == 2);
  CHECK(s.oom_deaths == 1);
  CHECK(runner.launches_["oom-100-6"] == 2);
  // History marks the death as the OOM killer's, so a report can draw it as one.
  auto runs = w.history->runs();
  REQUIRE(runs.ok());
  auto jobs = w.history->jobs_for_run(runs.value().at(0).id);
  REQUIRE(jobs.ok());
  int oom_rows = 0;
  for (const auto& j : jobs.value()) oom_rows += j.oom_suspected ? 1 : 0;
  CHECK(oom_rows == 1);
}

TEST_CASE("resume: a second run skips what history says is done; --force redoes it") {
  World w;
  auto corpus = w.corpus({"ok-10-2", "ok-20-2", "fail-10-2"});
  {
    FakeRunner runner;
    FakeProbe probe(runner);
    CHECK(w.run(corpus, runner, probe).done == 2);
  }
  {
    FakeRunner runner;
    FakeProbe probe(runner);
    auto s = w.run(corpus, runner, probe);
    CHECK(s.skipped == 2);
    CHECK(s.done == 0);
    CHECK(runner.launches_.size() == 1);  // only the failed file runs again
    CHECK(runner.launches_["fail-10-2"] == 1);
  }
  // A changed file (new size) is not "done" any more.
  w.dir.write("corpus/ok-10-2.wav", std::string(2000, 'y'));
  auto changed = scan_corpus({(w.dir.path() / "corpus").string()}, w.config.out_dir);
  {
    FakeRunner runner;
    FakeProbe probe(runner);
    auto s = w.run(changed, runner, probe);
    CHECK(s.skipped == 1);
    CHECK(runner.launches_["ok-10-2"] == 1);
  }
  w.config.force = true;
  FakeRunner runner;
  FakeProbe probe(runner);
  auto s = w.run(changed, runner, probe);
  CHECK(s.skipped == 0);
  CHECK(runner.launches_.size() == 3);
}

TEST_CASE("an interrupt stops admissions and the running jobs; exit 130; nothing is marked done") {
  World w;
  auto corpus = w.corpus({"slow-10-1", "slow-20-1", "ok-5-1000", "ok-6-1000"});
  FakeRunner runner;
  FakeProbe probe(runner);
  int calls = 0;
  auto s = w.run(corpus, runner, probe, [&] { return ++calls > 20 ? 1 : 0; });
  CHECK(s.exit_code() == 130);
  CHECK(s.interrupted);
  CHECK(s.done == 0);
  CHECK(runner.running_.empty());
  auto st = w.statuses();
  for (const auto& [k, n] : st) CHECK(k.find(":ok") == std::string::npos);
}

TEST_CASE("the timeout fails a job that runs too long") {
  World w;
  w.config.driver.timeout_ms = 1;
  w.config.driver.tick_ms = 5;
  auto corpus = w.corpus({"slow-10-1"});
  FakeRunner runner;
  FakeProbe probe(runner);
  auto s = w.run(corpus, runner, probe);
  CHECK(s.exit_code() == 1);
  REQUIRE(s.failed.size() == 1);
  // The loop's reason (cli/ words it): timed out after its 1 ms.
  CHECK(s.failed[0].reason.rfind(test::RecordingProgress::words_of(Reason::Kind::kTimedOut), 0) == 0);
  CHECK(s.failed[0].reason.find(", limit_ms 1") != std::string::npos);
}

TEST_CASE("a file that vanished after the scan fails with its name; the others finish") {
  World w;
  auto corpus = w.corpus({"ok-10-2", "ok-20-2"});
  fs::remove(w.dir.path() / "corpus/ok-10-2.wav");
  FakeRunner runner;
  FakeProbe probe(runner);
  auto s = w.run(corpus, runner, probe);
  CHECK(s.done == 1);
  REQUIRE(s.failed.size() == 1);
  CHECK(s.failed[0].reason.find("vanished") != std::string::npos);
}

TEST_CASE("predictions are refitted on refit_due()'s schedule, in bulk, for queued jobs only") {
  CHECK(refit_due(1));
  CHECK(refit_due(8));
  CHECK_FALSE(refit_due(9));
  CHECK(refit_due(16));
  CHECK_FALSE(refit_due(100));
  CHECK(refit_due(128));
  CHECK_FALSE(refit_due(0));
  World w;
  w.config.driver.scheduler.budget_bytes = 1000 * kMiB;
  std::vector<std::string> names;
  for (int i = 0; i < 100; ++i) names.push_back("ok-" + std::to_string(20 + i) + "-" + std::to_string(2 + i % 3));
  auto corpus = w.corpus(names);
  FakeRunner runner;
  FakeProbe probe(runner);
  test::RecordingProgress progress;
  RunLoop loop(w.config, runner, probe, w.history.get(), progress, nullptr);
  auto s = loop.run(corpus);
  CHECK(s.done == 100);
  // ok jobs 1..8, 16, 32, 64: 11 refits (one per finished job was 100, each over the whole queue).
  CHECK(loop.stats().refits == 11);
  // Each refit hands a prediction to the jobs still queued, at most 99 of them.
  CHECK(loop.stats().predictions_updated > 0);
  CHECK(loop.stats().predictions_updated <= 11u * 99u);
  CHECK(runner.max_concurrent_ >= 2);  // the refits still ramped the cold start up
  CHECK(probe.max_total_bytes <= 1000 * kMiB);
}

TEST_CASE("idle persistent workers are retired when nothing queued could use them") {
  World w;
  w.config.driver.scheduler.budget_bytes = 1000 * kMiB;
  // One long job and three short ones: all four run at once; when the short ones end the queue
  // is empty, so their three workers would only hold memory until the long one ends.
  auto corpus = w.corpus({"ok-200-60", "ok-100-5", "ok-101-5", "ok-102-5"});
  for (bool history_known : {false, true}) {
    CAPTURE(history_known);
    w.config.force = true;
    FakeRunner runner;
    runner.persistent = true;
    FakeProbe probe(runner);
    probe.idle_mib = 50;
    test::RecordingProgress progress;
    RunLoop loop(w.config, runner, probe, w.history.get(), progress, nullptr);
    auto s = loop.run(corpus);
    CHECK(s.done == 4);
    if (!history_known) continue;  // the first run only records the peaks (cold start: two at a time)
    CHECK(runner.max_concurrent_ == 4);
    // The three short jobs' workers, then the long job's once it ends (nothing left to run).
    CHECK(runner.retired_ == 4);
    CHECK(loop.stats().workers_retired == 4);
    // By tick 30 the short jobs ended long ago (tick 5) and nothing idles beside the long job.
    CHECK(runner.idle_at_tick_.at(30) == 0);
  }
}

TEST_CASE("an idle worker is retired while the queued job does not fit, and the queue still finishes") {
  World w;
  w.config.driver.scheduler.budget_bytes = 1000 * kMiB;
  // Cold start runs two jobs at a time, largest first, and the rest wait for predictions.
  // After the history run, big (400) + mid (350) run together; small (100) then fits beside them (850) and ends at tick 5: the queue holds "ok-450-8", which needs the long
  // job's memory, so the small job's worker has nothing to do.
  auto corpus = w.corpus({"ok-400-60", "ok-350-60", "ok-450-8", "ok-100-5"});
  FakeRunner first;
  FakeProbe first_probe(first);
  REQUIRE(w.run(corpus, first, first_probe).done == 4);
  w.config.force = true;
  FakeRunner runner;
  runner.persistent = true;
  FakeProbe probe(runner);
  probe.idle_mib = 40;
  test::RecordingProgress progress;
  RunLoop loop(w.config, runner, probe, w.history.get(), progress, nullptr);
  auto s = loop.run(corpus);
  CHECK(s.done == 4);
  CHECK(runner.retired_ >= 1);
  CHECK(runner.idle_at_tick_.at(30) == 0);
  CHECK(probe.max_total_bytes <= 1000 * kMiB);
}

TEST_CASE("history learns a job's own memory, not its new worker's model load") {
  World w;
  w.config.driver.scheduler.budget_bytes = 1000 * kMiB;
  // Each new worker holds 400 MiB for its first 4 ticks (a private copy of the weights until it
  // swaps them for the shared one), then its job grows to 60-90 MiB as the script says.
  auto corpus = w.corpus({"ok-60-10", "ok-70-10", "ok-80-10", "ok-90-10", "ok-65-10", "ok-75-10"});
  FakeRunner runner;
  runner.persistent = true;
  runner.loading_ticks = 4;
  runner.loading_mib = 400;
  FakeProbe probe(runner);
  auto s = w.run(corpus, runner, probe);
  REQUIRE(s.done == 6);
  CHECK(probe.max_total_bytes >= 400 * kMiB);  // the loads happened, and the probe saw them
  auto runs = w.history->runs();
  REQUIRE(runs.ok());
  auto rows = w.history->jobs_for_run(runs.value().at(0).id);
  REQUIRE(rows.ok());
  REQUIRE(rows.value().size() == 6);
  for (const auto& row : rows.value()) {
    CAPTURE(row.input_path);
    const std::string stem = fs::path(row.input_path).stem().string();
    const std::uint64_t mib = std::stoull(stem.substr(3, 2));
    CHECK(row.peak_pss_bytes <= mib * kMiB);
    CHECK(row.peak_pss_bytes >= mib * kMiB * 8 / 10);
    auto points = w.history->timeline(row.id);
    REQUIRE(points.ok());
    for (const auto& p : points.value()) CHECK(p.pss_bytes <= mib * kMiB);
  }
}

TEST_CASE("every job row records the file's audio duration, and re-predictions during the run follow it") {
  World w;
  w.config.driver.scheduler.budget_bytes = 1000 * kMiB;
  w.config.driver.scheduler.max_workers = 1;  // one at a time: job k starts after k - 1 have finished
  // Peak = 20 MiB + 10 MiB per audio second (the FakeRunner reads it from the name), in real WAV
  // files at 16 and 8 kHz: bytes are no proxy for seconds here (16k/3 s and 8k/6 s are the same size).
  struct File {
    int rate_hz;
    int seconds;
  };
  const std::vector<File> files = {{16000, 1}, {8000, 2}, {16000, 3}, {8000, 4}, {16000, 5}, {8000, 6},
                                   {16000, 7}, {8000, 8}, {8000, 9}, {16000, 10}, {8000, 11}, {8000, 12}};
  std::map<std::string, int> seconds_of;
  for (const auto& f : files) {
    const std::string stem = "ok-" + std::to_string(20 + 10 * f.seconds) + "-10";
    write_wav(w.dir, "corpus/" + stem + ".wav", f.rate_hz, f.seconds);
    seconds_of[stem + ".wav"] = f.seconds;
  }
  auto corpus = scan_corpus({(w.dir.path() / "corpus").string()}, w.config.out_dir);
  REQUIRE(corpus.files.size() == files.size());
  FakeRunner runner;
  FakeProbe probe(runner);
  test::RecordingProgress progress;
  RunLoop loop(w.config, runner, probe, w.history.get(), progress, nullptr);
  auto s = loop.run(corpus);
  REQUIRE(s.done == files.size());

  // History: every row carries its file's header duration.
  auto runs = w.history->runs();
  REQUIRE(runs.ok());
  auto rows = w.history->jobs_for_run(runs.value().at(0).id);
  REQUIRE(rows.ok());
  REQUIRE(rows.value().size() == files.size());
  for (const auto& row : rows.value()) {
    CAPTURE(row.input_path);
    REQUIRE(row.audio_duration_s.has_value());
    CHECK(std::abs(*row.audio_duration_s - seconds_of.at(fs::path(row.input_path).filename().string())) < 0.001);
  }

  // The jobs started after the refit at 8 ok jobs were admitted with the audio-seconds line's
  // prediction: the measured peaks are 9/10 of the named ones (the last sample is one tick
  // before the end), so 18 MiB + 9 MiB/s. The bytes line would give 16k/3 s and 8k/6 s the same.
  const auto& starts = progress.starts;
  REQUIRE(starts.size() == files.size());
  for (std::size_t i = 8; i < starts.size(); ++i) {
    CAPTURE(starts[i].name);
    const double expected_bytes = (18.0 + 9.0 * seconds_of.at(starts[i].name)) * static_cast<double>(kMiB);
    CHECK(static_cast<double>(starts[i].estimate_bytes) == doctest::Approx(expected_bytes).epsilon(0.005));
  }
}

TEST_CASE("plan: a history whose peaks follow audio seconds predicts a new file from its duration, not its bytes") {
  World w;
  // History (a real SQLite file): peak = 100 MiB + 20 MiB per audio second, over 16 kHz and
  // 8 kHz WAVs (32000 and 16000 bytes per second), as a run over such files records it.
  auto run_id = w.history->begin_run(RunInfo{});
  REQUIRE(run_id.ok());
  for (int i = 1; i <= 10; ++i) {
    const int rate_hz = i % 2 ? 16000 : 8000;
    const double seconds = 1.5 * i;
    JobRecord rec;
    rec.run_id = run_id.value();
    rec.input_path = "/old/" + std::to_string(i) + ".wav";
    rec.input_size_bytes = 44 + static_cast<std::uint64_t>(2 * rate_hz * seconds);
    rec.input_mtime_ns = 1;
    rec.audio_duration_s = seconds;
    rec.job_key = w.config.job_key;
    rec.peak_pss_bytes = static_cast<std::uint64_t>((100 + 20 * seconds) * static_cast<double>(kMiB));
    rec.peak_rss_bytes = rec.peak_pss_bytes;
    REQUIRE(w.history->record_job(rec).ok());
  }
  // New files with the same bytes and twice the audio, and one whose header cannot be read.
  write_wav(w.dir, "corpus/a16k-3s.wav", 16000, 3.0);
  write_wav(w.dir, "corpus/b8k-6s.wav", 8000, 6.0);
  w.dir.write("corpus/c-corrupt.wav", std::string(96044, 'x'));
  auto corpus = scan_corpus({(w.dir.path() / "corpus").string()}, w.config.out_dir);
  REQUIRE(corpus.files.size() == 3);
  REQUIRE(corpus.files[0].size_bytes == corpus.files[1].size_bytes);
  FakeRunner runner;
  FakeProbe probe(runner);
  test::RecordingProgress progress;
  RunLoop loop(w.config, runner, probe, w.history.get(), progress, nullptr);
  std::vector<FailedFile> errors;
  const auto plan = loop.plan(corpus, errors);
  CHECK(errors.empty());
  REQUIRE(plan.size() == 3);
  REQUIRE(plan[0].predicted_peak_bytes.has_value());
  REQUIRE(plan[1].predicted_peak_bytes.has_value());
  CHECK(static_cast<double>(*plan[0].predicted_peak_bytes) == doctest::Approx(160.0 * kMiB).epsilon(0.01));
  CHECK(static_cast<double>(*plan[1].predicted_peak_bytes) == doctest::Approx(220.0 * kMiB).epsilon(0.01));
  // No duration: the bytes line (its wider margin) still predicts something.
  CHECK(plan[2].predicted_peak_bytes.has_value());
}

TEST_CASE("a band-limited alignment is said in its end event and listed in the summary") {
  World w;
  auto corpus = w.corpus({"ok-10-3", "edge-10-3", "edge-20-4", "fail-10-3"});
  FakeRunner runner;
  FakeProbe probe(runner);
  test::RecordingProgress progress;
  RunLoop loop(w.config, runner, probe, w.history.get(), progress, nullptr);
  RunSummary s = loop.run(corpus);
  CHECK(s.done == 3);
  std::set<std::string> limited;
  for (const auto& p : s.band_limited) limited.insert(fs::path(p).filename().string());
  CHECK(limited == std::set<std::string>{"edge-10-3.wav", "edge-20-4.wav"});
  // How Progress words and draws these (its line, JSON events, the summary's advice): cli/progress_test.cpp.
  std::map<std::string, bool> end_flag;
  for (const auto& e : progress.ends) {
    end_flag[e.name] = e.band_limited;
    if (e.band_limited) CHECK(e.detail.empty());  // the sink words it (cli/progress_test)
  }
  CHECK(end_flag == std::map<std::string, bool>{
                        {"ok-10-3.wav", false}, {"edge-10-3.wav", true}, {"edge-20-4.wav", true}, {"fail-10-3.wav", false}});
}

TEST_CASE("bookkeeping: a job that ended ok in the same wait as a setup error is recorded done, so the next run skips it") {
  World w;
  FakeRunner runner;
  runner.setup_error_at_tick = 3;  // the other job's worker fails to load at the 3rd wait
  FakeProbe probe(runner);
  auto c = w.corpus({"ok-10-3", "ok-10-6"});
  RunSummary s = w.run(c, runner, probe);
  // The driver's typed fault (cli/ words it), carrying the runner's own words.
  CHECK(s.setup_error == test::RecordingProgress::words_of(Reason::Kind::kWorkerSetupFailed) +
                             "need 0, limit 0, last error fake: the second worker cannot load the model");
  CHECK(s.exit_code() == 2);
  auto st = w.statuses();
  CHECK(st["ok-10-3:ok"] == 1);  // its end came with the setup error; it was done all the same
  CHECK(st.count("ok-10-6:killed") == 0);  // stopped for the run's fault: nothing recorded, it runs again
  CHECK(st.count("ok-10-6:ok") == 0);
  FakeRunner again;
  FakeProbe probe2(again);
  RunSummary s2 = w.run(c, again, probe2);
  CHECK(s2.setup_error.empty());
  CHECK(s2.skipped == 1);
  CHECK(s2.done == 1);
  CHECK(again.launches_.count("ok-10-3") == 0);
}

TEST_CASE("bookkeeping: a built-in ok result whose outputs are missing or unnamed is not done, so the next run does it again") {
  World w;
  w.config.command.reset();  // the built-in engine: the worker names the files it wrote
  w.config.job_key = "ctc:fake";
  FakeRunner runner;
  runner.outputs_dir = w.dir.path() / "out";
  FakeProbe probe(runner);
  auto c = w.corpus({"ok-10-2", "ghost-10-2", "bare-10-2"});
  RunSummary s = w.run(c, runner, probe);
  CHECK(s.done == 1);
  REQUIRE(s.failed.size() == 2);
  for (const auto& f : s.failed) {
    CAPTURE(f.reason);
    if (f.path.find("ghost") != std::string::npos) {
      CHECK(f.reason.rfind(test::RecordingProgress::words_of(Reason::Kind::kOutputMissing), 0) == 0);
      CHECK(f.reason.find("/out/ghost-10-2.gone") != std::string::npos);  // the subject: the missing output
    }
    else CHECK(f.reason.find("reported success but no output files") != std::string::npos);
  }
  auto st = w.statuses();
  CHECK(st["ok-10-2:ok"] == 1);
  CHECK(st["ghost-10-2:failed"] == 1);
  CHECK(st["bare-10-2:failed"] == 1);
  // Resume: the ok file is skipped while its output stands; the others run again; a deleted
  // output makes its file run again too.
  FakeRunner again;
  again.outputs_dir = runner.outputs_dir;
  FakeProbe probe2(again);
  RunSummary s2 = w.run(c, again, probe2);
  CHECK(s2.skipped == 1);
  CHECK(again.launches_["ghost-10-2"] == 1);
  CHECK(again.launches_["bare-10-2"] == 1);
  fs::remove(runner.outputs_dir / "ok-10-2.TextGrid");
  FakeRunner third;
  third.outputs_dir = runner.outputs_dir;
  FakeProbe probe3(third);
  RunSummary s3 = w.run(c, third, probe3);
  CHECK(third.launches_["ok-10-2"] == 1);
  CHECK(s3.run_reasons["output missing"] == 1);
}

TEST_CASE("bookkeeping: after an interrupt the files done before it are skipped and the interrupted one runs again") {
  World w;
  auto corpus = w.corpus({"ok-5-2", "ok-6-300"});
  FakeRunner runner;
  FakeProbe probe(runner);
  int calls = 0;
  RunSummary s = w.run(corpus, runner, probe, [&] { return ++calls > 20 ? 1 : 0; });
  CHECK(s.exit_code() == 130);
  CHECK(s.done == 1);
  auto st = w.statuses();
  CHECK(st["ok-5-2:ok"] == 1);
  CHECK(st["ok-6-300:killed"] == 1);  // recorded as stopped, never as done
  FakeRunner again;
  FakeProbe probe2(again);
  RunSummary s2 = w.run(corpus, again, probe2);
  CHECK(s2.exit_code() == 0);
  CHECK(s2.skipped == 1);
  CHECK(s2.done == 1);
  CHECK(again.launches_.count("ok-5-2") == 0);
  CHECK(again.launches_["ok-6-300"] == 1);
}
