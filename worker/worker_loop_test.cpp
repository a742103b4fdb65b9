// Tests for the protocol loop with a plain C++ EmissionModel (the LibTorch seam) over real audio files.
#include "worker/worker_loop.h"

#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <doctest/doctest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "tests/testutil/audio_gen.h"
#include "tests/testutil/temp_dir.h"
#include "worker/test_jobs.h"

namespace ab {

namespace {

using nlohmann::json;

/// Emits "a" on frames louder than 0.1 RMS, blank elsewhere; can be told to fail like an engine.
class LoudnessModel : public EmissionModel {
 public:
  LoudnessModel() {
    info_.labels = {"<blk>", "|", "a"};
    info_.word_separator = "|";
    info_.sample_rate_hz = 16000;
    info_.samples_per_frame = 320;
  }
  const ModelInfo& info() const override { return info_; }
  EmissionChunk compute(const float* x, std::size_t count) override {
    windows_seen.push_back(count);
    if (count > oom_above_samples) {
      if (use_bad_alloc) throw std::bad_alloc();
      throw EngineOutOfMemory("fake allocator: cannot allocate " + std::to_string(count * 4000) + " bytes");
    }
    if (fail_with_error) throw std::runtime_error("fake engine: shape mismatch");
    if (touch_mib_once > 0) {  // a job's transient memory: touched, then freed before the result
      std::vector<unsigned char> scratch(touch_mib_once << 20);
      volatile unsigned char* p = scratch.data();
      for (std::size_t i = 0; i < scratch.size(); i += 4096) p[i] = 1;
      touch_mib_once = 0;
    }
    EmissionChunk c;
    c.frames = static_cast<std::int64_t>(count) / 320;
    c.labels = 3;
    for (std::int64_t f = 0; f < c.frames; ++f) {
      double e = 0;
      for (int s = 0; s < 320; ++s) e += double(x[f * 320 + s]) * x[f * 320 + s];
      const bool loud = std::sqrt(e / 320) > 0.1;
      c.log_probs.push_back(std::log(loud ? 0.01f : 0.98f));
      c.log_probs.push_back(std::log(0.01f));
      c.log_probs.push_back(std::log(loud ? 0.98f : 0.01f));
    }
    return c;
  }
  std::size_t oom_above_samples = SIZE_MAX;
  bool use_bad_alloc = false;
  bool fail_with_error = false;
  std::size_t touch_mib_once = 0;  ///< the next compute() touches this many MiB, then frees them
  std::vector<std::size_t> windows_seen;

