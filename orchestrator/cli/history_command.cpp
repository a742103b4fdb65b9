// `align-batch history`: reads the SQLite history and prints tables, JSON or CSV.
#include "orchestrator/batch/exit_code.h"
#include "orchestrator/cli/history_command.h"

#include "history/history_store.h"
#include "history/key_summary.h"
#include "memguard/size.h"
#include "orchestrator/cli/run_report.h"

#include <CLI/CLI.hpp>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ab {
namespace {

enum class Format { kTable, kJson, kCsv };

struct HistoryOptions {
  std::string history;
  std::string out = "aligned";  // the main command's --out default (orchestrator/run_command.h)
  bool json = false;
  bool csv = false;
  std::int64_t run_id = 0;
  std::string key;
  Format format() const { return json ? Format::kJson : csv ? Format::kCsv : Format::kTable; }
};

std::string utc_time(std::int64_t unix_ms) {
  if (unix_ms <= 0) return "-";
  const std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:%Y-%m-%d %H:%M:%S}Z", tm);
}

// RFC 4180 quoting: only fields with a comma, quote or line break are quoted.
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) {
    if (c == '"') q += '"';
    q += c;
  }
  return q + "\"";
}

void print_csv(const std::vector<std::vector<std::string>>& rows) {
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) line += (i ? "," : "") + csv_field(row[i]);
    fmt::print("{}\n", line);
  }
}

// Left-aligned columns, widths from the content; the last column is not padded.
void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (const auto& row : rows)
    for (std::size_t i = 0; i < row.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], row[i].size());
    }
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i)
      line += i + 1 < row.size() ? fmt::format("{:<{}}  ", row[i], width[i]) : row[i];
    fmt::print("{}\n", line);
  }
}

template <class T>
nlohmann::json opt_json(const std::optional<T>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

std::string opt_text(const std::optional<double>& v, const char* spec) {
  return v ? fmt::format(fmt::runtime(spec), *v) : std::string("-");
}

/// The history --history (or --out's default) names; it is never created here.
auto open_history(const HistoryOptions& o) {
  const std::filesystem::path path =
      o.history.empty() ? default_history_path(o.out) : std::filesystem::path(o.history);
  return HistoryStore::open(path, HistoryStore::Create::kNever);
}

/// Every key's summary: its jobs, fitted lines and how well they predicted.
Result<std::vector<KeySummary>> key_summaries(HistoryStore& store) {
  using R = Result<std::vector<KeySummary>>;
  const auto keys = store.keys();
  if (!keys) return R::failure(keys.error());
  std::vector<KeySummary> summaries;
  for (const auto& k : *keys) {
    const auto jobs = store.jobs_for_key(k.job_key);
    if (!jobs) return R::failure(jobs.error());
    summaries.push_back(summarize_key(k, *jobs));
  }
  return summaries;
}

void print_keys_json(const std::vector<KeySummary>& summaries) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& s : summaries) {
    auto fit_json = [](const std::optional<LinearFit>& f) {
      if (!f) return nlohmann::json(nullptr);
      return nlohmann::json{{"baseline_bytes", f->baseline_bytes}, {"ratio", f->ratio},
                            {"margin", f->margin}, {"spread", f->spread}, {"jobs", f->n}};
    };
    out.push_back({{"key", s.key.job_key},
                   {"jobs", s.key.job_count},
                   {"ok_jobs", s.key.ok_count},
                   {"median_peak_bytes", s.median_peak_bytes},
                   {"size_fit", fit_json(s.size_fit)},
                   {"duration_fit", fit_json(s.duration_fit)},
                   {"median_abs_error", opt_json(s.median_abs_error)},
                   {"coverage", opt_json(s.coverage)},
                   {"evaluated_jobs", s.evaluated_jobs},
                   {"last_used_ms", s.key.last_finished_at_ms}});
  }
  fmt::print("{}\n", out.dump(2));
}

