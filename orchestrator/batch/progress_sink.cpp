// The run's summary (exit code, JSON) and the job cost law behind the ETA.
#include "orchestrator/batch/progress_sink.h"

#include "orchestrator/batch/exit_code.h"

#include <algorithm>

#include "history/estimator.h"

namespace ab {

int RunSummary::exit_code() const {
  if (!setup_error.empty()) return kExitCannotRun;
  if (interrupted) return kExitInterrupted;
  return failed.empty() ? kExitOk : kExitFilesFailed;
}

nlohmann::json RunSummary::to_json() const {
  nlohmann::json failures = nlohmann::json::array();
  for (const auto& f : failed) failures.push_back({{"path", f.path}, {"reason", f.reason}});
  nlohmann::json reran_json = nlohmann::json::array();
  for (const auto& f : reran) reran_json.push_back({{"path", f.path}, {"reason", f.reason}});
  return {{"total", total},
          {"done", done},
          {"skipped", skipped},
          {"failed", failures},
          {"retried", retried},
          {"guard_killed", guard_killed},
          {"oom_deaths", oom_deaths},
          {"peak_pss_bytes", peak_pss_bytes},
          {"budget_bytes", budget_bytes},
          {"wall_s", wall_s},
          {"files_per_hour", wall_s > 0 ? static_cast<double>(done) * 3600.0 / wall_s : 0.0},
          {"interrupted", interrupted},
          {"band_limited", band_limited},
          {"run_reasons", run_reasons},
          {"reran", reran_json},
          {"transcribed_without_transcript", transcribed_without_transcript},
          {"max_trellis_mib", max_trellis_mib},
          {"out_dir", out_dir},
          {"report", report_path},
          {"setup_error", setup_error.empty() ? nlohmann::json(nullptr) : nlohmann::json(setup_error)},
          {"exit_code", exit_code()}};
}

JobCostLaw fit_job_cost(const std::vector<std::pair<double, double>>& audio_wall_s,
                        std::optional<double> median_left_audio_s) {
  if (audio_wall_s.size() < kJobCostMinJobs) return {};
  // A line needs a spread of durations: fitted on files of one length (a run's first jobs are
  // its largest, often copies), its intercept would be a whole job's time charged to every file
  // (bench/eta.sh saw 6.5x the time left).
  double lo = audio_wall_s.front().first, hi = lo;
  for (const auto& p : audio_wall_s) {
    lo = std::min(lo, p.first);
    hi = std::max(hi, p.first);
  }
  if (!(hi >= kJobCostMinSpread * lo)) return {};
  if (median_left_audio_s && !(lo <= kJobCostCover * *median_left_audio_s)) return {};
  std::vector<double> x, y, w;
  for (const auto& [audio, wall] : audio_wall_s) {
    x.push_back(audio);
    y.push_back(wall);
    w.push_back(1.0);
  }
  const LinearFit fit = theil_sen(x, y, w, 20000);
  if (fit.ratio <= 0 && fit.baseline_bytes <= 0) return {};
  return {fit.baseline_bytes, fit.ratio, true};  // the fit's "bytes" are seconds here
}

}  // namespace ab
