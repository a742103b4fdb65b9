// Black-box tests of --max-trellis-mib and band-limited alignments: real align-batch, real workers,
// the tone model and a "trap" recording whose best path a narrow search band cannot follow.
#include <doctest/doctest.h>

#include <map>

#include <nlohmann/json.hpp>

#include "history/history_store.h"
#include "tests/cli/cli_process.h"
#include "tests/testutil/audio_gen.h"
#include "tests/testutil/temp_dir.h"
#include "worker/tools/tone_spec.h"

namespace fs = std::filesystem;

namespace {

/// The trap of worker/worker_loop_test.cpp scaled up for the tone model and whole MiB caps:
/// `tokens` letters a, b, c, a, ...; the audio holds the first `prefix` tokens two frames each,
/// then `trap` frames one token each (a lure the best path must not follow), then from token
/// `prefix` on three frames each. 1600 tokens, 160 + 320: 4960 frames (99.2 s), 3201 CTC states.
/// Measured with the worker alone: a 1 MiB cap bands and the path runs along the band's edge
/// (band_limited, log_prob -8339 against the best -4260); 2 MiB bands too (band_limited, best path
/// found); from 3 MiB the whole trellis fits (exact).
void write_trap(const ab::test::TempDir& t, const std::string& stem, int tokens, int prefix, int trap) {
  namespace tone = ab::tone;
  const auto label_of = [](int k) { return 2 + k % 3; };
  std::vector<int> frames;
  for (int k = 0; k < prefix; ++k) frames.insert(frames.end(), 2, label_of(k));
  for (int i = 0; i < trap; ++i) frames.push_back(label_of(prefix + i));
  for (int k = prefix; k < tokens; ++k) frames.insert(frames.end(), 3, label_of(k));
  std::vector<ab::test::Tone> tones;
  const double frame_s = double(tone::kSamplesPerFrame) / tone::kSampleRateHz;
  for (int label : frames) tones.push_back({tone::frequency_hz(label), frame_s, 0.5});
  const auto formats = ab::test::audio_formats();
  const fs::path audio = t.path() / ("c/" + stem + ".wav");
  fs::create_directories(audio.parent_path());
  REQUIRE(ab::test::write_tones(audio.string(), formats.front(), tone::kSampleRateHz, 1, tones) == "");
  std::string text;
  for (int k = 0; k < tokens; ++k) text += "abc"[k % 3];
  t.write("c/" + stem + ".txt", text + "\n");
}

struct JsonRun {
  int exit_code = -1;
  std::map<std::string, bool> band_limited;  ///< per file: the end event's band_limited
  nlohmann::json summary;
  std::string err;
};

JsonRun run_json(std::vector<std::string> argv, const fs::path& dir) {
  const ab::cli::Result r = ab::cli::run(argv, dir);
  JsonRun out;
  out.exit_code = r.exit_code;
  out.err = r.err;
  std::size_t pos = 0;
  while (pos < r.out.size()) {
    std::size_t nl = r.out.find('\n', pos);
    if (nl == std::string::npos) nl = r.out.size();
    const auto e = nlohmann::json::parse(r.out.substr(pos, nl - pos), nullptr, false);
    pos = nl + 1;
    if (!e.is_object()) continue;
    if (e["event"] == "end") out.band_limited[e["file"].get<std::string>()] = e["band_limited"].get<bool>();
    if (e["event"] == "summary") out.summary = e;
  }
  return out;
}

}  // namespace