void print_keys_csv(const std::vector<KeySummary>& summaries) {
  std::vector<std::vector<std::string>> rows = {
      {"key", "jobs", "ok_jobs", "median_peak_bytes", "baseline_bytes", "ratio_bytes_per_byte",
       "margin", "duration_baseline_bytes", "ratio_bytes_per_s", "duration_margin",
       "median_abs_error", "coverage", "evaluated_jobs", "last_used_ms"}};
  for (const auto& s : summaries) {
    rows.push_back(
        {s.key.job_key, std::to_string(s.key.job_count), std::to_string(s.key.ok_count),
         std::to_string(s.median_peak_bytes),
         s.size_fit ? fmt::format("{:.0f}", s.size_fit->baseline_bytes) : "",
         s.size_fit ? fmt::format("{:.6g}", s.size_fit->ratio) : "",
         s.size_fit ? fmt::format("{:.4f}", s.size_fit->margin) : "",
         s.duration_fit ? fmt::format("{:.0f}", s.duration_fit->baseline_bytes) : "",
         s.duration_fit ? fmt::format("{:.6g}", s.duration_fit->ratio) : "",
         s.duration_fit ? fmt::format("{:.4f}", s.duration_fit->margin) : "",
         s.median_abs_error ? fmt::format("{:.4f}", *s.median_abs_error) : "",
         s.coverage ? fmt::format("{:.4f}", *s.coverage) : "", std::to_string(s.evaluated_jobs),
         std::to_string(s.key.last_finished_at_ms)});
  }
  print_csv(rows);
}

void print_keys_table(const std::vector<KeySummary>& summaries) {
  std::vector<std::vector<std::string>> rows = {{"JOBS", "OK", "MEDIAN PEAK", "PEAK BY INPUT BYTES",
                                                 "PEAK BY AUDIO SECONDS", "ERROR", "COVERED",
                                                 "LAST USED", "KEY"}};
  // "1.0 GiB + 20.00/B +3.1%": baseline + ratio per unit, then the p95 margin.
  auto line_text = [](const std::optional<LinearFit>& f, bool per_second) -> std::string {
    if (!f) return "-";
    return fmt::format("{} + {} +{:.1f}%", format_bytes(static_cast<std::uint64_t>(std::max(0.0, f->baseline_bytes))),
                       per_second ? format_bytes(static_cast<std::uint64_t>(std::max(0.0, f->ratio))) + "/s"
                                  : fmt::format("{:.2f}/B", f->ratio),
                       100 * f->margin);
  };
  for (const auto& s : summaries) {
    rows.push_back(
        {std::to_string(s.key.job_count), std::to_string(s.key.ok_count),
         s.key.ok_count ? format_bytes(s.median_peak_bytes) : "-", line_text(s.size_fit, false),
         line_text(s.duration_fit, true),
         opt_text(s.median_abs_error ? std::optional<double>(100 * *s.median_abs_error)
                                     : std::nullopt,
                  "{:.1f}%"),
         s.coverage ? fmt::format("{:.0f}% of {}", 100 * *s.coverage, s.evaluated_jobs) : "-",
         utc_time(s.key.last_finished_at_ms), s.key.job_key});
  }
  print_table(rows);
  fmt::print(
      "\nMEDIAN PEAK and the two fitted lines (baseline + ratio × input bytes or audio seconds, "
      "+ the p95 margin) use PSS of ok jobs; a file is predicted by the seconds line when its "
      "duration is known and that line's margin is no wider. ERROR is the median |predicted − "
      "actual| / actual and COVERED the share at or below the predicted p95, each job predicted "
      "only from jobs before it.\n");
}

int list_keys(HistoryStore& store, Format format) {
  const auto summaries = key_summaries(store);
  if (!summaries) {
    fmt::print(stderr, "align-batch history: {}\n", summaries.error());
    return kExitCannotRun;
  }
  if (format == Format::kJson) print_keys_json(*summaries);
  else if (format == Format::kCsv) print_keys_csv(*summaries);
  else if (summaries->empty()) fmt::print("no jobs recorded yet in {}\n", store.path().string());
  else print_keys_table(*summaries);
  return kExitOk;
}

nlohmann::json run_json(const RunRow& r) {
  return {{"id", r.id},
          {"started_at_ms", r.info.started_at_ms},
          {"ended_at_ms", opt_json(r.ended_at_ms)},
          {"exit_code", opt_json(r.exit_code)},
          {"host", r.info.host},
          {"cores", r.info.cores},
          {"mem_total_bytes", r.info.mem_total_bytes},
          {"budget_bytes", r.info.budget_bytes},
          {"version", r.info.version},
          {"settings", to_json(r.info.settings)},
          {"engine", r.info.settings.engine_text()},
          {"jobs", r.job_count},
          {"ok_jobs", r.ok_count}};
}

std::vector<std::string> run_header() {
  return {"id", "started", "ended", "exit", "host", "cores", "mem_total", "budget", "jobs",
          "ok", "version", "engine"};
}

