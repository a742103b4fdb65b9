// `align-batch report`: one run's HTML report from history; also written at the end of every run.
#pragma once

#include <cstdint>
#include <filesystem>

#include "common/result.h"

namespace CLI {
class App;
}

namespace ab {

class HistoryStore;
class ProgressSink;
struct RunSummary;

/// `<history's directory>/report-RUN.html`: beside the history (OUT/.align-batch/ by default).
std::filesystem::path default_report_path(const std::filesystem::path& history_path, std::int64_t run_id);

/// Reads run `run_id`, its jobs and their timelines, and the key's fitted law from `store`, and
/// writes the page to `path` atomically (a temporary file renamed over it). Returns `path`.
Result<std::filesystem::path> write_run_report(HistoryStore& store, std::int64_t run_id,
                                               const std::filesystem::path& path);

/// The end of a run, local or Slurm: writes OUT/.align-batch/report-RUN.html from history and
/// names it in `summary`, unless there is no history or run, or the run stopped at its setup. A
/// page that cannot be written is a message on `progress`, never the run's failure.
void write_end_of_run_report(HistoryStore* history, std::int64_t run_id, const std::filesystem::path& out_dir,
                             RunSummary& summary, ProgressSink& progress);

/// Registers `align-batch report [--run N] [--html FILE] [--out DIR | --history PATH]` on `app`:
/// the newest run unless --run, written to default_report_path unless --html; the database is
/// --history, else default_history_path(--out, default "aligned": the run's own --out, as for
/// `history` and `replay`), never created here. Sets
/// `exit_code` (exit_code.h): 0 written; 2 no such database or run, or the file could not be
/// written.
void add_report_command(CLI::App& app, int& exit_code);

}  // namespace ab
