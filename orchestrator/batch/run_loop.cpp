// RunLoop: the orchestrator's event loop — admit, sample, guard, record, retry, resume.
#include "orchestrator/batch/run_loop.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <system_error>

#include <fmt/format.h>

#include "protocol/wire_path.h"
#include "history/history_store.h"
#include "history/timeline.h"
#include "common/bytes.h"
#include "orchestrator/batch/clock.h"
#include "orchestrator/batch/job_end.h"
#include "orchestrator/batch/prediction_policy.h"
#include "orchestrator/batch/resume.h"
#include "protocol/alignment_size.h"

namespace fs = std::filesystem;

namespace ab {
namespace {

// Points kept per running job before it is thinned (bounded memory for hour-long jobs).
constexpr std::size_t kTimelineThinAt = 4096;
// History batches: written once this many jobs have ended, or once this long has passed since
// the last write. So a job ending after a quiet spell is written at once, and only jobs ending
// faster than one per 50 ms share transactions (at 1,000 jobs/s, about 50 a commit). 50 ms:
// what a run killed by SIGKILL may lose of its record (those files run again next time).
constexpr std::size_t kHistoryBatchJobs = 1000;
constexpr std::int64_t kHistoryBatchMs = 50;

}  // namespace

struct RunLoop::Job {
  JobId id = 0;
  /// Its file's index in the corpus; Pass::file_of builds the CorpusFile when one is needed. A
  /// CorpusFile per job (five paths, each with its own list of components) held ~1.1 KiB a queued
  /// file (heaptrack, 20,000 tiny jobs).
  std::size_t file = 0;
  // The file's size, mtime and duration as the last look found them: the re-stat before each
  // start updates these, not the caller's corpus.
  std::uint64_t size_bytes = 0;
  std::int64_t mtime_ns = 0;
  std::optional<double> audio_duration_s;
  std::uint32_t attempts = 0;
  bool running = false;
  bool finished = false;
  std::int64_t started_ms = 0;
  std::int64_t started_unix_ms = 0;                 ///< for history (reports draw it)
  std::optional<std::uint64_t> predicted_peak_bytes;  ///< history's (scaled) prediction, refits included
  bool guard_kill = false;
  bool timed_out = false;
  bool hung = false;  ///< killed because its worker's heartbeat stopped
  std::uint64_t peak_pss_bytes = 0;  ///< the job's own: samples taken while its worker loaded the model left out
  std::uint64_t peak_rss_bytes = 0;
  std::uint64_t loading_peak_pss_bytes = 0;  ///< its new worker's PSS while that loaded the model
  std::vector<TimelinePoint> timeline;
  std::optional<std::uint64_t> oom_kills_at_start;
  fs::path staging;  ///< external engine: this attempt's {out} directory (one of the pool's)
  std::string task;  ///< what it runs: "align", "transcribe" or "command" (recorded for resume)
  std::string reason;  ///< why it runs (resume.h)
  bool transcribed_for_want = false;
  std::optional<std::string> transcript_hash;  ///< this attempt's transcript, hashed as it was sent
  std::vector<OutputFile> outputs;  ///< what an ok attempt wrote, stat'ed right after
};

std::size_t clean_stale_staging(const fs::path& out_dir) {
  std::size_t removed = 0;
  std::error_code ec;
  const fs::path root = out_dir / ".align-batch" / "staging";
  if (!fs::is_directory(root, ec)) return 0;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    char* end = nullptr;
    const long pid = std::strtol(name.c_str(), &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // its run is alive
    std::error_code rec;
    fs::remove_all(entry.path(), rec);
    if (!rec) ++removed;
  }
  return removed;
}

RunLoop::RunLoop(RunLoopConfig config, WorkerRunner& runner, MemoryProbe& probe, HistoryStore* history,
                 ProgressSink& progress, std::function<int()> interrupts, Clock* clock)
    : config_(std::move(config)),
      runner_(runner),
      probe_(probe),
      history_(history),
      progress_(progress),
      interrupts_(std::move(interrupts)),
      clock_(clock ? *clock : SystemClock::instance()) {
  staging_dir_ = config_.out_dir / ".align-batch" / "staging" / std::to_string(::getpid());
}

std::optional<std::string> alignment_refusal(const CorpusFile& file, const AlignmentLimit& limit) {
  if (!file.audio_duration_s || !file.transcript || limit.cap_bytes == 0) return std::nullopt;
  // The header's length at the model's rate, less 1% (a compressed file's header may round its
  // length) and two frames (the resampler's rounding): never refuses a file the aligner would take.
  const auto samples = static_cast<std::int64_t>(*file.audio_duration_s * limit.sample_rate_hz * 0.99);
  const std::int64_t frames = alignment_frames_at_least(samples, limit.samples_per_frame);
  std::error_code ec;
  const std::uintmax_t text_bytes = fs::file_size(*file.transcript, ec);
  if (ec) return std::nullopt;
  // A token is a character (one byte at least) or a word break (after one): at most 2 per byte.
  if (alignment_floor_bytes(frames, 2 * text_bytes + 1) <= limit.cap_bytes) return std::nullopt;
  // Close enough that the tokens decide: count them as the worker will (a transcript it cannot
  // read is its own error, which the job reports).
  Result<Transcript> t = read_transcript(file.transcript->string(), limit.labels);
  if (!t) return std::nullopt;
  const std::uint64_t need = alignment_floor_bytes(frames, t.value().tokens.size());
  if (need <= limit.cap_bytes) return std::nullopt;
  return alignment_too_big_message("", frames, t.value().tokens.size(), need, limit.cap_bytes) +
         " (refused before starting: its length is in its header)";
}

ProbeReading RunLoop::read_probe(const std::vector<LiveJob>& live, const std::vector<pid_t>& idle, std::int64_t now_ms,
                                 bool exact) {
  ++stats_.memory_reads;
  return probe_.read(live, idle, now_ms, exact);
}

std::vector<PlannedFile> RunLoop::plan(const Corpus& corpus, std::vector<FailedFile>& errors) {
  std::vector<JobRow> rows;
  if (history_) {
    auto r = history_->jobs_for_key(config_.job_key);
    if (r) rows = r.value();
    else progress_.message("history: " + r.error() + " (continuing without predictions)");
  }
  const PredictionPolicy policy(std::move(rows), config_.prediction_scale);
  const bool any_transcript =
      std::any_of(corpus.files.begin(), corpus.files.end(), [](const CorpusFile& f) { return f.transcript.has_value(); });
  std::vector<PlannedFile> out;
  for (std::size_t i = 0; i < corpus.files.size(); ++i) {
    const CorpusFile f = corpus.files[i];
    PlannedFile p;
    p.file = i;
    p.task = task_for(f);
    p.transcribed_for_want = !config_.command && config_.task == "auto" && !f.transcript && any_transcript;
    if (!config_.command && config_.task == "align" && !f.transcript) {
      fs::path stem = f.audio;
      stem.replace_extension();
      errors.push_back({display_path(f.audio.string()), "no transcript beside it (" + stem.filename().string() + ".txt or .lab); add one or use --task transcribe"});
      continue;
    }
    if (config_.force) {
      p.reason = "--force";
    } else if (history_) {
      const ResumeDecision d = check_resume(*history_, f, config_.job_key, p.task);
      p.skip = d.done;
      p.reason = d.reason;
    } else {
      p.reason = kReasonNew;
    }
    // Work whose size is known before it starts is checked before it starts: an alignment the
    // workers' --max-trellis-mib cannot hold would fail after the model's whole pass over the file.
    if (!p.skip && p.task == "align" && config_.alignment_limit)
      if (auto why = alignment_refusal(f, *config_.alignment_limit)) {
        errors.push_back({display_path(f.audio.string()), *why});
        continue;
      }
    // The audio seconds line where the header gave a duration and that line is the tighter one.
    p.predicted_peak_bytes = policy.predict(f.size_bytes, f.audio_duration_s);
    out.push_back(p);
  }
  return out;
}

std::string RunLoop::task_for(const CorpusFile& f) const {
  if (config_.command) return "command";
  return config_.task == "auto" ? (f.transcript ? "align" : "transcribe") : config_.task;
}

RunnerJob RunLoop::make_runner_job(Job& job, const CorpusFile& f) {
  RunnerJob rj;
  rj.id = job.id;
  rj.name = f.relative.string();
  // An external command may read the transcript too ({dir}/{stem}.txt): only transcription does not.
  job.transcript_hash = job.task == "transcribe" ? std::nullopt : transcript_hash_of(f);
  job.outputs.clear();
  if (config_.command) {
    take_staging(job);
    CommandPlaceholders values{f.audio, job.staging / f.out_base.filename(), f.audio.stem().string(),
                               f.audio.parent_path()};
    rj.argv = config_.command->expand(values);
  } else {
    std::error_code ec;
    fs::create_directories(f.out_base.parent_path(), ec);
    // Paths go as JSON strings, or as {"hex": ...} when not UTF-8 (common/wire_path.h): byte-exact.
    nlohmann::json req = {{"id", job.id}, {"audio", path_to_json(f.audio.string())},
                          {"out", path_to_json(f.out_base.string())}, {"task", job.task}};
    req["transcript"] = f.transcript ? path_to_json(f.transcript->string()) : nlohmann::json(nullptr);
    rj.request_json = req.dump();
  }
  return rj;
}

bool RunLoop::finish_outputs(Job& job, const CorpusFile& file, const JobEnd& end, std::string& error) {
  if (!config_.command) {
    // The worker wrote its outputs atomically itself; resume checks them by what they are now.
    // An ok result without them cannot be checked by the next run, which would then skip the
    // file whatever became of its outputs: such an attempt is not done.
    if (end.outputs.empty()) {
      error = "the worker reported success but no output files; see its log";
      return false;
    }
    for (const auto& path : end.outputs) {
      auto o = stat_output(path);
      if (!o) {
        error = "output " + display_path(path) + " is missing right after the worker wrote it; check --out";
        return false;
      }
      job.outputs.push_back(*o);
    }
    return true;
  }
  std::error_code ec;
  const fs::path dest_dir = file.out_base.parent_path();
  fs::create_directories(dest_dir, ec);
  if (ec) {
    error = "cannot create output directory " + dest_dir.string() + ": " + ec.message() + "; check --out";
    return false;
  }
  // Each output appears under --out by one rename, so no reader ever sees half a file, and a run
  // killed at any moment leaves only whole outputs there (stale staging is removed next run).
  for (const auto& entry : fs::directory_iterator(job.staging, ec)) {
    std::error_code rec;
    const fs::path dest = dest_dir / entry.path().filename();
    fs::rename(entry.path(), dest, rec);
    if (rec) {
      error = "cannot move output " + display_path(entry.path().string()) + " to " + display_path(dest_dir.string()) +
              ": " + rec.message();
      return false;
    }
    if (auto o = stat_output(dest.string())) job.outputs.push_back(*o);
  }
  release_staging(job, /*known_empty=*/true);
  return true;
}

void RunLoop::take_staging(Job& job) {
  if (!free_staging_.empty()) {
    job.staging = std::move(free_staging_.back());
    free_staging_.pop_back();
    return;
  }
  // A directory per concurrent job, reused: making and removing one per job cost the parent
  // more than the spawn itself (ext4 inode allocation, perf on 5,000 jobs of /bin/true).
  job.staging = staging_dir_ / fmt::format("s{}", ++staging_made_);
  std::error_code ec;
  fs::remove_all(job.staging, ec);
  fs::create_directories(job.staging, ec);
}

void RunLoop::release_staging(Job& job, bool known_empty) {
  if (job.staging.empty()) return;
  std::error_code ec;
  if (!known_empty)
    for (const auto& entry : fs::directory_iterator(job.staging, ec)) {
      std::error_code rec;
      fs::remove_all(entry.path(), rec);
    }
  free_staging_.push_back(std::move(job.staging));
  job.staging.clear();
}

/// One run's state and steps: the driver between the scheduler and the seams (worker runner,
/// memory probe, clock, history). RunLoop::run() is its top level.
struct RunLoop::Pass {
  Pass(RunLoop& owner, const Corpus& corpus);

