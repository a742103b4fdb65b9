// `align-batch replay`: reads history, replays it (or sweeps settings), prints, stores tuned settings.
#include "orchestrator/batch/exit_code.h"
#include "orchestrator/cli/replay_command.h"
#include "orchestrator/cli/decision_words.h"

#include "orchestrator/batch/prediction_policy.h"
#include "memguard/budget.h"
#include "memguard/size.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <set>

namespace ab {
namespace {

struct ReplayOptions {
  std::string history;
  std::string out = "aligned";  // the main command's --out default (orchestrator/run_command.h)
  std::string key;
  std::int64_t run_id = 0;
  std::string mem_budget;
  std::uint32_t cores = 0;
  std::string workers;
  double high_water = 0.90;     // the main command's default (orchestrator/run_command.h)
  double margin = 1.0;
  /// --high-water, --margin, --sample-ms given: otherwise the recorded run's own are replayed.
  bool high_water_given = false, margin_given = false, sample_ms_given = false;
  bool cold = false;
  double scale = 1.0;
  std::uint64_t seed = 1;
  /// 50 ms: the main command's default --sample-ms, so replay sees what the real loop sees.
  std::int64_t sample_ms = 50;
  bool sweep = false;
  bool apply = false;
  bool json = false;
};

std::string percent(double fraction) { return fmt::format("{:.0f}%", fraction * 100); }

std::string workers_text(std::uint32_t cap) { return cap == 0 ? "auto" : std::to_string(cap); }

// --workers as the main command takes it: "auto" or a positive number.
std::optional<std::uint32_t> parse_workers(const std::string& text) {
  if (text.empty() || text == "auto") return 0u;
  try {
    std::size_t used = 0;
    const unsigned long n = std::stoul(text, &used);
    if (used == text.size() && n > 0 && n < 100000) return static_cast<std::uint32_t>(n);
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

void print_result(const ReplayResult& r, const ReplaySettings& s) {
  const auto budget = s.scheduler.budget_bytes;
  fmt::print("  makespan      {:.1f} s\n", r.makespan_s);
  fmt::print("  peak memory   {}{}\n", format_bytes(r.peak_total_bytes),
             budget ? fmt::format(" ({} of the budget)",
                                  percent(static_cast<double>(r.peak_total_bytes) / static_cast<double>(budget)))
                    : "");
  fmt::print("  guard kills   {} (work lost {:.1f} s)\n", r.stats.guard_kills, r.lost_work_s);
  fmt::print("  jobs          {} done, {} failed\n", r.ok, r.failed);
  fmt::print("  concurrency   {:.2f} on average, {} at most\n", r.average_concurrency, r.stats.peak_running);
  if (budget) fmt::print("  idle budget   {}\n", percent(r.idle_budget_fraction));
  for (const auto& reason : r.fail_reasons) fmt::print("  failed: {}\n", describe(reason));
}

std::vector<std::string> reasons_text(const std::vector<Reason>& reasons) {
  std::vector<std::string> out;
  for (const auto& r : reasons) out.push_back(describe(r));
  return out;
}

nlohmann::json result_json(const ReplayResult& r) {
  return {{"makespan_s", r.makespan_s},
          {"peak_total_bytes", r.peak_total_bytes},
          {"guard_kills", r.stats.guard_kills},
          {"oom_deaths", r.stats.oom_deaths},
          {"lost_work_s", r.lost_work_s},
          {"jobs", r.jobs},
          {"ok", r.ok},
          {"failed", r.failed},
          {"average_concurrency", r.average_concurrency},
          {"peak_running", r.stats.peak_running},
          {"idle_budget_fraction", r.idle_budget_fraction},
          {"fail_reasons", reasons_text(r.fail_reasons)}};
}

void print_sweep(const std::vector<SweepRow>& rows, std::size_t best, std::uint64_t budget_bytes) {
  fmt::print("  {:<8} {:>10} {:>7} {:>12} {:>10} {:>6} {:>6} {:>9} {:>6}\n", "workers", "high-water",
             "margin", "makespan s", "peak", "kills", "failed", "avg conc", "idle");
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const SweepRow& row = rows[i];
    const ReplayResult& r = row.result;
    fmt::print("{} {:<8} {:>10} {:>7.2f} {:>12.1f} {:>10} {:>6} {:>6} {:>9.2f} {:>6}\n",
               i == best ? "*" : " ", workers_text(row.max_workers), percent(row.high_water),
               row.prediction_scale, r.makespan_s, format_bytes(r.peak_total_bytes),
               r.stats.guard_kills, r.failed, r.average_concurrency,
               budget_bytes ? percent(r.idle_budget_fraction) : "-");
  }
}

}  // namespace

std::optional<std::uint64_t> percent_budget_of_run(const BudgetSpec& spec, const RunInfo* info) {
  if (!info || info->mem_total_bytes == 0) return std::nullopt;
  BudgetInputs inputs;
  inputs.mem_budget = spec;
  inputs.mem_total_bytes = info->mem_total_bytes;
  inputs.cgroup_limit_bytes = info->settings.cgroup_limit_bytes;
  if (info->settings.reserve_bytes) inputs.reserve = BudgetSpec{*info->settings.reserve_bytes, 0, false};
  const auto b = effective_budget(inputs);
  if (!b) return std::nullopt;
  return b->effective_bytes;
}

namespace {

// The budget to replay under: --mem-budget (a percentage resolved as the recorded run would
// have), else the recorded run's.
Result<std::uint64_t> budget_for(const ReplayOptions& o, const RunInfo* info) {
  using R = Result<std::uint64_t>;
  if (o.mem_budget.empty()) {
    if (info && info->budget_bytes) return info->budget_bytes;
    return R::failure("the recorded run has no budget; pass --mem-budget SIZE");
  }
  auto spec = parse_budget_spec(o.mem_budget, "--mem-budget");
  if (!spec) return R::failure(spec.error());
  if (!spec->is_percent) return spec->bytes;
  // As the recorded run would have resolved it: of min(cgroup limit, MemTotal), minus its reserve.
  auto budget = percent_budget_of_run(*spec, info);
  if (!budget)
    return R::failure(fmt::format("--mem-budget {}: the recorded run has no memory total to take a percentage of; "
                                  "give a size such as 16G",
                                  o.mem_budget));
  return *budget;
}

// The simulated machine and settings: the recorded run's, unless the command line says otherwise.
Result<ReplaySettings> settings_for(const ReplayOptions& o, const ReplaySource& src) {
  using R = Result<ReplaySettings>;
  ReplaySettings settings;
  const RunInfo* info = src.run ? &src.run->info : nullptr;
  settings.cores = o.cores ? o.cores
                   : info && info->cores ? info->cores
                                         : static_cast<std::uint32_t>(std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN)));
  auto budget = budget_for(o, info);
  if (!budget) return R::failure(budget.error());
  settings.scheduler.budget_bytes = *budget;
  // Everything not given on the command line is what the recorded run had in force.
  const RunSettings recorded = info ? info->settings : RunSettings{};
  std::optional<std::uint32_t> cap = recorded.workers_cap.value_or(0);
  if (!o.workers.empty()) cap = parse_workers(o.workers);
  if (!cap) {
    return R::failure(fmt::format("--workers '{}': use auto or a positive number", o.workers));
  }
  settings.scheduler.max_workers = *cap;
  settings.scheduler.high_water = o.high_water_given ? o.high_water : recorded.high_water.value_or(o.high_water);
  if (recorded.retries) settings.scheduler.max_attempts = *recorded.retries + 1;
  settings.prediction_scale = o.margin_given ? o.margin : recorded.margin.value_or(o.margin);
  // --cold: a first run, whose driver refits the estimator on the jobs finished so far, as the
  // real loop does (replay_run.h).
  settings.cold = o.cold;
  settings.scheduler.vram_budget_bytes = recorded.vram_budget_bytes;
  settings.sample_interval_ms = o.sample_ms_given ? o.sample_ms : recorded.sample_ms.value_or(o.sample_ms);
  settings.scheduler.reserve_bytes = guard_reserve_bytes(recorded.reserve_bytes.value_or(0));
  settings.startup_ms = src.startup_ms;
  settings.shutdown_ms = src.shutdown_ms;
  settings.machine = src.machine;
  return settings;
}

// One replay under `settings`, printed (or added to `out`).
void replay_once(const ReplayOptions& o, const ReplaySource& src, const std::vector<std::uint32_t>& picks,
                 const ReplaySettings& settings, nlohmann::json& out) {
  const ReplayResult r = replay(src.jobs, picks, settings);
  out["workers"] = workers_text(settings.scheduler.max_workers);
  out["high_water"] = settings.scheduler.high_water;
  out["margin"] = settings.prediction_scale;
  out["result"] = result_json(r);
  if (!o.json) {
    fmt::print("settings: workers {}, high water {}, margin {:.2f}, {}, samples every {} ms\n",
               workers_text(settings.scheduler.max_workers), percent(settings.scheduler.high_water),
               settings.prediction_scale, o.cold ? "first run (no history)" : "with history", settings.sample_interval_ms);
    print_result(r, settings);
  }
}

// The sweep over the default grid, printed (or added to `out`); --apply stores its pick.
int replay_sweep(const ReplayOptions& o, HistoryStore& store, const ReplaySource& src,
                 const std::vector<std::uint32_t>& picks, const ReplaySettings& settings, bool cpu_bound,
                 nlohmann::json& out) {
  const SweepGrid grid = default_sweep_grid(settings.cores, cpu_bound);
  auto rows = sweep(src.jobs, picks, settings, grid);
  const std::size_t best = recommend(rows);
  out["rows"] = nlohmann::json::array();
  for (std::size_t i = 0; i < rows.size(); ++i) {
    out["rows"].push_back({{"workers", workers_text(rows[i].max_workers)},
                           {"high_water", rows[i].high_water},
                           {"margin", rows[i].prediction_scale},
                           {"recommended", i == best},
                           {"result", result_json(rows[i].result)}});
  }
  const SweepRow& b = rows[best];
  if (!o.json) {
    fmt::print("sweep ({}, samples every {} ms; * recommended: fewest failures, no guard kill, "
               "shortest makespan, the safer setting within {:.0f}%{}):\n",
               o.cold ? "first run (no history)" : "with history", settings.sample_interval_ms,
               kSweepTieFraction * 100, cpu_bound ? "; built-in engine: at most one worker per core" : "");
    print_sweep(rows, best, settings.scheduler.budget_bytes);
    fmt::print("recommended: --workers {} --high-water {:.2f} (prediction margin x{:.2f}): {:.1f} s, "
               "{} guard kills\n",
               workers_text(b.max_workers), b.high_water, b.prediction_scale, b.result.makespan_s,
               b.result.stats.guard_kills);
  }
  if (o.apply) {
    nlohmann::json tuned = {{"workers", workers_text(b.max_workers)},
                            {"high_water", b.high_water},
                            {"prediction_scale", b.prediction_scale},
                            {"budget_bytes", settings.scheduler.budget_bytes},
                            {"cores", settings.cores},
                            {"replayed_jobs", picks.size()},
                            {"replayed_makespan_s", b.result.makespan_s},
                            {"source", "align-batch replay --sweep"}};
    for (const auto& key : src.keys) {
      auto stored = store.store_tuned_settings(key, tuned);
      if (!stored) {
        fmt::print(stderr, "align-batch replay: {}\n", stored.error());
        return kExitCannotRun;
      }
      if (!o.json) fmt::print("stored as the tuned settings of key {} in {}; later runs of that key start from them "
                              "(options given on their command line win)\n",
                              key, store.path().string());
    }
  }
  return kExitOk;
}

int run_replay(const ReplayOptions& o) {
  const std::filesystem::path path =
      o.history.empty() ? default_history_path(o.out) : std::filesystem::path(o.history);
  auto opened = HistoryStore::open(path, HistoryStore::Create::kNever);
  if (!opened) {
    fmt::print(stderr, "align-batch replay: {}\n", opened.error());
    return kExitCannotRun;
  }
  HistoryStore& store = *opened.value();
  auto loaded = load_replay_source(store, o.run_id > 0 ? std::optional<std::int64_t>(o.run_id) : std::nullopt, o.key);
  if (!loaded) {
    fmt::print(stderr, "align-batch replay: {}\n", loaded.error());
    return kExitCannotRun;
  }
  ReplaySource& src = *loaded;
  if (src.passed_over > 0 && src.run)
    fmt::print(stderr, "align-batch replay: the newest {} finished no job (every file done already?); replaying run {}\n",
               src.passed_over == 1 ? std::string("run") : fmt::format("{} runs", src.passed_over), src.run->id);
  if (src.jobs.empty()) {
    fmt::print(stderr,
               "align-batch replay: {}: no finished jobs to replay{}; run a corpus first, or see "
               "`align-batch history`\n",
               path.string(), src.skipped ? fmt::format(" ({} ended without finishing)", src.skipped) : "");
    return kExitCannotRun;
  }

  auto made = settings_for(o, src);
  if (!made) {
    fmt::print(stderr, "align-batch replay: {}\n", made.error());
    return kExitCannotRun;
  }
  const ReplaySettings& settings = *made;
  const RunSettings recorded = src.run ? src.run->info.settings : RunSettings{};
  const bool cpu_bound = recorded.builtin_engine.value_or(false);

  const auto picks = o.scale == 1.0 ? pick_all(src.jobs.size()) : pick_scaled(src.jobs.size(), o.scale, o.seed);
  std::string keys;
  for (const auto& k : src.keys) keys += (keys.empty() ? "" : ", ") + k;
  nlohmann::json out = {{"jobs", picks.size()},
                        {"recorded_jobs", src.jobs.size()},
                        {"skipped_jobs", src.skipped},
                        {"run", src.run ? nlohmann::json(src.run->id) : nlohmann::json(nullptr)},
                        {"keys", src.keys},
                        {"cores", settings.cores},
                        {"budget_bytes", settings.scheduler.budget_bytes},
                        {"sample_ms", settings.sample_interval_ms},
                        {"startup_ms", settings.startup_ms},
                        {"shutdown_ms", settings.shutdown_ms},
                        {"machine_samples", settings.machine.size()},
                        {"cold", o.cold},
                        {"scale", o.scale},
                        {"seed", o.seed}};
  if (!o.json) fmt::print("replay of {} jobs ({} recorded{}{}; key {}) on {} cores, budget {}\n", picks.size(),
             src.jobs.size(), src.run ? fmt::format(", run {}", src.run->id) : "",
             o.scale != 1.0 ? fmt::format(", scaled x{} with seed {}", o.scale, o.seed) : "", keys,
             settings.cores, format_bytes(settings.scheduler.budget_bytes));
  if (src.skipped && !o.json) fmt::print("  ({} jobs that did not finish are left out)\n", src.skipped);

  const auto t0 = std::chrono::steady_clock::now();
  if (!o.sweep) {
    replay_once(o, src, picks, settings, out);
  } else if (int code = replay_sweep(o, store, src, picks, settings, cpu_bound, out); code != kExitOk) {
    return code;
  }
  const double elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (o.json) {
    out["simulated_in_s"] = elapsed_s;
    fmt::print("{}\n", out.dump());
  } else {
    fmt::print("(simulated in {:.2f} s)\n", elapsed_s);
  }
  return kExitOk;
}

}  // namespace

