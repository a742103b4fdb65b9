// RunReport: one run's history rows in, one self-contained HTML page (inline SVG and CSS) out.
//
// Pure: no files, no clock, no database. `align-batch report` and the end of a run read history
// and hand the rows here (report_command.h), so drawing never runs in the parent's loop. The
// page has no script and loads nothing (no font, no image, no style sheet), so it opens from
// disk, offline, years later. Every drawn job carries `data-file="<input path>"`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "history/estimator.h"
#include "history/history_store.h"
#include "history/timeline.h"

namespace ab {

/// Up to this many attempts the page draws each one (a band, a point, `data-file`); above it, a
/// run's memory is one band per way its attempts ended and the scatter charts are density grids,
/// so a page of a million jobs stays a few hundred kB (each job drawn costs ~600 bytes of page).
/// Marks of kills, deaths and retries, and the tables, stay per file. Timelines are then not read.
constexpr std::size_t kReportJobsDrawnEach = 2000;

/// One ended attempt of the run, with its stored (down-sampled) memory timeline.
struct ReportJob {
  JobRow row;
  std::vector<TimelinePoint> timeline;
};

/// Everything one report draws.
struct ReportInput {
  RunRow run;
  std::vector<ReportJob> jobs;  ///< the run's attempts, any order
  /// The key's peak law on audio seconds as history fits it (all runs of the key), drawn over
  /// the peak-against-audio chart; none when history has too few jobs with durations.
  std::optional<LinearFit> duration_fit;
  std::string history_path;         ///< named in the page
  std::int64_t generated_at_ms = 0; ///< Unix ms, printed in the page; 0: not printed
};

/// How measured peaks compare with the predictions they started under (ok jobs with both).
struct PredictionRatios {
  std::size_t files = 0;      ///< ok jobs with a prediction and a measured peak
  std::size_t above = 0;      ///< of those, measured > predicted
  std::size_t unpredicted = 0;  ///< ok jobs that started without a prediction
  double median = 0;          ///< of measured ÷ predicted
  double p95 = 0;             ///< nearest rank
};
PredictionRatios prediction_ratios(const std::vector<ReportJob>& jobs);

/// What a guard, the kernel or a retry did to an attempt, as the memory chart marks it.
enum class ReportMark { kNone, kGuardKill, kOomDeath, kCrash, kInterrupted };
ReportMark mark_of(const JobRow& row);

/// The whole page.
std::string render_report(const ReportInput& input);

}  // namespace ab
