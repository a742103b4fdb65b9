// Progress: live line on a terminal, log lines otherwise, JSON events for programs; the summary.
#include "orchestrator/progress.h"

#include <unistd.h>

#include <fmt/format.h>

#include "memguard/size.h"

namespace ab {

int RunSummary::exit_code() const {
  if (interrupted) return 130;
  return failed.empty() ? 0 : 1;
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
          {"exit_code", exit_code()}};
}

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

void Progress::emit(nlohmann::json event) {
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

std::string Progress::live_line(const ProgressState& s) const {
  const std::size_t finished = s.done + s.failed;
  std::string eta = "-";
  if (s.done > 0 && s.elapsed_s > 0 && finished < s.total) {
    const double per_file_s = s.elapsed_s / static_cast<double>(finished);
    const double left_s = per_file_s * static_cast<double>(s.total - finished);
    eta = left_s >= 3600 ? fmt::format("{:.1f}h", left_s / 3600) : left_s >= 60 ? fmt::format("{:.0f}m", left_s / 60)
                                                                                 : fmt::format("{:.0f}s", left_s);
  }
  const double per_hour = s.elapsed_s > 0 ? static_cast<double>(s.done) * 3600.0 / s.elapsed_s : 0;
  return fmt::format("{}/{} done{} | running {}{} | memory {} of {} | {:.0f} files/h | ETA {}{}", s.done, s.total,
                     s.failed ? fmt::format(", {} failed", s.failed) : std::string(), s.running,
                     s.cap ? fmt::format("/{}", s.cap) : std::string(), format_bytes(s.in_use_bytes),
                     s.budget_bytes ? format_bytes(s.budget_bytes) : std::string("unlimited"), per_hour, eta,
                     s.current.empty() ? std::string() : " | " + s.current);
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
  if (mode_ == Mode::kJson) {
    emit({{"event", "end"}, {"file", name}, {"status", status}, {"detail", detail}, {"peak_pss_bytes", peak_bytes},
          {"wall_s", wall_s}, {"band_limited", band_limited}, {"done", state.done}, {"failed", state.failed},
          {"total", state.total}});
    return;
  }
  if (mode_ == Mode::kQuiet) return;
  // On a terminal only what needs attention gets a line of its own; the live line shows the rest.
  if (mode_ == Mode::kTty && status == "done" && !band_limited) return;
  clear_line();
  std::fprintf(log_, "%-6s %s (peak %s, %.1f s)%s%s\n", status.c_str(), name.c_str(), format_bytes(peak_bytes).c_str(),
               wall_s, detail.empty() ? "" : ": ", detail.c_str());
  std::fflush(log_);
}

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
  if (mode_ != Mode::kTty) return;
  if (last_draw_s_ >= 0 && state.elapsed_s - last_draw_s_ < 0.25) return;
  last_draw_s_ = state.elapsed_s;
  std::fprintf(log_, "\r\033[K%s", live_line(state).c_str());
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
  std::fflush(out);
}

}  // namespace ab
