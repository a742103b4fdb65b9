// Replay: a discrete-event simulation that drives the real Scheduler with recorded jobs.
#include "orchestrator/core/replay.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <queue>
#include <random>
#include <tuple>

namespace ab {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
// Keep at most this many failure reasons in a result: the report names a few, not thousands.
constexpr std::size_t kMaxFailReasons = 10;

/// A simulated job while it runs. Indexed by job id (its position in the sorted order).
struct Run {
  double work_start_ms = 0;   ///< work clock when it started
  std::uint32_t generation = 0;  ///< bumps on each start, so stale end events are ignored
  std::uint64_t peak_bytes = 0;  ///< highest PSS sampled in this attempt
  std::uint32_t cursor = 0;      ///< timeline segment reached (ages only grow)
  std::int32_t slot = -1;        ///< position in the running list; -1: not running
  bool loud = false;             ///< its recording goes above what admission reserved for it
};

/// PSS of `job` at `age_ms` of work: linear between recorded points, rising from 0 at the start
/// to the first point, holding the last point after it. Without a timeline: the peak throughout.
std::uint64_t pss_at(const RecordedJob& job, double age_ms, std::uint32_t& cursor) {
  const auto& tl = job.timeline;
  if (tl.empty()) return job.peak_pss_bytes;
  while (cursor < tl.size() && static_cast<double>(tl[cursor].t_ms) <= age_ms) ++cursor;
  if (cursor == tl.size()) return tl.back().pss_bytes;
  const double t1 = static_cast<double>(tl[cursor].t_ms);
  const double v1 = static_cast<double>(tl[cursor].pss_bytes);
  const double t0 = cursor == 0 ? 0.0 : static_cast<double>(tl[cursor - 1].t_ms);
  const double v0 = cursor == 0 ? 0.0 : static_cast<double>(tl[cursor - 1].pss_bytes);
  if (t1 <= t0) return static_cast<std::uint64_t>(v1);
  return static_cast<std::uint64_t>(v0 + (v1 - v0) * (age_ms - t0) / (t1 - t0));
}

/// Cores a job keeps busy on average.
double utilisation_of(const RecordedJob& job) {
  if (job.cpu_s <= 0 || job.duration_s <= 0) return 1.0;
  return std::max(0.01, job.cpu_s / job.duration_s);
}

}  // namespace

