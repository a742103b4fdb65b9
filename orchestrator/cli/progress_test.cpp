// Tests of Progress's output: which job ends get a line of their own, the ETA, the line's width, events.
#include "orchestrator/cli/progress.h"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/testutil/read_all.h"

using namespace ab;

TEST_CASE("on a terminal a done file gets no line of its own, unless it was band-limited") {
  std::FILE* log = std::tmpfile();
  REQUIRE(log != nullptr);
  Progress progress(Progress::Mode::kTty, log, log);
  ProgressState state;
  state.total = 2;
  progress.job_ended("a.wav", "done", "", 1 << 20, 1.5, state);
  progress.job_ended("b.wav", "done", "aligned within a limited search band (may be off): raise --max-trellis-mib",
                     2 << 20, 2.5, state, true);
  const std::string text = test::read_all_and_close(log);
  CHECK(text.find("a.wav") == std::string::npos);
  CHECK(text.find("done   b.wav (peak 2.0 MiB, 2.5 s): aligned within a limited search band") != std::string::npos);
}

TEST_CASE("every JSON end event says band_limited, true only where the worker said so") {
  std::FILE* events = std::tmpfile();
  REQUIRE(events != nullptr);
  Progress progress(Progress::Mode::kJson, stderr, events);
  ProgressState state;
  progress.job_ended("a.wav", "failed", "bad", 0, 0, state);
  progress.job_ended("b.wav", "done", "", 0, 0, state, true);
  const std::string text = test::read_all_and_close(events);
  const auto nl = text.find('\n');
  REQUIRE(nl != std::string::npos);
  const auto first = nlohmann::json::parse(text.substr(0, nl));
  const auto second = nlohmann::json::parse(text.substr(nl + 1));
  CHECK(first["band_limited"] == false);
  CHECK(second["band_limited"] == true);
  CHECK(second["status"] == "done");
}

TEST_CASE("eta_seconds: work left at this run's own rate, a calibrated law's before it has one, files without durations") {
  struct Row {
    const char* what;
    std::size_t total, done, running;
    double elapsed_s, work_total_s, work_done_s;
    bool calibrated;
    std::optional<double> eta;
  };
  const Row rows[] = {
      {"nothing known yet", 10, 0, 2, 1, 100, 0, false, std::nullopt},
      {"a calibrated law: 10 job seconds over 2 running jobs", 10, 0, 2, 1, 10, 0, true, 5.0},
      {"calibrated, no job running yet: as one", 10, 0, 0, 0, 10, 0, true, 10.0},
      // Own rate: 40 units in 8 s, 60 left: 12 s (the law's absolute seconds no longer count).
      {"own rate", 10, 3, 2, 8, 100, 40, true, 12.0},
      {"own rate needs a finished file", 10, 0, 2, 8, 100, 40, true, 30.0},
      {"own rate needs 5% behind it", 10, 1, 2, 1, 100, 4, true, 48.0},
      {"big files first: 1 of 4 files done is 90% of the work", 4, 1, 1, 9, 100, 90, false, 1.0},
      {"no durations: files", 10, 5, 1, 10, 0, 0, false, 10.0},
      {"done", 10, 10, 0, 10, 100, 100, true, 0.0},
  };
  for (const auto& r : rows) {
    INFO(r.what);
    ProgressState s;
    s.total = r.total;
    s.done = r.done;
    s.running = r.running;
    s.elapsed_s = r.elapsed_s;
    s.work_total_s = r.work_total_s;
    s.work_done_s = r.work_done_s;
    s.work_calibrated = r.calibrated;
    const auto eta = eta_seconds(s);
    REQUIRE(eta.has_value() == r.eta.has_value());
    if (eta) CHECK(*eta == doctest::Approx(*r.eta));
  }
  // The own rate counts from the first file's end: the workers' start-up before it is not work.
  ProgressState s;
  s.total = 10;
  s.done = 3;
  s.running = 2;
  s.elapsed_s = 8;
  s.work_total_s = 100;
  s.work_done_s = 40;
  s.rate_origin_s = 2;
  s.rate_origin_work_s = 10;
  REQUIRE(eta_seconds(s).has_value());
  CHECK(*eta_seconds(s) == doctest::Approx(12.0));  // 30 work in 6 s, 60 left
  s.rate_origin_work_s = 38;  // 2 since the origin: under 5% of the work, a calibrated law instead
  s.work_calibrated = true;
  CHECK(*eta_seconds(s) == doctest::Approx(30.0));
}

