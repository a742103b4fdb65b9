// Per-key summaries with a walk-forward measurement of the estimator's error.
#include "history/key_summary.h"

#include <algorithm>
#include <cmath>

namespace ab {

KeySummary summarize_key(const KeyRow& key, const std::vector<JobRow>& jobs,
                         const EstimatorConfig& config, std::size_t evaluated_jobs) {
  KeySummary out;
  out.key = key;
  const Estimator all(observations_from_jobs(jobs), config);
  out.median_peak_bytes = all.median_peak_bytes();
  out.size_fit = all.size_fit();
  out.duration_fit = all.duration_fit();

  std::vector<JobRow> ok;
  for (const auto& j : jobs)
    if (j.status == JobStatus::kOk) ok.push_back(j);
  std::sort(ok.begin(), ok.end(), [](const JobRow& a, const JobRow& b) {
    return a.finished_at_ms != b.finished_at_ms ? a.finished_at_ms < b.finished_at_ms : a.id < b.id;
  });
  std::vector<double> errors;
  std::size_t covered = 0;
  // Job 0 has nothing before it; the rest are predicted from their predecessors only.
  const std::size_t first = std::max<std::size_t>(1, ok.size() > evaluated_jobs ? ok.size() - evaluated_jobs : 0);
  for (std::size_t i = first; i < ok.size(); ++i) {
    const std::vector<JobRow> before(ok.begin(), ok.begin() + static_cast<std::ptrdiff_t>(i));
    const Estimator past(observations_from_jobs(before), config);
    const auto e = past.predict(ok[i].input_size_bytes, ok[i].audio_duration_s);
    const double actual = static_cast<double>(ok[i].peak_pss_bytes > 0 ? ok[i].peak_pss_bytes
                                                                       : ok[i].peak_rss_bytes);
    if (!e || actual <= 0) continue;
    errors.push_back(std::fabs(static_cast<double>(e->central_bytes) - actual) / actual);
    if (actual <= static_cast<double>(e->peak_bytes)) ++covered;
  }
  out.evaluated_jobs = errors.size();
  if (!errors.empty()) {
    auto mid = errors.begin() + static_cast<std::ptrdiff_t>(errors.size() / 2);
    std::nth_element(errors.begin(), mid, errors.end());
    out.median_abs_error = *mid;
    out.coverage = static_cast<double>(covered) / static_cast<double>(errors.size());
  }
  return out;
}

}  // namespace ab
