// render_report on tables of history rows: what each chart and table shows, and the page's rules.
#include "orchestrator/cli/run_report.h"

#include <doctest/doctest.h>

#include <regex>
#include <string>

namespace ab {
namespace {

constexpr std::uint64_t kMiB = 1024 * 1024;
constexpr std::int64_t kT0 = 1'700'000'000'000;  // the run's start, Unix ms

/// How many times `needle` occurs in `hay`.
std::size_t count(const std::string& hay, const std::string& needle) {
  std::size_t n = 0;
  for (auto at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + needle.size())) ++n;
  return n;
}

struct JobSpec {
  std::string path;
  JobStatus status;
  std::uint32_t attempt;
  double start_s, end_s;
  std::uint64_t peak_mib;
  std::optional<std::uint64_t> predicted_mib;
  std::optional<double> audio_s;
  std::string error = {};
  bool oom = false;
};

ReportJob job(const JobSpec& s) {
  ReportJob j;
  j.row.input_path = s.path;
  j.row.status = s.status;
  j.row.attempts = s.attempt;
  j.row.started_at_ms = kT0 + static_cast<std::int64_t>(s.start_s * 1000);
  j.row.finished_at_ms = kT0 + static_cast<std::int64_t>(s.end_s * 1000);
  j.row.wall_s = s.end_s - s.start_s;
  j.row.peak_pss_bytes = s.peak_mib * kMiB;
  if (s.predicted_mib) j.row.predicted_peak_bytes = *s.predicted_mib * kMiB;
  j.row.audio_duration_s = s.audio_s;
  j.row.error = s.error;
  j.row.oom_suspected = s.oom;
  j.row.job_key = "ctc:test";
  // A ramp to the peak at mid-job, then flat.
  const auto dur_ms = static_cast<std::int64_t>((s.end_s - s.start_s) * 1000);
  j.timeline = {{0, s.peak_mib * kMiB / 2, s.peak_mib * kMiB / 2, 0}, {dur_ms / 2, s.peak_mib * kMiB, s.peak_mib * kMiB, 0}};
  return j;
}

ReportInput sample_run() {
  ReportInput in;
  in.run.id = 7;
  in.run.info.started_at_ms = kT0;
  in.run.info.host = "node1";
  in.run.info.budget_bytes = 1000 * kMiB;
  in.run.info.settings = ab::run_settings_from_json({{"high_water", 0.9}, {"cgroup_limit_bytes", 1200 * kMiB},
                                                     {"workers", "auto"}, {"model", "/m/en.pt"},
                                                     {"budget_source", "cgroup limit 1.2 GiB"},
                                                     {"command", nlohmann::json::array()}},
                                                    2);
  in.run.ended_at_ms = kT0 + 20'000;
  in.run.exit_code = 1;
  in.jobs = {
      job({"/c/a.wav", JobStatus::kOk, 1, 0, 10, 200, 250, 60.0}),
      job({"/c/b.wav", JobStatus::kOk, 1, 0, 4, 150, 100, 20.0}),      // above its prediction: 1.5x
      job({"/c/big.wav", JobStatus::kKilled, 1, 4, 6, 700, 300, 120.0}),  // guard kill
      job({"/c/big.wav", JobStatus::kOk, 2, 10, 19, 650, 700, 120.0}),    // the retry
      job({"/c/oom.wav", JobStatus::kDied, 1, 6, 7, 400, std::nullopt, 30.0, "worker killed by SIGKILL", true}),
      job({"/c/oom.wav", JobStatus::kFailed, 2, 7, 8, 50, std::nullopt, 30.0, "cannot decode"}),
      job({"/c/<odd> & \"name\".wav", JobStatus::kOk, 1, 8, 9, 80, std::nullopt, 5.0}),
  };
  LinearFit fit;
  fit.baseline_bytes = 100.0 * kMiB;
  fit.ratio = 4.0 * kMiB;
  fit.margin = 0.2;
  fit.n = 12;
  in.duration_fit = fit;
  return in;
}

}  // namespace

TEST_CASE("mark_of: guard kills, OOM deaths, crashes, interruptions, nothing for ok or failed") {
  struct Row {
    JobStatus status;
    std::string error;
    bool oom;
    ReportMark mark;
  };
  for (const Row& r : {Row{JobStatus::kKilled, "", false, ReportMark::kGuardKill},
                       Row{JobStatus::kKilled, "interrupted", false, ReportMark::kInterrupted},
                       Row{JobStatus::kDied, "x", true, ReportMark::kOomDeath},
                       Row{JobStatus::kDied, "x", false, ReportMark::kCrash},
                       Row{JobStatus::kOk, "", false, ReportMark::kNone},
                       Row{JobStatus::kFailed, "bad", false, ReportMark::kNone}}) {
    JobRow row;
    row.status = r.status;
    row.error = r.error;
    row.oom_suspected = r.oom;
    CHECK(mark_of(row) == r.mark);
  }
}