TEST_CASE("built-in engine: a file aligned within a limited band is reported with advice; a raised --max-trellis-mib clears it") {
  ab::test::TempDir t{"ab-cli-band"};
  const fs::path model = t.path() / "tone.pt";
  REQUIRE(ab::cli::run({AB_MAKE_TONE_MODEL_BIN, model.string()}, t.path()).exit_code == 0);
  write_trap(t, "trap", 1600, 160, 320);
  write_trap(t, "small", 30, 3, 6);  // 39 frames: its whole trellis fits any cap
  const std::string trap_wav = (t.path() / "c/trap.wav").string();
  const std::string out = (t.path() / "out").string();
  auto argv = [&](std::vector<std::string> extra, const std::string& progress) {
    std::vector<std::string> a = {AB_BIN, "--model", model.string(), "--progress", progress, "--out", out};
    a.insert(a.end(), extra.begin(), extra.end());
    a.push_back((t.path() / "c").string());
    return a;
  };

  // 1 MiB: the trap's path runs along the band's edge.
  JsonRun one = run_json(argv({"--max-trellis-mib", "1"}, "json"), t.path());
  CAPTURE(one.err);
  CHECK(one.exit_code == 0);
  CHECK(one.band_limited == std::map<std::string, bool>{{"trap.wav", true}, {"small.wav", false}});
  CHECK(one.summary["done"] == 2);
  CHECK(one.summary["band_limited"] == nlohmann::json::array({trap_wav}));
  CHECK(one.summary["max_trellis_mib"] == 1);
  // The worker really ran with the cap: its own warning names it.
  std::string log;  // two files, up to two workers: whichever took the trap logged it
  for (const auto& e : fs::directory_iterator(t.path() / "out/.align-batch/logs")) log += ab::cli::slurp(e.path());
  CHECK(log.find("trap.wav: the alignment's search band reached --max-trellis-mib (1 MiB)") != std::string::npos);

  // The same in plain mode: the file's line and the summary's advice.
  ab::cli::Result plain = ab::cli::run(argv({"--max-trellis-mib", "1", "--force"}, "plain"), t.path());
  CAPTURE(plain.out);
  CAPTURE(plain.err);
  CHECK(plain.exit_code == 0);
  CHECK(plain.err.find("done   trap.wav (peak ") != std::string::npos);
  CHECK(plain.err.find("s): aligned within a limited search band (may be off): raise --max-trellis-mib\n") !=
        std::string::npos);
  CHECK(plain.err.find("small.wav (peak") != std::string::npos);
  CHECK(plain.out.find("1 file aligned within a limited search band (its alignment may be off); rerun it with "
                       "--force --max-trellis-mib N above the current 1:\n  " + trap_wav + "\n") != std::string::npos);

  // 4 MiB: the same file is aligned exactly, nothing to report. A new cap is a new history key,
  // so nothing is skipped even without --force.
  JsonRun four = run_json(argv({"--max-trellis-mib", "4"}, "json"), t.path());
  CAPTURE(four.err);
  CHECK(four.exit_code == 0);
  CHECK(four.band_limited == std::map<std::string, bool>{{"trap.wav", false}, {"small.wav", false}});
  CHECK(four.summary["done"] == 2);
  CHECK(four.summary["skipped"] == 0);
  CHECK(four.summary["band_limited"].empty());
  CHECK(four.summary["max_trellis_mib"] == 4);

  // The default cap (32 MiB) is the model's plain key; given explicitly it is the same key.
  JsonRun dflt = run_json(argv({}, "json"), t.path());
  CHECK(dflt.exit_code == 0);
  CHECK(dflt.summary["done"] == 2);
  CHECK(dflt.summary["max_trellis_mib"] == 32);
  CHECK(dflt.summary["band_limited"].empty());
  JsonRun again = run_json(argv({"--max-trellis-mib", "32"}, "json"), t.path());
  CHECK(again.summary["done"] == 0);
  CHECK(again.summary["skipped"] == 2);
  {
    auto h = ab::HistoryStore::open(t.path() / "out/.align-batch/history.sqlite", ab::HistoryStore::Create::kNever);
    REQUIRE(h.ok());
    auto keys = h.value()->keys();
    REQUIRE(keys.ok());
    std::map<std::string, std::int64_t> suffixes;  // key past "ctc:<hash>" -> ok jobs
    for (const auto& k : keys.value()) {
      REQUIRE(k.job_key.rfind("ctc:", 0) == 0);
      const auto colon = k.job_key.find(':', 4);
      suffixes[colon == std::string::npos ? "" : k.job_key.substr(colon)] = k.ok_count;
    }
    CHECK(suffixes == std::map<std::string, std::int64_t>{{"", 2}, {":trellis=1", 4}, {":trellis=4", 2}});
  }
}

TEST_CASE("--max-trellis-mib, --model or --task with an external command is a usage error") {
  ab::test::TempDir t{"ab-cli-band"};
  t.write("c/a.wav", "x");
  ab::cli::Result r = ab::cli::run(
      {AB_BIN, "--max-trellis-mib", "64", "--out", (t.path() / "out").string(), (t.path() / "c").string(), "--",
       "/bin/cp", "{in}", "{out}.txt"},
      t.path());
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("--max-trellis-mib applies to the built-in engine") != std::string::npos);
  CHECK_FALSE(fs::exists(t.path() / "out/a.txt"));
  ab::cli::Result both = ab::cli::run({AB_BIN, "--model", "m.pt", "--task", "align", (t.path() / "c").string(), "--",
                                       "/bin/cp", "{in}", "{out}.txt"},
                                      t.path());
  CHECK(both.exit_code == 2);
  CHECK(both.err.find("--model, --task apply to the built-in engine's workers, not to a command after '--'; drop them") !=
        std::string::npos);
  // 0 is outside the range the workers accept.
  ab::cli::Result zero = ab::cli::run({AB_BIN, "--max-trellis-mib", "0", (t.path() / "c").string()}, t.path());
  CHECK(zero.exit_code == 2);
}

