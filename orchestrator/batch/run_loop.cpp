// RunLoop: the orchestrator's event loop — admit, sample, guard, record, retry, resume.
#include "orchestrator/batch/run_loop.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <system_error>

#include <fmt/format.h>

#include "protocol/wire_path.h"
#include "history/history_store.h"
#include "history/timeline.h"
#include "common/bytes.h"
#include "orchestrator/batch/batch_driver.h"
#include "orchestrator/batch/clock.h"
#include "orchestrator/batch/job_end.h"
#include "orchestrator/batch/prediction_policy.h"
#include "orchestrator/batch/resume.h"
#include "protocol/alignment_size.h"
#include "protocol/job_messages.h"

namespace fs = std::filesystem;

namespace ab {
namespace {

// History batches: written once this many jobs have ended, or once this long has passed since
// the last write. So a job ending after a quiet spell is written at once, and only jobs ending
// faster than one per 50 ms share transactions (at 1,000 jobs/s, about 50 a commit). 50 ms:
// what a run killed by SIGKILL may lose of its record (those files run again next time).
constexpr std::size_t kHistoryBatchJobs = 1000;
constexpr std::int64_t kHistoryBatchMs = 50;

}  // namespace

/// What a file's job holds only while an attempt of it is under way: made when it is prepared,
/// dropped once it is recorded. In the Job itself these held ~110 bytes of every queued file, and
/// an ok job's outputs kept their paths' heap to the end of the run.
struct RunLoop::Attempt {
  std::int64_t started_unix_ms = 0;  ///< for history (reports draw it)
  fs::path staging;  ///< external engine: this attempt's {out} directory (one of the pool's)
  std::optional<std::string> transcript_hash;  ///< this attempt's transcript, hashed as it was sent
  std::vector<OutputFile> outputs;  ///< what an ok attempt wrote, stat'ed right after
};

/// A file's side of a job (the driver keeps its attempts, peaks and timeline: DriverJob). 64
/// bytes: one is held for every queued file (bench/many_jobs.sh's memory line).
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
  std::unique_ptr<Attempt> attempt;  ///< while an attempt is under way
  /// What it runs, in task_names_: "align", "transcribe" or "command" (recorded for resume).
  std::uint8_t task = 0;
  bool transcribed_for_want = false;
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
  out.reserve(corpus.files.size());
  for (std::size_t i = 0; i < corpus.files.size(); ++i) {
    const CorpusFile f = corpus.files[i];
    PlannedFile p;
    p.file = i;
    p.task = task_for(f);
    p.transcribed_for_want = !config_.command && config_.task == "auto" && !f.transcript && any_transcript;
    if (!config_.command && config_.task == "align" && !f.transcript) {
      fs::path stem = f.audio;
      stem.replace_extension();
      errors.push_back({display_path(f.audio.string()),
                        progress_.describe(Reason::about(Reason::Kind::kNoTranscript, stem.filename().string()))});
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
  release_staging(job, false);  // an attempt prepared but never started
  job.attempt = std::make_unique<Attempt>();
  // An external command may read the transcript too ({dir}/{stem}.txt): only transcription does not.
  job.attempt->transcript_hash = task_of(job) == "transcribe" ? std::nullopt : transcript_hash_of(f);
  if (config_.command) {
    take_staging(job);
    CommandPlaceholders values{f.audio, job.attempt->staging / f.out_base.filename(), f.audio.stem().string(),
                               f.audio.parent_path()};
    rj.argv = config_.command->expand(values);
  } else {
    std::error_code ec;
    fs::create_directories(f.out_base.parent_path(), ec);
    JobRequest request{static_cast<std::int64_t>(job.id), f.audio.string(), std::nullopt, f.out_base.string(), task_of(job)};
    if (f.transcript) request.transcript = f.transcript->string();
    rj.request_json = job_request_line(request);
  }
  return rj;
}

Result<Done> RunLoop::finish_outputs(Job& job, const CorpusFile& file, const JobEnd& end) {
  using R = Result<Done>;
  if (!config_.command) {
    // The worker wrote its outputs atomically itself; resume checks them by what they are now.
    // An ok result without them cannot be checked by the next run, which would then skip the
    // file whatever became of its outputs: such an attempt is not done.
    if (end.outputs.empty())
      return R::failure("the worker reported success but no output files; see its log");
    for (const auto& path : end.outputs) {
      auto o = stat_output(path);
      if (!o) return R::failure(progress_.describe(Reason::about(Reason::Kind::kOutputMissing, display_path(path))));
      job.attempt->outputs.push_back(*o);
    }
    return Done{};
  }
  std::error_code ec;
  const fs::path dest_dir = file.out_base.parent_path();
  fs::create_directories(dest_dir, ec);
  if (ec) {
    Reason r = Reason::about(Reason::Kind::kCannotCreateOutputDir, dest_dir.string());
    r.last_error = ec.message();
    return R::failure(progress_.describe(r));
  }
  // Each output appears under --out by one rename, so no reader ever sees half a file, and a run
  // killed at any moment leaves only whole outputs there (stale staging is removed next run).
  for (const auto& entry : fs::directory_iterator(job.attempt->staging, ec)) {
    std::error_code rec;
    const fs::path dest = dest_dir / entry.path().filename();
    fs::rename(entry.path(), dest, rec);
    if (rec)
      return R::failure("cannot move output " + display_path(entry.path().string()) + " to " +
                        display_path(dest_dir.string()) + ": " + rec.message());
    if (auto o = stat_output(dest.string())) job.attempt->outputs.push_back(*o);
  }
  if (ec)  // a listing cut short would leave outputs behind while the file counted as done
    return R::failure("cannot list the command's outputs in " + display_path(job.attempt->staging.string()) + ": " +
                      ec.message());
  release_staging(job, /*known_empty=*/true);
  return Done{};
}

void RunLoop::take_staging(Job& job) {
  fs::path& staging = job.attempt->staging;
  if (!free_staging_.empty()) {
    staging = std::move(free_staging_.back());
    free_staging_.pop_back();
    return;
  }
  // A directory per concurrent job, reused: making and removing one per job cost the parent
  // more than the spawn itself (ext4 inode allocation, perf on 5,000 jobs of /bin/true).
  staging = staging_dir_ / fmt::format("s{}", ++staging_made_);
  std::error_code ec;
  fs::remove_all(staging, ec);
  fs::create_directories(staging, ec);
}

void RunLoop::release_staging(Job& job, bool known_empty) {
  if (!job.attempt || job.attempt->staging.empty()) return;
  fs::path& staging = job.attempt->staging;
  std::error_code ec;
  if (!known_empty)
    for (const auto& entry : fs::directory_iterator(staging, ec)) {
      std::error_code rec;
      fs::remove_all(entry.path(), rec);
    }
  if (ec) {
    // No longer a directory it can list (its command replaced or removed it): back in the pool,
    // every later job given it would fail. A new one is made when one is needed.
    fs::remove_all(staging, ec);
    staging.clear();
    return;
  }
  free_staging_.push_back(std::move(staging));
  staging.clear();
}

const std::string& RunLoop::task_of(const Job& job) const { return task_names_[job.task]; }

std::uint8_t RunLoop::task_index(const std::string& task) {
  auto it = std::find(task_names_.begin(), task_names_.end(), task);
  if (it == task_names_.end()) it = task_names_.insert(task_names_.end(), task);
  return static_cast<std::uint8_t>(it - task_names_.begin());
}

/// One run of the corpus: the batch driver (batch_driver.h) runs its jobs; this is its job sink:
/// the files, their outputs, history's records, the summary, the ETA and the progress display.
struct RunLoop::Pass : JobSink {
  Pass(RunLoop& owner, const Corpus& corpus);

  bool begin();  ///< records the run; false: a setup error before any job
  void enqueue(const Corpus& corpus);
  RunSummary finish();

  Result<RunnerJob> prepare(DriverJob& job) override;
  void started(const DriverJob& job, std::uint64_t estimate_bytes) override;
  void ended(DriverJob& job, const JobEnd& end, JobOutcome& outcome) override;
  void settled(const DriverJob& job, const JobEnd& end, const JobOutcome& outcome) override;
  void stopped(DriverJob& job, const JobEnd& end, bool setup_fault) override;
  void failed(DriverJob& job, const std::string& reason, bool announce) override;
  void refused(DriverJob& job, const Reason& reason) override { failed(job, progress_.describe(reason), true); }
  void stopping(const DriverJob& job, const Reason& reason) override {
    notice(&job, "stopping it to stay inside the budget (" + progress_.describe(reason) + ")");
  }
  void notice(const DriverJob* job, const std::string& text) override;
  void hung(const DriverJob& job, const Reason& reason) override { notice(&job, progress_.describe(reason)); }
  void tick(std::size_t running, std::uint64_t in_use_bytes, const std::vector<WorkerProgress>& workers) override;
  void sampled(const MemorySample& sample, std::uint64_t in_use_bytes) override;
  void after_wait() override { flush_history(false); }

  Job& file_job(JobId id) { return jobs[id - 1]; }
  /// The job's file with its facts as the job last found them.
  CorpusFile file_of(const Job& job) const {
    CorpusFile f = files[job.file];
    f.size_bytes = job.size_bytes;
    f.mtime_ns = job.mtime_ns;
    f.audio_duration_s = job.audio_duration_s;
    return f;
  }
  /// Its file's path under its root, as progress and messages show it.
  std::string name_of(JobId id) const { return display_path(files.relative_path(jobs[id - 1].file)); }
  std::string audio_path_of(const Job& job) const { return display_path(files.audio_path(job.file)); }
  void learn_cost(const Job& job, const JobEnd& end);
  double audio_of(const Job& job) const { return job.audio_duration_s.value_or(mean_audio_s); }
  double cost_of(const Job& job) const { return cost_law.fixed_s + cost_law.per_audio_s * audio_of(job); }
  void retotal_work();
  void update_work_done();
  void fail_file(Job& job, std::string reason);
  void flush_history(bool force);
  void record(const DriverJob& dj, JobStatus status, const JobEnd* end, const std::string& error,
              bool oom_suspected = false);

  RunLoop& loop;
  const RunLoopConfig& config_;
  HistoryStore* history_;
  ProgressSink& progress_;
  Clock& clock_;
  std::int64_t& run_id_;
  const CorpusFiles& files;

  RunSummary summary;
  std::vector<JobRow> key_rows;
  std::unique_ptr<PredictionPolicy> policy;
  std::unique_ptr<BatchDriver> driver;
  std::vector<Job> jobs;  ///< by JobId - 1
  ProgressState state;
  // The ETA's work: predicted job seconds (progress_sink.h's JobCostLaw).
  double mean_audio_s = 0;
  std::vector<std::pair<double, double>> costs_seen;  // (audio s, wall s) of ok jobs
  JobCostLaw cost_law;
  double finished_work_s = 0;
  std::map<JobId, double> running_fraction;  // the workers' status blocks: share of the file done
  // Ended jobs are recorded in batches, one transaction each: one commit per job cost more than
  // the job itself for tiny ones (10,000 /bin/true jobs: parent CPU 4.6 s with history, 2.5 s
  // without). A batch waits at most kHistoryBatchMs.
  std::vector<JobWrite> pending_history;
  std::int64_t history_flushed_ms;
  // The machine around the jobs (history's run_samples), one reading a second, written with
  // the job batches; times since the run's start as history recorded it.
  std::vector<RunSample> pending_samples;
  std::int64_t run_started_unix_ms = 0;
  std::optional<std::int64_t> last_sample_ms;
};

RunSummary RunLoop::run(const Corpus& corpus) {
  Pass pass(*this, corpus);
  if (!pass.begin()) return pass.summary;
  pass.enqueue(corpus);
  pass.driver->run();
  return pass.finish();
}

DriverConfig RunLoop::driver_config() const {
  DriverConfig d = config_.driver;
  d.persistent_workers = !config_.command;
  return d;
}

RunLoop::Pass::Pass(RunLoop& owner, const Corpus& corpus)
    : loop(owner),
      config_(owner.config_),
      history_(owner.history_),
      progress_(owner.progress_),
      clock_(owner.clock_),
      run_id_(owner.run_id_),
      files(corpus.files),
      history_flushed_ms(owner.clock_.now_ms() - kHistoryBatchMs) {
  summary.total = corpus.files.size() + corpus.problems.size();
  summary.budget_bytes = config_.driver.scheduler.budget_bytes;
  for (const auto& p : corpus.problems) summary.failed.push_back({display_path(p.path.string()), p.message});
  // Predictions: the key's recorded jobs, refitted whenever one of ours finishes.
  if (history_) {
    auto r = history_->jobs_for_key(config_.job_key);
    if (r) key_rows = r.value();
  }
  policy = std::make_unique<PredictionPolicy>(key_rows, config_.prediction_scale);
  driver = std::make_unique<BatchDriver>(owner.driver_config(), owner.runner_, owner.probe_, owner.clock_, *this,
                                         policy.get(), owner.interrupts_);
}

bool RunLoop::Pass::begin() {
  if (history_) {
    RunInfo info;
    char host[256] = {0};
    ::gethostname(host, sizeof host - 1);
    info.host = host;
    info.cores = static_cast<std::uint32_t>(std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN)));
    info.budget_bytes = config_.driver.scheduler.budget_bytes;
    info.mem_total_bytes = config_.mem_total_bytes;
    info.settings = config_.settings;
    run_started_unix_ms = clock_.unix_ms();  // as begin_run stamps started_at_ms
    auto r = history_->begin_run(info);
    if (r) run_id_ = r.value();
    else progress_.message("history: " + r.error() + " (this run is not recorded)");
  }
  if (config_.command) clean_stale_staging(config_.out_dir);

