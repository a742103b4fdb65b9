// decide_resume alone: every reason a done file runs again, and what leaves it done.
#include "orchestrator/batch/resume.h"

#include <doctest/doctest.h>

using ab::CorpusFile;
using ab::JobRow;
using ab::OutputFile;

namespace {

CorpusFile file_of() {
  CorpusFile f;
  f.audio = "/c/a.wav";
  f.transcript = "/c/a.txt";
  f.size_bytes = 100;
  f.mtime_ns = 7;
  return f;
}

JobRow done_row() {
  JobRow r;
  r.input_path = "/c/a.wav";
  r.input_size_bytes = 100;
  r.input_mtime_ns = 7;
  r.task = "align";
  r.transcript_hash = "h1";
  r.outputs = {{"/o/a.TextGrid", 10, 1}, {"/o/a.json", 20, 2}};
  return r;
}

}  // namespace

TEST_CASE("decide_resume: done only while audio, transcript, task and every output are unchanged") {
  const CorpusFile f = file_of();
  const JobRow row = done_row();
  const std::vector<std::optional<OutputFile>> same = {row.outputs[0], row.outputs[1]};
  CHECK(ab::decide_resume(f, "align", std::string("h1"), row, same, false).done);

  auto why = [&](const CorpusFile& file, const std::string& task, std::optional<std::string> hash,
                 const std::optional<JobRow>& last, std::vector<std::optional<OutputFile>> now, bool other = false) {
    const auto d = ab::decide_resume(file, task, hash, last, now, other);
    CHECK_FALSE(d.done);
    return d.reason;
  };
  CHECK(why(f, "align", std::string("h1"), std::nullopt, {}) == "new");
  CHECK(why(f, "align", std::string("h1"), std::nullopt, {}, true) == "model or command changed");
  CorpusFile bigger = f;
  bigger.size_bytes = 101;
  CHECK(why(bigger, "align", std::string("h1"), row, same) == "audio changed");
  CorpusFile touched = f;
  touched.mtime_ns = 8;
  CHECK(why(touched, "align", std::string("h1"), row, same) == "audio changed");
  CHECK(why(f, "transcribe", std::nullopt, row, same) == "task changed (was align)");
  CHECK(why(f, "align", std::string("h2"), row, same) == "transcript changed");
  CorpusFile no_transcript = f;
  no_transcript.transcript.reset();
  CHECK(why(no_transcript, "align", std::nullopt, row, same) == "transcript removed");
  CHECK(why(f, "align", std::nullopt, row, same) == "transcript unreadable");
  JobRow untranscribed = row;
  untranscribed.transcript_hash.reset();
  CHECK(why(f, "align", std::string("h1"), untranscribed, same) == "transcript added");
  CHECK(why(f, "align", std::string("h1"), row, {row.outputs[0], std::nullopt}) == "output missing: /o/a.json");
  OutputFile edited = row.outputs[0];
  edited.mtime_ns = 99;
  CHECK(why(f, "align", std::string("h1"), row, {edited, row.outputs[1]}) == "output changed: /o/a.TextGrid");
  edited = row.outputs[1];
  edited.size_bytes = 21;
  CHECK(why(f, "align", std::string("h1"), row, {row.outputs[0], edited}) == "output changed: /o/a.json");
  JobRow old = row;
  old.task.clear();  // recorded by schema 1: nothing to check it by
  CHECK(why(f, "align", std::string("h1"), old, same).rfind("done by an older align-batch", 0) == 0);
  // A non-UTF-8 output name is shown escaped.
  JobRow latin1 = row;
  latin1.outputs = {{"/o/caf\xe9.ctm", 1, 1}};
  CHECK(why(f, "align", std::string("h1"), latin1, {std::nullopt}) == "output missing: /o/caf\\xe9.ctm");
}
