// Progress: what the user sees while a batch runs (live line, log lines or JSON events) and after.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "orchestrator/batch/progress_sink.h"

namespace ab {

/// Seconds left in the run, or none when there is nothing to go on yet. Two estimates of the
/// work left: a calibrated law's job seconds spread over the jobs running (at least one), and
/// this run's own rate since its origin (work per second). With both, their geometric mean
/// weighted w = work seen ÷ (work seen + kLawWeightShare × all work) toward the own rate: a
/// quarter into a run the own rate has seen only each worker's first, slowest jobs (bench/eta.sh:
/// 1.6-2.3 × the time left), the law only other runs (off by how much busier the machine was
/// then: 1.3-1.9 ×). Without a law, the own rate once it has seen kOwnRateShare of the work.
/// Work, not files: large files run first, so counting files gave 3m, 5m, 2m, 45 s in a 16 s run.
std::optional<double> eta_seconds(const ProgressState& state);
constexpr double kOwnRateShare = 0.05;
constexpr double kLawWeightShare = 0.5;


/// `line` cut to at most `columns` terminal columns (UTF-8 aware: one column per code point,
/// never a broken character), so a live line never wraps; "…" marks a cut.
std::string fit_to_columns(const std::string& line, std::size_t columns);
/// The terminal's width for `file` (TIOCGWINSZ), else $COLUMNS, else 80.
std::size_t terminal_columns(std::FILE* file);


/// The sink for what users see (ProgressSink, batch/progress_sink.h): a live line on a terminal, log
/// lines otherwise, JSON events for programs.
class Progress : public ProgressSink {
 public:
  enum class Mode { kTty, kPlain, kJson, kQuiet };
  /// Live line and log lines go to `log` (stderr); JSON events to `events` (stdout).
  Progress(Mode mode, std::FILE* log, std::FILE* events);

  /// Picks kTty when `log` is a terminal, else kPlain; "json" gives kJson. False on an unknown mode.
  static bool parse_mode(const std::string& text, std::FILE* log, Mode& mode);

  void job_started(const std::string& name, std::uint32_t attempt, std::uint64_t estimate_bytes,
                   const ProgressState& state) override;
  /// `status`: "done", "failed", "retry", "killed" (guard), "interrupted". `band_limited`: a done
  /// file aligned within a limited search band (shown even on a terminal; `"band_limited": true`
  /// in the JSON event).
  void job_ended(const std::string& name, const std::string& status, const std::string& detail,
                 std::uint64_t peak_bytes, double wall_s, const ProgressState& state, bool band_limited = false) override;
  /// A plain message (warnings, interrupt notices).
  void message(const std::string& text) override;
  /// decision_words.h's words for the scheduler's reason.
  std::string describe(const Reason& reason) const override;
  /// Called every loop tick; redraws the live line at most every 250 ms (JSON mode: a
  /// "progress" event at most every second).
  void tick(const ProgressState& state) override;
  /// Clears the live line and, except in JSON mode, prints the summary to `out`; in JSON mode
  /// emits a "summary" event.
  void summary(const RunSummary& summary, std::FILE* out);

  /// The live line, before it is cut to the terminal's width.
  static std::string live_line(const ProgressState& state);

 private:
  /// Writes one JSON event line, stamped with "ts_ms" (Unix ms).
  void emit(nlohmann::json event);
  void clear_line();

  Mode mode_;
  std::FILE* log_;
  std::FILE* events_;
  double last_draw_s_ = -1;
  double last_event_s_ = -1;  ///< JSON mode: when the last "progress" event went out
  bool line_shown_ = false;
};

}  // namespace ab