  bool begin();                 ///< records the run; false: a setup error before any job
  void enqueue(const Corpus& corpus);
  void first_reading();
  bool step();                  ///< one turn of the loop; false once the run is over
  RunSummary finish();

  bool on_interrupts();         ///< false: stopping and nothing runs any more
  bool dispatch(std::int64_t now_ms);  ///< carries out the scheduler's decisions; false: all done
  std::size_t sample(std::int64_t read_ms);  ///< reads memory, tracks peaks, timeouts; returns running jobs
  void watch_workers(std::size_t running);   ///< heartbeats, the live line
  void handle_end(const JobEnd& end, bool stopping_now);
  void apply_outcome(Job& job, const JobEnd& end, const JobOutcome& outcome, const std::string& error,
                     const std::string& name);
  void learn_cost(const Job& job, const JobEnd& end);
  double audio_of(const Job& job) const { return job.audio_duration_s.value_or(mean_audio_s); }
  /// The job's file with its facts as the job last found them.
  CorpusFile file_of(const Job& job) const {
    CorpusFile f = files[job.file];
    f.size_bytes = job.size_bytes;
    f.mtime_ns = job.mtime_ns;
    f.audio_duration_s = job.audio_duration_s;
    return f;
  }
  /// Its file's path under its root, as progress and messages show it.
  std::string name_of(const Job& job) const { return display_path(files.relative_path(job.file)); }
  std::string audio_path_of(const Job& job) const { return display_path(files.audio_path(job.file)); }
  double cost_of(const Job& job) const { return cost_law.fixed_s + cost_law.per_audio_s * audio_of(job); }
  void retotal_work();
  void update_work_done();
  void fail_file(Job& job, std::string reason);
  void flush_history(bool force);
  void record(Job& job, JobStatus status, const JobEnd* end, const std::string& error, bool oom_suspected = false);
  void refit(Job& job);
  void fail_setup(std::string error);
  bool check_setup();

