// Replay's pure half: recorded jobs' memory and CPU, the picks, the sweep's grid and its choice.
#include "orchestrator/core/replay.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <tuple>

namespace ab {
RecordedUse use_at(const RecordedJob& job, double age_ms, std::uint32_t& cursor) {
  const auto& tl = job.timeline;
  if (tl.empty()) return {job.peak_pss_bytes, 0};
  while (cursor < tl.size() && static_cast<double>(tl[cursor].t_ms) <= age_ms) ++cursor;
  if (cursor == tl.size()) return {tl.back().pss_bytes, tl.back().vram_bytes};
  const ReplayPoint& p1 = tl[cursor];
  const ReplayPoint p0 = cursor == 0 ? ReplayPoint{} : tl[cursor - 1];
  const double t0 = static_cast<double>(p0.t_ms), t1 = static_cast<double>(p1.t_ms);
  if (t1 <= t0) return {p1.pss_bytes, p1.vram_bytes};
  const double f = (age_ms - t0) / (t1 - t0);
  auto between = [f](std::uint64_t a, std::uint64_t b) {
    return static_cast<std::uint64_t>(static_cast<double>(a) + (static_cast<double>(b) - static_cast<double>(a)) * f);
  };
  return {between(p0.pss_bytes, p1.pss_bytes), between(p0.vram_bytes, p1.vram_bytes)};
}

std::uint64_t recorded_max_bytes(const RecordedJob& job) {
  std::uint64_t m = job.peak_pss_bytes;
  for (const auto& p : job.timeline) m = std::max(m, p.pss_bytes);
  return m;
}

double utilisation_of(const RecordedJob& job) {
  if (job.cpu_s <= 0 || job.duration_s <= 0) return 1.0;
  return std::max(0.01, job.cpu_s / job.duration_s);
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
