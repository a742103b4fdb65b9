// Resume: whether a corpus file is done, and if not, why it runs again.
//
// A file is done only while everything its last ok job depended on is unchanged: the audio
// (path, size, mtime), its transcript's content (hash, or none), the task run, the job key
// (model or command template) and every output that job wrote (present, with the size and
// mtime recorded right after writing). Anything else runs, and the summary says why.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "history/history_store.h"
#include "orchestrator/batch/corpus.h"

namespace ab {

/// What resume decided for one file.
struct ResumeDecision {
  bool done = false;
  /// Why it runs (empty when done): "new", "--force", "audio changed", "transcript changed",
  /// "transcript added", "transcript removed", "task changed (was align)", "model or command
  /// changed", "output missing: PATH", "output changed: PATH", "done by an older align-batch
  /// (its outputs were not recorded)".
  std::string reason;
};

/// The reason a file with no ok job under this key runs (no other key either: "new").
inline constexpr const char* kReasonNew = "new";

/// Pure: compares `last_ok` (the newest ok job for this path and key, with its outputs) with the
/// file as it is now. `transcript_hash` is the current transcript's content hash (none: no
/// transcript, or unreadable); `outputs_now` holds, in `last_ok->outputs` order, each output's
/// current state (none: missing). `other_key_ok`: an ok job exists under another key.
ResumeDecision decide_resume(const CorpusFile& file, const std::string& task,
                             const std::optional<std::string>& transcript_hash, const std::optional<JobRow>& last_ok,
                             const std::vector<std::optional<OutputFile>>& outputs_now, bool other_key_ok);

/// Stats `path`: its size and mtime now, or none if it is not a regular file any more.
std::optional<OutputFile> stat_output(const std::string& path);

/// The transcript's content hash for resume and history; none when there is no transcript or it
/// cannot be read (the job then reports the transcript's error itself).
std::optional<std::string> transcript_hash_of(const CorpusFile& file);

/// Reads history and the file system and decides (the I/O around decide_resume). A history error
/// counts as not done ("history unreadable ...").
ResumeDecision check_resume(HistoryStore& history, const CorpusFile& file, const std::string& job_key,
                            const std::string& task);

}  // namespace ab