TEST_CASE("built-in engine: a file whose alignment cannot fit --max-trellis-mib fails unstarted, naming its need; the batch goes on") {
  ab::test::TempDir t{"ab-cli-trellis-fit"};
  const fs::path model = t.path() / "tone.pt";
  REQUIRE(ab::cli::run({AB_MAKE_TONE_MODEL_BIN, model.string()}, t.path()).exit_code == 0);
  // 10 minutes (30,000 frames of 20 ms) against 8,000 tokens: the narrowest band alone needs
  // ~1.3 MiB, frames and tokens both counting, so 1 MiB cannot hold it. Before, the worker decoded
  // all 10 minutes and then refused ("raise the cap or split the file").
  REQUIRE(ab::cli::synth(t.path() / "c/long.wav", {"1000:600"}, t.path()));
  std::string text;
  for (int i = 0; i < 4000; ++i) text += "ab";
  t.write("c/long.txt", text + "\n");
  REQUIRE(ab::cli::synth(t.path() / "c/short.wav", {"1000:0.3", "1300:0.3"}, t.path()));
  t.write("c/short.txt", "ab\n");
  const fs::path out = t.path() / "out";
  auto run = [&](std::vector<std::string> extra) {
    std::vector<std::string> argv = {AB_BIN, "--model", model.string(), "--progress", "plain", "--out", out.string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back((t.path() / "c").string());
    return ab::cli::run(argv, t.path());
  };
  const std::string advice = " frames with 8000 tokens needs at least 1.3 MiB of search memory but the cap "
                             "(--max-trellis-mib) is 1.0 MiB; rerun it with --max-trellis-mib 2 or more, or split the file "
                             "(refused before starting: its length is in its header)";
  ab::cli::Result r = run({"--max-trellis-mib", "1"});
  CAPTURE(r.out);
  CAPTURE(r.err);
  CHECK(r.exit_code == 1);
  CHECK(r.out.find("1 done, 0 skipped (already done), 1 failed") != std::string::npos);  // the batch went on
  CHECK(r.out.find("  " + (t.path() / "c/long.wav").string() + ": aligning ") != std::string::npos);
  CHECK(r.out.find(advice) != std::string::npos);
  CHECK(r.err.find("start  long.wav") == std::string::npos);  // never handed to a worker
  CHECK(r.err.find("start  short.wav") != std::string::npos);
  CHECK(fs::is_regular_file(out / "short.TextGrid"));
  CHECK_FALSE(fs::exists(out / "long.TextGrid"));
  {
    auto h = ab::HistoryStore::open(out / ".align-batch/history.sqlite", ab::HistoryStore::Create::kNever);
    REQUIRE(h);
    // Each Result held by name: a range-for over a temporary's value() iterates a dead vector.
    const auto runs = h.value()->runs();
    REQUIRE(runs);
    REQUIRE_FALSE(runs.value().empty());
    for (const auto& run_row : runs.value()) {
      const auto jobs = h.value()->jobs_for_run(run_row.id);
      REQUIRE(jobs);
      for (const auto& job : jobs.value()) CHECK(job.input_path.find("long.wav") == std::string::npos);
    }
  }
  // The plan says so before anything runs, and the advice is right: at 2 MiB it would run.
  ab::cli::Result plan = run({"--max-trellis-mib", "1", "--dry-run"});
  CHECK(plan.out.find("error\t" + (t.path() / "c/long.wav").string() + "\taligning ") != std::string::npos);
  CHECK(plan.out.find(advice) != std::string::npos);
  ab::cli::Result fits = run({"--max-trellis-mib", "2", "--dry-run"});
  CAPTURE(fits.out);
  CHECK(fits.out.find("run\t" + (t.path() / "c/long.wav").string() + "\t") != std::string::npos);
  CHECK(fits.out.find("error\t") == std::string::npos);
}
