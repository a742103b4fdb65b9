// The worker's protocol loop: one JSON job per stdin line in, progress and one result line out (torch-free).
#pragma once

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <string>

#include <nlohmann/json.hpp>

#include "worker/emission_model.h"
#include "protocol/job_messages.h"
#include "protocol/status_block.h"
#include "protocol/transcript.h"
#include "worker/windowed_emissions.h"

namespace ab {

/// Settings from the worker's command line.
struct WorkerConfig {
  WindowConfig windows;                          ///< --window-s, --context-s
  /// --max-trellis-mib. 32 MiB: the cap bounds what a long alignment adds to the worker's peak.
  /// bench/worker_memory.sh, 60-minute tone-model file: the same best path under 8 and 256 MiB;
  /// an aligner version that filled its cap cost +260 MiB of peak RSS over a 1-minute file at
  /// 256 MiB and +36 MiB at 32 MiB.
  std::uint64_t max_trellis_bytes = 32ull << 20;
};

/// This process's resident set size from /proc/self/statm, in bytes (0 if unreadable).
std::uint64_t current_rss_bytes();

/// Resets this process's peak RSS (VmHWM) to its current RSS; false where /proc/self/clear_refs
/// cannot be written.
bool reset_peak_rss();

/// This process's peak RSS (VmHWM of /proc/self/status) in bytes (0 if unreadable).
std::uint64_t peak_rss_bytes();

/// Bytes malloc has handed out and not taken back (glibc mallinfo2: arena + mmapped in use).
std::uint64_t malloc_in_use_bytes();

/// --malloc-mmap-threshold-kib's default: glibc's own starting value (128 KiB), held there. Every
/// block at least this large is its own mapping, unmapped (its pages returned) when freed.
inline constexpr std::size_t kMallocMmapThresholdKib = 128;

/// Stops glibc from raising its mmap threshold: M_MMAP_THRESHOLD := `kib` KiB (which also stops
/// the trim threshold from moving). Call once, before the model is loaded. 0 leaves glibc's
/// sliding threshold alone (returns true). False if mallopt refused.
bool pin_malloc_mmap_threshold(std::size_t kib);

/// The `{"ready": true, ...}` line (pid, sample rate, labels, RSS now).
ReadyLine ready_message(const ModelInfo& info);

/// Reads jobs, runs them on `model`, answers per docs/worker-protocol.md. A bad job (bad JSON, bad
/// audio, bad transcript, engine error, out of memory twice) is an error result, never the end of
/// the loop. Between jobs buffers are dropped and malloc_trim(0) returns the heap to the system.
class WorkerLoop {
 public:
  WorkerLoop(EmissionModel& model, WorkerConfig config, WorkerStatus& status);

  /// Handles lines from `in` until EOF; each answer is written to `out` as it happens and flushed.
  /// Returns the process exit status (0).
  int run(std::istream& in, std::ostream& out);

  /// Handles one job line; writes progress lines and returns the result (not yet written).
  JobResult handle_line(const std::string& line, std::ostream& out);

 private:
  JobResult run_job(const nlohmann::json& line, std::ostream& out);
  JobResult run_job_once(const JobRequest& job, const WindowConfig& windows, std::ostream& out);

  EmissionModel& model_;
  WorkerConfig config_;
  WorkerStatus& status_;
  LabelSet labels_;
};

}  // namespace ab
