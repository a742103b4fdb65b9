// Replay: the batch driver over a simulated machine (runner, probe and clock) of recorded jobs.
#include "orchestrator/batch/replay_run.h"

#include <signal.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <queue>
#include <tuple>
#include <utility>

#include "orchestrator/batch/batch_driver.h"
#include "orchestrator/batch/prediction_policy.h"

namespace ab {
namespace {

// Keep at most this many failure reasons in a result: the report names a few, not thousands.
constexpr std::size_t kMaxFailReasons = 10;

/// The recorded machine behind the driver's three seams: it runs recorded jobs (WorkerRunner),
/// reads their memory at their age (MemoryProbe) and keeps virtual time (Clock), which only
/// wait() moves. Jobs share the cores by processor sharing; a job's memory follows its work, so a
/// slowed job holds its memory longer.
class ReplayMachine final : public WorkerRunner, public MemoryProbe, public Clock {
 public:
  /// `by_job[id - 1]`: the recorded job that job `id` replays.
  ReplayMachine(const std::vector<RecordedJob>& recorded, const std::vector<std::uint32_t>& by_job,
                const ReplaySettings& settings)
      : recorded_(recorded),
        by_job_(by_job),
        cores_(settings.cores),
        vram_matters_(settings.scheduler.vram_budget_bytes > 0),
        shutdown_ms_(std::max<std::int64_t>(0, settings.shutdown_ms)),
        machine_(settings.machine),
        reserve_bytes_(settings.scheduler.reserve_bytes),
        psi_limit_(settings.scheduler.psi_full_avg10_limit),
        runs_(by_job.size()) {
    max_bytes_.reserve(recorded.size());
    for (const auto& r : recorded) max_bytes_.push_back(recorded_max_bytes(r));
  }

  std::int64_t now_ms() override { return now_ms_; }
  std::int64_t unix_ms() override { return now_ms_; }

  Result<Done> start(const RunnerJob& job) override {
    Run& r = runs_[job.id - 1];
    const RecordedJob& rec = recorded_of(job.id);
    r.work_start_ms = work_ms_;
    r.started_ms = now_ms_;
    ++r.generation;
    r.cursor = 0;
    r.slot = static_cast<std::int32_t>(running_.size());
    running_.push_back(job.id);
    r.loud = true;  // until reserve() says what admission reserved for it
    ++loud_running_;
    utilisation_ += utilisation_of(rec);
    ends_.emplace(work_ms_ + rec.duration_s * 1000.0, job.id, r.generation);
    return Done{};
  }

  /// Admission reserved `bytes` for running job `id`: whether its recording outgrows that.
  void reserve(JobId id, std::uint64_t bytes) {
    Run& r = runs_[id - 1];
    const bool loud = max_bytes_[by_job_[id - 1]] > bytes;
    if (r.slot < 0 || loud == r.loud) return;
    r.loud = loud;
    if (loud) ++loud_running_;
    else --loud_running_;
  }

  std::vector<JobEnd> wait(int timeout_ms) override {
    if (!killed_.empty()) return std::exchange(killed_, {});
    const double rate = cores_ == 0 || utilisation_ <= cores_ ? 1.0 : cores_ / utilisation_;
    while (!ends_.empty() && !current(ends_.top())) ends_.pop();
    std::int64_t next = now_ms_ + std::max(0, timeout_ms);
    if (!ends_.empty()) {
      const double end_at = static_cast<double>(now_ms_) + (std::get<0>(ends_.top()) - work_ms_) / rate;
      next = std::min(next, std::max(now_ms_, static_cast<std::int64_t>(std::ceil(end_at - 1e-6))));
    }
    const double dt = static_cast<double>(next - now_ms_);
    concurrency_ms_ += dt * static_cast<double>(running_.size());
    work_ms_ += rate * dt;
    now_ms_ = next;
    std::vector<JobEnd> out;
    while (!ends_.empty() && (!current(ends_.top()) || std::get<0>(ends_.top()) <= work_ms_ + 1e-6)) {
      const auto [w, id, gen] = ends_.top();
      ends_.pop();
      if (!current({w, id, gen})) continue;
      JobEnd e = end_of(id);
      e.ok = true;
      e.exit_code = 0;
      e.peak_pss_bytes = recorded_of(id).peak_pss_bytes;
      remove_running(id);
      out.push_back(e);
    }
    return out;
  }