namespace {

// The replayed run's time outside its jobs: from its start to its first job's start, and from its
// last job's end to its own end (the workers' exit).
void measure_run_ends(ReplaySource& src, const std::vector<JobRow>& rows) {
  std::optional<std::int64_t> first_start_ms, last_end_ms;
  for (const JobRow& row : rows) {
    if (!row.started_at_ms) continue;
    const auto end_ms = *row.started_at_ms + static_cast<std::int64_t>(row.wall_s * 1000.0);
    first_start_ms = std::min(first_start_ms.value_or(*row.started_at_ms), *row.started_at_ms);
    last_end_ms = std::max(last_end_ms.value_or(end_ms), end_ms);
  }
  if (!first_start_ms || !src.run) return;
  src.startup_ms = std::max<std::int64_t>(0, *first_start_ms - src.run->info.started_at_ms);
  if (src.run->ended_at_ms) src.shutdown_ms = std::max<std::int64_t>(0, *src.run->ended_at_ms - *last_end_ms);
}

}  // namespace

namespace {

// The recorded jobs to replay: run `run_id`'s, key `key`'s, or the newest run's that finished a
// job; `src` learns the run they came from.
StoreResult<std::vector<JobRow>> select_rows(HistoryStore& store, std::optional<std::int64_t> run_id,
                                             const std::string& key, ReplaySource& src) {
  using R = StoreResult<std::vector<JobRow>>;
  if (run_id) {
    auto run = store.run(*run_id);
    if (!run) return R::failure(run.error());
    if (!*run) {
      return R::failure(fmt::format("{}: no run {}; `align-batch history runs` lists them",
                                    store.path().string(), *run_id));
    }
    src.run = **run;
    return store.jobs_for_run(*run_id);
  }
  if (!key.empty()) {
    auto jobs = store.jobs_for_key(key, 100'000'000);
    if (!jobs) return jobs;
    if (jobs->empty()) {
      return R::failure(fmt::format("{}: no jobs with key '{}'; `align-batch history` lists the keys",
                                    store.path().string(), key));
    }
    // The machine of the newest run holding them (jobs_for_key returns newest first).
    auto run = store.run(jobs->front().run_id);
    if (run && *run) src.run = **run;
    return jobs;
  }
  auto runs = store.runs();
  if (!runs) return R::failure(runs.error());
  if (runs->empty()) {
    return R::failure(fmt::format("{}: no runs recorded yet; run a corpus first", store.path().string()));
  }
  // The newest run that finished a job: a run that found every file done finished none.
  auto it = std::find_if(runs->begin(), runs->end(), [](const RunRow& r) { return r.ok_count > 0; });
  if (it == runs->end()) it = runs->begin();
  src.passed_over = static_cast<std::uint32_t>(it - runs->begin());
  src.run = *it;
  return store.jobs_for_run(src.run->id);
}

// One ok row as replay's job: its recorded figures and timeline, predicted by `policy`.
StoreResult<RecordedJob> recorded_job(HistoryStore& store, const JobRow& row, const PredictionPolicy& policy) {
  RecordedJob job;
  job.key = row.job_key;
  job.size_bytes = row.input_size_bytes;
  job.audio_duration_s = row.audio_duration_s;
  job.duration_s = row.wall_s;
  job.cpu_s = row.cpu_s;
  job.peak_pss_bytes = row.peak_pss_bytes ? row.peak_pss_bytes : row.peak_rss_bytes;
  auto timeline = store.timeline(row.id);
  if (!timeline) return StoreResult<RecordedJob>::failure(timeline.error());
  job.timeline.reserve(timeline->size());
  for (const TimelinePoint& p : *timeline) {
    job.timeline.push_back({p.t_ms, p.pss_bytes ? p.pss_bytes : p.rss_bytes, p.vram_bytes});
  }
  // As the real loop does (run_loop): from the input size and the recorded audio duration.
  job.predicted_peak_bytes = policy.predict(row.input_size_bytes, row.audio_duration_s);
  return job;
}

}  // namespace