  RunLoop& loop;
  const RunLoopConfig& config_;
  WorkerRunner& runner_;
  HistoryStore* history_;
  ProgressSink& progress_;
  const std::function<int()>& interrupts_;
  Clock& clock_;
  RunLoopStats& stats_;
  std::int64_t& run_id_;
  const std::filesystem::path& staging_dir_;
  const CorpusFiles& files;

  const std::int64_t t0_ms;
  RunSummary summary;
  std::vector<JobRow> key_rows;
  std::unique_ptr<PredictionPolicy> policy;
  Scheduler scheduler;
  std::map<JobId, Job> jobs;
  ProgressState state;
  // The ETA's work: predicted job seconds (progress_sink.h's JobCostLaw).
  double mean_audio_s = 0;
  std::vector<std::pair<double, double>> costs_seen;  // (audio s, wall s) of ok jobs
  JobCostLaw cost_law;
  double finished_work_s = 0;
  std::map<JobId, double> running_fraction;  // the workers' status blocks: share of the file done
  std::optional<std::uint64_t> oom_kills_now;
  std::optional<std::uint64_t> cgroup_limit_bytes;
  std::uint64_t in_use_bytes = 0;
  // Ended jobs are recorded in batches, one transaction each: one commit per job cost more than
  // the job itself for tiny ones (10,000 /bin/true jobs: parent CPU 4.6 s with history, 2.5 s
  // without). A batch waits at most kHistoryBatchMs.
  std::vector<JobWrite> pending_history;
  std::int64_t history_flushed_ms;
  bool stopping = false, hard_stop = false;
  // Setup errors (WorkerRunner::setup_error, or one worker's idle memory above the budget) stop
  // the run at once, with one message and exit 2, instead of failing every file the same way.
  bool setup_failed = false;
  // Memory is read, and timeouts, heartbeats and the live line checked, on a deadline: once per
  // tick_ms, the first at once. In between the loop only waits, handles job ends as they come and
  // admits (a finished job's room is used at once, not at the next sample). Waking into a
  // reading at every job end read memory as often as jobs ended (40 jobs of 20 ms, 4 at once,
  // tick 200 ms: 28-85 reads a second, now 3-4 reads in all; orchestrator/run_loop_process_test).
  // A kill is always confirmed by a fresh reading of its own (confirm_kill below).
  std::int64_t next_sample_ms = 0;
};

RunSummary RunLoop::run(const Corpus& corpus) {
  Pass pass(*this, corpus);
  if (!pass.begin()) return pass.summary;
  pass.enqueue(corpus);
  pass.first_reading();
  while (pass.step()) {
  }
  return pass.finish();
}

RunLoop::Pass::Pass(RunLoop& owner, const Corpus& corpus)
    : loop(owner),
      config_(owner.config_),
      runner_(owner.runner_),
      history_(owner.history_),
      progress_(owner.progress_),
      interrupts_(owner.interrupts_),
      clock_(owner.clock_),
      stats_(owner.stats_),
      run_id_(owner.run_id_),
      staging_dir_(owner.staging_dir_),
      files(corpus.files),
      t0_ms(owner.clock_.now_ms()),
      scheduler(owner.config_.scheduler),
      history_flushed_ms(t0_ms - kHistoryBatchMs) {
  summary.total = corpus.files.size() + corpus.problems.size();
  summary.budget_bytes = config_.scheduler.budget_bytes;
  for (const auto& p : corpus.problems) summary.failed.push_back({display_path(p.path.string()), p.message});
}

bool RunLoop::Pass::begin() {
  if (history_) {
    RunInfo info;
    char host[256] = {0};
    ::gethostname(host, sizeof host - 1);
    info.host = host;
    info.cores = static_cast<std::uint32_t>(std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN)));
    info.budget_bytes = config_.scheduler.budget_bytes;
    info.mem_total_bytes = config_.mem_total_bytes;
    info.settings = config_.settings;
    auto r = history_->begin_run(info);
    if (r) run_id_ = r.value();
    else progress_.message("history: " + r.error() + " (this run is not recorded)");
  }
  if (config_.command) clean_stale_staging(config_.out_dir);

  // Predictions: the key's recorded jobs, refitted whenever one of ours finishes.
  if (history_) {
    auto r = history_->jobs_for_key(config_.job_key);
    if (r) key_rows = r.value();
  }
  policy = std::make_unique<PredictionPolicy>(key_rows, config_.prediction_scale);

  // The built-in engine's every job holds a loaded model: no job of this key ever needed less
  // than the smallest recorded peak. Above the budget, no file can run: say so once, start nothing.
  if (!config_.command && config_.scheduler.budget_bytes > 0) {
    std::uint64_t smallest = 0;
    std::size_t ok_jobs = 0;
    for (const auto& r : key_rows)
      if (r.status == JobStatus::kOk && r.peak_pss_bytes > 0) {
        smallest = ok_jobs++ == 0 ? r.peak_pss_bytes : std::min(smallest, r.peak_pss_bytes);
      }
    if (ok_jobs > 0 && smallest > config_.scheduler.budget_bytes) {
      summary.setup_error = fmt::format(
          "one align-batch-worker needs at least {} (the smallest peak of the {} jobs history holds for this model), "
          "more than the budget {}; raise --mem-budget (or the container's memory limit), or use a smaller model",
          format_bytes(smallest), ok_jobs, format_bytes(config_.scheduler.budget_bytes));
      summary.wall_s = static_cast<double>(clock_.now_ms() - t0_ms) / 1000.0;
      if (history_ && run_id_ != 0) (void)history_->end_run(run_id_, summary.exit_code());
      return false;
    }
  }
  return true;
}

