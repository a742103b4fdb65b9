// Scheduler: admission against the memory budget, preemption of the youngest job, bounded retries.
#include "orchestrator/core/scheduler.h"


#include <algorithm>
#include <utility>
#include <cassert>
#include <limits>

namespace ab {
namespace {

constexpr std::uint64_t kUnlimited = std::numeric_limits<std::uint64_t>::max();
// With a VRAM budget, first-fit looks at most this many memory-fitting candidates for one whose
// VRAM fits too, so admission stays O(log n) when a few VRAM-heavy jobs block the front.
constexpr int kVramFitScan = 64;
// A job counts as having outgrown its reservation only past this slack: PSS of one job varies
// by a fraction of a MiB from reading to reading (a real run of 16 memhog jobs with exact
// predictions lost one job to a guard kill over such noise before the slack was added).
constexpr double kOverPlanSlackFraction = 0.02;
constexpr double kOverPlanSlackBytes = 8.0 * 1024 * 1024;

}  // namespace

std::uint64_t scaled_bytes(std::uint64_t bytes, double factor) {
  const double v = static_cast<double>(bytes) * factor;
  return v >= 1.8e19 ? kUnlimited : static_cast<std::uint64_t>(v);  // 2^64 = 1.845e19
}

bool Scheduler::PredictedOrder::operator()(const PredictedKey& a, const PredictedKey& b) const {
  if (std::get<0>(a) != std::get<0>(b)) return std::get<0>(a) > std::get<0>(b);
  if (std::get<1>(a) != std::get<1>(b)) return std::get<1>(a) > std::get<1>(b);
  return std::get<2>(a) < std::get<2>(b);
}

bool Scheduler::ColdOrder::operator()(const ColdKey& a, const ColdKey& b) const {
  if (a.first != b.first) return a.first > b.first;
  return a.second < b.second;
}

Scheduler::Scheduler(const SchedulerConfig& config) : config_(config) {}

const Scheduler::Job* Scheduler::find(JobId id) const {
  return id < jobs_.size() && jobs_[id].where != Where::kGone ? &jobs_[id] : nullptr;
}

const Scheduler::Job* Scheduler::find_running(JobId id) const {
  const Job* job = find(id);
  return job && job->where == Where::kRunning ? job : nullptr;
}

// The same lookups on a scheduler the caller may change: its own table, so the cast is sound.
Scheduler::Job* Scheduler::find(JobId id) { return const_cast<Job*>(std::as_const(*this).find(id)); }

Scheduler::Job* Scheduler::find_running(JobId id) { return const_cast<Job*>(std::as_const(*this).find_running(id)); }

void Scheduler::erase(JobId id) {
  jobs_[id] = Job{};
  --live_jobs_;
  last_errors_.erase(id);
}

std::uint64_t Scheduler::estimate_of(const Job& job) const {
  return std::max(job.spec.predicted_peak_bytes.value_or(0), job.floor_bytes);
}

std::uint64_t Scheduler::vram_estimate_of(const Job& job) const {
  return std::max(job.spec.predicted_vram_bytes, job.floor_vram_bytes);
}

std::uint64_t Scheduler::charge_of(const Job& job) const {
  return std::max(job.reserved_bytes, job.observed_peak_bytes);
}

std::uint64_t Scheduler::vram_charge_of(const Job& job) const {
  return std::max(vram_estimate_of(job), job.observed_vram_bytes);
}

std::uint64_t Scheduler::cold_need_bytes() const {
  return std::max(largest_peak_seen_bytes_, config_.cold_start_floor_bytes);
}

std::uint32_t Scheduler::cold_start_limit() const {
  const std::uint64_t limit =
      std::uint64_t{std::max<std::uint32_t>(1, config_.cold_start_jobs)} + cold_succeeded_;
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(limit, 0xffffffffu));
}

// A job with a prediction or a raised floor is ordered by its estimate; one with neither by size.
static bool has_estimate(const JobSpec& spec, std::uint64_t floor_bytes) {
  return spec.predicted_peak_bytes.has_value() || floor_bytes > 0;
}