ReplayResult replay(const std::vector<RecordedJob>& recorded, const std::vector<std::uint32_t>& picks,
                    const ReplaySettings& settings) {
  ReplayResult result;
  result.jobs = static_cast<std::uint32_t>(picks.size());
  Scheduler scheduler(settings.scheduler);
  // Job ids follow the scheduler's own queue order (estimate, then size, largest first), so the
  // queue is built in O(n) rather than O(n log n) with a cache miss per level. Ids only break
  // ties, so this changes no decision.
  auto predicted_of = [&](std::uint32_t pick) -> std::optional<std::uint64_t> {
    const RecordedJob& rec = recorded[pick];
    if (!settings.use_predictions || !rec.predicted_peak_bytes) return std::nullopt;
    return scaled_bytes(*rec.predicted_peak_bytes, settings.prediction_scale);
  };
  std::vector<std::uint32_t> order = picks;
  std::stable_sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
    const auto pa = predicted_of(a), pb = predicted_of(b);
    if (pa.value_or(0) != pb.value_or(0)) return pa.value_or(0) > pb.value_or(0);
    return recorded[a].size_bytes > recorded[b].size_bytes;
  });
  const bool learning = settings.predictions_after_ok > 0 || settings.learn;
  for (std::uint32_t id = 0; id < order.size(); ++id) {
    JobSpec spec;
    spec.id = id;
    spec.size_bytes = recorded[order[id]].size_bytes;
    if (!learning) spec.predicted_peak_bytes = predicted_of(order[id]);
    scheduler.add_job(spec);
  }
  const std::vector<std::uint32_t>& sim_picks = order;  // job id -> recorded index

  // Highest PSS each recording reaches, to tell at start whether a job can outgrow its
  // reservation.
  std::vector<std::uint64_t> recorded_max(recorded.size());
  for (std::size_t i = 0; i < recorded.size(); ++i) {
    std::uint64_t m = recorded[i].peak_pss_bytes;
    for (const auto& p : recorded[i].timeline) m = std::max(m, p.pss_bytes);
    recorded_max[i] = m;
  }
  std::uint32_t loud_running = 0;
  std::vector<Run> runs(sim_picks.size());
  std::vector<bool> finished(sim_picks.size(), false);
  std::vector<std::uint32_t> finished_recorded;  // for learn: recorded index of each ok job
  // Gives every queued job its prediction for its recorded job (none: unchanged).
  std::vector<std::pair<JobId, std::uint64_t>> updates;
  auto predict_queued = [&](auto&& prediction_of_recorded) {
    updates.clear();
    for (JobId q = 0; q < sim_picks.size(); ++q) {
      if (finished[q] || runs[q].slot >= 0) continue;
      const std::optional<std::uint64_t> p = prediction_of_recorded(sim_picks[q]);
      if (p) updates.emplace_back(q, *p);
    }
    scheduler.set_predictions(updates);
  };
  std::vector<JobId> running;  // ids of running jobs, unordered (slot = index)
  // End events on the work clock: (work end ms, id, generation), earliest first.
  using EndEvent = std::tuple<double, JobId, std::uint32_t>;
  std::priority_queue<EndEvent, std::vector<EndEvent>, std::greater<>> ends;

  double now_ms = 0, work_ms = 0, utilisation = 0;
  double concurrency_integral = 0, memory_integral = 0, last_end_ms = 0;
  double next_sample_ms = static_cast<double>(settings.sample_interval_ms);
  const double interval_ms = static_cast<double>(std::max<std::int64_t>(1, settings.sample_interval_ms));
  MemorySample sample;

  auto remove_running = [&](JobId id) {
    Run& r = runs[id];
    const std::size_t slot = static_cast<std::size_t>(r.slot);
    runs[running.back()].slot = r.slot;
    running[slot] = running.back();
    running.pop_back();
    r.slot = -1;
    if (r.loud) --loud_running;
    utilisation -= utilisation_of(recorded[sim_picks[id]]);
    if (running.empty()) utilisation = 0;  // no drift when idle
  };

  // Reads every running job's memory now; fills `sample` only when `fill`. Returns the total.
  auto read_memory = [&](std::int64_t t_ms, bool fill) {
    sample.now_ms = t_ms;
    sample.jobs.resize(fill ? running.size() : 0);
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < running.size(); ++i) {
      const JobId id = running[i];
      Run& r = runs[id];
      const std::uint64_t pss = pss_at(recorded[sim_picks[id]], work_ms - r.work_start_ms, r.cursor);
      r.peak_bytes = std::max(r.peak_bytes, pss);
      total += pss;
      if (fill) sample.jobs[i] = {id, pss, 0};
    }
    return total;
  };

  auto act = [&](std::vector<Decision> decisions) {
    bool again = true;
    while (again) {
      again = false;
      for (const Decision& d : decisions) {
        switch (d.kind) {
          case Decision::Kind::kStart: {
            Run& r = runs[d.job];
            r.work_start_ms = work_ms;
            ++r.generation;
            r.peak_bytes = 0;
            r.cursor = 0;
            r.slot = static_cast<std::int32_t>(running.size());
            running.push_back(d.job);
            const RecordedJob& rec = recorded[sim_picks[d.job]];
            r.loud = recorded_max[sim_picks[d.job]] > scheduler.estimate_bytes(d.job).value_or(0);
            if (r.loud) ++loud_running;
            utilisation += utilisation_of(rec);
            ends.emplace(work_ms + rec.duration_s * 1000.0, d.job, r.generation);
            break;
          }
          case Decision::Kind::kKill: {
            // The real loop re-reads memory right before killing; here memory has not moved.
            if (runs[d.job].slot < 0 || !scheduler.confirm_kill(d.job, sample)) break;
            Run& r = runs[d.job];
            result.lost_work_s += (work_ms - r.work_start_ms) / 1000.0;
            remove_running(d.job);
            JobOutcome o;
            o.kind = JobOutcome::Kind::kGuardKilled;
            o.peak_pss_bytes = r.peak_bytes;
            scheduler.on_job_ended(d.job, o, static_cast<std::int64_t>(now_ms));
            again = true;  // the requeue may have failed the job: collect that now
            break;
          }
          case Decision::Kind::kFail:
            ++result.failed;
            if (result.fail_reasons.size() < kMaxFailReasons) result.fail_reasons.push_back(d.reason);
            break;
        }
      }
      if (again) decisions = scheduler.poll(static_cast<std::int64_t>(now_ms));
    }
  };

  act(scheduler.poll(0));
  while (!scheduler.done()) {
    const double rate =
        settings.cores == 0 || utilisation <= settings.cores ? 1.0 : settings.cores / utilisation;
    while (!ends.empty()) {
      const auto& [w, id, gen] = ends.top();
      if (runs[id].slot >= 0 && runs[id].generation == gen) break;
      ends.pop();
    }
    const double end_at = ends.empty() ? kInf : now_ms + (std::get<0>(ends.top()) - work_ms) / rate;
    double next = std::min(end_at, next_sample_ms);
    const double paused_until = static_cast<double>(scheduler.paused_until_ms());
    const bool waiting_on_pause = paused_until > now_ms && scheduler.queued() > 0;
    if (waiting_on_pause) next = std::min(next, paused_until);
    if (running.empty() && !waiting_on_pause) {
      // Nothing runs and nothing will change by waiting: whatever is queued cannot start.
      break;
    }

    const double dt = next - now_ms;
    concurrency_integral += dt * static_cast<double>(running.size());
    now_ms = next;
    const std::int64_t t = static_cast<std::int64_t>(now_ms);
    bool changed = next == paused_until;  // admissions resume
    if (next == end_at) {
      changed = true;
      const auto [w, id, gen] = ends.top();
      ends.pop();
      work_ms = w;
      Run& r = runs[id];
      const RecordedJob& rec = recorded[sim_picks[id]];
      remove_running(id);
      JobOutcome o;
      o.kind = JobOutcome::Kind::kOk;
      o.peak_pss_bytes = std::max(r.peak_bytes, rec.peak_pss_bytes);
      scheduler.on_job_ended(id, o, t);
      finished[id] = true;
      ++result.ok;
      last_end_ms = now_ms;
      if (settings.learn) {
        finished_recorded.push_back(sim_picks[id]);
        const std::uint32_t n = result.ok;
        if (refit_due(n)) {
          const auto fitted = settings.learn(finished_recorded);
          predict_queued([&](std::uint32_t rec_index) -> std::optional<std::uint64_t> {
            if (rec_index >= fitted.size() || !fitted[rec_index]) return std::nullopt;
            return scaled_bytes(*fitted[rec_index], settings.prediction_scale);
          });
        }
      } else if (learning && result.ok == settings.predictions_after_ok) {
        predict_queued(predicted_of);
      }
    } else {
      work_ms += rate * dt;
      if (next == next_sample_ms) {
        // A sample can change the scheduler's state only if some running job outgrows its
        // reservation (raising its charge, or proving the plan wrong) or unpredicted jobs wait
        // (their charge is the largest peak seen). Otherwise every job stays within what
        // admission reserved, whose sum fits the budget, so no kill can follow: the scheduler is
        // spared the sample (the replay's own figures still use it). This is what makes replay
        // cost O(jobs x samples) cheap arithmetic rather than scheduler work.
        const bool matters = loud_running > 0 || scheduler.queued_unpredicted() > 0;
        const std::uint64_t total = read_memory(t, matters);
        result.peak_total_bytes = std::max(result.peak_total_bytes, total);
        memory_integral += static_cast<double>(total) * interval_ms;
        if (matters) scheduler.on_sample(sample);
        // With idle memory constant (0 here), a sample only raises charges: it can lead to kills
        // but never to a start.
        changed = changed || scheduler.pending_decisions() > 0;
        next_sample_ms += interval_ms;
      }
    }
    // Polling after an event that changed nothing would decide nothing new.
    if (changed) act(scheduler.poll(t));
  }

  result.stats = scheduler.stats();
  result.makespan_s = last_end_ms / 1000.0;
  if (last_end_ms > 0) {
    result.average_concurrency = concurrency_integral / last_end_ms;
    if (settings.scheduler.budget_bytes > 0) {
      result.idle_budget_fraction = std::max(
          0.0, 1.0 - memory_integral /
                         (static_cast<double>(settings.scheduler.budget_bytes) * last_end_ms));
    }
  }
  // Jobs left queued when nothing could run any more (cannot happen with a budget the jobs fit).
  result.failed += static_cast<std::uint32_t>(scheduler.queued());
  return result;
}