void RunLoop::Pass::enqueue(const Corpus& corpus) {
  std::vector<FailedFile> plan_errors;
  const auto planned = loop.plan(corpus, plan_errors);
  for (auto& e : plan_errors) summary.failed.push_back(e);
  std::size_t to_run = 0;
  JobId next_id = 1;
  for (const auto& p : planned) {
    if (p.skip) {
      ++summary.skipped;
      continue;
    }
    Job job;
    job.id = next_id++;
    job.file = p.file;
    job.size_bytes = corpus.files.size_bytes(p.file);
    job.mtime_ns = corpus.files.mtime_ns(p.file);
    job.audio_duration_s = corpus.files.audio_duration_s(p.file);
    job.task = p.task;
    job.reason = p.reason;
    job.transcribed_for_want = p.transcribed_for_want;
    ++summary.run_reasons[p.reason.substr(0, p.reason.find(':'))];
    if (p.reason != kReasonNew) summary.reran.push_back({audio_path_of(job), p.reason});
    job.predicted_peak_bytes = p.predicted_peak_bytes;
    scheduler.add_job({job.id, job.size_bytes, p.predicted_peak_bytes, 0});
    jobs.emplace(job.id, std::move(job));
    ++to_run;
  }

  state.total = to_run;
  // The ETA counts predicted job seconds, wall ≈ fixed + per audio second × audio (progress_sink.h's
  // JobCostLaw), fitted on history's ok jobs of the key, else on this run's first ones; a file of
  // unknown duration counts as the mean of the known ones.
  double known_audio_s = 0;
  std::size_t known = 0;
  for (const auto& [id, job] : jobs)
    if (job.audio_duration_s) {
      known_audio_s += *job.audio_duration_s;
      ++known;
    }
  mean_audio_s = known ? known_audio_s / static_cast<double>(known) : 0;
  for (const auto& r : key_rows)
    if (r.status == JobStatus::kOk && r.audio_duration_s && *r.audio_duration_s > 0 && r.wall_s > 0)
      costs_seen.emplace_back(*r.audio_duration_s, r.wall_s);
  cost_law = fit_job_cost(costs_seen);
  costs_seen.clear();
  retotal_work();
  state.cap = config_.scheduler.max_workers;
  state.budget_bytes = config_.scheduler.budget_bytes;
}

void RunLoop::Pass::first_reading() {
  // A first reading before any job starts: the OOM counter's base and the cgroup's limit.
  auto first = loop.read_probe({}, {}, 0);
  oom_kills_now = first.oom_kill_count;
  cgroup_limit_bytes = first.cgroup_limit_bytes;
}