void Scheduler::enqueue(Job& job) {
  job.where = Where::kQueued;
  // The hint makes adding jobs already in queue order O(1) each (replay adds a million so).
  if (has_estimate(job.spec, job.floor_bytes)) {
    predicted_queue_.insert(predicted_queue_.end(), {estimate_of(job), job.spec.size_bytes, job.spec.id});
  } else {
    cold_queue_.insert(cold_queue_.end(), {job.spec.size_bytes, job.spec.id});
  }
}

void Scheduler::dequeue(const Job& job) {
  if (has_estimate(job.spec, job.floor_bytes)) {
    predicted_queue_.erase({estimate_of(job), job.spec.size_bytes, job.spec.id});
  } else {
    cold_queue_.erase({job.spec.size_bytes, job.spec.id});
  }
}

void Scheduler::fail(JobId id, Reason reason) {
  pending_fails_.push_back({Decision::Kind::kFail, id, std::move(reason)});
  ++stats_.failed;
  erase(id);
}

// False (and the job failed, erased) when the job's estimate exceeds a whole budget on its own.
bool Scheduler::check_fits_alone(Job& job) {
  const std::uint64_t need = estimate_of(job);
  if (config_.budget_bytes > 0 && need > config_.budget_bytes) {
    fail(job.spec.id, Reason::over(Reason::Kind::kNeedsMoreThanBudget, need, config_.budget_bytes));
    return false;
  }
  const std::uint64_t vram = vram_estimate_of(job);
  if (config_.vram_budget_bytes > 0 && vram > config_.vram_budget_bytes) {
    fail(job.spec.id, Reason::over(Reason::Kind::kNeedsMoreThanVramBudget, vram, config_.vram_budget_bytes));
    return false;
  }
  return true;
}

void Scheduler::add_job(const JobSpec& spec) {
  if (spec.id >= jobs_.size()) jobs_.resize(spec.id + 1);
  Job& job = jobs_[spec.id];
  assert(job.where == Where::kGone && "job id added twice");
  job.spec = spec;
  ++live_jobs_;
  if (!check_fits_alone(job)) return;
  enqueue(job);
}

void Scheduler::set_prediction(JobId id, std::uint64_t predicted_peak_bytes) {
  Job* found = find(id);
  if (!found) return;
  Job& job = *found;
  if (job.spec.predicted_peak_bytes == predicted_peak_bytes) return;
  if (job.where == Where::kQueued) {
    dequeue(job);
    job.spec.predicted_peak_bytes = predicted_peak_bytes;
    if (!check_fits_alone(job)) return;
    enqueue(job);
    return;
  }
  // Running: the reservation becomes the estimate; a cold job stops counting against slow start.
  job.spec.predicted_peak_bytes = predicted_peak_bytes;
  committed_jobs_ -= charge_of(job);
  job.reserved_bytes = estimate_of(job);
  committed_jobs_ += charge_of(job);
  if (job.cold) {
    job.cold = false;
    --cold_running_;
  }
}

