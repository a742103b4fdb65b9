// Tests of Progress's output: which job ends get a line of their own, the ETA, the line's width, events.
#include "orchestrator/cli/progress.h"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <cmath>
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
  progress.job_ended("b.wav", "done", "", 2 << 20, 2.5, state, true);
  const std::string text = test::read_all_and_close(log);
  CHECK(text.find("a.wav") == std::string::npos);
  CHECK(text.find("done   b.wav (peak 2.0 MiB, 2.5 s): aligned within a limited search band (may be off): raise "
                  "--max-trellis-mib\n") != std::string::npos);
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
  CHECK(second["detail"] == "aligned within a limited search band (may be off): raise --max-trellis-mib");
  CHECK(first["detail"] == "bad");
}

TEST_CASE("eta_seconds: work left at this run's own rate and a calibrated law's, blended; files without durations") {
  struct Row {
    const char* what;
    std::size_t total, done, running;
    double elapsed_s, work_total_s, work_done_s;
    bool calibrated, origin;
    std::optional<double> eta;
  };
  const Row rows[] = {
      {"nothing known yet", 10, 0, 2, 1, 100, 0, false, false, std::nullopt},
      {"a calibrated law: 10 job seconds over 2 running jobs", 10, 0, 2, 1, 10, 0, true, false, 5.0},
      {"calibrated, no job running yet: as one", 10, 0, 0, 0, 10, 0, true, false, 10.0},
      // Own rate alone (no law): 40 units in 8 s, 60 left: 12 s.
      {"own rate, no law", 10, 3, 2, 8, 100, 40, false, true, 12.0},
      {"no law, no origin yet", 10, 0, 2, 8, 100, 40, false, false, std::nullopt},
      {"no law: own rate needs 5% behind it", 10, 1, 2, 1, 100, 4, false, true, std::nullopt},
      {"big files first: 1 of 4 files done is 90% of the work", 4, 1, 1, 9, 100, 90, false, true, 1.0},
      // Law 60 / 2 = 30 s, own 12 s, w = 40 / (40 + 50): 30^(5/9) × 12^(4/9).
      {"law and own rate: a weighted geometric mean", 10, 3, 2, 8, 100, 40, true, true,
       std::pow(30.0, 5.0 / 9.0) * std::pow(12.0, 4.0 / 9.0)},
      {"law, no origin yet: the law alone", 10, 0, 2, 8, 100, 40, true, false, 30.0},
      {"no durations: files", 10, 5, 1, 10, 0, 0, false, false, 10.0},
      {"done", 10, 10, 0, 10, 100, 100, true, true, 0.0},
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
    s.has_rate_origin = r.origin;
    const auto eta = eta_seconds(s);
    REQUIRE(eta.has_value() == r.eta.has_value());
    if (eta) CHECK(*eta == doctest::Approx(*r.eta));
  }
  // The own rate counts from its origin: the workers' start-up before it is not work.
  ProgressState s;
  s.total = 10;
  s.done = 3;
  s.running = 2;
  s.elapsed_s = 8;
  s.work_total_s = 100;
  s.work_done_s = 40;
  s.has_rate_origin = true;
  s.rate_origin_s = 2;
  s.rate_origin_work_s = 10;
  REQUIRE(eta_seconds(s).has_value());
  CHECK(*eta_seconds(s) == doctest::Approx(12.0));  // 30 work in 6 s, 60 left
  s.rate_origin_work_s = 38;  // 2 since the origin: under 5% of the work, and no law: nothing yet
  CHECK_FALSE(eta_seconds(s).has_value());
  s.work_calibrated = true;  // a law: mostly the law's 30 s (w = 2 / 52)
  const double w = 2.0 / 52.0;
  CHECK(*eta_seconds(s) == doctest::Approx(std::pow(30.0, 1 - w) * std::pow(60.0 * 6.0 / 2.0, w)));
  // The more work the own rate has seen, the closer to it.
  s.rate_origin_work_s = 0;
  s.rate_origin_s = 0;
  s.elapsed_s = 20;  // 40 in 20 s: 30 s left by the own rate, as the law says
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
  // A run's own first jobs: the law must have seen files about as short as most of those left.
  CHECK(fit_job_cost(jobs, 30.0).calibrated);   // shortest seen 3 s
  CHECK(fit_job_cost(jobs, 1.5).calibrated);    // 3 <= 2 × 1.5
  CHECK_FALSE(fit_job_cost(jobs, 1.0).calibrated);
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
  s.has_rate_origin = true;  // from the start: 2000 units in 5 s
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
  state.has_rate_origin = true;
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

namespace {

/// What Progress's summary of `s` prints, in `mode`.
std::string summary_text(const RunSummary& s, Progress::Mode mode) {
  std::FILE* out = std::tmpfile();
  REQUIRE(out != nullptr);
  Progress progress(mode, out, out);
  progress.summary(s, out);
  return test::read_all_and_close(out);
}

}  // namespace

TEST_CASE("the summary lists band-limited files with advice naming the current --max-trellis-mib") {
  RunSummary s;
  s.done = 3;
  s.band_limited = {"/c/edge-10-3.wav", "/c/edge-20-4.wav"};
  s.max_trellis_mib = 32;
  const std::string text = summary_text(s, Progress::Mode::kPlain);
  CAPTURE(text);
  CHECK(text.find("2 files aligned within a limited search band (their alignment may be off); rerun them with "
                  "--force --max-trellis-mib N above the current 32:\n") != std::string::npos);
  CHECK(text.find("edge-20-4.wav\n") != std::string::npos);
  const std::string json = summary_text(s, Progress::Mode::kJson);
  const auto e = nlohmann::json::parse(json.substr(0, json.find('\n')));
  CHECK(e["event"] == "summary");
  CHECK(e["band_limited"].size() == 2);
  CHECK(e["max_trellis_mib"] == 32);
}

TEST_CASE("no band-limited file, no band-limited line in the summary") {
  RunSummary s;
  s.done = 3;
  s.max_trellis_mib = 32;
  const std::string text = summary_text(s, Progress::Mode::kPlain);
  CHECK(text.find("finished: 3 done") != std::string::npos);
  CHECK(text.find("search band") == std::string::npos);
}