std::vector<std::string> run_cells(const RunRow& r, bool raw) {
  auto bytes = [&](std::uint64_t b) { return raw ? std::to_string(b) : format_bytes(b); };
  auto when = [&](std::int64_t ms) { return raw ? std::to_string(ms) : utc_time(ms); };
  return {std::to_string(r.id),
          when(r.info.started_at_ms),
          r.ended_at_ms ? when(*r.ended_at_ms) : (raw ? "" : "- (running, or died)"),
          r.exit_code ? std::to_string(*r.exit_code) : (raw ? "" : "-"),
          r.info.host,
          std::to_string(r.info.cores),
          bytes(r.info.mem_total_bytes),
          bytes(r.info.budget_bytes),
          std::to_string(r.job_count),
          std::to_string(r.ok_count),
          r.info.version,
          r.info.settings.engine_text().empty() ? (raw ? "" : "-") : r.info.settings.engine_text()};
}

int list_runs(HistoryStore& store, Format format) {
  const auto runs = store.runs();
  if (!runs) {
    fmt::print(stderr, "align-batch history runs: {}\n", runs.error());
    return kExitCannotRun;
  }
  if (format == Format::kJson) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& r : *runs) out.push_back(run_json(r));
    fmt::print("{}\n", out.dump(2));
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  auto header = run_header();
  if (format == Format::kTable)
    for (auto& h : header)
      for (auto& c : h) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  rows.push_back(header);
  for (const auto& r : *runs) rows.push_back(run_cells(r, format == Format::kCsv));
  format == Format::kCsv ? print_csv(rows) : print_table(rows);
  return kExitOk;
}

nlohmann::json job_json(const JobRow& j) {
  return {{"id", j.id},
          {"input", j.input_path},
          {"size_bytes", j.input_size_bytes},
          {"mtime_ns", j.input_mtime_ns},
          {"audio_s", opt_json(j.audio_duration_s)},
          {"key", j.job_key},
          {"status", to_string(j.status)},
          {"attempts", j.attempts},
          {"peak_rss_bytes", j.peak_rss_bytes},
          {"peak_pss_bytes", j.peak_pss_bytes},
          {"peak_uss_bytes", j.peak_uss_bytes},
          {"peak_vram_bytes", j.peak_vram_bytes},
          {"wall_s", j.wall_s},
          {"cpu_s", j.cpu_s},
          {"exit_status", opt_json(j.exit_status)},
          {"signal", opt_json(j.term_signal)},
          {"error", j.error},
          {"finished_at_ms", j.finished_at_ms}};
}