std::vector<std::uint32_t> pick_all(std::size_t recorded_count) {
  std::vector<std::uint32_t> picks(recorded_count);
  for (std::size_t i = 0; i < recorded_count; ++i) picks[i] = static_cast<std::uint32_t>(i);
  return picks;
}

std::vector<std::uint32_t> pick_scaled(std::size_t recorded_count, double scale, std::uint64_t seed) {
  std::vector<std::uint32_t> picks;
  if (recorded_count == 0 || scale <= 0) return picks;
  const auto n = static_cast<std::size_t>(std::llround(scale * static_cast<double>(recorded_count)));
  picks.reserve(n);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::uint32_t> pick(0, static_cast<std::uint32_t>(recorded_count - 1));
  for (std::size_t i = 0; i < n; ++i) picks.push_back(pick(rng));
  return picks;
}

SweepGrid default_sweep_grid(std::uint32_t cores, bool cpu_bound) {
  SweepGrid g;
  const std::uint32_t c = std::max<std::uint32_t>(1, cores);
  if (cpu_bound) {
    g.max_workers = {1};
    if (c / 2 > 1) g.max_workers.push_back(c / 2);
    if (c > 1) g.max_workers.push_back(c);
  } else {
    g.max_workers = {0, c, 2 * c, 4 * c};
  }
  g.high_water = {0.85, 0.90, 0.95};
  g.prediction_scale = {0.9, 1.0, 1.15, 1.3};
  return g;
}