void Scheduler::set_predictions(const std::vector<std::pair<JobId, std::uint64_t>>& predictions) {
  // Few changes: one by one. Many: update in place and rebuild both queues from sorted keys,
  // which is O(n log n) in sequential memory rather than n random erases and inserts.
  if (predictions.size() < 64 || predictions.size() * 8 < queued()) {
    for (const auto& [id, bytes] : predictions) set_prediction(id, bytes);
    return;
  }
  std::vector<JobId> too_large;
  for (const auto& [id, bytes] : predictions) {
    Job* found = find(id);
    if (!found) continue;
    if (found->where == Where::kRunning) {
      set_prediction(id, bytes);
      continue;
    }
    found->spec.predicted_peak_bytes = bytes;
  }
  std::vector<PredictedKey> predicted;
  std::vector<ColdKey> cold;
  predicted.reserve(predicted_queue_.size() + cold_queue_.size());
  for (JobId id = 0; id < jobs_.size(); ++id) {
    const Job& job = jobs_[id];
    if (job.where != Where::kQueued) continue;
    if (has_estimate(job.spec, job.floor_bytes)) {
      predicted.emplace_back(estimate_of(job), job.spec.size_bytes, id);
    } else {
      cold.emplace_back(job.spec.size_bytes, id);
    }
  }
  std::sort(predicted.begin(), predicted.end(), PredictedOrder{});
  std::sort(cold.begin(), cold.end(), ColdOrder{});
  // Reuse the old queue's nodes (C++17 node handles): no allocation per job.
  std::set<PredictedKey, PredictedOrder> rebuilt;
  for (const auto& k : predicted) {
    if (predicted_queue_.empty()) {
      rebuilt.insert(rebuilt.end(), k);
      continue;
    }
    auto node = predicted_queue_.extract(predicted_queue_.begin());
    node.value() = k;
    rebuilt.insert(rebuilt.end(), std::move(node));
  }
  predicted_queue_.swap(rebuilt);
  cold_queue_.clear();
  for (const auto& k : cold) cold_queue_.insert(cold_queue_.end(), k);
  // Jobs whose new estimate exceeds a budget alone fail now, as set_prediction would fail them.
  for (const auto& k : predicted) {
    const Job& job = jobs_.at(std::get<2>(k));
    if ((config_.budget_bytes > 0 && std::get<0>(k) > config_.budget_bytes) ||
        (config_.vram_budget_bytes > 0 && vram_estimate_of(job) > config_.vram_budget_bytes)) {
      too_large.push_back(std::get<2>(k));
    }
  }
  for (JobId id : too_large) {
    Job& job = jobs_.at(id);
    dequeue(job);
    check_fits_alone(job);
  }
}

void Scheduler::observe(Job& job, std::uint64_t pss_bytes, std::uint64_t vram_bytes) {
  job.observed_pss_now_bytes = pss_bytes;
  if (pss_bytes > job.observed_peak_bytes) {
    committed_jobs_ -= charge_of(job);
    job.observed_peak_bytes = pss_bytes;
    committed_jobs_ += charge_of(job);
  }
  if (vram_bytes > job.observed_vram_bytes) {
    committed_vram_ -= vram_charge_of(job);
    job.observed_vram_bytes = vram_bytes;
    committed_vram_ += vram_charge_of(job);
  }
  largest_peak_seen_bytes_ = std::max(largest_peak_seen_bytes_, pss_bytes);
}