TEST_CASE("prediction_ratios: median and nearest-rank p95 of measured / predicted over ok jobs with both") {
  std::vector<ReportJob> jobs;
  // Ratios 0.5, 0.6, ..., 2.4 (20 jobs): median (1.4 + 1.5) / 2, p95 = the 19th = 2.3.
  for (int i = 0; i < 20; ++i) jobs.push_back(job({"/c/" + std::to_string(i), JobStatus::kOk, 1, 0, 1,
                                                   static_cast<std::uint64_t>(5 + i), 10, std::nullopt}));
  jobs.push_back(job({"/c/cold", JobStatus::kOk, 1, 0, 1, 50, std::nullopt, std::nullopt}));
  jobs.push_back(job({"/c/killed", JobStatus::kKilled, 1, 0, 1, 500, 10, std::nullopt}));  // not counted
  const auto r = prediction_ratios(jobs);
  CHECK(r.files == 20);
  CHECK(r.unpredicted == 1);
  CHECK(r.above == 14);  // 11..24 MiB against 10 MiB
  CHECK(r.median == doctest::Approx(1.45));
  CHECK(r.p95 == doctest::Approx(2.3));
}

TEST_CASE("the report draws one band per attempt, a mark per kill, death and retry, one point per predicted file") {
  const ReportInput in = sample_run();
  const std::string html = render_report(in);

  // Self-contained: no script, nothing loaded from anywhere.
  CHECK(html.rfind("<!DOCTYPE html>", 0) == 0);
  CHECK(html.find("<script") == std::string::npos);
  CHECK(html.find("src=") == std::string::npos);
  CHECK(html.find("href=") == std::string::npos);
  CHECK(html.find("@import") == std::string::npos);
  CHECK(html.find("url(") == std::string::npos);

  // 1. memory: a band per attempt, each naming its file.
  CHECK(count(html, "<path class=\"job ") == in.jobs.size());
  CHECK(count(html, "class=\"job killed\" data-file=\"/c/big.wav\" data-attempt=\"1\"") == 1);
  CHECK(count(html, "class=\"job ok\" data-file=\"/c/big.wav\" data-attempt=\"2\"") == 1);
  CHECK(count(html, "<g class=\"mark guard-kill\" data-file=\"/c/big.wav\"") == 1);
  CHECK(count(html, "<g class=\"mark oom-death\" data-file=\"/c/oom.wav\"") == 1);
  CHECK(count(html, "<g class=\"mark retry\"") == 2);  // big.wav and oom.wav's second attempts
  CHECK(count(html, "<g class=\"mark crash\"") == 0);
  // Budget, high-water mark (90%) and the cgroup's limit, each drawn as a line with its label.
  CHECK(html.find("class=\"limit budget\"") != std::string::npos);
  CHECK(html.find("high-water mark 900.0 MiB") != std::string::npos);
  CHECK(html.find("cgroup limit 1.2 GiB") != std::string::npos);
  CHECK(html.find("PSS of all workers (MiB)") != std::string::npos);
  CHECK(html.find("time since the run started (s)") != std::string::npos);
  CHECK(html.find("jobs running") != std::string::npos);
  CHECK(html.find("at most 2 jobs at once") != std::string::npos);

  // 2. predicted against measured: a, b and big.wav's ok attempt; b (1.5x) above, in the other class.
  CHECK(count(html, "<circle class=\"point within\"") == 2);
  CHECK(count(html, "<circle class=\"point above\" data-file=\"/c/b.wav\"") == 1);
  // Ratios 0.8, 0.93, 1.5: median 0.93, p95 1.5.
  CHECK(html.find("over 3 files: median <b>0.93</b>, p95 <b>1.50</b>; 1 above the line") != std::string::npos);
  CHECK(html.find("1 more started without a prediction") != std::string::npos);
  CHECK(html.find("predicted peak (MiB, log)") != std::string::npos);

  // 3. wall and peak against audio seconds: the four ok files in each; the fitted law drawn.
  CHECK(count(html, "<circle class=\"point wall\"") == 4);
  CHECK(count(html, "<circle class=\"point peak\"") == 4);
  CHECK(count(html, "<line class=\"fit central\"") == 1);
  CHECK(count(html, "<line class=\"fit upper\"") == 1);
  CHECK(html.find("peak &#8776; 100.0 MiB + 4.0 MiB per audio second") != std::string::npos);
  CHECK(html.find("audio (s)") != std::string::npos);

  // 4. tables: oom.wav failed with its last reason; b.wav furthest above; the settings.
  CHECK(html.find("<tr data-file=\"/c/oom.wav\"><td>/c/oom.wav</td><td>failed</td><td>2</td><td>50.0 MiB</td><td>cannot decode</td>") !=
        std::string::npos);
  CHECK(count(html, "<section id=\"failed\">") == 1);
  const auto above = html.substr(html.find("<section id=\"above\">"));
  CHECK(above.find("<td>/c/b.wav</td><td>100.0 MiB</td><td>150.0 MiB</td><td>1.50</td>") != std::string::npos);
  const auto slowest = html.substr(html.find("<section id=\"slowest\">"));
  CHECK(slowest.find("/c/a.wav") < slowest.find("/c/b.wav"));  // 10 s before 4 s
  CHECK(html.find("<td>engine</td><td>model /m/en.pt</td>") != std::string::npos);
  CHECK(html.find("<td>budget</td><td>1000.0 MiB (cgroup limit 1.2 GiB)") != std::string::npos);
  CHECK(html.find("<td>workers</td><td>auto</td>") != std::string::npos);

  // File names are escaped everywhere they appear.
  CHECK(html.find("<odd>") == std::string::npos);
  CHECK(html.find("data-file=\"/c/&lt;odd&gt; &amp; &quot;name&quot;.wav\"") != std::string::npos);
}

