// Replay's pure half: recorded jobs as replay models them, its figures, and the sweep's grid and
// choice. The replay itself (orchestrator/batch/replay_run.h) runs these jobs through the batch
// driver, the real run's own loop, on a virtual clock.
//
// CPU model (stated, simple): a job's recorded wall time is its work at full speed, and it keeps
// cpu_s / duration_s cores busy on average. When the running jobs ask for more cores than the
// machine has, every running job slows by the same factor (processor sharing). Memory follows the
// job's progress through its work, so a slowed job holds its memory longer.
#pragma once

#include "orchestrator/core/scheduler.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ab {

/// One point of a recorded memory timeline: `t_ms` after the job started.
struct ReplayPoint {
  std::int64_t t_ms = 0;
  std::uint64_t pss_bytes = 0;
  std::uint64_t vram_bytes = 0;
};

/// A finished job as replay needs it (history's JobRow and timeline, reduced).
struct RecordedJob {
  std::string key;
  std::uint64_t size_bytes = 0;
  std::optional<double> audio_duration_s;  ///< audio seconds, as recorded; predictions use them too
  double duration_s = 0;                ///< wall seconds the job ran
  double cpu_s = 0;                     ///< CPU seconds it used; 0: unknown (one core assumed)
  std::uint64_t peak_pss_bytes = 0;     ///< measured peak
  std::vector<ReplayPoint> timeline;    ///< in time order; empty: the peak for the whole run
  /// What history predicts for this job (estimator with margin); none: no history, slow start.
  std::optional<std::uint64_t> predicted_peak_bytes;
};

/// PSS (and VRAM) of `job` at `age_ms` of its work: linear between recorded points, rising from 0
/// at the start to the first point, holding the last point after it. Without a timeline: the
/// peak throughout. `cursor` remembers the segment reached (ages only grow within an attempt).
struct RecordedUse {
  std::uint64_t pss_bytes = 0;
  std::uint64_t vram_bytes = 0;
};
RecordedUse use_at(const RecordedJob& job, double age_ms, std::uint32_t& cursor);
/// The highest PSS the job's recording reaches.
std::uint64_t recorded_max_bytes(const RecordedJob& job);
/// Cores the job kept busy on average (cpu_s / duration_s; 1 when unknown).
double utilisation_of(const RecordedJob& job);

/// What the simulated run did.
struct ReplayResult {
  double makespan_s = 0;                ///< virtual time until the last job ended
  std::uint64_t peak_total_bytes = 0;   ///< highest sampled sum of the running jobs' PSS
  double average_concurrency = 0;       ///< time-averaged number of running jobs
  double idle_budget_fraction = 0;      ///< share of budget x makespan left unused (sampled)
  double lost_work_s = 0;               ///< work thrown away by guard kills
  std::uint32_t jobs = 0, ok = 0, failed = 0;
  SchedulerStats stats;                 ///< guard kills, retries, peak running, ...
  std::vector<Reason> fail_reasons;  ///< first few kFail reasons, for the report (the CLI words them)
};

/// Every recorded job once, in order.
std::vector<std::uint32_t> pick_all(std::size_t recorded_count);
/// round(scale x recorded_count) jobs drawn uniformly with replacement from the recorded ones
/// (so from their distribution of sizes, peaks and durations), reproducibly from `seed`.
std::vector<std::uint32_t> pick_scaled(std::size_t recorded_count, double scale, std::uint64_t seed);

/// One row of a sweep: the settings tried and what they gave.
struct SweepRow {
  std::uint32_t max_workers = 0;  ///< 0: memory alone decides
  double high_water = 0;
  double prediction_scale = 0;
  ReplayResult result;
};

/// The grid a sweep tries.
struct SweepGrid {
  std::vector<std::uint32_t> max_workers;
  std::vector<double> high_water;
  std::vector<double> prediction_scale;
};

/// High-water {0.85, 0.90, 0.95}, margins {0.9, 1.0, 1.15, 1.3} (history's predictions already
/// carry a p95 margin; 0.9 tests it). Caps: for CPU-bound jobs (the built-in engine, which the real
/// run never gives more than one worker per core) {1, cores / 2, cores}; otherwise {0 (memory
/// alone), cores, 2 x cores, 4 x cores}. Replay's processor sharing cannot see what more built-in
/// workers than cores cost (cache, memory bandwidth, the per-worker base): on examples/corpus
/// (2 cores) it recommended 4, which ran 17.1-18.9 s against 15.3-16.9 s with 2.
SweepGrid default_sweep_grid(std::uint32_t cores, bool cpu_bound);

/// Makespans within this share of the fastest are a tie, which the safer setting wins: replay's
/// makespan is within a few % of a real run's (bench/replay_accuracy.sh), so a 2% gain bought
/// with a riskier setting is noise.
constexpr double kSweepTieFraction = 0.02;

/// The recommended row: fewest failures, then no guard kill (else fewest), then the shortest
/// makespan, where makespans within kSweepTieFraction of the fastest tie; on a tie the safest
/// row: fewest workers (0, memory alone, counts as the most), lowest high-water, largest margin,
/// then the lowest peak. 0 when rows is empty.
std::size_t recommend(const std::vector<SweepRow>& rows);

}  // namespace ab