std::optional<Reason> Scheduler::pressure_reason(const MemorySample& sample,
                                                      bool lone_job) const {
  std::uint64_t total = sample.idle_pss_bytes + sample.shared_bytes, total_vram = 0;
  // What the plan, corrected by what is seen, says the total can reach: each running job at the
  // larger of its reservation and its current use.
  std::uint64_t projected = total, projected_vram = 0;
  // Whether some job clearly outgrew its reservation (and may keep growing).
  bool outgrown = false, outgrown_vram = false;
  auto beyond = [](std::uint64_t used, std::uint64_t reserved) {
    return static_cast<double>(used) >
           static_cast<double>(reserved) * (1 + kOverPlanSlackFraction) + kOverPlanSlackBytes;
  };
  // Most samples are below every mark: sum first, and look jobs up only when a mark is crossed.
  for (const auto& j : sample.jobs) {
    total += j.pss_bytes;
    total_vram += j.vram_bytes;
  }
  const bool above_mark =
      (config_.budget_bytes > 0 &&
       static_cast<double>(total) > config_.high_water * static_cast<double>(config_.budget_bytes)) ||
      (config_.vram_budget_bytes > 0 &&
       static_cast<double>(total_vram) > config_.high_water * static_cast<double>(config_.vram_budget_bytes));
  for (std::size_t i = 0; above_mark && i < sample.jobs.size(); ++i) {
    const auto& j = sample.jobs[i];
    const Job* running = find_running(j.id);
    if (!running) {
      projected += j.pss_bytes;
      projected_vram += j.vram_bytes;
      continue;
    }
    const Job& job = *running;
    projected += std::max(j.pss_bytes, job.reserved_bytes);
    projected_vram += std::max(j.vram_bytes, vram_estimate_of(job));
    outgrown = outgrown || beyond(j.pss_bytes, job.reserved_bytes);
    outgrown_vram = outgrown_vram || beyond(j.vram_bytes, vram_estimate_of(job));
  }
  // Above the high-water mark, a job is stopped when some job clearly outgrew its reservation
  // (the plan is wrong and that job may grow on) or the corrected plan no longer fits the
  // budget. Jobs within a plan that fits cannot overrun the budget, so they are left alone even
  // when they peak together above the mark.
  // A lone job is stopped only on a real overrun: running it alone is the best any plan can do,
  // and stopping it at the high-water mark would throw away a job that fits.
  auto crossed = [&](std::uint64_t used, std::uint64_t budget, std::uint64_t used_by_plan,
                     bool wrong_plan) -> std::optional<double> {
    if (budget == 0) return std::nullopt;
    const double line = lone_job ? static_cast<double>(budget) : config_.high_water * static_cast<double>(budget);
    if (static_cast<double>(used) <= line) return std::nullopt;
    if (!lone_job && !wrong_plan && used_by_plan <= budget) return std::nullopt;
    return line;
  };
  Reason r;
  r.percent = lone_job ? 100.0 : config_.high_water * 100;
  if (auto line = crossed(total, config_.budget_bytes, projected, outgrown)) {
    r.kind = Reason::Kind::kMemoryAboveMark;
    r.used_bytes = total;
    r.line_bytes = static_cast<std::uint64_t>(*line);
    r.limit_bytes = config_.budget_bytes;
  } else if (auto vline = crossed(total_vram, config_.vram_budget_bytes, projected_vram, outgrown_vram)) {
    r.kind = Reason::Kind::kVramAboveMark;
    r.used_bytes = total_vram;
    r.line_bytes = static_cast<std::uint64_t>(*vline);
    r.limit_bytes = config_.vram_budget_bytes;
  } else if (config_.reserve_bytes > 0 && sample.mem_available_bytes &&
             *sample.mem_available_bytes < config_.reserve_bytes) {
    r.kind = Reason::Kind::kAvailableBelowReserve;
    r.used_bytes = *sample.mem_available_bytes;
    r.limit_bytes = config_.reserve_bytes;
  } else if (sample.psi_full_avg10 && *sample.psi_full_avg10 > config_.psi_full_avg10_limit) {
    r.kind = Reason::Kind::kPressureStall;
    r.percent = *sample.psi_full_avg10;
    r.limit_percent = config_.psi_full_avg10_limit;
  } else {
    return std::nullopt;
  }
  return r;
}

void Scheduler::on_sample(const MemorySample& sample) {
  std::uint64_t total = sample.idle_pss_bytes + sample.shared_bytes;
  for (const auto& s : sample.jobs) {
    total += s.pss_bytes;
    if (Job* running = find_running(s.id)) observe(*running, s.pss_bytes, s.vram_bytes);
  }
  idle_pss_bytes_ = sample.idle_pss_bytes;
  idle_workers_ = sample.idle_workers;
  shared_bytes_ = sample.shared_bytes;
  idle_reused_ = 0;
  stats_.peak_total_pss_bytes = std::max(stats_.peak_total_pss_bytes, total);

  // One kill at a time: the next waits until the first has ended, so one spike does not empty
  // the machine.
  if (kill_in_flight_ || running_by_start_.empty()) return;
  auto reason = pressure_reason(sample, running_by_start_.size() == 1);
  if (!reason) return;
  // The youngest loses the least work.
  const JobId victim = std::get<2>(*running_by_start_.rbegin());
  const Job& job = jobs_.at(victim);
  reason->running_s = static_cast<double>(sample.now_ms - job.start_ms) / 1000.0;
  reason->job_bytes = job.observed_pss_now_bytes;
  pending_kills_.push_back({Decision::Kind::kKill, victim, std::move(*reason)});
  kill_in_flight_ = victim;
  pause_before_kill_ms_ = paused_until_ms_;
  paused_until_ms_ = std::max(paused_until_ms_, sample.now_ms + config_.pause_after_kill_ms);
}