  // The built-in engine's every job holds a loaded model: no job of this key ever needed less
  // than the smallest recorded peak. Above the budget, no file can run: say so once, start nothing.
  if (!config_.command && config_.driver.scheduler.budget_bytes > 0) {
    std::uint64_t smallest = 0;
    std::size_t ok_jobs = 0;
    for (const auto& r : key_rows)
      if (r.status == JobStatus::kOk && r.peak_pss_bytes > 0) {
        smallest = ok_jobs++ == 0 ? r.peak_pss_bytes : std::min(smallest, r.peak_pss_bytes);
      }
    if (ok_jobs > 0 && smallest > config_.driver.scheduler.budget_bytes) {
      Reason fault =
          Reason::over(Reason::Kind::kWorkerPeaksOverBudget, smallest, config_.driver.scheduler.budget_bytes);
      fault.count = static_cast<std::uint32_t>(ok_jobs);
      summary.setup_error = progress_.describe(fault);
      summary.wall_s = static_cast<double>(driver->elapsed_ms()) / 1000.0;
      if (history_ && run_id_ != 0) (void)history_->end_run(run_id_, summary.exit_code());
      return false;
    }
  }
  return true;
}

void RunLoop::Pass::enqueue(const Corpus& corpus) {
  std::vector<FailedFile> plan_errors;
  auto planned = loop.plan(corpus, plan_errors);
  for (auto& e : plan_errors) summary.failed.push_back(e);
  // The files' jobs first, then the plan is let go, then the driver's jobs: the plan (~100 bytes
  // a file) is never held beside the driver's and the scheduler's records.
  const auto to_run = static_cast<std::size_t>(
      std::count_if(planned.begin(), planned.end(), [](const PlannedFile& p) { return !p.skip; }));
  jobs.reserve(to_run);
  std::vector<std::optional<std::uint64_t>> predicted;
  predicted.reserve(to_run);
  for (const auto& p : planned) {
    if (p.skip) {
      ++summary.skipped;
      continue;
    }
    Job job;
    job.file = p.file;
    job.size_bytes = corpus.files.size_bytes(p.file);
    job.mtime_ns = corpus.files.mtime_ns(p.file);
    job.audio_duration_s = corpus.files.audio_duration_s(p.file);
    job.task = loop.task_index(p.task);
    job.transcribed_for_want = p.transcribed_for_want;
    ++summary.run_reasons[p.reason.substr(0, p.reason.find(':'))];
    if (p.reason != kReasonNew) summary.reran.push_back({audio_path_of(job), p.reason});
    predicted.push_back(p.predicted_peak_bytes);
    jobs.push_back(std::move(job));
  }
  planned = {};
  driver->reserve(jobs.size());
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    DriverJob dj;
    dj.size_bytes = jobs[i].size_bytes;
    dj.audio_duration_s = jobs[i].audio_duration_s;
    dj.predicted_peak_bytes = predicted[i];
    jobs[i].id = driver->add_job(std::move(dj));
  }

  state.total = jobs.size();
  // The ETA counts predicted job seconds, wall ≈ fixed + per audio second × audio (progress_sink.h's
  // JobCostLaw), fitted on history's ok jobs of the key, else on this run's first ones; a file of
  // unknown duration counts as the mean of the known ones.
  double known_audio_s = 0;
  std::size_t known = 0;
  for (const auto& job : jobs)
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
  state.cap = config_.driver.scheduler.max_workers;
  state.budget_bytes = config_.driver.scheduler.budget_bytes;
}