bool RunLoop::Pass::step() {
  const std::int64_t now_ms = clock_.now_ms() - t0_ms;
  if (!on_interrupts()) return false;
  if (!stopping && !dispatch(now_ms)) return false;
  const std::int64_t wait_ms = std::max<std::int64_t>(0, next_sample_ms - (clock_.now_ms() - t0_ms));
  const auto ended = runner_.wait(static_cast<int>(std::min<std::int64_t>(wait_ms, config_.tick_ms)));
  check_setup();  // before the ends: a job its broken worker ended is not the file's failure
  for (const auto& end : ended) handle_end(end, stopping);
  flush_history(false);  // a batch's time may be up with no job ending (long jobs)
  const std::int64_t read_ms = clock_.now_ms() - t0_ms;
  if (read_ms < next_sample_ms) return true;  // woken early (a job ended, output, a signal): not due yet
  next_sample_ms = read_ms + config_.tick_ms;
  watch_workers(sample(read_ms));
  return true;
}

bool RunLoop::Pass::on_interrupts() {
  const int interrupts = interrupts_ ? interrupts_() : 0;
  if (interrupts >= 1 && !stopping) {
    stopping = true;
    summary.interrupted = true;
    progress_.message("interrupted: stopping workers (Ctrl-C again to kill them at once)");
    for (const auto& l : runner_.live()) runner_.kill(l.id, config_.stop_grace_ms);
  }
  if (interrupts >= 2 && !hard_stop) {
    hard_stop = true;
    for (const auto& l : runner_.live()) runner_.kill(l.id, 0);
  }
  return !(stopping && runner_.live().empty());
}

bool RunLoop::Pass::dispatch(std::int64_t now_ms) {
  bool started = false;
  for (const auto& d : scheduler.poll(now_ms)) {
    Job& job = jobs.at(d.job);
    if (d.kind == Decision::Kind::kKill) {
      auto fresh = loop.read_probe(runner_.live(), runner_.idle_pids(), clock_.now_ms() - t0_ms, /*exact=*/true);
      if (scheduler.confirm_kill(d.job, fresh.sample)) {
        job.guard_kill = true;
        progress_.message(name_of(job) + ": stopping it to stay inside the budget (" + d.reason + ")");
        runner_.kill(d.job, config_.kill_grace_ms);
      }
    } else if (d.kind == Decision::Kind::kFail) {
      // A started job whose raised estimate no longer fits, while no worker has finished
      // loading its model: the estimate is a loading worker's memory, the same for every file.
      if (!config_.command && job.attempts > 0 && !runner_.ready_idle_bytes() &&
          d.reason.find("at peak but the budget is") != std::string::npos) {
        fail_setup(fmt::format(
            "one align-batch-worker needs more than the budget even idle: stopped while still loading the model "
            "(it held {}), it would need more than the budget {} to finish loading; raise --mem-budget (or the "
            "container's memory limit), or use a smaller model",
            format_bytes(std::max(job.peak_pss_bytes, job.loading_peak_pss_bytes)),
            format_bytes(config_.scheduler.budget_bytes)));
        break;
      }
      const std::string name = name_of(job);
      fail_file(job, d.reason);
      progress_.job_ended(name, "failed", d.reason, job.peak_pss_bytes, 0, state);
    } else {
      std::string error;
      CorpusFile file = file_of(job);
      if (!refresh_corpus_file(file, error)) {
        scheduler.on_job_ended(job.id, {JobOutcome::Kind::kFailed, 0, 0, false, error}, now_ms);
        fail_file(job, error);
        continue;
      }
      ++job.attempts;
      job.guard_kill = job.timed_out = job.hung = false;
      job.peak_pss_bytes = job.peak_rss_bytes = job.loading_peak_pss_bytes = 0;
      job.timeline.clear();
      job.oom_kills_at_start = oom_kills_now;
      job.size_bytes = file.size_bytes;
      job.mtime_ns = file.mtime_ns;
      job.audio_duration_s = file.audio_duration_s;
      RunnerJob rj = loop.make_runner_job(job, file);
      if (!runner_.start(rj, error)) {
        if (check_setup()) break;
        scheduler.on_job_ended(job.id, {JobOutcome::Kind::kFailed, 0, 0, false, error}, now_ms);
        fail_file(job, error);
        progress_.job_ended(name_of(job), "failed", error, 0, 0, state);
        continue;
      }
      job.running = true;
      started = true;
      job.started_ms = now_ms;
      job.started_unix_ms = clock_.unix_ms();
      progress_.job_started(name_of(job), job.attempts,
                            scheduler.estimate_bytes(job.id).value_or(0), state);
    }
  }
  // Idle workers the scheduler cannot give work to (nothing queued, or nothing queued fits
  // now) only hold memory that admission counts: let them go. A job that fits later starts
  // on the worker of the job whose end made room, or on a new one.
  if (!started) stats_.workers_retired += runner_.retire_idle(0);
  return !(scheduler.done() && runner_.live().empty());
}

