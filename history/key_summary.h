// Key summaries: what history knows about one job key, and how well it predicted that key's jobs.
#pragma once

#include "history/estimator.h"
#include "history/history_store.h"

#include <optional>
#include <vector>

namespace ab {

/// One job key's figures, as `align-batch history` lists them.
struct KeySummary {
  KeyRow key;
  std::uint64_t median_peak_bytes = 0;   ///< recency-weighted, over ok jobs
  std::optional<LinearFit> size_fit;     ///< peak on input bytes
  std::optional<LinearFit> duration_fit; ///< peak on audio seconds
  /// Walk-forward check over the newest ok jobs: each predicted from only the jobs that finished
  /// before it, as the scheduler would have. Median |central − actual| / actual.
  std::optional<double> median_abs_error;
  /// Share of those jobs whose actual peak was at or below the upper prediction.
  std::optional<double> coverage;
  std::size_t evaluated_jobs = 0;
};

/// Jobs checked by default in the walk-forward: enough for a stable median, cheap to refit.
constexpr std::size_t kDefaultEvaluatedJobs = 50;

/// Summarises `key` from its jobs (any order, any status; as jobs_for_key returns them).
KeySummary summarize_key(const KeyRow& key, const std::vector<JobRow>& jobs,
                         const EstimatorConfig& config = {},
                         std::size_t evaluated_jobs = kDefaultEvaluatedJobs);

}  // namespace ab
