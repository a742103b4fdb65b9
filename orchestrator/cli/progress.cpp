// Progress: live line on a terminal, log lines otherwise, JSON events for programs; the summary.
#include "orchestrator/cli/progress.h"
#include "orchestrator/cli/decision_words.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>

#include <fmt/format.h>

#include "memguard/size.h"

namespace ab {
namespace {

/// A done file's detail when it was aligned within a limited search band.
const std::string kBandLimitedDetail = "aligned within a limited search band (may be off): raise --max-trellis-mib";

}  // namespace

Progress::Progress(Mode mode, std::FILE* log, std::FILE* events) : mode_(mode), log_(log), events_(events) {}

bool Progress::parse_mode(const std::string& text, std::FILE* log, Mode& mode) {
  if (text == "auto") {
    mode = ::isatty(::fileno(log)) ? Mode::kTty : Mode::kPlain;
  } else if (text == "plain") {
    mode = Mode::kPlain;
  } else if (text == "json") {
    mode = Mode::kJson;
  } else {
    return false;
  }
  return true;
}

std::optional<double> eta_seconds(const ProgressState& s) {
  const std::size_t finished = s.done + s.failed;
  if (finished >= s.total) return s.total ? std::optional<double>(0.0) : std::nullopt;
  if (s.work_total_s > 0) {
    const double left = std::max(0.0, s.work_total_s - s.work_done_s);
    const double since_s = s.elapsed_s - s.rate_origin_s, work_since_s = s.work_done_s - s.rate_origin_work_s;
    const bool own = s.has_rate_origin && since_s > 0 && work_since_s > 0;
    const double own_eta = own ? left * since_s / work_since_s : 0;
    if (!s.work_calibrated) {
      if (own && work_since_s >= kOwnRateShare * s.work_total_s) return own_eta;
      return std::nullopt;
    }
    const double law_eta = left / static_cast<double>(std::max<std::size_t>(1, s.running));
    if (!own || left <= 0) return law_eta;
    // Geometric mean weighted by how much work the own rate has seen: it takes over as the run
    // goes, without a jump, and early on one slow or fast job does not swing the line.
    const double w = work_since_s / (work_since_s + kLawWeightShare * s.work_total_s);
    return std::pow(law_eta, 1 - w) * std::pow(own_eta, w);
  }
  // No durations known (an external command's inputs, say): files are all there is.
  if (finished == 0 || s.elapsed_s <= 0) return std::nullopt;
  return s.elapsed_s / static_cast<double>(finished) * static_cast<double>(s.total - finished);
}

std::string fit_to_columns(const std::string& line, std::size_t columns) {
  // Code point starts up to the cut; continuation bytes are 10xxxxxx.
  std::size_t points = 0;
  for (unsigned char c : line) points += (c & 0xC0) != 0x80;
  if (points <= columns) return line;
  if (columns == 0) return {};
  std::size_t kept = 0, i = 0;
  for (; i < line.size(); ++i) {
    if ((static_cast<unsigned char>(line[i]) & 0xC0) != 0x80) {
      if (kept == columns - 1) break;
      ++kept;
    }
  }
  return line.substr(0, i) + "\u2026";
}

std::size_t terminal_columns(std::FILE* file) {
  struct winsize ws {};
  if (::ioctl(::fileno(file), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  if (const char* env = std::getenv("COLUMNS"); env && *env) {
    const long n = std::strtol(env, nullptr, 10);
    if (n > 0 && n < 10000) return static_cast<std::size_t>(n);
  }
  return 80;
}

void Progress::emit(nlohmann::json event) {
  event["ts_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  // Paths in events are display_path()s already; replace, never throw, should one slip through.
  std::fputs((event.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n").c_str(), events_);
  std::fflush(events_);
}

void Progress::clear_line() {
  if (line_shown_) {
    std::fputs("\r\033[K", log_);
    line_shown_ = false;
  }
}

std::string Progress::live_line(const ProgressState& s) {
  std::string eta = "-";
  if (auto left = eta_seconds(s)) {
    const double left_s = *left;
    eta = left_s >= 3600 ? fmt::format("{:.1f}h", left_s / 3600)
          : left_s >= 59.5 ? fmt::format("{}m{:02}s", std::lround(left_s) / 60, std::lround(left_s) % 60)
                         : fmt::format("{:.0f}s", left_s);
  }
  const double per_hour = s.elapsed_s > 0 ? static_cast<double>(s.done) * 3600.0 / s.elapsed_s : 0;
  // Most telling first: a line cut to an 80-column terminal loses the rate, then the file's name.
  return fmt::format("{}/{} done{} | running {}{} | {} of {} | ETA {}{} | {:.0f} files/h", s.done, s.total,
                     s.failed ? fmt::format(", {} failed", s.failed) : std::string(), s.running,
                     s.cap ? fmt::format("/{}", s.cap) : std::string(), format_bytes(s.in_use_bytes),
                     s.budget_bytes ? format_bytes(s.budget_bytes) : std::string("unlimited"), eta,
                     s.current.empty() ? std::string() : " | " + s.current, per_hour);
}

void Progress::job_started(const std::string& name, std::uint32_t attempt, std::uint64_t estimate_bytes,
                           const ProgressState& state) {
  if (mode_ == Mode::kJson) {
    emit({{"event", "start"}, {"file", name}, {"attempt", attempt}, {"estimate_bytes", estimate_bytes},
          {"running", state.running}});
  } else if (mode_ == Mode::kPlain) {
    std::fprintf(log_, "start  %s%s (estimate %s)\n", name.c_str(),
                 attempt > 1 ? fmt::format(" [attempt {}]", attempt).c_str() : "",
                 estimate_bytes ? format_bytes(estimate_bytes).c_str() : "unknown");
    std::fflush(log_);
  }
}

void Progress::job_ended(const std::string& name, const std::string& status, const std::string& detail,
                         std::uint64_t peak_bytes, double wall_s, const ProgressState& state, bool band_limited) {
  const std::string& shown = band_limited && detail.empty() ? kBandLimitedDetail : detail;
  if (mode_ == Mode::kJson) {
    const auto eta = eta_seconds(state);
    emit({{"event", "end"}, {"file", name}, {"status", status}, {"detail", shown}, {"peak_pss_bytes", peak_bytes},
          {"wall_s", wall_s}, {"band_limited", band_limited}, {"done", state.done}, {"failed", state.failed},
          {"total", state.total}, {"elapsed_s", state.elapsed_s}, {"eta_s", eta ? nlohmann::json(*eta) : nlohmann::json(nullptr)}});
    return;
  }
  if (mode_ == Mode::kQuiet) return;
  // On a terminal only what needs attention gets a line of its own; the live line shows the rest.
  if (mode_ == Mode::kTty && status == "done" && !band_limited) return;
  clear_line();
  std::fprintf(log_, "%-6s %s (peak %s, %.1f s)%s%s\n", status.c_str(), name.c_str(), format_bytes(peak_bytes).c_str(),
               wall_s, shown.empty() ? "" : ": ", shown.c_str());
  std::fflush(log_);
}

std::string Progress::describe(const Reason& reason) const { return ab::describe(reason); }

void Progress::message(const std::string& text) {
  if (mode_ == Mode::kQuiet) return;
  if (mode_ == Mode::kJson) {
    emit({{"event", "message"}, {"text", text}});
    return;
  }
  clear_line();
  std::fprintf(log_, "align-batch: %s\n", text.c_str());
  std::fflush(log_);
}

void Progress::tick(const ProgressState& state) {
  if (mode_ == Mode::kJson) {
    // For programs following a run (and bench/eta.sh): where it stands, once a second.
    if (last_event_s_ >= 0 && state.elapsed_s - last_event_s_ < 1.0) return;
    last_event_s_ = state.elapsed_s;
    const auto eta = eta_seconds(state);
    emit({{"event", "progress"}, {"done", state.done}, {"failed", state.failed}, {"total", state.total},
          {"running", state.running}, {"in_use_bytes", state.in_use_bytes}, {"elapsed_s", state.elapsed_s},
          {"eta_s", eta ? nlohmann::json(*eta) : nlohmann::json(nullptr)}});
    return;
  }
  if (mode_ != Mode::kTty) return;
  if (last_draw_s_ >= 0 && state.elapsed_s - last_draw_s_ < 0.25) return;
  last_draw_s_ = state.elapsed_s;
  // One column short of the width: a line that fills the last column wraps on many terminals.
  const std::size_t columns = terminal_columns(log_);
  std::fprintf(log_, "\r\033[K%s", fit_to_columns(live_line(state), columns > 1 ? columns - 1 : columns).c_str());
  std::fflush(log_);
  line_shown_ = true;
}

void Progress::summary(const RunSummary& s, std::FILE* out) {
  clear_line();
  if (mode_ == Mode::kJson) {
    auto event = s.to_json();
    event["event"] = "summary";
    emit(event);
    return;
  }
  if (!s.setup_error.empty()) {
    // One message, not one failure per file: nothing of the corpus was processed.
    std::fprintf(log_, "align-batch: %s\n", s.setup_error.c_str());
    std::fflush(log_);
    return;
  }
  const double per_hour = s.wall_s > 0 ? static_cast<double>(s.done) * 3600.0 / s.wall_s : 0;
  std::fprintf(out, "%s: %zu done, %zu skipped (already done), %zu failed, %u retried, %u stopped by the memory guard",
               s.interrupted ? "interrupted" : "finished", s.done, s.skipped, s.failed.size(), s.retried,
               s.guard_killed);
  if (s.oom_deaths) std::fprintf(out, ", %u killed by the kernel (OOM)", s.oom_deaths);
  std::fprintf(out, "\npeak memory %s of budget %s; wall time %.1f s; %.0f files/hour\n",
               format_bytes(s.peak_pss_bytes).c_str(),
               s.budget_bytes ? format_bytes(s.budget_bytes).c_str() : "unlimited", s.wall_s, per_hour);
  if (!s.reran.empty()) {
    std::string counts;
    for (const auto& [why, n] : s.run_reasons) counts += fmt::format("{}{} {}", counts.empty() ? "" : ", ", n, why);
    std::fprintf(out, "ran: %s\n%zu file%s ran again although done before:\n", counts.c_str(), s.reran.size(),
                 s.reran.size() == 1 ? "" : "s");
    for (const auto& f : s.reran) std::fprintf(out, "  %s: %s\n", f.path.c_str(), f.reason.c_str());
  }
  if (!s.transcribed_without_transcript.empty()) {
    const bool one = s.transcribed_without_transcript.size() == 1;
    std::fprintf(out,
                 "%zu file%s transcribed, not aligned: no transcript beside %s (<stem>.txt or .lab), while other "
                 "files have one (--task auto); add %s, or pass --task align to make this an error:\n",
                 s.transcribed_without_transcript.size(), one ? " was" : "s were", one ? "it" : "them",
                 one ? "one" : "them");
    for (const auto& path : s.transcribed_without_transcript) std::fprintf(out, "  %s\n", path.c_str());
  }
  if (!s.band_limited.empty()) {
    const bool one = s.band_limited.size() == 1;
    std::fprintf(out,
                 "%zu file%s aligned within a limited search band (%s alignment may be off); rerun %s with --force "
                 "--max-trellis-mib N above the current %llu:\n",
                 s.band_limited.size(), one ? "" : "s", one ? "its" : "their", one ? "it" : "them",
                 static_cast<unsigned long long>(s.max_trellis_mib));
    for (const auto& path : s.band_limited) std::fprintf(out, "  %s\n", path.c_str());
  }
  if (!s.failed.empty()) {
    std::fprintf(out, "failed files:\n");
    for (const auto& f : s.failed) std::fprintf(out, "  %s: %s\n", f.path.c_str(), f.reason.c_str());
  }
  if (s.interrupted) std::fprintf(out, "run again with the same command to finish the remaining files\n");
  if (!s.out_dir.empty()) std::fprintf(out, "outputs in %s\n", s.out_dir.c_str());
  if (!s.report_path.empty()) std::fprintf(out, "report: %s\n", s.report_path.c_str());
  std::fflush(out);
}

}  // namespace ab
