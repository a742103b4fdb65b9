#include "orchestrator/batch/prediction_policy.h"

#include "history/estimator.h"
#include "orchestrator/core/scheduler.h"

namespace ab {

PredictionPolicy::PredictionPolicy(std::vector<JobRow> rows, double margin) : margin_(margin) {
  for (const auto& r : rows)
    if (auto o = run_observation_of(r)) seen_.push_back(*o);
  estimator_ = std::make_unique<Estimator>(ranked_observations(seen_));
}

PredictionPolicy::~PredictionPolicy() = default;
PredictionPolicy::PredictionPolicy(PredictionPolicy&&) noexcept = default;
PredictionPolicy& PredictionPolicy::operator=(PredictionPolicy&&) noexcept = default;

std::optional<std::uint64_t> PredictionPolicy::predict(std::uint64_t size_bytes, std::optional<double> audio_s) const {
  if (auto e = estimator_->predict(size_bytes, audio_s)) return scaled_bytes(e->peak_bytes, margin_);
  return std::nullopt;
}

bool PredictionPolicy::learn(const JobRow& ok_job) {
  if (auto o = run_observation_of(ok_job)) seen_.push_back(*o);
  // Refitting costs O(history + queue); doing it after every job made a large corpus O(n^2).
  if (!refit_due(++learned_)) return false;
  estimator_ = std::make_unique<Estimator>(ranked_observations(seen_));
  return true;
}

}  // namespace ab