bool Scheduler::confirm_kill(JobId id, const MemorySample& fresh) {
  if (!kill_in_flight_ || *kill_in_flight_ != id) return false;
  for (const auto& s : fresh.jobs)
    if (Job* running = find_running(s.id)) observe(*running, s.pss_bytes, s.vram_bytes);
  idle_pss_bytes_ = fresh.idle_pss_bytes;
  shared_bytes_ = fresh.shared_bytes;
  const bool still_running = find_running(id) != nullptr;
  if (still_running && pressure_reason(fresh, running_by_start_.size() == 1)) return true;
  kill_in_flight_.reset();
  paused_until_ms_ = pause_before_kill_ms_;
  return false;
}

void Scheduler::requeue_or_fail(Job& job, std::uint64_t peak_seen_bytes,
                                std::uint64_t peak_vram_seen_bytes, bool raise) {
  if (raise) {
    job.floor_bytes = std::max(job.floor_bytes, scaled_bytes(peak_seen_bytes, config_.raise_factor));
    if (peak_vram_seen_bytes > 0) {
      job.floor_vram_bytes =
          std::max(job.floor_vram_bytes, scaled_bytes(peak_vram_seen_bytes, config_.raise_factor));
    }
    // Never requeue with an estimate below what the job was admitted with.
    job.floor_bytes = std::max(job.floor_bytes, job.reserved_bytes);
  }
  job.cold = false;
  job.reserved_bytes = 0;
  job.observed_peak_bytes = job.observed_vram_bytes = job.observed_pss_now_bytes = 0;
  if (!check_fits_alone(job)) return;
  ++stats_.retried;
  enqueue(job);
}

void Scheduler::on_job_ended(JobId id, const JobOutcome& outcome, std::int64_t /*now_ms*/) {
  Job* running = find_running(id);
  if (!running) return;
  Job& job = *running;
  observe(job, outcome.peak_pss_bytes, outcome.peak_vram_bytes);
  const std::uint64_t peak_seen = job.observed_peak_bytes;
  const std::uint64_t peak_vram_seen = job.observed_vram_bytes;

  committed_jobs_ -= charge_of(job);
  committed_vram_ -= vram_charge_of(job);
  running_by_start_.erase({job.start_ms, job.start_seq, id});
  if (job.cold) --cold_running_;
  if (kill_in_flight_ == id) kill_in_flight_.reset();

  switch (outcome.kind) {
    case JobOutcome::Kind::kOk:
      ++stats_.finished_ok;
      if (job.cold) ++cold_succeeded_;
      erase(id);
      return;
    case JobOutcome::Kind::kFailed:
      ++stats_.failed;
      erase(id);
      return;
    case JobOutcome::Kind::kDied:
      if (!outcome.oom_suspected) {
        const std::string& last_error = last_errors_[id] = outcome.error;
        if (++job.deaths >= std::max<std::uint32_t>(1, config_.max_attempts)) {
          Reason r;
          r.kind = Reason::Kind::kCrashedTooOften;
          r.count = job.deaths;
          r.last_error = last_error;
          fail(id, std::move(r));
          return;
        }
        requeue_or_fail(job, peak_seen, peak_vram_seen, /*raise=*/false);
        return;
      }
      ++stats_.oom_deaths;
      break;
    case JobOutcome::Kind::kGuardKilled:
      ++stats_.guard_kills;
      break;
  }
  // Guard kill or OOM death: not the job's fault, so it comes back with the estimate it showed.
  if (++job.guard_kills > config_.max_guard_kills) {
    Reason r;
    r.kind = Reason::Kind::kGuardKilledTooOften;
    r.count = job.guard_kills;
    r.need_bytes = peak_seen;
    fail(id, std::move(r));
    return;
  }
  requeue_or_fail(job, peak_seen, peak_vram_seen, /*raise=*/true);
}

