// Resume decisions: the pure comparison, and the history and file-system reads around it.
#include "orchestrator/batch/resume.h"

#include <sys/stat.h>

#include "protocol/wire_path.h"
#include "history/job_key.h"

namespace ab {

ResumeDecision decide_resume(const CorpusFile& file, const std::string& task,
                             const std::optional<std::string>& transcript_hash, const std::optional<JobRow>& last_ok,
                             const std::vector<std::optional<OutputFile>>& outputs_now, bool other_key_ok) {
  auto runs = [](std::string why) { return ResumeDecision{false, std::move(why)}; };
  if (!last_ok) return runs(other_key_ok ? "model or command changed" : kReasonNew);
  if (last_ok->input_size_bytes != file.size_bytes || last_ok->input_mtime_ns != file.mtime_ns)
    return runs("audio changed");
  // Rows written before schema 2 know neither the task nor the outputs: nothing to check them by.
  if (last_ok->task.empty()) return runs("done by an older align-batch (its outputs were not recorded)");
  if (last_ok->task != task) return runs("task changed (was " + last_ok->task + ")");
  if (last_ok->transcript_hash != transcript_hash) {
    if (!last_ok->transcript_hash) return runs("transcript added");
    if (!transcript_hash) return runs(file.transcript ? "transcript unreadable" : "transcript removed");
    return runs("transcript changed");
  }
  for (std::size_t i = 0; i < last_ok->outputs.size(); ++i) {
    const OutputFile& was = last_ok->outputs[i];
    const std::optional<OutputFile>& now = i < outputs_now.size() ? outputs_now[i] : std::nullopt;
    if (!now) return runs("output missing: " + display_path(was.path));
    if (now->size_bytes != was.size_bytes || now->mtime_ns != was.mtime_ns)
      return runs("output changed: " + display_path(was.path));
  }
  return ResumeDecision{true, {}};
}

std::optional<OutputFile> stat_output(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  return OutputFile{path, static_cast<std::uint64_t>(st.st_size),
                    static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec};
}

std::optional<std::string> transcript_hash_of(const CorpusFile& file) {
  if (!file.transcript) return std::nullopt;
  auto h = content_hash(*file.transcript);
  if (!h) return std::nullopt;
  return h.value();
}

ResumeDecision check_resume(HistoryStore& history, const CorpusFile& file, const std::string& job_key,
                            const std::string& task) {
  auto last = history.last_ok_job(file.audio.string(), job_key);
  if (!last) return ResumeDecision{false, "history unreadable (" + last.error() + ")"};
  bool other_key_ok = false;
  if (!last.value()) {
    auto other = history.ok_under_other_key(file.audio.string(), job_key);
    other_key_ok = other && other.value();
    return decide_resume(file, task, std::nullopt, std::nullopt, {}, other_key_ok);
  }
  const JobRow& row = *last.value();
  // Cheap checks first: a changed audio file or task needs no transcript read and no stat.
  if (row.input_size_bytes != file.size_bytes || row.input_mtime_ns != file.mtime_ns || row.task != task)
    return decide_resume(file, task, std::nullopt, last.value(), {}, false);
  std::vector<std::optional<OutputFile>> outputs_now;
  outputs_now.reserve(row.outputs.size());
  for (const auto& o : row.outputs) outputs_now.push_back(stat_output(o.path));
  const auto hash = task == "transcribe" ? std::nullopt : transcript_hash_of(file);
  return decide_resume(file, task, hash, last.value(), outputs_now, false);
}

}  // namespace ab