  void kill(JobId id, int) override {
    Run& r = runs_[id - 1];
    if (r.slot < 0) return;
    // The real loop's SIGTERM takes a moment; here the memory is gone at once, and the work.
    lost_work_s_ += (work_ms_ - r.work_start_ms) / 1000.0;
    JobEnd e = end_of(id);
    e.killed_by_us = true;
    e.term_signal = SIGTERM;
    e.error = "stopped";
    remove_running(id);
    killed_.push_back(e);
  }

  std::vector<LiveJob> live() const override {
    std::vector<LiveJob> out;
    out.reserve(running_.size());
    for (JobId id : running_) out.push_back({id, static_cast<pid_t>(id)});
    return out;
  }
  std::vector<pid_t> idle_pids() const override { return {}; }
  std::vector<JobEnd> shutdown(int) override {
    while (!running_.empty()) kill(running_.back(), 0);
    now_ms_ += shutdown_ms_;  // the workers' exit, as the recorded run's took
    return std::exchange(killed_, {});
  }

  /// Time passes with nothing running (the recorded run's start-up before its first job).
  void idle_for(std::int64_t ms) { now_ms_ += std::max<std::int64_t>(0, ms); }

  ProbeReading read(const std::vector<LiveJob>&, const std::vector<pid_t>&, std::int64_t now_ms, bool) override {
    ProbeReading r;
    r.sample.now_ms = now_ms;
    r.sample.jobs.reserve(running_.size());
    for (JobId id : running_) {
      Run& run = runs_[id - 1];
      const RecordedUse use = use_at(recorded_of(id), work_ms_ - run.work_start_ms, run.cursor);
      r.sample.jobs.push_back({id, use.pss_bytes, use.vram_bytes});
    }
    const bool around_matters = add_machine(r.sample);
    // Every job within its reservation, no idle memory and nothing new around the jobs: the
    // reading cannot lead to a kill.
    r.within_reservations = loud_running_ == 0 && !vram_matters_ && !around_matters;
    return r;
  }

  double concurrency_ms() const { return concurrency_ms_; }
  double lost_work_s() const { return lost_work_s_; }

 private:
  struct Run {
    double work_start_ms = 0;      ///< work clock when it started
    std::int64_t started_ms = 0;   ///< virtual time when it started
    std::uint32_t generation = 0;  ///< bumps on each start, so stale end events are ignored
    std::uint32_t cursor = 0;      ///< timeline segment reached
    std::int32_t slot = -1;        ///< position in running_; -1: not running
    bool loud = false;             ///< its recording goes above what admission reserved for it
  };
  /// (work end ms, id, generation), earliest first.
  using EndEvent = std::tuple<double, JobId, std::uint32_t>;

  const RecordedJob& recorded_of(JobId id) const { return recorded_[by_job_[id - 1]]; }
  bool current(const EndEvent& e) const {
    const Run& r = runs_[std::get<1>(e) - 1];
    return r.slot >= 0 && r.generation == std::get<2>(e);
  }
  JobEnd end_of(JobId id) const {
    JobEnd e;
    e.id = id;
    e.wall_s = static_cast<double>(now_ms_ - runs_[id - 1].started_ms) / 1000.0;
    return e;
  }
  void remove_running(JobId id) {
    Run& r = runs_[id - 1];
    const auto slot = static_cast<std::size_t>(r.slot);
    runs_[running_.back() - 1].slot = r.slot;
    running_[slot] = running_.back();
    running_.pop_back();
    r.slot = -1;
    if (r.loud) --loud_running_;
    utilisation_ -= utilisation_of(recorded_of(id));
    if (running_.empty()) utilisation_ = 0;  // no drift when idle
  }

