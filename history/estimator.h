// Peak-memory estimator: robust, recency-weighted fits of peak ≈ baseline + ratio × size per job key.
//
// Pure: takes observations, returns predictions. The scheduler asks it for each queued job's
// predicted peak; `align-batch history` shows its fits and their measured error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ab {

struct JobRow;

/// One finished job of a key, as the estimator sees it.
struct Observation {
  std::uint64_t size_bytes = 0;
  std::optional<double> duration_s;  ///< audio seconds, where the job reported them
  std::uint64_t peak_bytes = 0;      ///< measured peak (PSS; RSS where PSS was not read)
  std::uint32_t runs_ago = 0;        ///< 0: the newest run holding jobs of this key
};

/// Tuning of the estimator. Defaults are choices, stated with their reasons in estimator.cpp.
struct EstimatorConfig {
  double quantile = 0.95;         ///< the prediction covers this share of jobs
  double tolerance_z = 1.2816;    ///< one-sided normal z for the confidence that it does (90%)
  double half_life_runs = 4.0;    ///< a job this many runs old weighs half as much as a new one
  std::size_t min_fit_jobs = 5;   ///< fewer observations: no line, the peaks' quantile instead
  std::size_t max_pairs = 20000;  ///< Theil–Sen slopes computed at most; more pairs are sampled
};

/// A fitted line `peak ≈ baseline_bytes + ratio × x` (x in bytes or audio seconds) and its
/// upper margin: predictions are `(baseline + ratio × x) × (1 + margin)`.
struct LinearFit {
  double baseline_bytes = 0;
  double ratio = 0;          ///< peak bytes per input byte, or per audio second
  double margin = 0;         ///< relative upper margin from the residuals' quantile, >= 0
  double spread = 0;         ///< weighted median |relative residual|: how tight the line is
  std::size_t n = 0;         ///< observations it was fitted on
};

/// What a prediction was based on.
enum class EstimateBasis { kPeakQuantile, kSizeFit, kDurationFit };

/// One job's predicted peak.
struct Estimate {
  std::uint64_t peak_bytes = 0;     ///< upper prediction: what the scheduler should admit with
  std::uint64_t central_bytes = 0;  ///< the fit's (or median's) value without the margin
  EstimateBasis basis = EstimateBasis::kPeakQuantile;
};

/// Fits on construction; predicts per job.
class Estimator {
 public:
  explicit Estimator(const std::vector<Observation>& observations,
                     const EstimatorConfig& config = {});

  /// The predicted peak of a job with this input size (and audio duration, when known), or
  /// std::nullopt when there is no history (see no_history_reason()): start such jobs cautiously.
  std::optional<Estimate> predict(std::uint64_t size_bytes,
                                  std::optional<double> duration_s = std::nullopt) const;

  /// Why predict() returns nothing; empty when it does return predictions.
  const std::string& no_history_reason() const { return no_history_reason_; }
  std::size_t observation_count() const { return n_; }
  /// Recency-weighted median of the peaks (0 without history).
  std::uint64_t median_peak_bytes() const { return median_peak_bytes_; }
  /// The line on input bytes, when there were at least min_fit_jobs observations of at least
  /// two different sizes.
  const std::optional<LinearFit>& size_fit() const { return size_fit_; }
  /// The line on audio seconds, when at least min_fit_jobs observations had a duration (not all
  /// the same).
  const std::optional<LinearFit>& duration_fit() const { return duration_fit_; }

 private:
  EstimatorConfig config_;
  std::size_t n_ = 0;
  std::string no_history_reason_;
  std::uint64_t median_peak_bytes_ = 0;
  std::uint64_t quantile_peak_bytes_ = 0;
  std::optional<LinearFit> size_fit_;
  std::optional<LinearFit> duration_fit_;
};

/// Weighted Theil–Sen on (x, y) with per-point weights: slope = weighted median of pairwise
/// slopes (pair weight w_i·w_j; at most `max_pairs` pairs, sampled deterministically), intercept
/// = weighted median of y − slope·x. Clamped so that slope >= 0 and intercept >= 0 (memory does
/// not shrink with input). `margin` and `spread` are left 0. Exposed for tests.
LinearFit theil_sen(const std::vector<double>& x, const std::vector<double>& y,
                    const std::vector<double>& w, std::size_t max_pairs);

/// Weighted quantile (q in [0, 1]): the smallest value whose cumulative weight reaches q of the
/// total. Empty input gives 0.
double weighted_quantile(std::vector<std::pair<double, double>> value_weight, double q);

/// Turns a key's jobs (any order) into observations: only `ok` jobs with a measured peak, peak =
/// PSS (RSS where PSS is 0), runs_ago ranked over the distinct runs among these jobs (newest = 0).
std::vector<Observation> observations_from_jobs(const std::vector<JobRow>& jobs);

/// An observation with the run it came from, before runs_ago is ranked: 48 bytes, where a JobRow
/// (paths, key, outputs) held ~0.9 KiB a job. What a policy keeps of every ok job it learns.
struct RunObservation {
  std::int64_t run_id = 0;
  Observation observation;  ///< runs_ago not set yet
};

/// The observation a job gives: none unless it is `ok` with a measured peak.
std::optional<RunObservation> run_observation_of(const JobRow& job);

/// Ranks runs_ago over the distinct runs of `seen` (newest = 0), as observations_from_jobs does.
std::vector<Observation> ranked_observations(const std::vector<RunObservation>& seen);

}  // namespace ab