void Scheduler::start(Job& job, bool cold, std::int64_t now_ms, std::vector<Decision>& out) {
  dequeue(job);
  job.where = Where::kRunning;
  job.start_ms = now_ms;
  job.start_seq = next_start_seq_++;
  job.cold = cold;
  job.reserved_bytes = cold ? cold_need_bytes() : estimate_of(job);
  job.observed_peak_bytes = job.observed_vram_bytes = job.observed_pss_now_bytes = 0;
  committed_jobs_ += charge_of(job);
  committed_vram_ += vram_charge_of(job);
  running_by_start_.insert({job.start_ms, job.start_seq, job.spec.id});
  if (cold) {
    ++cold_running_;
    ++cold_starts_;
  }
  if (idle_reused_ < idle_workers_) ++idle_reused_;
  ++stats_.started;
  stats_.peak_running =
      std::max<std::uint32_t>(stats_.peak_running, static_cast<std::uint32_t>(running_by_start_.size()));
  out.push_back({Decision::Kind::kStart, job.spec.id, {}});
}

bool Scheduler::vram_fits(const Job& job) const {
  return config_.vram_budget_bytes == 0 ||
         committed_vram_ + vram_estimate_of(job) <= config_.vram_budget_bytes;
}

std::uint64_t Scheduler::headroom_bytes(bool nothing_running) const {
  if (config_.budget_bytes == 0) return kUnlimited;
  // With nothing running the whole budget is there (idle workers can be recycled to make room),
  // less the shared weights, which stay until the run ends. Else the job about to start takes an
  // idle worker if there is one: its prediction holds that worker's memory already, so the
  // worker's idle share is not charged twice.
  const std::uint64_t used = shared_bytes_ + (nothing_running ? 0 : committed_jobs_ + idle_charge_after(1));
  return used >= config_.budget_bytes ? 0 : config_.budget_bytes - used;
}

void Scheduler::fail_beside_shared(Job& head, std::uint64_t need_bytes, std::vector<Decision>& out) {
  const JobId id = head.spec.id;
  dequeue(head);
  Reason r;
  r.kind = Reason::Kind::kNeedsMoreBesideShared;
  r.need_bytes = need_bytes;
  r.shared_bytes = shared_bytes_;
  r.limit_bytes = config_.budget_bytes;
  fail(id, std::move(r));
  out.push_back(std::move(pending_fails_.back()));  // decided now, carried out with this poll
  pending_fails_.pop_back();
  head_known_ = false;
}

Scheduler::Job* Scheduler::first_fit(std::uint64_t headroom) {
  // First fit decreasing: the largest job whose estimate fits the headroom (and the VRAM left).
  // The smallest estimate is the last: most polls, where nothing fits, end here in O(1) (a
  // million-job replay polls 15 million times, and the lower_bound was a quarter of its time).
  if (predicted_queue_.empty() || std::get<0>(*predicted_queue_.rbegin()) > headroom) return nullptr;
  auto it = predicted_queue_.lower_bound({headroom, kUnlimited, 0});
  for (int n = 0; it != predicted_queue_.end() && n < kVramFitScan; ++it, ++n) {
    Job& candidate = jobs_.at(std::get<2>(*it));
    if (vram_fits(candidate)) return &candidate;
  }
  return nullptr;
}

