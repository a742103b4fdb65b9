// BatchDriver: poll the scheduler, carry out its decisions, wait, map ends to outcomes, sample.
#include "orchestrator/batch/batch_driver.h"

#include <algorithm>
#include <set>

#include "orchestrator/batch/job_end.h"
#include "orchestrator/batch/prediction_policy.h"

namespace ab {
namespace {

// Points kept per running job before it is thinned (bounded memory for hour-long jobs).
constexpr std::size_t kTimelineThinAt = 4096;

// What a worker held while its job ran, its model's loading included.
std::uint64_t held_bytes(const DriverAttempt& a) { return std::max(a.peak_pss_bytes, a.loading_peak_pss_bytes); }

// The outcome of a job that failed for good before it could start.
JobOutcome unstarted(const std::string& error) {
  JobOutcome o;
  o.kind = JobOutcome::Kind::kFailed;
  o.error = error;
  return o;
}

}  // namespace

BatchDriver::BatchDriver(DriverConfig config, WorkerRunner& runner, MemoryProbe& probe, Clock& clock, JobSink& sink,
                         PredictionPolicy* policy, std::function<int()> interrupts)
    : config_(std::move(config)),
      runner_(runner),
      probe_(probe),
      clock_(clock),
      sink_(sink),
      policy_(policy),
      interrupts_(std::move(interrupts)),
      t0_ms_(clock.now_ms()),
      scheduler_(config_.scheduler) {}

JobId BatchDriver::add_job(DriverJob job) {
  job.id = static_cast<JobId>(jobs_.size() + 1);
  scheduler_.add_job({job.id, job.size_bytes, job.predicted_peak_bytes, 0});
  jobs_.push_back(std::move(job));
  return jobs_.back().id;
}

void BatchDriver::run() {
  first_reading();
  while (step()) {
  }
  for (const auto& end : runner_.shutdown(config_.stop_grace_ms)) handle_end(end, true);
}

ProbeReading BatchDriver::read(bool exact) {
  ++stats_.memory_reads;
  return probe_.read(runner_.live(), runner_.idle_pids(), elapsed_ms(), exact);
}

void BatchDriver::first_reading() {
  // A first reading before any job starts: the OOM counter's base, the cgroup's limit, and for
  // admission the shared weights the workers will map (charged once, from the first start on:
  // unread, three 3 GiB jobs started beside 3 GiB of weights in a 10 GiB budget, and one was
  // killed at the first tick).
  ++stats_.memory_reads;
  auto first = probe_.read({}, {}, 0);
  oom_kills_now_ = first.oom_kill_count;
  cgroup_limit_bytes_ = first.cgroup_limit_bytes;
  in_use_bytes_ = first.sample.idle_pss_bytes + first.sample.shared_bytes;
  sink_.sampled(first.sample, in_use_bytes_);
  scheduler_.on_sample(first.sample);
}

bool BatchDriver::step() {
  const std::int64_t now_ms = elapsed_ms();
  if (!on_interrupts()) return false;
  if (!stopping_ && !dispatch(now_ms)) return false;
  const std::int64_t wait_ms = std::max<std::int64_t>(0, next_sample_ms_ - elapsed_ms());
  const auto ended = runner_.wait(static_cast<int>(std::min<std::int64_t>(wait_ms, config_.tick_ms)));
  check_setup();  // before the ends: a job its broken worker ended is not the file's failure
  for (const auto& end : ended) handle_end(end, stopping_);
  sink_.after_wait();  // a history batch's time may be up with no job ending (long jobs)
  const std::int64_t read_ms = elapsed_ms();
  if (read_ms < next_sample_ms_) return true;  // woken early (a job ended, output, a signal): not due yet
  next_sample_ms_ = read_ms + config_.tick_ms;
  watch_workers(sample(read_ms));
  return true;
}

bool BatchDriver::on_interrupts() {
  const int interrupts = interrupts_ ? interrupts_() : 0;
  if (interrupts >= 1 && !stopping_) {
    stopping_ = interrupted_ = true;
    sink_.notice(nullptr, "interrupted: stopping workers (Ctrl-C again to kill them at once)");
    for (const auto& l : runner_.live()) runner_.kill(l.id, config_.stop_grace_ms);
  }
  if (interrupts >= 2 && !hard_stop_) {
    hard_stop_ = true;
    for (const auto& l : runner_.live()) runner_.kill(l.id, 0);
  }
  return !(stopping_ && runner_.live().empty());
}

bool BatchDriver::dispatch(std::int64_t now_ms) {
  bool started = false;
  for (const auto& d : scheduler_.poll(now_ms)) {
    DriverJob& job = jobs_[d.job - 1];
    if (d.kind == Decision::Kind::kKill) {
      confirm_kill(job, d);
    } else if (d.kind == Decision::Kind::kFail) {
      // A started job whose raised estimate no longer fits, while no worker has finished
      // loading its model: the estimate is a loading worker's memory, the same for every file.
      if (config_.persistent_workers && job.attempts > 0 && !runner_.ready_idle_bytes() &&
          d.reason.kind == Reason::Kind::kNeedsMoreThanBudget) {
        fail_setup(Reason::over(Reason::Kind::kWorkerOverBudgetLoading, held_bytes(job.attempt()),
                                config_.scheduler.budget_bytes));
        break;
      }
      job.finished = true;
      sink_.refused(job, d.reason);
      job.current.reset();
    } else {
      start(job, now_ms, started);
      if (setup_failed()) break;
    }
  }
  // Idle workers the scheduler cannot give work to (nothing queued, or nothing queued fits
  // now) only hold memory that admission counts: let them go. A job that fits later starts
  // on the worker of the job whose end made room, or on a new one.
  if (!started) stats_.workers_retired += static_cast<std::uint32_t>(runner_.retire_idle(0));
  if (stalled(now_ms, started)) return false;
  return !(scheduler_.done() && runner_.live().empty());
}

void BatchDriver::confirm_kill(DriverJob& job, const Decision& d) {
  const ProbeReading fresh = read(/*exact=*/true);
  if (!scheduler_.confirm_kill(d.job, fresh.sample)) return;
  job.current->guard_kill = true;
  sink_.stopping(job, d.reason);
  runner_.kill(d.job, config_.kill_grace_ms);
}

void BatchDriver::start(DriverJob& job, std::int64_t now_ms, bool& started) {
  Result<RunnerJob> prepared = sink_.prepare(job);
  if (!prepared) {
    scheduler_.on_job_ended(job.id, unstarted(prepared.error()), now_ms);
    job.finished = true;
    sink_.failed(job, prepared.error(), false);
    job.current.reset();
    return;
  }
  ++job.attempts;
  job.current = std::make_unique<DriverAttempt>();
  job.current->oom_kills_at_start = oom_kills_now_;
  job.current->started_ms = now_ms;
  if (Result<Done> ran = runner_.start(prepared.value()); !ran) {
    if (check_setup()) return;
    scheduler_.on_job_ended(job.id, unstarted(ran.error()), now_ms);
    job.finished = true;
    sink_.failed(job, ran.error(), true);
    job.current.reset();
    return;
  }
  job.running = true;
  started = true;
  sink_.started(job, scheduler_.estimate_bytes(job.id).value_or(0));
}

bool BatchDriver::stalled(std::int64_t now_ms, bool started) {
  if (!config_.stop_when_stalled || started || scheduler_.queued() == 0 || scheduler_.pending_decisions() > 0)
    return false;
  if (scheduler_.paused_until_ms() > now_ms || !runner_.live().empty()) return false;
  stalled_jobs_ = scheduler_.queued();
  return true;
}

std::size_t BatchDriver::sample(std::int64_t read_ms) {
  const auto live = runner_.live();
  ++stats_.memory_reads;
  ProbeReading reading = probe_.read(live, runner_.idle_pids(), read_ms);
  if (reading.oom_kill_count) oom_kills_now_ = reading.oom_kill_count;
  if (reading.cgroup_limit_bytes) cgroup_limit_bytes_ = reading.cgroup_limit_bytes;
  in_use_bytes_ = reading.sample.idle_pss_bytes + reading.sample.shared_bytes;
  std::set<JobId> loading;
  for (const auto& l : live)
    if (l.loading) loading.insert(l.id);
  for (const auto& s : reading.sample.jobs) {
    in_use_bytes_ += s.pss_bytes;
    if (s.id == 0 || s.id > jobs_.size() || !jobs_[s.id - 1].running) continue;
    DriverJob& job = jobs_[s.id - 1];
    DriverAttempt& a = *job.current;
    const auto rss_it = reading.rss_bytes.find(s.id);
    const std::uint64_t rss = rss_it != reading.rss_bytes.end() ? rss_it->second : 0;
    if (loading.count(s.id)) {
      // The worker's model load, not the job: history would learn every first job of a worker
      // as a copy of the weights bigger. The scheduler still sees it (on_sample, below).
      a.loading_peak_pss_bytes = std::max(a.loading_peak_pss_bytes, s.pss_bytes);
    } else {
      a.peak_pss_bytes = std::max(a.peak_pss_bytes, s.pss_bytes);
      a.peak_rss_bytes = std::max(a.peak_rss_bytes, rss);
      if (config_.keep_timelines) {
        a.timeline.push_back({read_ms - a.started_ms, rss, s.pss_bytes, s.vram_bytes});
        if (a.timeline.size() >= kTimelineThinAt) a.timeline = downsample_timeline(a.timeline, kTimelineThinAt / 2);
      }
    }
    if (config_.timeout_ms > 0 && !a.timed_out && read_ms - a.started_ms > config_.timeout_ms) {
      a.timed_out = true;
      runner_.kill(job.id, config_.kill_grace_ms);
    }
  }
  sink_.sampled(reading.sample, in_use_bytes_);
  if (!stopping_ && !(reading.within_reservations && scheduler_.queued_unpredicted() == 0))
    scheduler_.on_sample(reading.sample);
  return live.size();
}

void BatchDriver::watch_workers(std::size_t running) {
  // Built-in engine: the workers' status blocks. A silent heartbeat while a job runs means the
  // worker is stopped or wedged (its heartbeat has its own thread): kill it, retry the job.
  const std::vector<WorkerProgress> workers = runner_.progress();
  for (const auto& w : workers) {
    if (w.id == 0 || w.id > jobs_.size()) continue;
    DriverJob& job = jobs_[w.id - 1];
    if (!job.running || config_.hang_ms <= 0 || job.current->hung || w.silent_ms <= config_.hang_ms) continue;
    job.current->hung = true;
    Reason silent;
    silent.kind = Reason::Kind::kWorkerSilent;
    silent.silent_s = static_cast<double>(w.silent_ms) / 1000.0;
    sink_.hung(job, silent);
    runner_.kill(w.id, 0);
  }
  sink_.tick(running, in_use_bytes_, workers);
}

void BatchDriver::handle_end(const JobEnd& end, bool stopping_now) {
  if (end.id == 0 || end.id > jobs_.size()) return;
  DriverJob& job = jobs_[end.id - 1];
  job.running = false;
  if (!job.current) job.current = std::make_unique<DriverAttempt>();  // an end the runner made up
  settle(job, end, stopping_now);
  if (job.finished || stopping_now || setup_failed()) job.current.reset();  // it runs no more in this run
}

void BatchDriver::settle(DriverJob& job, const JobEnd& end, bool stopping_now) {
  DriverAttempt& a = *job.current;
  if (setup_failed() && !end.ok) {
    // Not the file's doing: nothing to record or report for it; it runs next time. (A job that
    // finished before the run's fault showed, even in the same wait, is done and recorded as
    // such: its outputs are in place, and the next run must not do it again.)
    sink_.stopped(job, end, true);
    return;
  }
  // A job shorter than the sampling interval may have no sample at all: its own peak RSS (the
  // worker's per-job VmHWM, or wait4's for a command) stands in, an upper bound of its PSS.
  if (end.peak_rss_bytes) {
    a.peak_rss_bytes = std::max(a.peak_rss_bytes, *end.peak_rss_bytes);
    if (a.peak_pss_bytes == 0) a.peak_pss_bytes = *end.peak_rss_bytes;
  }
  if (end.peak_pss_bytes) a.peak_pss_bytes = std::max(a.peak_pss_bytes, *end.peak_pss_bytes);
  if (stopping_now && !end.ok) {
    sink_.stopped(job, end, false);  // interrupted: not finished, the next run does it again
    return;
  }
  bool oom_rose = false;
  if (!end.ok) {
    // Read the counter now: the kernel bumps it before the victim's exit reaches us.
    const ProbeReading fresh = read();
    if (fresh.oom_kill_count) oom_kills_now_ = fresh.oom_kill_count;
    if (fresh.cgroup_limit_bytes) cgroup_limit_bytes_ = fresh.cgroup_limit_bytes;
    oom_rose = oom_kills_now_ && a.oom_kills_at_start && *oom_kills_now_ > *a.oom_kills_at_start;
  }
  AttemptFacts facts;
  facts.timed_out = a.timed_out;
  facts.hung = a.hung;
  facts.guard_kill = a.guard_kill;
  facts.oom_rose = oom_rose;
  facts.peak_pss_bytes = a.peak_pss_bytes;
  facts.last_pss_bytes = a.timeline.empty() ? 0 : a.timeline.back().pss_bytes;
  facts.in_use_bytes = in_use_bytes_;
  facts.cgroup_limit_bytes = cgroup_limit_bytes_;
  facts.timeout_ms = config_.timeout_ms;
  facts.hang_ms = config_.hang_ms;
  JobOutcome outcome = classify_end(end, facts);
  sink_.ended(job, end, outcome);
  scheduler_.on_job_ended(job.id, outcome, elapsed_ms());
  if (outcome.kind == JobOutcome::Kind::kGuardKilled && loading_fault(job)) {
    // Stopped above the high-water mark on its own while no worker had loaded its model yet:
    // one worker does not fit even idle, and every file would go the same way.
    Reason fault = Reason::over(Reason::Kind::kWorkerAboveMarkLoading, held_bytes(a), config_.scheduler.budget_bytes);
    fault.percent = config_.scheduler.high_water * 100;
    fail_setup(std::move(fault));
    return;
  }
  job.finished = outcome.kind == JobOutcome::Kind::kOk || outcome.kind == JobOutcome::Kind::kFailed;
  sink_.settled(job, end, outcome);
  if (outcome.kind == JobOutcome::Kind::kOk) refit(job);
}

bool BatchDriver::loading_fault(const DriverJob& job) const {
  return config_.persistent_workers && !runner_.ready_idle_bytes() && config_.scheduler.budget_bytes > 0 &&
         static_cast<double>(held_bytes(job.attempt())) >=
             config_.scheduler.high_water * static_cast<double>(config_.scheduler.budget_bytes);
}

void BatchDriver::refit(const DriverJob& done) {
  if (!policy_) return;
  JobRow row;
  row.input_size_bytes = done.size_bytes;
  row.audio_duration_s = done.audio_duration_s;
  row.peak_pss_bytes = done.attempt().peak_pss_bytes;
  row.peak_rss_bytes = done.attempt().peak_rss_bytes;
  row.status = JobStatus::kOk;
  if (!policy_->learn(row)) return;
  // Only queued jobs take a new prediction (a running job keeps what admission reserved for it
  // until it ends).
  std::vector<std::pair<JobId, std::uint64_t>> predictions;
  for (auto& other : jobs_)
    if (!other.finished && !other.running)
      if (auto predicted = policy_->predict(other.size_bytes, other.audio_duration_s)) {
        other.predicted_peak_bytes = predicted;
        predictions.emplace_back(other.id, *predicted);
      }
  scheduler_.set_predictions(predictions);
  ++stats_.refits;
  stats_.predictions_updated += predictions.size();
}

void BatchDriver::fail_setup(Reason fault) {
  stopping_ = true;
  setup_fault_ = std::move(fault);
  for (const auto& l : runner_.live()) runner_.kill(l.id, 0);
}

bool BatchDriver::check_setup() {
  if (setup_failed()) return true;
  Reason fault;
  const auto idle = runner_.ready_idle_bytes();
  if (std::string error = runner_.setup_error(); !error.empty()) {
    fault.kind = Reason::Kind::kWorkerSetupFailed;
    fault.last_error = std::move(error);
  } else if (idle && config_.scheduler.budget_bytes > 0 && *idle > config_.scheduler.budget_bytes) {
    fault = Reason::over(Reason::Kind::kWorkerIdleOverBudget, *idle, config_.scheduler.budget_bytes);
  }
  if (fault.kind == Reason::Kind::kNone) return false;
  fail_setup(std::move(fault));
  return true;
}

}  // namespace ab
