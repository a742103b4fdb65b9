// `align-batch report`: reads one run back from history and writes render_report's page.
#include "orchestrator/cli/report_command.h"

#include "orchestrator/batch/exit_code.h"
#include "orchestrator/batch/progress_sink.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <system_error>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "history/estimator.h"
#include "history/history_store.h"
#include "orchestrator/cli/run_report.h"

namespace fs = std::filesystem;

namespace ab {

fs::path default_report_path(const fs::path& history_path, std::int64_t run_id) {
  return history_path.parent_path() / fmt::format("report-{}.html", run_id);
}

void write_end_of_run_report(HistoryStore* history, std::int64_t run_id, const fs::path& out_dir, RunSummary& summary,
                             ProgressSink& progress) {
  if (!history || run_id == 0 || !summary.setup_error.empty()) return;
  auto written = write_run_report(*history, run_id, out_dir / ".align-batch" / fmt::format("report-{}.html", run_id));
  if (written) summary.report_path = written->string();
  else progress.message("report: " + written.error());
}

Result<fs::path> write_run_report(HistoryStore& store, std::int64_t run_id, const fs::path& path) {
  using R = Result<fs::path>;
  auto run = store.run(run_id);
  if (!run) return R::failure(run.error());
  if (!run.value())
    return R::failure(fmt::format("{}: no run {}; `align-batch history runs` lists them", store.path().string(), run_id));
  ReportInput in;
  in.run = **run;
  in.history_path = store.path().string();
  in.generated_at_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  auto jobs = store.jobs_for_run(run_id);
  if (!jobs) return R::failure(jobs.error());
  // Too many attempts to draw one by one: the page draws each at its recorded peak (run_report.h).
  const bool timelines = jobs->size() <= kReportJobsDrawnEach;
  in.jobs.reserve(jobs->size());
  for (auto& row : *jobs) {
    std::vector<TimelinePoint> points;
    if (timelines) {
      auto timeline = store.timeline(row.id);
      if (!timeline) return R::failure(timeline.error());
      points = std::move(*timeline);
    }
    in.jobs.push_back({std::move(row), std::move(points)});
  }
  jobs->clear();
  jobs->shrink_to_fit();
  // The law history holds for the run's key now (every run of it), as the next run would predict.
  if (!in.jobs.empty()) {
    auto key_rows = store.jobs_for_key(in.jobs.front().row.job_key);
    if (!key_rows) return R::failure(key_rows.error());
    Estimator estimator(observations_from_jobs(*key_rows));
    in.duration_fit = estimator.duration_fit();
  }
  const std::string html = render_report(in);

  std::error_code ec;
  if (path.has_parent_path()) fs::create_directories(path.parent_path(), ec);
  const fs::path tmp = path.string() + fmt::format(".tmp-{}", ::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << html;
    out.close();
    if (!out) {
      fs::remove(tmp, ec);
      return R::failure(fmt::format("{}: cannot write the report; check that its directory is writable, or pass --html",
                                    path.string()));
    }
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return R::failure(fmt::format("{}: cannot write the report ({}); pass --html with a writable path", path.string(),
                                  ec.message()));
  }
  return R(path);
}

void add_report_command(CLI::App& app, int& exit_code) {
  struct Options {
    std::int64_t run_id = 0;
    std::string html, history;
    std::string out = "aligned";  // the main command's --out default
  };
  auto o = std::make_shared<Options>();
  CLI::App* report = app.add_subcommand(
      "report", "write one run's HTML report (memory over time, predicted against measured peaks, throughput, "
                "failures, settings): self-contained, opens offline");
  report->add_option("--run", o->run_id, "run id (see `align-batch history runs`); default: the newest run");
  // --out is the run's output directory, as for the run itself, `history` and `replay`.
  report->add_option("--out", o->out, "the run's output directory (its --out), whose history to read")
      ->capture_default_str();
  report->add_option("--history", o->history, "history database (default OUT/.align-batch/history.sqlite)");
  report->add_option("--html", o->html, "the HTML file to write (default: report-RUN.html beside the history)");
  report->final_callback([o, &exit_code] {
    const fs::path history_path = o->history.empty() ? default_history_path(o->out) : fs::path(o->history);
    auto store = HistoryStore::open(history_path, HistoryStore::Create::kNever);
    if (!store) {
      std::fprintf(stderr, "align-batch report: %s\n", store.error().c_str());
      exit_code = kExitCannotRun;
      return;
    }
    std::int64_t run_id = o->run_id;
    if (run_id == 0) {
      auto runs = (*store)->runs(1);
      if (!runs || runs->empty()) {
        std::fprintf(stderr, "align-batch report: %s\n",
                     runs ? (history_path.string() + ": no runs recorded yet; run align-batch on a corpus first").c_str()
                          : runs.error().c_str());
        exit_code = kExitCannotRun;
        return;
      }
      run_id = runs->front().id;
    }
    const fs::path page = o->html.empty() ? default_report_path(history_path, run_id) : fs::path(o->html);
    auto written = write_run_report(**store, run_id, page);
    if (!written) {
      std::fprintf(stderr, "align-batch report: %s\n", written.error().c_str());
      exit_code = kExitCannotRun;
      return;
    }
    std::printf("report of run %lld: %s\n", static_cast<long long>(run_id), written->c_str());
    exit_code = kExitOk;
  });
}

}  // namespace ab