Result<RunnerJob> RunLoop::Pass::prepare(DriverJob& dj) {
  Job& job = file_job(dj.id);
  CorpusFile file = file_of(job);
  if (auto fresh = refresh_corpus_file(file); !fresh) return Result<RunnerJob>::failure(fresh.error());
  // The size and duration may have changed since the scan; predictions follow the file as it is.
  job.size_bytes = dj.size_bytes = file.size_bytes;
  job.mtime_ns = file.mtime_ns;
  job.audio_duration_s = dj.audio_duration_s = file.audio_duration_s;
  return loop.make_runner_job(job, file);
}

void RunLoop::Pass::started(const DriverJob& dj, std::uint64_t estimate_bytes) {
  if (Job& job = file_job(dj.id); job.attempt) job.attempt->started_unix_ms = clock_.unix_ms();
  progress_.job_started(name_of(dj.id), dj.attempts, estimate_bytes, state);
}

void RunLoop::Pass::ended(DriverJob& dj, const JobEnd& end, JobOutcome& outcome) {
  Job& job = file_job(dj.id);
  running_fraction.erase(dj.id);
  // Worded before anything reads the error: history's row, the summary, the scheduler's last error.
  if (outcome.reason.kind != Reason::Kind::kNone) outcome.error = progress_.describe(outcome.reason);
  if (outcome.kind == JobOutcome::Kind::kOk) {
    if (auto moved = loop.finish_outputs(job, file_of(job), end); !moved) {
      outcome.kind = JobOutcome::Kind::kFailed;
      outcome.error = moved.error();
    }
  }
  if (outcome.kind != JobOutcome::Kind::kOk) loop.release_staging(job, false);
  const JobStatus status = outcome.kind == JobOutcome::Kind::kOk       ? JobStatus::kOk
                           : outcome.kind == JobOutcome::Kind::kFailed ? JobStatus::kFailed
                           : outcome.kind == JobOutcome::Kind::kDied   ? JobStatus::kDied
                                                                       : JobStatus::kKilled;
  record(dj, status, &end, outcome.kind == JobOutcome::Kind::kOk ? std::string() : outcome.error,
         outcome.kind == JobOutcome::Kind::kDied && outcome.oom_suspected);
  job.attempt.reset();
}