  /// The recorded machine around the jobs at `sample.now_ms` (ReplaySettings::machine): its
  /// shared weights, its pressure, and as available what was then, less what these jobs hold
  /// beyond the real ones. Whether the scheduler must see this reading: the weights changed, or
  /// the pressure or the memory left crosses the guard's line.
  bool add_machine(MemorySample& sample) {
    if (machine_.empty()) return false;
    while (machine_at_ + 1 < machine_.size() && machine_[machine_at_ + 1].t_ms <= sample.now_ms) ++machine_at_;
    const RunSample& then = machine_[machine_at_];  // before the first: the first (the weights are known then)
    sample.shared_bytes = then.shared_bytes;
    // Past the recording (a --scale or slower replay runs longer than the run did), the weights
    // and the other programs' memory hold, but not the pressure: the run's own jobs made it.
    const bool past_end = machine_at_ + 1 == machine_.size() && sample.now_ms > then.t_ms + kRunSampleEveryMs;
    sample.psi_full_avg10 = past_end ? std::nullopt : then.psi_full_avg10;
    if (then.mem_available_bytes) {
      std::uint64_t ours = sample.shared_bytes;
      for (const auto& j : sample.jobs) ours += j.pss_bytes;
      const std::uint64_t free_then = *then.mem_available_bytes + then.ours_bytes;
      sample.mem_available_bytes = free_then > ours ? free_then - ours : 0;
    }
    const bool weights_changed = sample.shared_bytes != shared_told_;
    shared_told_ = sample.shared_bytes;
    return weights_changed || (sample.psi_full_avg10 && *sample.psi_full_avg10 > psi_limit_) ||
           (reserve_bytes_ > 0 && sample.mem_available_bytes && *sample.mem_available_bytes < reserve_bytes_);
  }

  const std::vector<RecordedJob>& recorded_;
  const std::vector<std::uint32_t>& by_job_;
  const std::uint32_t cores_;
  const bool vram_matters_;
  const std::int64_t shutdown_ms_;
  const std::vector<RunSample>& machine_;
  const std::uint64_t reserve_bytes_;
  const double psi_limit_;
  std::size_t machine_at_ = 0;      ///< the latest reading of machine_ at or before now
  std::uint64_t shared_told_ = 0;   ///< the shared weights the scheduler last saw
  std::vector<std::uint64_t> max_bytes_;  ///< per recorded job
  std::vector<Run> runs_;                 ///< per job id - 1
  std::vector<JobId> running_;            ///< unordered (Run::slot = index)
  std::priority_queue<EndEvent, std::vector<EndEvent>, std::greater<>> ends_;
  std::vector<JobEnd> killed_;            ///< ends the next wait() returns at once
  std::int64_t now_ms_ = 0;
  double work_ms_ = 0;
  double utilisation_ = 0;
  std::uint32_t loud_running_ = 0;
  double concurrency_ms_ = 0;
  double lost_work_s_ = 0;
};

/// Replay's job sink: the figures of the simulated run.
class ReplaySink final : public JobSink {
 public:
  ReplaySink(ReplayMachine& machine, ReplayResult& result, std::int64_t interval_ms)
      : machine_(machine), result_(result), interval_ms_(interval_ms) {}

  Result<RunnerJob> prepare(DriverJob& job) override {
    RunnerJob rj;
    rj.id = job.id;
    return rj;
  }
  void started(const DriverJob& job, std::uint64_t estimate_bytes) override { machine_.reserve(job.id, estimate_bytes); }
  void ended(DriverJob&, const JobEnd&, JobOutcome&) override {}
  void settled(const DriverJob&, const JobEnd&, const JobOutcome& outcome) override {
    if (outcome.kind == JobOutcome::Kind::kOk) {
      ++result_.ok;
      last_end_ms_ = machine_.now_ms();
    } else if (outcome.kind == JobOutcome::Kind::kFailed) {
      ++result_.failed;
    }
  }
  void stopped(DriverJob&, const JobEnd&, bool) override {}
  void failed(DriverJob&, const std::string&, bool) override { ++result_.failed; }
  void refused(DriverJob&, const Reason& reason) override {
    ++result_.failed;
    if (result_.fail_reasons.size() < kMaxFailReasons) result_.fail_reasons.push_back(reason);
  }
  void stopping(const DriverJob&, const Reason&) override {}
  void notice(const DriverJob*, const std::string&) override {}
  void tick(std::size_t, std::uint64_t in_use_bytes, const std::vector<WorkerProgress>&) override {
    result_.peak_total_bytes = std::max(result_.peak_total_bytes, in_use_bytes);
    memory_ms_ += static_cast<double>(in_use_bytes) * static_cast<double>(interval_ms_);
  }