std::vector<SweepRow> sweep(const std::vector<RecordedJob>& recorded,
                            const std::vector<std::uint32_t>& picks, const ReplaySettings& base,
                            const SweepGrid& grid) {
  std::vector<SweepRow> rows;
  for (std::uint32_t cap : grid.max_workers) {
    for (double hw : grid.high_water) {
      for (double scale : grid.prediction_scale) {
        ReplaySettings s = base;
        s.scheduler.max_workers = cap;
        s.scheduler.high_water = hw;
        s.prediction_scale = scale;
        rows.push_back({cap, hw, scale, replay(recorded, picks, s)});
      }
    }
  }
  return rows;
}

std::size_t recommend(const std::vector<SweepRow>& rows) {
  if (rows.empty()) return 0;
  auto losses = [](const SweepRow& r) {
    return std::make_pair(r.result.failed, r.result.stats.guard_kills + r.result.stats.oom_deaths);
  };
  auto fewest = losses(rows.front());
  for (const SweepRow& r : rows) fewest = std::min(fewest, losses(r));
  double fastest_s = 0;
  bool any = false;
  for (const SweepRow& r : rows) {
    if (losses(r) != fewest) continue;
    fastest_s = any ? std::min(fastest_s, r.result.makespan_s) : r.result.makespan_s;
    any = true;
  }
  const double tie_s = fastest_s * (1.0 + kSweepTieFraction);
  auto safety = [](const SweepRow& r) {
    const std::uint64_t workers = r.max_workers == 0 ? UINT64_MAX : r.max_workers;
    return std::make_tuple(workers, r.high_water, -r.prediction_scale, r.result.peak_total_bytes);
  };
  std::size_t best = rows.size();
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (losses(rows[i]) != fewest || rows[i].result.makespan_s > tie_s) continue;
    if (best == rows.size() || safety(rows[i]) < safety(rows[best])) best = i;
  }
  return best;
}

}  // namespace ab