void RunLoop::Pass::settled(const DriverJob& dj, const JobEnd& end, const JobOutcome& outcome) {
  Job& job = file_job(dj.id);
  const std::string name = name_of(dj.id);
  switch (outcome.kind) {
    case JobOutcome::Kind::kOk:
      ++summary.done;
      ++state.done;
      finished_work_s += cost_of(job);
      learn_cost(job, end);
      update_work_done();
      if (end.band_limited) summary.band_limited.push_back(audio_path_of(job));
      if (job.transcribed_for_want) summary.transcribed_without_transcript.push_back(audio_path_of(job));
      progress_.job_ended(name, "done", "", dj.attempt().peak_pss_bytes, end.wall_s, state, end.band_limited);
      break;
    case JobOutcome::Kind::kFailed:
      fail_file(job, outcome.error);
      progress_.job_ended(name, "failed", outcome.error, dj.attempt().peak_pss_bytes, end.wall_s, state);
      break;
    case JobOutcome::Kind::kDied:
      progress_.job_ended(name, "retry",
                          (outcome.oom_suspected ? "killed by the kernel (out of memory): " : "") + outcome.error,
                          dj.attempt().peak_pss_bytes, end.wall_s, state);
      break;
    case JobOutcome::Kind::kGuardKilled:
      progress_.job_ended(name, "killed", "stopped by the memory guard, will run again with a raised estimate",
                          dj.attempt().peak_pss_bytes, end.wall_s, state);
      break;
  }
}

