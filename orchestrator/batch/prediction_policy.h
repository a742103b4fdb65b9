// PredictionPolicy: how a job's memory reservation is predicted. History's estimator
// (history/estimator.h) fitted on its key's ok jobs, times the margin (--margin, or the key's tuned
// one), and refitted on this run's ok jobs on refit_due()'s schedule (orchestrator/core/scheduler.h).
// The one copy of that glue: the run loop, the Slurm executor and replay all predict through it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "history/estimator.h"
#include "history/history_store.h"

namespace ab {

class PredictionPolicy {
 public:
  /// Fitted on `rows` (the key's recorded jobs; only ok ones with a reading count).
  explicit PredictionPolicy(std::vector<JobRow> rows, double margin = 1.0);
  ~PredictionPolicy();
  PredictionPolicy(PredictionPolicy&&) noexcept;
  PredictionPolicy& operator=(PredictionPolicy&&) noexcept;

  /// The reservation for a file of `size_bytes` and `audio_s` seconds: the fit's peak (the audio
  /// seconds line where known and tighter) times the margin; none before anything was fitted.
  std::optional<std::uint64_t> predict(std::uint64_t size_bytes, std::optional<double> audio_s) const;

  /// An ok job of this run joins the observations. True when that made a refit due (refit_due on
  /// the count of jobs learned) and the fit was redone: queued jobs should then be predicted again.
  bool learn(const JobRow& ok_job);

  double margin() const { return margin_; }

 private:
  /// What the fit needs of each usable row, 48 bytes a job: the rows themselves, learned from
  /// every ok job of a run, held ~0.9 KiB each (heaptrack, 20,000 tiny jobs: 17.7 MB).
  std::vector<RunObservation> seen_;
  double margin_ = 1.0;
  std::uint32_t learned_ = 0;
  std::unique_ptr<Estimator> estimator_;
};

}  // namespace ab