void Scheduler::admit(std::int64_t now_ms, std::vector<Decision>& out) {
  if (now_ms < paused_until_ms_) return;
  for (;;) {
    if (config_.max_workers > 0 && running_by_start_.size() >= config_.max_workers) return;
    const bool nothing_running = running_by_start_.empty();
    const std::uint64_t headroom = headroom_bytes(nothing_running);

    // The largest predicted job: start it if it fits; if smaller jobs have overtaken it too
    // often, hold everything until it fits.
    Job* head = nullptr;
    bool head_fits = false;
    if (!predicted_queue_.empty()) {
      const auto& key = *predicted_queue_.begin();
      head = &jobs_.at(std::get<2>(key));
      if (!head_known_ || overtaken_head_ != head->spec.id) {
        head_known_ = true;
        overtaken_head_ = head->spec.id;
        overtakes_ = 0;
      }
      head_fits = std::get<0>(key) <= headroom && vram_fits(*head);
      if (!head_fits && nothing_running && shared_bytes_ > 0 && config_.budget_bytes > 0 &&
          std::get<0>(key) > headroom) {
        // It fits the budget, but not beside the shared weights, and nothing else will end to
        // make room: it can never start.
        fail_beside_shared(*head, std::get<0>(key), out);
        continue;
      }
      if (!head_fits && overtakes_ >= config_.max_overtakes) return;
    }

    // Slow start: unpredicted jobs, a few at a time, each counted as the largest peak seen so
    // far. Largest first, but for the first start after the opening cold_start_jobs: the
    // smallest, so that the first few ends show both ends of the corpus (the memory law and the
    // ETA's cost per file need a spread; by size alone a corpus of many copies of its longest
    // files gives none until late). Not among the opening ones: those start the workers, and a
    // worker's first job also carries its start-up, which says nothing of a small file's cost.
    if (!cold_queue_.empty() && cold_running_ < cold_start_limit()) {
      const bool smallest = cold_starts_ == std::max<std::uint32_t>(1, config_.cold_start_jobs);
      Job& cold = jobs_.at(smallest ? std::prev(cold_queue_.end())->second : cold_queue_.begin()->second);
      if ((cold_need_bytes() <= headroom || nothing_running) && vram_fits(cold)) {
        if (head && !head_fits) ++overtakes_;
        start(cold, /*cold=*/true, now_ms, out);
        continue;
      }
    }

    if (!head) return;
    Job* pick = head_fits ? head : first_fit(headroom);
    if (!pick) return;
    if (!head_fits) ++overtakes_;
    start(*pick, /*cold=*/false, now_ms, out);
  }
}

std::vector<Decision> Scheduler::poll(std::int64_t now_ms) {
  std::vector<Decision> out;
  for (auto& kill : pending_kills_) {
    if (find_running(kill.job)) out.push_back(std::move(kill));
  }
  pending_kills_.clear();
  for (auto& f : pending_fails_) out.push_back(std::move(f));
  pending_fails_.clear();
  admit(now_ms, out);
  return out;
}

bool Scheduler::done() const {
  return live_jobs_ == 0 && pending_kills_.empty() && pending_fails_.empty();
}

std::size_t Scheduler::queued() const { return predicted_queue_.size() + cold_queue_.size(); }

std::size_t Scheduler::running() const { return running_by_start_.size(); }

std::uint64_t Scheduler::committed_bytes() const { return committed_jobs_ + idle_charge_after(0) + shared_bytes_; }

std::uint64_t Scheduler::idle_charge_after(std::uint32_t reuses) const {
  if (idle_workers_ == 0) return idle_pss_bytes_;
  const std::uint32_t used = std::min(idle_workers_, idle_reused_ + reuses);
  return idle_pss_bytes_ / idle_workers_ * (idle_workers_ - used);
}

std::optional<std::uint64_t> Scheduler::estimate_bytes(JobId id) const {
  const Job* found = find(id);
  if (!found) return std::nullopt;
  const Job& job = *found;
  if (job.where == Where::kRunning) return job.reserved_bytes;
  if (!has_estimate(job.spec, job.floor_bytes)) return std::nullopt;
  return estimate_of(job);
}

bool refit_due(std::uint32_t ok_jobs) { return ok_jobs > 0 && (ok_jobs <= 8 || (ok_jobs & (ok_jobs - 1)) == 0); }

}  // namespace ab