StoreResult<ReplaySource> load_replay_source(HistoryStore& store, std::optional<std::int64_t> run_id,
                                             const std::string& key) {
  using R = StoreResult<ReplaySource>;
  ReplaySource src;
  auto selected = select_rows(store, run_id, key, src);
  if (!selected) return R::failure(selected.error());
  std::vector<JobRow> rows = std::move(*selected);
  if (src.run && (run_id || key.empty())) {
    measure_run_ends(src, rows);
    auto machine = store.run_samples(src.run->id);
    if (!machine) return R::failure(machine.error());
    src.machine = std::move(*machine);
  }
  // In the corpus's order (its scan sorts paths), as the real run numbered its jobs: the
  // scheduler breaks ties between equal estimates and sizes by that number, so replay's jobs
  // must come in the same order to start as the real ones did (history lists them as they ended).
  std::stable_sort(rows.begin(), rows.end(),
                   [](const JobRow& a, const JobRow& b) { return a.input_path < b.input_path; });
  // Predictions: the key's whole history, as a later run of that key would see it.
  std::map<std::string, std::unique_ptr<PredictionPolicy>> policies;
  for (const JobRow& row : rows) {
    if (row.status != JobStatus::kOk) {
      ++src.skipped;
      continue;
    }
    auto& policy = policies[row.job_key];
    if (!policy) {
      auto key_jobs = store.jobs_for_key(row.job_key, 100'000'000);
      if (!key_jobs) return R::failure(key_jobs.error());
      policy = std::make_unique<PredictionPolicy>(std::move(*key_jobs));  // margin 1: replay applies its own
      src.keys.push_back(row.job_key);
    }
    auto job = recorded_job(store, row, *policy);
    if (!job) return R::failure(job.error());
    src.jobs.push_back(std::move(*job));
  }
  return src;
}