void RunLoop::Pass::stopped(DriverJob& dj, const JobEnd& end, bool setup_fault) {
  Job& job = file_job(dj.id);
  running_fraction.erase(dj.id);
  if (setup_fault) {
    std::error_code ec;
    if (job.attempt && !job.attempt->staging.empty()) fs::remove_all(job.attempt->staging, ec);
    job.attempt.reset();
    return;
  }
  // Interrupted: not the job's fault and not finished; the next run does it again.
  record(dj, JobStatus::kKilled, &end, "interrupted");
  loop.release_staging(job, false);
  job.attempt.reset();
  progress_.job_ended(name_of(dj.id), "interrupted", "", dj.attempt().peak_pss_bytes, end.wall_s, state);
}

void RunLoop::Pass::failed(DriverJob& dj, const std::string& reason, bool announce) {
  Job& job = file_job(dj.id);
  loop.release_staging(job, false);  // prepared, but it could not start
  job.attempt.reset();
  fail_file(job, reason);
  if (announce) progress_.job_ended(name_of(dj.id), "failed", reason, dj.attempt().peak_pss_bytes, 0, state);
}

void RunLoop::Pass::notice(const DriverJob* dj, const std::string& text) {
  progress_.message(dj ? name_of(dj->id) + ": " + text : text);
}