TEST_CASE("fit_job_cost: a fixed cost per file plus a cost per audio second, from 5 jobs on") {
  std::vector<std::pair<double, double>> jobs;
  for (double audio : {3.0, 10.0, 30.0, 60.0}) jobs.emplace_back(audio, 0.2 + 0.01 * audio);
  CHECK_FALSE(fit_job_cost(jobs).calibrated);  // 4 jobs: audio seconds, a proportion
  CHECK(fit_job_cost(jobs).fixed_s == 0);
  CHECK(fit_job_cost(jobs).per_audio_s == 1);
  jobs.emplace_back(600.0, 0.2 + 0.01 * 600);
  jobs.emplace_back(5.0, 3.0);  // one outlier (a cold start) does not move a Theil–Sen line
  const JobCostLaw law = fit_job_cost(jobs);
  CHECK(law.calibrated);
  // Five copies of one file give no line: the law stays a proportion of audio seconds.
  CHECK_FALSE(fit_job_cost({{600, 3}, {600, 3.1}, {590, 3}, {600, 2.9}, {300, 1.6}}).calibrated);
  CHECK(law.fixed_s == doctest::Approx(0.2).epsilon(0.01));
  CHECK(law.per_audio_s == doctest::Approx(0.01).epsilon(0.01));
}

TEST_CASE("fit_to_columns cuts at code points, never inside a character, and marks the cut") {
  CHECK(fit_to_columns("short", 80) == "short");
  CHECK(fit_to_columns("exactly10!", 10) == "exactly10!");
  CHECK(fit_to_columns("0123456789abc", 10) == "012345678\u2026");
  // "é" is two bytes, one column: 5 columns of it fit in 5.
  CHECK(fit_to_columns("\u00e9\u00e9\u00e9\u00e9\u00e9", 5) == "\u00e9\u00e9\u00e9\u00e9\u00e9");
  CHECK(fit_to_columns("\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9", 5) == "\u00e9\u00e9\u00e9\u00e9\u2026");
  CHECK(fit_to_columns("abc", 0).empty());
}

TEST_CASE("on an 80-column terminal the live line stays within 79 columns") {
  ProgressState s;
  s.total = 140;
  s.done = 37;
  s.running = 2;
  s.cap = 2;
  s.in_use_bytes = 260ull << 20;
  s.budget_bytes = 21ull << 30;
  s.elapsed_s = 5;
  s.work_total_s = 7500;
  s.work_done_s = 2000;
  s.current = "speaker1/a-rather-long-directory-name/mp3_16k_27-with-a-long-name.mp3 emissions 43%";
  const std::string full = Progress::live_line(s);
  CHECK(full.size() > 80);
  CHECK(full.find("ETA 14s") != std::string::npos);  // 5500 units left at 400 per second
  const std::string cut = fit_to_columns(full, 79);
  std::size_t columns = 0;
  for (unsigned char c : cut) columns += (c & 0xC0) != 0x80;
  CHECK(columns == 79);
  CHECK(cut.rfind(full.substr(0, 40), 0) == 0);
  CHECK(cut.find("ETA 14s") != std::string::npos);  // the cut takes the file name and the rate, not the ETA
}

TEST_CASE("every JSON event carries a Unix-ms timestamp, and end events the ETA") {
  std::FILE* events = std::tmpfile();
  REQUIRE(events != nullptr);
  Progress progress(Progress::Mode::kJson, stderr, events);
  ProgressState state;
  state.total = 2;
  state.done = 1;
  state.elapsed_s = 2;
  state.work_total_s = 20;
  state.work_done_s = 10;
  const auto before = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
  progress.message("hello");
  progress.job_started("a.wav", 1, 0, state);
  progress.job_ended("a.wav", "done", "", 0, 1, state);
  const std::string text = test::read_all_and_close(events);
  std::size_t lines = 0, at = 0;
  for (auto nl = text.find('\n'); nl != std::string::npos; at = nl + 1, nl = text.find('\n', at)) {
    const auto e = nlohmann::json::parse(text.substr(at, nl - at));
    REQUIRE(e.contains("ts_ms"));
    CHECK(e["ts_ms"].get<std::int64_t>() >= before);
    CHECK(e["ts_ms"].get<std::int64_t>() < before + 60000);
    if (e["event"] == "end") CHECK(e["eta_s"].get<double>() == doctest::Approx(2.0));
    ++lines;
  }
  CHECK(lines == 3);
}
