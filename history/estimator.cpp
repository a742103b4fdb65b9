// Recency-weighted Theil–Sen fits with a tolerance-bound upper margin (see estimator.h).
//
// Why these choices:
// - Theil–Sen, not least squares: a few jobs with pathological peaks (a stuck allocator, a
//   corrupt file decoded as noise) must not tilt the line for everyone; Theil–Sen tolerates ~29%
//   of outliers.
// - Relative residuals: memory noise grows with the job (buffers, allocator fragmentation), so a
//   margin in percent fits both a 1 MB and a 1 GB file; an absolute margin learned mostly from the
//   many small files would under-cover the few huge ones.
// - The margin is the residuals' quantile at q + z·sqrt(q(1−q)/n_eff), a normal approximation to
//   the nonparametric tolerance bound: with ~90% confidence the prediction covers q of future
//   jobs, not just q of the jobs it was fitted on (a plain in-sample quantile covers less than q
//   out of sample). With few jobs this reaches 1, i.e. the largest residual.
// - min_fit_jobs = 5: with 5 points Theil–Sen has 10 slopes and one outlier among them cannot move
//   the median slope past the good ones; with 4 it can, so below 5 we do not fit a line.
// - half_life_runs = 4: a choice, not a measurement; a model or corpus change usually shows up as
//   a new key anyway, so decay only needs to prefer recent machines and library versions.
#include "history/estimator.h"

#include "history/history_store.h"

#include <algorithm>
#include <cmath>
#include <map>

namespace ab {
namespace {

// Relative residuals divide by the fitted value; below 1 MiB (no real worker is that small) the
// ratio says nothing and would explode, so the divisor is floored there.
constexpr double kMinScaleBytes = 1024.0 * 1024.0;

// SplitMix64: a fixed, portable generator, so sampled pairs (and thus fits) are identical on
// every platform and every run.
std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

double effective_n(const std::vector<double>& w) {
  double sum = 0, sum_sq = 0;
  for (double v : w) {
    sum += v;
    sum_sq += v * v;
  }
  return sum_sq > 0 ? sum * sum / sum_sq : 0;
}

double tolerance_level(const EstimatorConfig& c, double n_eff) {
  if (n_eff <= 0) return 1.0;
  const double q = c.quantile;
  return std::min(1.0, q + c.tolerance_z * std::sqrt(q * (1 - q) / n_eff));
}

// Fills in margin and spread from relative residuals.
void add_margin(LinearFit& fit, const std::vector<double>& x, const std::vector<double>& y,
                const std::vector<double>& w, double level) {
  std::vector<std::pair<double, double>> rel, abs_rel;
  rel.reserve(x.size());
  abs_rel.reserve(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double fitted = fit.baseline_bytes + fit.ratio * x[i];
    const double r = y[i] / std::max(fitted, kMinScaleBytes) - 1.0;
    rel.emplace_back(r, w[i]);
    abs_rel.emplace_back(std::fabs(r), w[i]);
  }
  fit.margin = std::max(0.0, weighted_quantile(std::move(rel), level));
  fit.spread = weighted_quantile(std::move(abs_rel), 0.5);
  fit.n = x.size();
}

std::uint64_t to_bytes(double v) {
  if (!(v > 0)) return 0;
  if (v >= 1.8e19) return UINT64_MAX;
  return static_cast<std::uint64_t>(std::round(v));  // not llround: a long long ends at 9.2e18
}

}  // namespace

double weighted_quantile(std::vector<std::pair<double, double>> value_weight, double q) {
  if (value_weight.empty()) return 0;
  std::sort(value_weight.begin(), value_weight.end());
  double total = 0;
  for (const auto& vw : value_weight) total += vw.second;
  const double target = q * total;
  double cum = 0;
  for (const auto& vw : value_weight) {
    cum += vw.second;
    // Relative tolerance so that q = 0.5 over equal weights lands on the middle, not past it.
    if (cum >= target * (1 - 1e-12)) return vw.first;
  }
  return value_weight.back().first;
}

LinearFit theil_sen(const std::vector<double>& x, const std::vector<double>& y,
                    const std::vector<double>& w, std::size_t max_pairs) {
  const std::size_t n = x.size();
  std::vector<std::pair<double, double>> slopes;
  auto add_pair = [&](std::size_t i, std::size_t j) {
    const double dx = x[j] - x[i];
    if (dx == 0) return;
    slopes.emplace_back((y[j] - y[i]) / dx, w[i] * w[j]);
  };
  const std::size_t all_pairs = n < 2 ? 0 : n * (n - 1) / 2;
  if (all_pairs <= max_pairs) {
    slopes.reserve(all_pairs);
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = i + 1; j < n; ++j) add_pair(i, j);
  } else {
    slopes.reserve(max_pairs);
    std::uint64_t state = 0x5eed'ab'2026ULL;
    for (std::size_t k = 0; k < max_pairs; ++k) {
      const std::size_t i = splitmix64(state) % n;
      const std::size_t j = splitmix64(state) % n;
      if (i != j) add_pair(std::min(i, j), std::max(i, j));
    }
  }
  LinearFit fit;
  fit.ratio = slopes.empty() ? 0.0 : weighted_quantile(std::move(slopes), 0.5);
  auto intercept_for = [&](double ratio) {
    std::vector<std::pair<double, double>> r;
    r.reserve(n);
    for (std::size_t i = 0; i < n; ++i) r.emplace_back(y[i] - ratio * x[i], w[i]);
    return weighted_quantile(std::move(r), 0.5);
  };
  if (fit.ratio < 0) fit.ratio = 0;
  fit.baseline_bytes = intercept_for(fit.ratio);
  if (fit.baseline_bytes < 0) {
    // A negative intercept would predict nothing for small inputs: pin it at 0 and refit the
    // ratio through the origin.
    fit.baseline_bytes = 0;
    std::vector<std::pair<double, double>> r;
    for (std::size_t i = 0; i < n; ++i)
      if (x[i] > 0) r.emplace_back(y[i] / x[i], w[i]);
    fit.ratio = std::max(0.0, weighted_quantile(std::move(r), 0.5));
  }
  fit.n = n;
  return fit;
}