void RunLoop::Pass::tick(std::size_t running, std::uint64_t in_use_bytes, const std::vector<WorkerProgress>& workers) {
  // The live line: the oldest running job's worker status, and the running share of each file.
  state.current.clear();
  std::int64_t oldest_start_ms = -1;
  for (const auto& w : workers) {
    if (w.id == 0 || w.id > jobs.size() || !driver->job(w.id).running) continue;
    const DriverJob& dj = driver->job(w.id);
    running_fraction[w.id] = std::clamp(w.fraction_done, 0.0, 1.0);
    if (oldest_start_ms < 0 || dj.attempt().started_ms < oldest_start_ms) {
      oldest_start_ms = dj.attempt().started_ms;
      state.current = fmt::format("{} {} {:.0f}%", name_of(w.id), w.phase, w.fraction_done * 100);
    }
  }
  state.running = running;
  state.in_use_bytes = in_use_bytes;
  update_work_done();
  progress_.tick(state);
}

void RunLoop::Pass::learn_cost(const Job& job, const JobEnd& end) {
  // Without history the cost law comes from this run's own jobs, tried at 5, 10, 20, ...
  // of them until their durations spread enough for a line. Not from a worker's first job: its
  // start-up is no cost of its file (with it, one run's law came out as 1.4 s a file and nothing
  // per audio second, and the ETA at half-time was 8-15 times the time left: bench/eta.sh).
  if (cost_law.calibrated || !job.audio_duration_s || end.wall_s <= 0 || end.worker_first_job) return;
  costs_seen.emplace_back(*job.audio_duration_s, end.wall_s);
  const std::size_t n = costs_seen.size();
  if (n >= kJobCostMinJobs && n % kJobCostMinJobs == 0 && ((n / kJobCostMinJobs) & (n / kJobCostMinJobs - 1)) == 0) {
    std::vector<double> left_audio_s;
    for (const auto& other : jobs)
      if (!driver->job(other.id).finished) left_audio_s.push_back(audio_of(other));
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
  for (const auto& job : jobs) {
    state.work_total_s += cost_of(job);
    if (driver->job(job.id).finished) finished_work_s += cost_of(job);
  }
  state.work_calibrated = cost_law.calibrated;
  state.has_rate_origin = false;  // measured in the old law's units: the next update sets it again
}

void RunLoop::Pass::update_work_done() {
  state.work_done_s = finished_work_s;
  for (const auto& [id, fraction] : running_fraction) state.work_done_s += fraction * cost_of(file_job(id));
  state.elapsed_s = static_cast<double>(driver->elapsed_ms()) / 1000.0;
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

void RunLoop::Pass::sampled(const MemorySample& sample, std::uint64_t in_use_bytes) {
  if (!history_ || run_id_ == 0) return;
  const std::int64_t t_ms = clock_.unix_ms() - run_started_unix_ms;
  if (last_sample_ms && t_ms - *last_sample_ms < kRunSampleEveryMs) return;
  last_sample_ms = t_ms;
  pending_samples.push_back({t_ms, in_use_bytes, sample.shared_bytes, sample.mem_available_bytes, sample.psi_full_avg10});
}

void RunLoop::Pass::flush_history(bool force) {
  if (pending_history.empty() && pending_samples.empty()) return;
  const std::int64_t now = clock_.now_ms();
  if (!force && pending_history.size() < kHistoryBatchJobs && now - history_flushed_ms < kHistoryBatchMs) return;
  auto r = history_->record_jobs(pending_history, config_.timeline_points);
  if (!r) progress_.message("history: " + r.error());
  pending_history.clear();
  if (auto s = history_->record_run_samples(run_id_, pending_samples); !s) progress_.message("history: " + s.error());
  pending_samples.clear();
  history_flushed_ms = now;
}

void RunLoop::Pass::record(const DriverJob& dj, JobStatus status, const JobEnd* end, const std::string& error,
                           bool oom_suspected) {
  if (!history_ || run_id_ == 0) return;
  const Job& job = file_job(dj.id);
  JobRecord rec;
  rec.run_id = run_id_;
  rec.input_path = files.audio_path(job.file);  // the bytes as they are: resume looks it up by them
  rec.input_size_bytes = job.size_bytes;
  rec.input_mtime_ns = job.mtime_ns;
  rec.audio_duration_s = job.audio_duration_s;
  rec.job_key = config_.job_key;
  rec.status = status;
  rec.attempts = dj.attempts;
  rec.peak_rss_bytes = dj.attempt().peak_rss_bytes;
  rec.peak_pss_bytes = dj.attempt().peak_pss_bytes;
  if (end) {
    rec.wall_s = end->wall_s;
    rec.cpu_s = end->cpu_s;
    if (end->exit_code >= 0) rec.exit_status = end->exit_code;
    if (end->term_signal) rec.term_signal = end->term_signal;
  }
  rec.error = error;
  rec.task = loop.task_of(job);
  if (const Attempt* a = job.attempt.get()) {
    rec.transcript_hash = a->transcript_hash;
    if (status == JobStatus::kOk) rec.outputs = a->outputs;
    if (a->started_unix_ms) rec.started_at_ms = a->started_unix_ms;
  }
  rec.predicted_peak_bytes = dj.predicted_peak_bytes;
  rec.oom_suspected = oom_suspected;
  // Now, as the end is handled: the batch it joins is written up to kHistoryBatchMs later, and
  // the report draws concurrency from these times.
  rec.finished_at_ms = clock_.unix_ms();
  pending_history.push_back({std::move(rec), dj.attempt().timeline});
  flush_history(false);
}

RunSummary RunLoop::Pass::finish() {
  flush_history(true);
  const SchedulerStats& st = driver->scheduler().stats();
  const DriverStats& ds = driver->stats();
  loop.stats_.refits = ds.refits;
  loop.stats_.predictions_updated = ds.predictions_updated;
  loop.stats_.workers_retired = ds.workers_retired;
  loop.stats_.memory_reads = ds.memory_reads;
  loop.stats_.peak_running = st.peak_running;
  summary.interrupted = driver->interrupted();
  if (driver->setup_failed()) summary.setup_error = progress_.describe(driver->setup_fault());
  summary.retried = st.retried;
  summary.guard_killed = st.guard_kills;
  summary.oom_deaths = st.oom_deaths;
  summary.peak_pss_bytes = st.peak_total_pss_bytes;
  summary.wall_s = static_cast<double>(driver->elapsed_ms()) / 1000.0;
  if (history_ && run_id_ != 0) {
    // Every job is already recorded; only the run's end time and exit code would be missing.
    if (auto r = history_->end_run(run_id_, summary.exit_code()); !r) progress_.message("history: " + r.error());
  }
  std::error_code ec;
  fs::remove_all(loop.staging_dir_, ec);  // the pool's directories, empty by now
  return summary;
}

}  // namespace ab
