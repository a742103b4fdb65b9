// Tests of the job lines: what one side writes the other reads back, field by field.
#include "protocol/job_messages.h"

#include <doctest/doctest.h>

using ab::JobRequest;
using ab::JobResult;
using nlohmann::json;

TEST_CASE("a job request reads back as written, a non-UTF-8 path byte for byte") {
  JobRequest r{7, "/c/caf\xe9.wav", std::string("/c/caf\xe9.txt"), "/o/caf\xe9", "align"};
  const std::string line = ab::job_request_line(r);
  CHECK(line.find('\n') == std::string::npos);
  CHECK(line.find("\"hex\"") != std::string::npos);  // not UTF-8: sent as hex (wire_path.h)
  auto back = ab::parse_job_request(json::parse(line));
  REQUIRE_MESSAGE(back.ok(), back.error());
  CHECK(back->id == 7);
  CHECK(back->audio == r.audio);
  CHECK(back->transcript == r.transcript);
  CHECK(back->out == r.out);
  CHECK(back->task == "align");
}

TEST_CASE("a job request's task auto is align with a transcript, transcribe without") {
  auto with = ab::parse_job_request(json{{"id", 1}, {"audio", "/a.wav"}, {"out", "/o/a"}, {"transcript", "/a.txt"}});
  REQUIRE(with.ok());
  CHECK(with->task == "align");
  auto without = ab::parse_job_request(json{{"id", 1}, {"audio", "/a.wav"}, {"out", "/o/a"}, {"transcript", nullptr}});
  REQUIRE(without.ok());
  CHECK(without->task == "transcribe");
  CHECK_FALSE(without->transcript.has_value());
}

TEST_CASE("a bad job request names the field and the file") {
  auto error_of = [](const json& job) {
    auto r = ab::parse_job_request(job);
    REQUIRE_FALSE(r.ok());
    return r.error();
  };
  CHECK(error_of(json{{"audio", "/a.wav"}}).find("job without an integer \"id\"") == 0);
  CHECK(error_of(json{{"id", "x"}, {"audio", "/a.wav"}}).find("job without an integer \"id\"") == 0);
  CHECK(error_of(json{{"id", 3}, {"out", "/o"}}) == "job 3: \"audio\" must be the audio file's path");
  CHECK(error_of(json{{"id", 3}, {"audio", "/a.wav"}, {"transcript", 5}, {"out", "/o"}}) ==
        "/a.wav: job's \"transcript\" must be a path or null");
  CHECK(error_of(json{{"id", 3}, {"audio", "/a.wav"}, {"task", "dance"}, {"out", "/o"}}) ==
        "/a.wav: unknown task \"dance\"; use \"align\" or \"transcribe\"");
  CHECK(error_of(json{{"id", 3}, {"audio", "/a.wav"}, {"task", "align"}, {"out", "/o"}}) ==
        "/a.wav: task \"align\" needs a \"transcript\" file");
  CHECK(error_of(json{{"id", 3}, {"audio", "/a.wav"}, {"task", "transcribe"}}) ==
        "/a.wav: job has no \"out\" path (output path without extension)");
}

TEST_CASE("an ok result reads back with its outputs, memory figures and the rest as figures") {
  JobResult r;
  r.id = 9;
  r.ok = true;
  r.task = "align";
  r.band_limited = true;
  r.outputs = {"/o/a.TextGrid", "/o/caf\xe9.json"};
  r.peak_rss_bytes = 123;
  r.idle_rss_bytes = 45;
  r.figures = {{"audio_s", 1.5}, {"frames", 75}};
  const json line = ab::to_json(r);
  CHECK(line["audio_s"] == 1.5);
  CHECK(line["band_limited"] == true);
  auto back = ab::parse_job_result(line);
  REQUIRE(back.has_value());
  CHECK(back->id == 9);
  CHECK(back->ok);
  CHECK(back->task == "align");
  CHECK(back->band_limited);
  CHECK(back->outputs == r.outputs);
  CHECK(back->peak_rss_bytes == 123u);
  CHECK(back->idle_rss_bytes == 45u);
  CHECK(back->figures == r.figures);
}

TEST_CASE("a failed result carries its error; fields of the wrong type count as absent") {
  const json failed = ab::to_json(ab::job_failure(std::nullopt, "stdin: not a JSON job object"));
  CHECK(failed["id"].is_null());
  CHECK(failed["ok"] == false);
  CHECK_FALSE(failed.contains("outputs"));
  auto back = ab::parse_job_result(failed);
  REQUIRE(back.has_value());
  CHECK_FALSE(back->id.has_value());
  CHECK(back->error == "stdin: not a JSON job object");
  auto odd = ab::parse_job_result(json{{"id", 2}, {"ok", "yes"}, {"band_limited", "no"}, {"peak_rss_bytes", -1}});
  REQUIRE(odd.has_value());
  CHECK_FALSE(odd->ok);
  CHECK_FALSE(odd->band_limited);
  CHECK_FALSE(odd->peak_rss_bytes.has_value());
}

TEST_CASE("ready, progress and result lines are told apart") {
  ab::ReadyLine ready;
  ready.ready = true;
  ready.pid = 42;
  ready.sample_rate_hz = 16000;
  ready.labels = 32;
  ready.threads = 2;
  ready.rss_bytes = 1000;
  ready.shared_weights_bytes = 500;
  const json line = ab::to_json(ready);
  CHECK_FALSE(ab::parse_job_result(line).has_value());
  auto back = ab::parse_ready_line(line);
  REQUIRE(back.has_value());
  CHECK(back->ready);
  CHECK(back->pid == 42);
  CHECK(back->sample_rate_hz == 16000);
  CHECK(back->labels == 32);
  CHECK(back->threads == 2);
  CHECK(back->rss_bytes == 1000u);
  CHECK(back->shared_weights_bytes == 500u);
  ab::ReadyLine failed;
  failed.error = "model.pt: not a TorchScript file";
  CHECK(ab::to_json(failed) == json{{"ready", false}, {"error", "model.pt: not a TorchScript file"}});
  const json progress = ab::to_json(ab::JobProgress{7, 0.42});
  CHECK_FALSE(ab::parse_ready_line(progress).has_value());
  CHECK_FALSE(ab::parse_job_result(progress).has_value());
}