int show_run(HistoryStore& store, std::int64_t run_id, Format format) {
  const auto run = store.run(run_id);
  if (!run) {
    fmt::print(stderr, "align-batch history run: {}\n", run.error());
    return kExitCannotRun;
  }
  if (!run->has_value()) {
    fmt::print(stderr,
               "align-batch history run: {}: no run {}; `align-batch history runs` lists them\n",
               store.path().string(), run_id);
    return kExitCannotRun;
  }
  const auto jobs = store.jobs_for_run(run_id);
  if (!jobs) {
    fmt::print(stderr, "align-batch history run: {}\n", jobs.error());
    return kExitCannotRun;
  }
  if (format == Format::kJson) {
    nlohmann::json out{{"run", run_json(**run)}, {"jobs", nlohmann::json::array()}};
    for (const auto& j : *jobs) out["jobs"].push_back(job_json(j));
    fmt::print("{}\n", out.dump(2));
    return kExitOk;
  }
  if (format == Format::kCsv) {
    std::vector<std::vector<std::string>> rows = {
        {"id", "input", "size_bytes", "audio_s", "status", "attempts", "peak_pss_bytes",
         "peak_rss_bytes", "peak_uss_bytes", "peak_vram_bytes", "wall_s", "cpu_s", "exit_status",
         "signal", "error", "key"}};
    for (const auto& j : *jobs)
      rows.push_back({std::to_string(j.id), j.input_path, std::to_string(j.input_size_bytes),
                      j.audio_duration_s ? fmt::format("{}", *j.audio_duration_s) : "",
                      to_string(j.status), std::to_string(j.attempts),
                      std::to_string(j.peak_pss_bytes), std::to_string(j.peak_rss_bytes),
                      std::to_string(j.peak_uss_bytes), std::to_string(j.peak_vram_bytes),
                      fmt::format("{}", j.wall_s), fmt::format("{}", j.cpu_s),
                      j.exit_status ? std::to_string(*j.exit_status) : "",
                      j.term_signal ? std::to_string(*j.term_signal) : "", j.error, j.job_key});
    print_csv(rows);
    return kExitOk;
  }
  const auto& r = **run;
  fmt::print("run {}  started {}  ended {}  exit {}\n", r.id, utc_time(r.info.started_at_ms),
             r.ended_at_ms ? utc_time(*r.ended_at_ms) : "- (running, or died)",
             r.exit_code ? std::to_string(*r.exit_code) : "-");
  fmt::print("host {}  cores {}  MemTotal {}  budget {}  align-batch {}\n", r.info.host,
             r.info.cores, format_bytes(r.info.mem_total_bytes), format_bytes(r.info.budget_bytes),
             r.info.version);
  fmt::print("settings {}\n{} jobs, {} ok\n\n", to_json(r.info.settings).dump(), r.job_count, r.ok_count);
  std::vector<std::vector<std::string>> rows = {{"JOB", "STATUS", "TRIES", "SIZE", "AUDIO",
                                                 "PEAK PSS", "PEAK RSS", "WALL", "END", "INPUT",
                                                 "ERROR"}};
  for (const auto& j : *jobs) {
    std::string end = "-";
    if (j.term_signal) end = fmt::format("signal {}", *j.term_signal);
    else if (j.exit_status) end = fmt::format("exit {}", *j.exit_status);
    rows.push_back({std::to_string(j.id), to_string(j.status), std::to_string(j.attempts),
                    format_bytes(j.input_size_bytes),
                    j.audio_duration_s ? fmt::format("{:.1f} s", *j.audio_duration_s) : "-",
                    format_bytes(j.peak_pss_bytes), format_bytes(j.peak_rss_bytes),
                    fmt::format("{:.1f} s", j.wall_s), end, j.input_path, j.error});
  }
  print_table(rows);
  return kExitOk;
}

int forget(HistoryStore& store, const std::string& key) {
  const auto deleted = store.forget_key(key);
  if (!deleted) {
    fmt::print(stderr, "align-batch history forget: {}\n", deleted.error());
    return kExitCannotRun;
  }
  if (*deleted == 0) {
    fmt::print(stderr,
               "align-batch history forget: {}: no jobs with key '{}'; `align-batch history` "
               "lists the keys\n",
               store.path().string(), key);
    return kExitCannotRun;
  }
  fmt::print("forgot {} jobs of {} in {}\n", *deleted, key, store.path().string());
  return kExitOk;
}

}  // namespace

void add_history_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<HistoryOptions>();
  CLI::App* history = app.add_subcommand(
      "history", "what the memory history knows: per job key its fitted peak law and measured "
                 "error; runs; one run's jobs; forget a key");
  history->add_option("--history", o->history,
                      "history database (default OUT/.align-batch/history.sqlite)");
  history->add_option("--out", o->out, "the output directory whose history to read")
      ->capture_default_str();
  auto* json = history->add_flag("--json", o->json, "JSON for scripts");
  auto* csv = history->add_flag("--csv", o->csv, "CSV for spreadsheets");
  json->excludes(csv);
  history->require_subcommand(0, 1);

  CLI::App* runs = history->add_subcommand("runs", "list runs, newest first");
  CLI::App* run = history->add_subcommand("run", "show one run and its jobs");
  run->add_option("ID", o->run_id, "run id (see `history runs`)")->required();
  CLI::App* forget_cmd = history->add_subcommand("forget", "delete a key's jobs and tuned settings");
  forget_cmd->add_option("KEY", o->key, "job key as `history` lists it")->required();
  // --history, --out, --json, --csv may also follow the subcommand.
  for (CLI::App* sub : {runs, run, forget_cmd}) sub->fallthrough();

  history->final_callback([o, runs, run, forget_cmd, &exit_code] {
    auto opened = open_history(*o);
    if (!opened) {
      fmt::print(stderr, "align-batch history: {}\n", opened.error());
      exit_code = kExitCannotRun;
      return;
    }
    HistoryStore& store = **opened;
    if (runs->parsed()) exit_code = list_runs(store, o->format());
    else if (run->parsed()) exit_code = show_run(store, o->run_id, o->format());
    else if (forget_cmd->parsed()) exit_code = forget(store, o->key);
    else exit_code = list_keys(store, o->format());
  });
}

}  // namespace ab