TEST_CASE("a budget far above the run's use is named above the chart instead of flattening it") {
  ReportInput in = sample_run();
  in.run.info.budget_bytes = 100ull * 1024 * kMiB;  // 100 GiB against a ~1 GiB run
  in.run.info.settings.cgroup_limit_bytes.reset();
  const std::string html = render_report(in);
  CHECK(html.find("budget 100.0 GiB (above the chart)") != std::string::npos);
  CHECK(html.find("class=\"limit budget\"") == std::string::npos);
  CHECK(html.find("class=\"limit cgroup\"") == std::string::npos);
  CHECK(html.find("<td>cgroup limit</td><td>none</td>") != std::string::npos);
  CHECK(html.find("PSS of all workers (MiB)") != std::string::npos);
}

TEST_CASE("a run without predictions, durations or failures says so instead of drawing empty charts") {
  ReportInput in;
  in.run.id = 1;
  in.run.info.started_at_ms = kT0;
  in.run.info.budget_bytes = 500 * kMiB;
  in.jobs = {job({"/c/a.wav", JobStatus::kOk, 1, 0, 2, 100, std::nullopt, std::nullopt})};
  const std::string html = render_report(in);
  CHECK(count(html, "<path class=\"job ") == 1);
  CHECK(html.find("No file of this run started with a prediction (1 started without one") != std::string::npos);
  CHECK(html.find("No finished file of this run has a known audio duration") != std::string::npos);
  CHECK(html.find("Every file of this run that started finished") != std::string::npos);
  CHECK(html.find("engine not recorded") != std::string::npos);
}

TEST_CASE("a job no reading saw is still drawn, as a sliver at its recorded peak") {
  ReportInput in = sample_run();
  ReportJob blip = job({"/c/blip.wav", JobStatus::kOk, 1, 3.0, 3.001, 60, 60, 1.0});
  blip.timeline.clear();
  in.jobs.push_back(blip);
  const std::string html = render_report(in);
  std::smatch m;
  const std::string s = html;
  REQUIRE(std::regex_search(s, m, std::regex("class=\"job ok\" data-file=\"/c/blip.wav\"[^>]*d=\"M([0-9.]+),([0-9.]+)L([0-9.]+),")));
  CHECK(std::stod(m[3]) > std::stod(m[1]));  // it has a width
}

TEST_CASE("a run of more attempts than are drawn one by one: bands by status, density squares, marks still per file") {
  ReportInput in = sample_run();
  const std::size_t n = kReportJobsDrawnEach + 1000;
  for (std::size_t i = 0; i < n; ++i) {
    const double start = static_cast<double>(i % 400) * 0.05;
    in.jobs.push_back(job({"/c/many/" + std::to_string(i) + ".wav", JobStatus::kOk, 1, start, start + 0.5,
                           100 + i % 50, 120, 1.0 + static_cast<double>(i % 30)}));
  }
  const std::string html = render_report(in);
  // Memory: one band per way the attempts ended, not one per attempt.
  CHECK(count(html, "<path class=\"job ") == 0);
  CHECK(count(html, "<path class=\"jobs ok\" data-count=\"" + std::to_string(n + 4) + "\"") == 1);
  CHECK(count(html, "<path class=\"jobs killed\" data-count=\"1\"") == 1);
  // Scatters: squares whose counts add up to the files drawn, no circle per file.
  CHECK(count(html, "<circle class=\"point") == 0);
  std::size_t within = 0, wall = 0;
  const std::regex bin("<rect class=\"bin (\\w+)\" data-count=\"(\\d+)\"");
  for (auto it = std::sregex_iterator(html.begin(), html.end(), bin); it != std::sregex_iterator(); ++it) {
    const std::size_t c = std::stoul((*it)[2]);
    if ((*it)[1] == "within" || (*it)[1] == "above") within += c;
    if ((*it)[1] == "wall") wall += c;
  }
  CHECK(within == n + 3);  // the sample's three predicted ok files, and every added one
  CHECK(wall == n + 4);    // every ok file with a duration
  // What happened to single files is still marked and named.
  CHECK(count(html, "<g class=\"mark guard-kill\" data-file=\"/c/big.wav\"") == 1);
  CHECK(count(html, "<g class=\"mark oom-death\" data-file=\"/c/oom.wav\"") == 1);
  CHECK(html.find("more than the " + std::to_string(kReportJobsDrawnEach) + " drawn one by one") != std::string::npos);
  CHECK(html.size() < 200'000);  // drawn one by one it would be ~600 bytes a job
}

}  // namespace ab
