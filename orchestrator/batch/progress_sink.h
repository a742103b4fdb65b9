// ProgressSink: what the batch driver tells the user interface (cli/progress.h words and draws it),
// and the run's state and summary it reports.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "orchestrator/core/scheduler.h"

namespace ab {

/// Where the batch stands, for the live line and the JSON events.
struct ProgressState {
  std::size_t total = 0;    ///< files to process in this run (skipped ones excluded)
  std::size_t done = 0;
  std::size_t failed = 0;
  std::size_t running = 0;
  std::uint32_t cap = 0;    ///< --workers upper bound; 0: memory alone decides
  std::uint64_t in_use_bytes = 0;  ///< measured PSS of all workers now
  std::uint64_t budget_bytes = 0;
  double elapsed_s = 0;
  /// The oldest running job's worker status ("spk/a.wav emissions 43%"); empty when unknown.
  std::string current;
  /// This run's work in predicted job seconds (JobCostLaw over each file's audio seconds; a
  /// file of unknown duration as the mean of the known ones); 0 when no duration is known: the
  /// ETA then counts files.
  double work_total_s = 0;
  /// Of that, behind us: finished files (any outcome) plus the done share of running ones.
  double work_done_s = 0;
  /// The law was fitted on measured jobs (history's or this run's), so work is in real seconds
  /// of one job; otherwise it is audio seconds (fixed 0, 1 per audio second), a proportion only.
  bool work_calibrated = false;
  /// When the run's own rate starts counting and how much work was behind it then (the run
  /// loop sets it: the first end, or without a calibrated law the first progress), so the
  /// workers' start-up (process, LibTorch, the model) before it is not charged as work. Until
  /// it is set (has_rate_origin) there is no own rate.
  bool has_rate_origin = false;
  double rate_origin_s = 0;
  double rate_origin_work_s = 0;
};

/// One job's wall time ≈ fixed_s + per_audio_s × its audio seconds.
struct JobCostLaw {
  double fixed_s = 0;
  double per_audio_s = 1;
  bool calibrated = false;  ///< fitted on measured jobs (else: audio seconds, a proportion)
};
/// Jobs a cost law is fitted on at least, and the spread of their durations (longest ÷
/// shortest) it needs: less gives the uncalibrated law.
constexpr std::size_t kJobCostMinJobs = 5;
constexpr double kJobCostMinSpread = 4.0;
/// Theil–Sen over (audio seconds, wall seconds) of ok jobs: the fixed cost per file (opening,
/// decoding set-up, writing outputs) weighs on a run's small files, which run last.
/// `median_left_audio_s` (a run's own jobs; history's cover every length it has seen): the
/// law is calibrated only if its shortest job is at most kJobCostCover × the median audio of
/// the files still to run: a line through a run's first, largest files says nothing of the
/// fixed cost of the short ones (fitted on 600 s and 200 s files its intercept came out
/// negative, clamped to 0, and the ETA at half-time was 0.65 × the real time left).
JobCostLaw fit_job_cost(const std::vector<std::pair<double, double>>& audio_wall_s,
                        std::optional<double> median_left_audio_s = std::nullopt);
constexpr double kJobCostCover = 2.0;

/// One failed file, for the summary.
struct FailedFile {
  std::string path;
  std::string reason;
};

/// A file and a note about it (why it ran again, ...), for the summary.
struct FileNote {
  std::string path;
  std::string reason;
};

/// The end-of-run summary.
struct RunSummary {
  std::size_t total = 0;    ///< files found
  std::size_t done = 0;
  std::size_t skipped = 0;  ///< already done in history (resume)
  std::vector<FailedFile> failed;  ///< each with its reason (corpus problems included)
  std::uint32_t retried = 0;
  std::uint32_t guard_killed = 0;
  std::uint32_t oom_deaths = 0;    ///< deaths the kernel's OOM killer is suspected of
  std::uint64_t peak_pss_bytes = 0;
  std::uint64_t budget_bytes = 0;
  double wall_s = 0;
  bool interrupted = false;
  /// Files done whose alignment ran along the edge of the search band --max-trellis-mib allows
  /// (the worker's `band_limited`): they may not have the best alignment.
  std::vector<std::string> band_limited;
  /// The --max-trellis-mib the workers ran with (built-in engine), for the summary's advice; 0: none.
  std::uint64_t max_trellis_mib = 0;
  /// Files that ran, counted by why (orchestrator/resume.h): "new", "transcript changed",
  /// "output missing", ... (the text before any ':').
  std::map<std::string, std::size_t> run_reasons;
  /// Files history had done that ran again, each with why.
  std::vector<FileNote> reran;
  /// --task auto: files done by transcribing because they have no transcript, while other
  /// files of the corpus have one.
  std::vector<std::string> transcribed_without_transcript;
  std::string out_dir;      ///< where the outputs went (--out, absolute); empty: not said
  std::string report_path;  ///< the run's HTML report; empty: none written
  /// Set when the run stopped before processing the corpus because of its own setup (the model
  /// cannot be loaded, one worker needs more than the budget, ...): the one message; exit 2.
  std::string setup_error;
  /// The ExitCode (exit_code.h) the run ends with.
  int exit_code() const;
  nlohmann::json to_json() const;
};

class ProgressSink {
 public:
  virtual ~ProgressSink() = default;
  virtual void job_started(const std::string& name, std::uint32_t attempt, std::uint64_t estimate_bytes,
                           const ProgressState& state) = 0;
  /// `status`: "done", "failed", "retry", "killed" (guard), "interrupted". `band_limited`: a done
  /// file aligned within a limited search band (with no `detail`, the sink says so and what to do).
  virtual void job_ended(const std::string& name, const std::string& status, const std::string& detail,
                         std::uint64_t peak_bytes, double wall_s, const ProgressState& state,
                         bool band_limited = false) = 0;
  /// A plain message (warnings, interrupt notices).
  virtual void message(const std::string& text) = 0;
  /// A reason (the scheduler's for a kill or a failure, the loop's for a job's end), in the
  /// words the user reads.
  virtual std::string describe(const Reason& reason) const = 0;
  /// Called every loop tick.
  virtual void tick(const ProgressState& state) = 0;
};

}  // namespace ab