void add_replay_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<ReplayOptions>();
  CLI::App* cmd = app.add_subcommand(
      "replay", "replay recorded jobs through the scheduler in simulated time: makespan, peak "
                "memory, guard kills for a budget, cap and margins; --sweep to tune them");
  cmd->add_option("--history", o->history, "history database (default OUT/.align-batch/history.sqlite)");
  cmd->add_option("--out", o->out, "the output directory whose history to read")->capture_default_str();
  auto* key = cmd->add_option("--key", o->key, "replay every recorded job of this key (see `history`)");
  auto* run = cmd->add_option("--run", o->run_id, "replay this run's jobs (default: the newest run)");
  key->excludes(run);
  cmd->add_option("--mem-budget", o->mem_budget, "budget to replay under: SIZE or PCT of the recorded "
                                                 "machine's memory (default: the recorded run's)");
  cmd->add_option("--cores", o->cores, "cores of the simulated machine (default: the recorded run's)");
  cmd->add_option("--workers", o->workers, "auto or N: the cap (default: the recorded run's)");
  auto* high_water = cmd->add_option("--high-water", o->high_water,
                                     "preemption mark as a share of the budget (default: the recorded run's)")
                         ->check(CLI::Range(0.1, 1.0));
  auto* margin = cmd->add_option("--margin", o->margin,
                                 "multiply history's predictions by this (default: the recorded run's)")
                     ->check(CLI::Range(0.1, 10.0));
  cmd->add_flag("--cold", o->cold, "replay as a first run: no predictions until the first job ends");
  cmd->add_option("--scale", o->scale, "replay K times as many jobs, drawn from the recorded ones")
      ->check(CLI::Range(0.001, 1e6))
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "seed for --scale's draw")->capture_default_str();
  auto* sample_ms = cmd->add_option("--sample-ms", o->sample_ms,
                                    "simulated memory sampling interval (default: the recorded run's)")
                        ->check(CLI::Range(5, 60000));
  cmd->add_flag("--sweep", o->sweep, "try a grid of caps, high-water marks and margins; mark the best");
  auto* apply = cmd->add_flag("--apply", o->apply, "with --sweep: store the recommended settings for the key(s)");
  apply->needs(cmd->get_option("--sweep"));
  cmd->add_flag("--json", o->json, "one JSON object on stdout, for scripts");
  cmd->final_callback([o, &exit_code, high_water, margin, sample_ms] {
    o->high_water_given = high_water->count() > 0;
    o->margin_given = margin->count() > 0;
    o->sample_ms_given = sample_ms->count() > 0;
    exit_code = run_replay(*o);
  });
}

}  // namespace ab