std::size_t RunLoop::Pass::sample(std::int64_t read_ms) {
  const auto live = runner_.live();
  ProbeReading reading = loop.read_probe(live, runner_.idle_pids(), read_ms);
  if (reading.oom_kill_count) oom_kills_now = reading.oom_kill_count;
  if (reading.cgroup_limit_bytes) cgroup_limit_bytes = reading.cgroup_limit_bytes;
  in_use_bytes = reading.sample.idle_pss_bytes + reading.sample.shared_bytes;
  std::set<JobId> loading;
  for (const auto& l : live)
    if (l.loading) loading.insert(l.id);
  for (const auto& s : reading.sample.jobs) {
    in_use_bytes += s.pss_bytes;
    auto it = jobs.find(s.id);
    if (it == jobs.end() || !it->second.running) continue;
    Job& job = it->second;
    const std::uint64_t rss = reading.rss_bytes.count(s.id) ? reading.rss_bytes[s.id] : 0;
    if (loading.count(s.id)) {
      // The worker's model load, not the job: history would learn every first job of a worker
      // as a copy of the weights bigger. The scheduler still sees it (on_sample, below).
      job.loading_peak_pss_bytes = std::max(job.loading_peak_pss_bytes, s.pss_bytes);
    } else {
      job.peak_pss_bytes = std::max(job.peak_pss_bytes, s.pss_bytes);
      job.peak_rss_bytes = std::max(job.peak_rss_bytes, rss);
      job.timeline.push_back({read_ms - job.started_ms, rss, s.pss_bytes, s.vram_bytes});
      if (job.timeline.size() >= kTimelineThinAt)
        job.timeline = downsample_timeline(job.timeline, kTimelineThinAt / 2);
    }
    if (config_.timeout_ms > 0 && !job.timed_out && read_ms - job.started_ms > config_.timeout_ms) {
      job.timed_out = true;
      runner_.kill(job.id, config_.kill_grace_ms);
    }
  }
  if (!stopping) scheduler.on_sample(reading.sample);
  return live.size();
}

void RunLoop::Pass::watch_workers(std::size_t running) {
  // Built-in engine: the workers' status blocks. A silent heartbeat while a job runs means the
  // worker is stopped or wedged (its heartbeat has its own thread): kill it, retry the job.
  state.current.clear();
  std::int64_t oldest_start_ms = -1;
  for (const auto& w : runner_.progress()) {
    auto it = jobs.find(w.id);
    if (it == jobs.end() || !it->second.running) continue;
    Job& job = it->second;
    if (config_.hang_ms > 0 && !job.hung && w.silent_ms > config_.hang_ms) {
      job.hung = true;
      progress_.message(fmt::format("{}: its worker has not beaten for {:.1f} s; killing it and retrying the file",
                                    name_of(job), static_cast<double>(w.silent_ms) / 1000.0));
      runner_.kill(w.id, 0);
    }
    running_fraction[w.id] = std::clamp(w.fraction_done, 0.0, 1.0);
    if (oldest_start_ms < 0 || job.started_ms < oldest_start_ms) {
      oldest_start_ms = job.started_ms;
      state.current = fmt::format("{} {} {:.0f}%", name_of(job), w.phase, w.fraction_done * 100);
    }
  }

  state.running = running;
  state.in_use_bytes = in_use_bytes;
  update_work_done();
  progress_.tick(state);
}

void RunLoop::Pass::handle_end(const JobEnd& end, bool stopping_now) {
  auto it = jobs.find(end.id);
  if (it == jobs.end()) return;
  Job& job = it->second;
  job.running = false;
  running_fraction.erase(job.id);
  if (setup_failed && !end.ok) {
    // Not the file's doing: nothing to record or report for it; it runs next time. (A job that
    // finished before the run's fault showed, even in the same wait, is done and recorded as
    // such below: its outputs are in place, and the next run must not do it again.)
    std::error_code ec;
    if (!job.staging.empty()) fs::remove_all(job.staging, ec);
    return;
  }
  // A job shorter than the sampling interval may have no sample at all: its own peak RSS (the
  // worker's per-job VmHWM, or wait4's for a command) stands in, an upper bound of its PSS.
  if (end.peak_rss_bytes) {
    job.peak_rss_bytes = std::max(job.peak_rss_bytes, *end.peak_rss_bytes);
    if (job.peak_pss_bytes == 0) job.peak_pss_bytes = *end.peak_rss_bytes;
  }
  const std::string name = name_of(job);
  if (stopping_now && !end.ok) {
    // Interrupted: not the job's fault and not finished; the next run does it again.
    record(job, JobStatus::kKilled, &end, "interrupted");
    loop.release_staging(job, false);
    progress_.job_ended(name, "interrupted", "", job.peak_pss_bytes, end.wall_s, state);
    return;
  }
  bool oom_rose = false;
  if (!end.ok) {
    // Read the counter now: the kernel bumps it before the victim's exit reaches us.
    auto fresh = loop.read_probe(runner_.live(), runner_.idle_pids(), clock_.now_ms() - t0_ms);
    if (fresh.oom_kill_count) oom_kills_now = fresh.oom_kill_count;
    if (fresh.cgroup_limit_bytes) cgroup_limit_bytes = fresh.cgroup_limit_bytes;
    oom_rose = oom_kills_now && job.oom_kills_at_start && *oom_kills_now > *job.oom_kills_at_start;
  }
  AttemptFacts facts;
  facts.timed_out = job.timed_out;
  facts.hung = job.hung;
  facts.guard_kill = job.guard_kill;
  facts.oom_rose = oom_rose;
  facts.peak_pss_bytes = job.peak_pss_bytes;
  facts.last_pss_bytes = job.timeline.empty() ? 0 : job.timeline.back().pss_bytes;
  facts.in_use_bytes = in_use_bytes;
  facts.cgroup_limit_bytes = cgroup_limit_bytes;
  facts.timeout_ms = config_.timeout_ms;
  facts.hang_ms = config_.hang_ms;
  JobOutcome outcome = classify_end(end, facts);
  if (outcome.kind == JobOutcome::Kind::kOk) {
    std::string moved_error;
    if (!loop.finish_outputs(job, file_of(job), end, moved_error)) {
      outcome.kind = JobOutcome::Kind::kFailed;
      outcome.error = moved_error;
    }
  }
  const std::string error = outcome.error;
  if (outcome.kind != JobOutcome::Kind::kOk) loop.release_staging(job, false);
  const JobStatus status = outcome.kind == JobOutcome::Kind::kOk       ? JobStatus::kOk
                           : outcome.kind == JobOutcome::Kind::kFailed ? JobStatus::kFailed
                           : outcome.kind == JobOutcome::Kind::kDied   ? JobStatus::kDied
                                                                       : JobStatus::kKilled;
  record(job, status, &end, outcome.kind == JobOutcome::Kind::kOk ? std::string() : error,
         outcome.kind == JobOutcome::Kind::kDied && outcome.oom_suspected);
  scheduler.on_job_ended(job.id, outcome, clock_.now_ms() - t0_ms);
  apply_outcome(job, end, outcome, error, name);
}