Estimator::Estimator(const std::vector<Observation>& observations, const EstimatorConfig& config)
    : config_(config), n_(observations.size()) {
  if (observations.empty()) {
    no_history_reason_ = "no finished jobs of this key in history";
    return;
  }
  std::vector<double> sx, sy, sw, dx, dy, dw;
  std::vector<std::pair<double, double>> peaks;
  for (const auto& o : observations) {
    const double weight = std::pow(0.5, o.runs_ago / config_.half_life_runs);
    const double peak = static_cast<double>(o.peak_bytes);
    sx.push_back(static_cast<double>(o.size_bytes));
    sy.push_back(peak);
    sw.push_back(weight);
    peaks.emplace_back(peak, weight);
    if (o.duration_s && *o.duration_s > 0) {
      dx.push_back(*o.duration_s);
      dy.push_back(peak);
      dw.push_back(weight);
    }
  }
  median_peak_bytes_ = to_bytes(weighted_quantile(peaks, 0.5));
  quantile_peak_bytes_ =
      to_bytes(weighted_quantile(std::move(peaks), tolerance_level(config_, effective_n(sw))));
  // A line needs inputs of at least two sizes: with one (a file re-run, or every clip the same
  // length) the slope is unknowable, and the peaks' quantile is the honest answer.
  auto varies = [](const std::vector<double>& x) {
    return std::any_of(x.begin(), x.end(), [&](double v) { return v != x.front(); });
  };
  if (sx.size() >= config_.min_fit_jobs && varies(sx)) {
    LinearFit fit = theil_sen(sx, sy, sw, config_.max_pairs);
    add_margin(fit, sx, sy, sw, tolerance_level(config_, effective_n(sw)));
    size_fit_ = fit;
  }
  if (dx.size() >= config_.min_fit_jobs && varies(dx)) {
    LinearFit fit = theil_sen(dx, dy, dw, config_.max_pairs);
    add_margin(fit, dx, dy, dw, tolerance_level(config_, effective_n(dw)));
    duration_fit_ = fit;
  }
}

std::optional<Estimate> Estimator::predict(std::uint64_t size_bytes,
                                           std::optional<double> duration_s) const {
  if (n_ == 0) return std::nullopt;
  const LinearFit* fit = nullptr;
  double x = 0;
  Estimate e;
  if (size_fit_) {
    fit = &*size_fit_;
    x = static_cast<double>(size_bytes);
    e.basis = EstimateBasis::kSizeFit;
  }
  // Audio seconds are the better predictor when the files differ in format or compression; use
  // that line when it is known for this job and its margin is no wider than the bytes line's.
  if (duration_fit_ && duration_s && *duration_s > 0 &&
      (!fit || duration_fit_->margin <= fit->margin)) {
    fit = &*duration_fit_;
    x = *duration_s;
    e.basis = EstimateBasis::kDurationFit;
  }
  if (!fit) {
    e.basis = EstimateBasis::kPeakQuantile;
    e.central_bytes = median_peak_bytes_;
    e.peak_bytes = std::max(quantile_peak_bytes_, median_peak_bytes_);
    return e;
  }
  const double central = fit->baseline_bytes + fit->ratio * x;
  e.central_bytes = to_bytes(central);
  e.peak_bytes = std::max(e.central_bytes, to_bytes(central * (1 + fit->margin)));
  return e;
}

std::optional<RunObservation> run_observation_of(const JobRow& j) {
  // A job with no reading at all (the sampler never saw it) says nothing about its peak.
  if (j.status != JobStatus::kOk || (j.peak_pss_bytes == 0 && j.peak_rss_bytes == 0)) return std::nullopt;
  RunObservation r;
  r.run_id = j.run_id;
  r.observation.size_bytes = j.input_size_bytes;
  r.observation.duration_s = j.audio_duration_s;
  r.observation.peak_bytes = j.peak_pss_bytes > 0 ? j.peak_pss_bytes : j.peak_rss_bytes;
  return r;
}

std::vector<Observation> ranked_observations(const std::vector<RunObservation>& seen) {
  std::map<std::int64_t, std::uint32_t, std::greater<>> runs;  // run id, newest first
  for (const auto& s : seen) runs.emplace(s.run_id, 0);
  std::uint32_t rank = 0;
  for (auto& r : runs) r.second = rank++;
  std::vector<Observation> out;
  out.reserve(seen.size());
  for (const auto& s : seen) {
    out.push_back(s.observation);
    out.back().runs_ago = runs[s.run_id];
  }
  return out;
}

std::vector<Observation> observations_from_jobs(const std::vector<JobRow>& jobs) {
  std::vector<RunObservation> seen;
  for (const auto& j : jobs)
    if (auto o = run_observation_of(j)) seen.push_back(*o);
  return ranked_observations(seen);
}

}  // namespace ab