  std::int64_t last_end_ms() const { return last_end_ms_; }
  double memory_ms() const { return memory_ms_; }

 private:
  ReplayMachine& machine_;
  ReplayResult& result_;
  const std::int64_t interval_ms_;
  std::int64_t last_end_ms_ = 0;
  double memory_ms_ = 0;  ///< sum over readings of memory in use x the interval
};

}  // namespace

ReplayResult replay(const std::vector<RecordedJob>& recorded, const std::vector<std::uint32_t>& picks,
                    const ReplaySettings& settings) {
  ReplayResult result;
  result.jobs = static_cast<std::uint32_t>(picks.size());
  auto predicted_of = [&](std::uint32_t pick) -> std::optional<std::uint64_t> {
    const RecordedJob& rec = recorded[pick];
    if (!settings.use_predictions || !rec.predicted_peak_bytes) return std::nullopt;
    return scaled_bytes(*rec.predicted_peak_bytes, settings.prediction_scale);
  };
  // Job ids follow the scheduler's own queue order (estimate, then size, largest first), so the
  // queue is built in O(n) rather than O(n log n) with a cache miss per level. Ids only break
  // ties, so this changes no decision.
  std::vector<std::uint32_t> order = picks;
  std::stable_sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
    const auto pa = predicted_of(a), pb = predicted_of(b);
    if (pa.value_or(0) != pb.value_or(0)) return pa.value_or(0) > pb.value_or(0);
    return recorded[a].size_bytes > recorded[b].size_bytes;
  });

  DriverConfig config;
  config.scheduler = settings.scheduler;
  config.tick_ms = static_cast<int>(std::max<std::int64_t>(1, settings.sample_interval_ms));
  config.keep_timelines = false;
  config.stop_when_stalled = true;
  ReplayMachine machine(recorded, order, settings);
  ReplaySink sink(machine, result, config.tick_ms);
  std::unique_ptr<PredictionPolicy> policy;
  if (settings.cold && settings.use_predictions)  // margin applied by the policy, as in the real loop
    policy = std::make_unique<PredictionPolicy>(std::vector<JobRow>{}, settings.prediction_scale);
  BatchDriver driver(config, machine, machine, machine, sink, policy.get());
  for (std::uint32_t pick : order) {
    DriverJob job;
    job.size_bytes = recorded[pick].size_bytes;
    job.audio_duration_s = recorded[pick].audio_duration_s;
    if (!settings.cold) job.predicted_peak_bytes = predicted_of(pick);
    driver.add_job(std::move(job));
  }
  machine.idle_for(settings.startup_ms);
  driver.run();

  result.stats = driver.scheduler().stats();
  result.lost_work_s = machine.lost_work_s();
  const auto last_end_ms = static_cast<double>(sink.last_end_ms());
  // As the real run's summary counts it: from its start to its end, workers' exit included.
  result.makespan_s = last_end_ms > 0 ? static_cast<double>(driver.elapsed_ms()) / 1000.0 : 0;
  if (last_end_ms > 0) {
    result.average_concurrency = machine.concurrency_ms() / last_end_ms;
    if (settings.scheduler.budget_bytes > 0)
      result.idle_budget_fraction = std::max(
          0.0, 1.0 - sink.memory_ms() / (static_cast<double>(settings.scheduler.budget_bytes) * last_end_ms));
  }
  // Jobs left queued when nothing could run any more (cannot happen with a budget the jobs fit).
  result.failed += static_cast<std::uint32_t>(driver.stalled_jobs());
  return result;
}

std::vector<SweepRow> sweep(const std::vector<RecordedJob>& recorded, const std::vector<std::uint32_t>& picks,
                            const ReplaySettings& base, const SweepGrid& grid) {
  std::vector<SweepRow> rows;
  for (std::uint32_t cap : grid.max_workers)
    for (double hw : grid.high_water)
      for (double scale : grid.prediction_scale) {
        ReplaySettings s = base;
        s.scheduler.max_workers = cap;
        s.scheduler.high_water = hw;
        s.prediction_scale = scale;
        rows.push_back({cap, hw, scale, replay(recorded, picks, s)});
      }
  return rows;
}

}  // namespace ab