void RunLoop::Pass::apply_outcome(Job& job, const JobEnd& end, const JobOutcome& outcome, const std::string& error,
                                   const std::string& name) {
  switch (outcome.kind) {
    case JobOutcome::Kind::kOk:
      job.finished = true;
      ++summary.done;
      ++state.done;
      finished_work_s += cost_of(job);
      learn_cost(job, end);
      update_work_done();
      if (end.band_limited) summary.band_limited.push_back(audio_path_of(job));
      if (job.transcribed_for_want) summary.transcribed_without_transcript.push_back(audio_path_of(job));
      progress_.job_ended(name, "done",
                          end.band_limited ? "aligned within a limited search band (may be off): raise --max-trellis-mib"
                                           : "",
                          job.peak_pss_bytes, end.wall_s, state, end.band_limited);
      refit(job);
      break;
    case JobOutcome::Kind::kFailed:
      fail_file(job, error);
      progress_.job_ended(name, "failed", error, job.peak_pss_bytes, end.wall_s, state);
      break;
    case JobOutcome::Kind::kDied:
      progress_.job_ended(name, "retry",
                          (outcome.oom_suspected ? "killed by the kernel (out of memory): " : "") + error,
                          job.peak_pss_bytes, end.wall_s, state);
      break;
    case JobOutcome::Kind::kGuardKilled:
      // Stopped above the high-water mark on its own while no worker had loaded its model yet:
      // one worker does not fit even idle, and every file would go the same way.
      if (!config_.command && !runner_.ready_idle_bytes() && config_.scheduler.budget_bytes > 0 &&
          static_cast<double>(std::max(job.peak_pss_bytes, job.loading_peak_pss_bytes)) >=
              config_.scheduler.high_water * static_cast<double>(config_.scheduler.budget_bytes)) {
        fail_setup(fmt::format(
            "one align-batch-worker needs more than the budget even idle: it held {} while still loading the model, "
            "above {:.0f}% of the budget {}; raise --mem-budget (or the container's memory limit), or use a smaller model",
            format_bytes(std::max(job.peak_pss_bytes, job.loading_peak_pss_bytes)), config_.scheduler.high_water * 100,
            format_bytes(config_.scheduler.budget_bytes)));
        break;
      }
      progress_.job_ended(name, "killed", "stopped by the memory guard, will run again with a raised estimate",
                          job.peak_pss_bytes, end.wall_s, state);
      break;
  }
}

void RunLoop::Pass::learn_cost(const Job& job, const JobEnd& end) {
  // Without history the cost law comes from this run's own jobs, tried at 5, 10, 20, ...
  // of them until their durations spread enough for a line.
  if (cost_law.calibrated || !job.audio_duration_s || end.wall_s <= 0) return;
  costs_seen.emplace_back(*job.audio_duration_s, end.wall_s);
  const std::size_t n = costs_seen.size();
  if (n >= kJobCostMinJobs && n % kJobCostMinJobs == 0 && ((n / kJobCostMinJobs) & (n / kJobCostMinJobs - 1)) == 0) {
    std::vector<double> left_audio_s;
    for (const auto& [id, other] : jobs)
      if (!other.finished) left_audio_s.push_back(audio_of(other));
    std::optional<double> median_left_s;
    if (!left_audio_s.empty()) {
      auto mid = left_audio_s.begin() + static_cast<std::ptrdiff_t>(left_audio_s.size() / 2);
      std::nth_element(left_audio_s.begin(), mid, left_audio_s.end());
      median_left_s = *mid;
    }
    const JobCostLaw fitted = fit_job_cost(costs_seen, median_left_s);
    if (fitted.calibrated) {
      cost_law = fitted;
      retotal_work();
    }
  }
}

void RunLoop::Pass::retotal_work() {
  state.work_total_s = finished_work_s = 0;
  for (const auto& [id, job] : jobs) {
    state.work_total_s += cost_of(job);
    if (job.finished) finished_work_s += cost_of(job);
  }
  state.work_calibrated = cost_law.calibrated;
  state.has_rate_origin = false;  // measured in the old law's units: the next update sets it again
}

void RunLoop::Pass::update_work_done() {
  state.work_done_s = finished_work_s;
  for (const auto& [id, fraction] : running_fraction) state.work_done_s += fraction * cost_of(jobs.at(id));
  state.elapsed_s = static_cast<double>(clock_.now_ms() - t0_ms) / 1000.0;
  // The own rate's origin. With a calibrated law (history), at the first end: a worker's first
  // job runs up to twice as slow as its later ones (bench/eta.sh, 600 s files: 11 s, then
  // 6 s), so a rate taken from the first jobs alone says the run will take twice as long;
  // the law covers that stretch. Without one (audio seconds, a proportion) there is nothing
  // else, so at the first progress after the workers' start-up: waiting for the first end
  // left the first quarter of a run whose longest files go first without an ETA.
  const bool any_progress = cost_law.calibrated ? state.done + state.failed > 0
                                                : state.work_done_s > 0 || state.done + state.failed > 0;
  if (!state.has_rate_origin && any_progress) {
    state.has_rate_origin = true;
    state.rate_origin_s = state.elapsed_s;
    state.rate_origin_work_s = state.work_done_s;
  }
}

