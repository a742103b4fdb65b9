// The lines a persistent worker and its parent exchange (docs/worker-protocol.md): the job request
// on the worker's stdin, the ready and result lines on its stdout. One definition both sides use.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace ab {

/// One job line on a worker's stdin. Paths are bytes; on the wire they are JSON strings, or
/// {"hex": ...} where they are not UTF-8 (protocol/wire_path.h).
struct JobRequest {
  std::int64_t id = 0;
  std::string audio;                      ///< the audio file
  std::optional<std::string> transcript;  ///< none: nothing to align to
  std::string out;                        ///< the output path without extension
  std::string task = "auto";              ///< "align", "transcribe" or "auto" (align where a transcript is given)
};

/// The request as one JSON line, without the newline.
std::string job_request_line(const JobRequest& request);

/// Reads a job object as the worker does: the id must be an integer, `audio` and `out` paths,
/// `transcript` a path or null, `task` (resolved: "auto" becomes "align" with a transcript,
/// "transcribe" without) align or transcribe, and align needs a transcript. The error says which
/// field is wrong, naming the job or its audio file.
Result<JobRequest> parse_job_request(const nlohmann::json& job);

/// A progress line while a job runs (the parent reads progress from the status block instead).
struct JobProgress {
  std::int64_t id = 0;
  double fraction = 0;  ///< of the job done, 0..1
};

nlohmann::json to_json(const JobProgress& progress);

/// The worker's first line: its model is loaded (or could not be: `ready` false and `error`).
struct ReadyLine {
  bool ready = false;
  std::string error;  ///< not ready: why
  std::int64_t pid = 0;
  int sample_rate_hz = 0;
  std::size_t labels = 0;
  int threads = 0;  ///< LibTorch's intra-op threads; 0: not said
  std::optional<std::uint64_t> rss_bytes;
  /// --shared-weights: the size of the mapping it shares, or why it kept its own copy.
  std::optional<std::uint64_t> shared_weights_bytes;
  std::string shared_weights_error;
};

nlohmann::json to_json(const ReadyLine& line);

/// The ready line in `line`; none when it is another kind of line. Fields of the wrong type count
/// as absent.
std::optional<ReadyLine> parse_ready_line(const nlohmann::json& line);

/// A job's one result line.
struct JobResult {
  std::optional<std::int64_t> id;  ///< none: the line read was not a job with an integer id
  bool ok = false;
  std::string error;                 ///< not ok: names the file, says what failed and what to do
  std::vector<std::string> outputs;  ///< ok: the files written (path bytes)
  std::string task;                  ///< ok: "align" or "transcribe"
  /// ok align: the path ran along the edge of the band --max-trellis-mib allows.
  bool band_limited = false;
  std::optional<std::uint64_t> peak_rss_bytes;  ///< VmHWM during the job (absent: not measurable)
  std::optional<std::uint64_t> idle_rss_bytes;  ///< after the job's buffers were dropped
  /// What else an ok result says (audio_s, wall_s, frames, windows, log_prob, text, tensor_cache,
  /// ...: docs/worker-protocol.md), for logs, benches and tests; the parent reads none of it.
  nlohmann::json figures = nlohmann::json::object();
};

/// A failed job's result.
JobResult job_failure(std::optional<std::int64_t> id, std::string error);

nlohmann::json to_json(const JobResult& result);

/// The result in `line`; none when it is another kind of line (progress, ready). Fields of the
/// wrong type count as absent (a non-boolean `band_limited` is false).
std::optional<JobResult> parse_job_result(const nlohmann::json& line);

}  // namespace ab