 private:
  ModelInfo info_;
};

/// Runs `jobs` (one JSON object per line) through a WorkerLoop; returns every stdout line parsed.
std::vector<json> run_loop(EmissionModel& model, const std::vector<std::string>& jobs, WorkerStatus& status,
                           WorkerConfig config = {}) {
  std::string input;
  for (const auto& j : jobs) input += j + "\n";
  std::istringstream in(input);
  std::ostringstream out;
  WorkerLoop loop(model, config, status);
  CHECK(loop.run(in, out) == 0);
  std::vector<json> lines;
  std::istringstream text(out.str());
  std::string line;
  while (std::getline(text, line)) lines.push_back(json::parse(line));
  return lines;
}

std::vector<json> results(const std::vector<json>& lines) {
  std::vector<json> r;
  for (const auto& l : lines) {
    if (l.contains("ok")) r.push_back(l);
  }
  return r;
}

/// 0.3 s of 440 Hz, 0.2 s silence, 0.3 s of 440 Hz, 0.2 s silence: "a", "a".
std::string write_two_beeps(const test::TempDir& dir, const std::string& name) {
  const auto path = (dir.path() / name).string();
  const test::AudioFormat wav = test::audio_formats().front();
  REQUIRE(wav.name == "wav");
  const std::string err = test::write_tones(path, wav, 16000, 1, {{440, 0.3}, {0, 0.2}, {440, 0.3}, {0, 0.2}});
  REQUIRE_MESSAGE(err.empty(), err);
  return path;
}

using test::job_line;
using test::read_json_file;

}  // namespace

TEST_CASE("worker_loop: each result's peak_rss_bytes is that job's peak, not the worker's lifetime peak") {
  test::TempDir dir;
  const std::string audio = write_two_beeps(dir, "beeps.wav");
  LoudnessModel model;
  model.touch_mib_once = 200;  // the first job holds 200 MiB for a moment; the second does not
  auto block = StatusBlock::local();
  const auto res = results(run_loop(model,
                                    {job_line(1, audio, (dir.path() / "big").string(), "transcribe"),
                                     job_line(2, audio, (dir.path() / "small").string(), "transcribe")},
                                    block->status()));
  REQUIRE(res.size() == 2);
  REQUIRE(res[0].contains("peak_rss_bytes"));  // root can always write /proc/self/clear_refs
  const auto big = res[0]["peak_rss_bytes"].get<std::uint64_t>();
  const auto small = res[1]["peak_rss_bytes"].get<std::uint64_t>();
  const auto idle = res[0]["idle_rss_bytes"].get<std::uint64_t>();
  INFO("big " << big << ", small " << small << ", idle " << idle);
  CHECK(big >= idle + (190ull << 20));   // the 200 MiB was seen though it was freed before the result
  CHECK(small + (150ull << 20) < big);   // and the next job's peak starts afresh
  CHECK(small >= res[1]["idle_rss_bytes"].get<std::uint64_t>() / 2);
}

TEST_CASE("worker_loop: align and transcribe answer with outputs, figures and progress, in order") {
  test::TempDir dir;
  const std::string audio = write_two_beeps(dir, "beeps.wav");
  const auto transcript = dir.write("beeps.txt", "aa\n").string();
  LoudnessModel model;
  auto block = StatusBlock::local();
  WorkerConfig config;
  config.windows = {0.25, 0.05};  // several windows even for one second of audio
  const auto lines = run_loop(model,
                              {job_line(1, audio, (dir.path() / "aligned").string(), "align", transcript),
                               job_line(2, audio, (dir.path() / "heard").string(), "auto")},
                              block->status(), config);
  const auto res = results(lines);
  REQUIRE(res.size() == 2);
  // Progress lines come before their result and only rise.
  int progress_lines = 0;
  double last = -1;
  for (const auto& l : lines) {
    if (l.contains("ok")) break;
    REQUIRE(l.contains("progress"));
    CHECK(l["id"] == 1);
    CHECK(l["progress"].get<double>() >= last);
    last = l["progress"].get<double>();
    ++progress_lines;
  }
  CHECK(progress_lines == res[0]["windows"].get<int>());
  CHECK(res[0]["windows"].get<int>() == 4);

  const json& a = res[0];
  CHECK_MESSAGE(a["ok"] == true, a.dump());
  CHECK(a["id"] == 1);
  CHECK(a["task"] == "align");
  CHECK(a["audio_s"].get<double>() == doctest::Approx(1.0).epsilon(0.01));
  CHECK(a["frames"] == 50);
  CHECK(a["emissions_bytes"] == 50 * 3 * 4);
  CHECK(a["exact"] == true);
  CHECK(a["band_limited"] == false);  // a one-second file's whole trellis fits any cap
  CHECK(a["idle_rss_bytes"].get<std::uint64_t>() > 1'000'000u);
  REQUIRE(a["outputs"].size() == 3);
  const json aligned = read_json_file((dir.path() / "aligned.json").string());
  REQUIRE(aligned["tokens"].size() == 2);
  // Beeps at 0.0-0.3 s and 0.5-0.8 s; the fake model sees them to the frame (20 ms).
  CHECK(std::fabs(aligned["tokens"][0]["start_s"].get<double>() - 0.0) <= 0.021);
  CHECK(std::fabs(aligned["tokens"][0]["end_s"].get<double>() - 0.3) <= 0.021);
  CHECK(std::fabs(aligned["tokens"][1]["start_s"].get<double>() - 0.5) <= 0.021);
  CHECK(std::fabs(aligned["tokens"][1]["end_s"].get<double>() - 0.8) <= 0.021);

  const json& t = res[1];
  CHECK_MESSAGE(t["ok"] == true, t.dump());
  CHECK(t["task"] == "transcribe");
  CHECK(t["text"] == "aa");
  CHECK(std::filesystem::exists(dir.path() / "heard.TextGrid"));
  CHECK(std::filesystem::exists(dir.path() / "heard.ctm"));

  const StatusSnapshot s = block->read();
  CHECK(s.phase == WorkerPhase::kExited);
  CHECK(s.jobs_done == 2u);
  CHECK(!s.job_id);
}

TEST_CASE("worker_loop: malformed jobs are error results and the loop goes on") {
  test::TempDir dir;
  const std::string audio = write_two_beeps(dir, "ok.wav");
  LoudnessModel model;
  auto block = StatusBlock::local();
  const std::string out = (dir.path() / "o").string();
  const auto res = results(run_loop(model,
                                    {"this is not json", R"({"audio": "x.wav", "out": "o"})",
                                     R"({"id": 3, "out": "o"})", job_line(4, audio, out, "dance"),
                                     job_line(5, audio, out, "align"), R"({"id": 6, "audio": ")" + audio + R"("})",
                                     job_line(7, audio, out, "transcribe")},
                                    block->status()));
  REQUIRE(res.size() == 7);
  CHECK(res[0]["id"].is_null());
  CHECK(res[0]["error"].get<std::string>().find("not a JSON job") != std::string::npos);
  CHECK(res[1]["error"].get<std::string>().find("integer \"id\"") != std::string::npos);
  CHECK(res[2]["error"].get<std::string>().find("\"audio\"") != std::string::npos);
  CHECK(res[3]["error"].get<std::string>().find("unknown task \"dance\"") != std::string::npos);
  CHECK(res[4]["error"].get<std::string>().find("needs a \"transcript\"") != std::string::npos);
  CHECK(res[5]["error"].get<std::string>().find("no \"out\" path") != std::string::npos);
  for (int i = 0; i < 6; ++i) {
    CHECK(res[i]["ok"] == false);
    CHECK(res[i].contains("idle_rss_bytes"));
  }
  CHECK_MESSAGE(res[6]["ok"] == true, res[6].dump());
  CHECK(res[6]["text"] == "aa");
}

TEST_CASE("worker_loop: an engine out of memory retries once with half-size windows") {
  test::TempDir dir;
  const std::string audio = write_two_beeps(dir, "b.wav");
  auto block = StatusBlock::local();
  WorkerConfig config;
  config.windows = {0.5, 0.0};  // 8000-sample windows

  for (bool bad_alloc : {false, true}) {
    CAPTURE(bad_alloc);
    LoudnessModel model;
    model.use_bad_alloc = bad_alloc;
    model.oom_above_samples = 6000;  // 0.5 s windows fail, 0.25 s windows fit
    auto res = results(run_loop(model, {job_line(1, audio, (dir.path() / "o").string(), "transcribe")}, block->status(), config));
    REQUIRE(res.size() == 1);
    CHECK_MESSAGE(res[0]["ok"] == true, res[0].dump());
    CHECK(res[0]["window_s"].get<double>() == doctest::Approx(0.25));
    CHECK(res[0]["text"] == "aa");
    CHECK(model.windows_seen.front() == 8000u);
    CHECK(model.windows_seen.back() <= 4000u);

    LoudnessModel hopeless;
    hopeless.use_bad_alloc = bad_alloc;
    hopeless.oom_above_samples = 100;  // not even half-size windows fit
    res = results(run_loop(hopeless, {job_line(2, audio, (dir.path() / "o").string(), "transcribe")}, block->status(), config));
    REQUIRE(res.size() == 1);
    CHECK(res[0]["ok"] == false);
    const std::string err = res[0]["error"];
    CHECK(err.find(audio) == 0);
    CHECK(err.find("out of memory") != std::string::npos);
    CHECK(err.find("--window-s") != std::string::npos);
    CHECK(hopeless.windows_seen.size() == 2u);  // one try at 0.5 s, one at 0.25 s, then give up
  }
}

TEST_CASE("worker_loop: an engine exception becomes the job's error and the next job runs") {
  test::TempDir dir;
  const std::string audio = write_two_beeps(dir, "b.wav");
  auto block = StatusBlock::local();
  LoudnessModel model;
  model.fail_with_error = true;
  std::string input = job_line(1, audio, (dir.path() / "o").string(), "transcribe") + "\n";
  std::istringstream in(input);
  std::ostringstream out;
  WorkerLoop loop(model, {}, block->status());
  CHECK(loop.run(in, out) == 0);
  const json r = json::parse(out.str());
  CHECK(r["ok"] == false);
  CHECK(r["error"] == audio + ": the engine failed: fake engine: shape mismatch");
  model.fail_with_error = false;
  const ab::JobResult again = loop.handle_line(job_line(2, audio, (dir.path() / "o").string(), "transcribe"), out);
  CHECK_MESSAGE(again.ok, again.error);
}

TEST_CASE("worker_loop: an MP3 cut mid-stream is the job's error, not an alignment into the half that is left") {
  test::TempDir dir;
  test::AudioFormat mp3;
  for (const auto& f : test::audio_formats())
    if (f.name == "mp3") mp3 = f;
  if (mp3.name.empty() || !test::can_write(mp3, 16000, 1)) {
    MESSAGE("skipping: this libsndfile cannot write MP3");
    return;
  }
  const auto whole = (dir.path() / "speech.mp3").string();
  REQUIRE(test::write_tones(whole, mp3, 16000, 1, {{440, 2.0}, {0, 1.0}, {440, 2.0}, {0, 1.0}}) == "");
  std::ifstream f(whole, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const auto cut = dir.write("speech-cut.mp3", bytes.substr(0, bytes.size() / 2)).string();
  const auto transcript = dir.write("speech.txt", "aa\n").string();
  LoudnessModel model;
  auto block = StatusBlock::local();
  const auto res = results(run_loop(model,
                                    {job_line(1, cut, (dir.path() / "cut").string(), "align", transcript),
                                     job_line(2, whole, (dir.path() / "whole").string(), "align", transcript)},
                                    block->status()));
  REQUIRE(res.size() == 2);
  CHECK(res[0]["ok"] == false);
  const std::string err = res[0].value("error", "");
  CHECK(err.find(cut) == 0);
  CHECK(err.find("truncated or corrupt MP3") != std::string::npos);
  CHECK(err.find("promises 6.0 s") != std::string::npos);
  CHECK(err.find("re-copy") != std::string::npos);
  CHECK(model.windows_seen.size() == 1u);  // found at open: only the intact job ran the model
  CHECK_MESSAGE(res[1]["ok"] == true, res[1].dump());
  CHECK(res[1]["audio_s"].get<double>() == doctest::Approx(6.0).epsilon(0.01));
  CHECK(!std::filesystem::exists(dir.path() / "cut.json"));
}

namespace {

/// Emits, per 320-sample frame, label round(10 * the frame's mean sample) with probability 0.96
/// (0.01 for each other label): the audio file spells out the emissions frame by frame.
class ScheduleModel : public EmissionModel {
 public:
  ScheduleModel() {
    info_.labels = {"<blk>", "|", "a", "b", "c"};
    info_.word_separator = "|";
    info_.sample_rate_hz = 16000;
    info_.samples_per_frame = 320;
  }
  const ModelInfo& info() const override { return info_; }
  EmissionChunk compute(const float* x, std::size_t count) override {
    EmissionChunk c;
    c.frames = static_cast<std::int64_t>(count) / 320;
    c.labels = 5;
    for (std::int64_t f = 0; f < c.frames; ++f) {
      double sum = 0;
      for (int s = 0; s < 320; ++s) sum += x[f * 320 + s];
      const long favoured = std::lround(10 * sum / 320);
      for (int k = 0; k < 5; ++k) c.log_probs.push_back(std::log(k == favoured ? 0.96f : 0.01f));
    }
    return c;
  }

 private:
  ModelInfo info_;
};

/// A transcript of `tokens` letters cycling a, b, c and audio whose frames favour them so that
/// the best partial path races ahead of the best whole path for `trap_frames` frames:
///   - 2 frames per token for the first `prefix_tokens` tokens (every path agrees);
///   - then `trap_frames` frames favouring one token each, racing ahead;
///   - then 3 frames per token for the remaining tokens, from the end of the prefix on.
/// Racing through the trap gains trap_frames matches but then misses 3 x trap_frames frames, so
/// the best path waits through it, about 2 x trap_frames states below the leader. Returns
/// {audio, transcript}.
std::pair<std::string, std::string> write_trap(const test::TempDir& dir, int tokens, int prefix_tokens, int trap_frames) {
  const auto label_of = [](int token) { return 2 + token % 3; };  // a, b, c
  std::vector<int> frames;
  for (int k = 0; k < prefix_tokens; ++k) frames.insert(frames.end(), 2, label_of(k));
  for (int i = 0; i < trap_frames; ++i) frames.push_back(label_of(prefix_tokens + i));
  for (int k = prefix_tokens; k < tokens; ++k) frames.insert(frames.end(), 3, label_of(k));
  std::vector<float> samples;
  for (int label : frames) samples.insert(samples.end(), 320, 0.1f * float(label));
  test::AudioFormat wav = test::audio_formats().front();
  wav.sf_format = (wav.sf_format & ~0xFFFF) | 0x0006;  // SF_FORMAT_FLOAT: the values arrive exactly
  const auto audio = (dir.path() / "trap.wav").string();
  REQUIRE(test::write_audio(audio, wav, 16000, 1, samples) == "");
  std::string text;
  for (int k = 0; k < tokens; ++k) text += "abc"[k % 3];
  return {audio, dir.write("trap.txt", text + "\n").string()};
}

/// Captures what spdlog logs while alive (the worker's warnings go to its stderr through spdlog).
class LogCapture {
 public:
  LogCapture() : old_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(text_);
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
  }
  ~LogCapture() { spdlog::set_default_logger(old_); }
  std::string text() const { return text_.str(); }

 private:
  std::shared_ptr<spdlog::logger> old_;
  std::ostringstream text_;
};

}  // namespace

TEST_CASE("worker_loop: a trellis cap too small for the band the path needs gives band_limited and a warning") {
  test::TempDir dir;
  // 620 frames, 200 tokens (401 CTC states): the exact search needs about 63 KiB of aligner
  // memory; below about 128 KiB of cap the aligner bands, and the best path runs up to ~80
  // states below the band's centre during the 40 trap frames.
  const auto [audio, transcript] = write_trap(dir, 200, 20, 40);
  const std::string out = (dir.path() / "trap").string();
  auto block = StatusBlock::local();
  struct Run {
    std::uint64_t cap_kib;
    json result;
    std::string log;
  };
  std::vector<Run> runs;
  for (std::uint64_t cap_kib = 64; cap_kib <= 192; cap_kib += 8) {
    ScheduleModel model;
    WorkerConfig config;
    config.max_trellis_bytes = cap_kib << 10;
    LogCapture log;
    const auto res = results(run_loop(model, {job_line(1, audio, out, "align", transcript)}, block->status(), config));
    REQUIRE(res.size() == 1);
    runs.push_back({cap_kib, res[0], log.text()});
  }
  const json& widest = runs.back().result;
  REQUIRE_MESSAGE(widest["ok"] == true, widest.dump());
  CHECK(widest["exact"] == true);
  CHECK(widest["band_limited"] == false);
  const double best_log_prob = widest["log_prob"].get<double>();

  int limited = 0, limited_and_worse = 0, banded_clean = 0;
  for (const Run& r : runs) {
    CAPTURE(r.cap_kib);
    CAPTURE(r.result.dump());
    CAPTURE(r.log);
    if (r.result["ok"] != true) {  // the smallest caps cannot hold even the narrowest band
      CHECK(r.result["error"].get<std::string>().find("--max-trellis-mib") != std::string::npos);
      continue;
    }
    const bool band_limited = r.result["band_limited"].get<bool>();
    const bool warned = r.log.find("[warning]") != std::string::npos;
    CHECK(warned == band_limited);
    if (band_limited) {
      ++limited;
      CHECK(r.result["exact"] == false);
      CHECK(r.log.find(audio) != std::string::npos);
      CHECK(r.log.find("raise --max-trellis-mib") != std::string::npos);
      CHECK(r.log.find(fmt::format("({:g} MiB)", double(r.cap_kib) / 1024)) != std::string::npos);
      // The band can cost the best path: that is what the warning is for.
      if (r.result["log_prob"].get<double>() < best_log_prob - 1.0) ++limited_and_worse;
    } else {
      // Without the flag the path found is the best one, banded or not.
      CHECK(r.result["log_prob"].get<double>() == doctest::Approx(best_log_prob).epsilon(1e-6));
      if (r.result["exact"] == false) ++banded_clean;
    }
  }
  MESSAGE(limited << " caps band-limited (" << limited_and_worse << " with a worse path), " << banded_clean
                  << " banded without reaching the edge");
  CHECK(limited >= 2);
  CHECK(limited_and_worse >= 1);
  CHECK(banded_clean >= 1);

  SUBCASE("the converse: a small job under the same small cap is exact, not band-limited, and quiet") {
    const std::string beeps = write_two_beeps(dir, "beeps.wav");
    LoudnessModel model;
    WorkerConfig config;
    config.max_trellis_bytes = 96 << 10;
    LogCapture log;
    const auto res = results(run_loop(
        model, {job_line(2, beeps, (dir.path() / "b").string(), "align", dir.write("b.txt", "aa\n").string())},
        block->status(), config));
    REQUIRE(res.size() == 1);
    CHECK_MESSAGE(res[0]["ok"] == true, res[0].dump());
    CHECK(res[0]["band_limited"] == false);
    CHECK(res[0]["exact"] == true);
    CHECK(log.text().find("[warning]") == std::string::npos);
  }
}

TEST_CASE("worker_loop: a file whose alignment cannot fit the cap is refused before the model runs, never one that fits") {
  test::TempDir dir;
  // 60 s at 16 kHz with the loudness model's 320-sample frames: 3000 frames; "a a" is 3 tokens.
  const auto path = (dir.path() / "long.wav").string();
  const test::AudioFormat wav = test::audio_formats().front();
  const std::string err = test::write_tones(path, wav, 16000, 1, {{440, 0.3}, {0, 29.7}, {440, 0.3}, {0, 29.7}});
  REQUIRE_MESSAGE(err.empty(), err);
  const std::string transcript = dir.write("long.txt", "a a\n").string();
  const std::uint64_t need = alignment_floor_bytes(3000, 3);
  auto block = StatusBlock::local();
  auto run_with_cap = [&](std::uint64_t cap, LoudnessModel& model) {
    WorkerConfig config;
    config.max_trellis_bytes = cap;
    const auto res = results(run_loop(model, {job_line(1, path, (dir.path() / "long").string(), "align", transcript)},
                                      block->status(), config));
    REQUIRE(res.size() == 1);
    return res[0];
  };
  {
    LoudnessModel model;
    const json r = run_with_cap(need / 2, model);
    CAPTURE(r.dump());
    CHECK(r["ok"] == false);
    const std::string e = r["error"].get<std::string>();
    CHECK(e.rfind(path + ": aligning 2998 frames with 3 tokens needs at least ", 0) == 0);
    CHECK(e.find("rerun it with --max-trellis-mib 1 or more, or split the file (refused before decoding)") != std::string::npos);
    CHECK(model.windows_seen.empty());  // the model never ran
  }
  // Around the need: a refusal before decoding only where the aligner itself would refuse.
  for (std::uint64_t cap = need - 2048; cap <= need + 2048; cap += 256) {
    CAPTURE(cap);
    LoudnessModel model;
    const json r = run_with_cap(cap, model);
    const bool early = r["ok"] == false && r["error"].get<std::string>().find("refused before decoding") != std::string::npos;
    if (early) CHECK(cap < need);
    if (cap >= need) CHECK_MESSAGE(r["ok"] == true, r.dump());
  }
}

namespace {

/// In a forked child (so this binary's own malloc state is untouched): frees one mmapped 4 MiB
/// block, then allocates another and reports whether glibc mapped it too (mallinfo2's hblkhd grew).
/// `pin_kib` as for pin_malloc_mmap_threshold (0: glibc's sliding threshold).
bool second_block_is_mapped(std::size_t pin_kib) {
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (!pin_malloc_mmap_threshold(pin_kib)) _exit(2);
    constexpr std::size_t kBlock = std::size_t(4) << 20;
    void* first = std::malloc(kBlock);  // above the 128 KiB start: always its own mapping
    static_cast<volatile char*>(first)[0] = 1;
    std::free(first);  // unpinned, glibc now raises its threshold to 4 MiB
    const std::size_t mapped_before = mallinfo2().hblkhd;
    void* second = std::malloc(kBlock);
    static_cast<volatile char*>(second)[0] = 1;
    const bool mapped = mallinfo2().hblkhd >= mapped_before + kBlock;
    std::free(second);
    _exit(mapped ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) != 2);
  return WEXITSTATUS(status) == 0;
}

}  // namespace

TEST_CASE("pin_malloc_mmap_threshold: a large block freed does not move later ones onto the heap") {
  // The worker's fix for memory that grew with the file (issue 14): with glibc's sliding threshold
  // the second 4 MiB block comes from the heap, where freed blocks stay resident; pinned, it is
  // mapped again and unmapped when freed.
  CHECK(second_block_is_mapped(kMallocMmapThresholdKib));
  CHECK_FALSE(second_block_is_mapped(0));
}

}  // namespace ab