void RunLoop::Pass::fail_file(Job& job, std::string reason) {
  job.finished = true;
  finished_work_s += cost_of(job);
  running_fraction.erase(job.id);
  update_work_done();
  // The summary names the file; a reason that starts with the same path (the worker's errors
  // do) would say it twice.
  const std::string prefix = audio_path_of(job) + ": ";
  if (reason.compare(0, prefix.size(), prefix) == 0) reason.erase(0, prefix.size());
  summary.failed.push_back({audio_path_of(job), reason});
  ++state.failed;
}

void RunLoop::Pass::flush_history(bool force) {
  if (pending_history.empty()) return;
  const std::int64_t now = clock_.now_ms();
  if (!force && pending_history.size() < kHistoryBatchJobs && now - history_flushed_ms < kHistoryBatchMs) return;
  auto r = history_->record_jobs(pending_history, config_.timeline_points);
  if (!r) progress_.message("history: " + r.error());
  pending_history.clear();
  history_flushed_ms = now;
}

void RunLoop::Pass::record(Job& job, JobStatus status, const JobEnd* end, const std::string& error, bool oom_suspected) {
  if (!history_ || run_id_ == 0) return;
  JobRecord rec;
  rec.run_id = run_id_;
  rec.input_path = files.audio_path(job.file);  // the bytes as they are: resume looks it up by them
  rec.input_size_bytes = job.size_bytes;
  rec.input_mtime_ns = job.mtime_ns;
  rec.audio_duration_s = job.audio_duration_s;
  rec.job_key = config_.job_key;
  rec.status = status;
  rec.attempts = job.attempts;
  rec.peak_rss_bytes = job.peak_rss_bytes;
  rec.peak_pss_bytes = job.peak_pss_bytes;
  if (end) {
    rec.wall_s = end->wall_s;
    rec.cpu_s = end->cpu_s;
    if (end->exit_code >= 0) rec.exit_status = end->exit_code;
    if (end->term_signal) rec.term_signal = end->term_signal;
  }
  rec.error = error;
  rec.task = job.task;
  rec.transcript_hash = job.transcript_hash;
  if (status == JobStatus::kOk) rec.outputs = job.outputs;
  if (job.started_unix_ms) rec.started_at_ms = job.started_unix_ms;
  rec.predicted_peak_bytes = job.predicted_peak_bytes;
  rec.oom_suspected = oom_suspected;
  pending_history.push_back({std::move(rec), job.timeline});
  flush_history(false);
}

void RunLoop::Pass::refit(Job& job) {
  JobRow row;
  row.run_id = run_id_;
  row.input_size_bytes = job.size_bytes;
  row.audio_duration_s = job.audio_duration_s;
  row.peak_pss_bytes = job.peak_pss_bytes;
  row.peak_rss_bytes = job.peak_rss_bytes;
  row.status = JobStatus::kOk;
  row.job_key = config_.job_key;
  if (!policy->learn(row)) return;
  // Every job of this run has the run's key; only queued ones take a new prediction (a running
  // job keeps what admission reserved for it until it ends).
  std::vector<std::pair<JobId, std::uint64_t>> predictions;
  for (auto& [id, other] : jobs)
    if (!other.finished && !other.running)
      if (auto predicted = policy->predict(other.size_bytes, other.audio_duration_s)) {
        other.predicted_peak_bytes = predicted;
        predictions.emplace_back(id, *predicted);
      }
  scheduler.set_predictions(predictions);
  ++stats_.refits;
  stats_.predictions_updated += predictions.size();
}

void RunLoop::Pass::fail_setup(std::string error) {
  setup_failed = stopping = true;
  summary.setup_error = std::move(error);
  for (const auto& l : runner_.live()) runner_.kill(l.id, 0);
}

bool RunLoop::Pass::check_setup() {
  if (setup_failed) return true;
  std::string error = runner_.setup_error();
  const auto idle = runner_.ready_idle_bytes();
  if (error.empty() && idle && config_.scheduler.budget_bytes > 0 && *idle > config_.scheduler.budget_bytes)
    error = fmt::format(
        "one align-batch-worker needs {} even idle (its PSS once the model was loaded), more than the budget {}; "
        "raise --mem-budget (or the container's memory limit), or use a smaller model",
        format_bytes(*idle), format_bytes(config_.scheduler.budget_bytes));
  if (error.empty()) return false;
  fail_setup(std::move(error));
  return true;
}

RunSummary RunLoop::Pass::finish() {
  for (const auto& end : runner_.shutdown(config_.stop_grace_ms)) handle_end(end, true);
  flush_history(true);

  const SchedulerStats& st = scheduler.stats();
  stats_.peak_running = st.peak_running;
  summary.retried = st.retried;
  summary.guard_killed = st.guard_kills;
  summary.oom_deaths = st.oom_deaths;
  summary.peak_pss_bytes = st.peak_total_pss_bytes;
  summary.wall_s = static_cast<double>(clock_.now_ms() - t0_ms) / 1000.0;
  if (history_ && run_id_ != 0) {
    // Every job is already recorded; only the run's end time and exit code would be missing.
    if (auto r = history_->end_run(run_id_, summary.exit_code()); !r) progress_.message("history: " + r.error());
  }
  std::error_code ec;
  fs::remove_all(staging_dir_, ec);  // the pool's directories, empty by now
  return summary;
}

}  // namespace ab
