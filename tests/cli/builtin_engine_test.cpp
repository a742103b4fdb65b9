// Black-box tests of `align-batch --model MODEL.pt CORPUS`: the built-in engine through real
// persistent align-batch-worker processes, with the tone test model (worker/tools/make_tone_model).
#include <doctest/doctest.h>

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <fstream>

#include "history/history_store.h"
#include "tests/cli/cli_process.h"
#include "tests/testutil/temp_dir.h"

namespace fs = std::filesystem;

namespace {

void synth(const fs::path& path, const std::vector<std::string>& pieces, const fs::path& dir) {
  REQUIRE(ab::cli::synth(path, pieces, dir));
}

}  // namespace

TEST_CASE("built-in engine: align where a transcript exists, transcribe elsewhere, a bad file fails alone") {
  ab::test::TempDir t{"ab-cli-builtin"};
  const fs::path model = t.path() / "tone.pt";
  REQUIRE(ab::cli::run({AB_MAKE_TONE_MODEL_BIN, model.string()}, t.path()).exit_code == 0);
  // Tone labels: a = 1000 Hz, b = 1300 Hz (worker/tools/tone_spec.h).
  synth(t.path() / "c/spk/a.wav", {"1000:0.3", "1300:0.3"}, t.path());
  t.write("c/spk/a.txt", "ab\n");
  synth(t.path() / "c/b.wav", {"1300:0.4", "1000:0.4"}, t.path());
  t.write("c/bad.wav", "this is not audio");
  const std::vector<std::string> argv = {AB_BIN, "--model", model.string(), "--progress", "plain",
                                         "--out", (t.path() / "out").string(), (t.path() / "c").string()};
  ab::cli::Result r = ab::cli::run(argv, t.path());
  CAPTURE(r.err);
  CHECK(r.exit_code == 1);
  CHECK(r.out.find("2 done") != std::string::npos);
  CHECK(r.out.find((t.path() / "c/bad.wav").string() + ": not a sound file") != std::string::npos);
  for (const char* ext : {".TextGrid", ".json", ".ctm"}) {
    CHECK(fs::is_regular_file(t.path() / ("out/spk/a" + std::string(ext))));
    CHECK(fs::is_regular_file(t.path() / ("out/b" + std::string(ext))));
  }
  CHECK_FALSE(fs::exists(t.path() / "out/bad.ctm"));
  // The aligned words of a.wav: its transcript "ab" as one word.
  CHECK(ab::cli::slurp(t.path() / "out/spk/a.ctm").find("ab") != std::string::npos);
  // The worker's log went to a file under the output's own folder.
  CHECK(fs::is_regular_file(t.path() / "out/.align-batch/logs/worker-1.log"));

  // History holds the jobs under the model's key; a re-run skips the two done files.
  {
    auto h = ab::HistoryStore::open(t.path() / "out/.align-batch/history.sqlite", ab::HistoryStore::Create::kNever);
    REQUIRE(h.ok());
    auto keys = h.value()->keys();
    REQUIRE(keys.ok());
    REQUIRE(keys.value().size() == 1);
    CHECK(keys.value()[0].job_key.rfind("ctc:", 0) == 0);
    CHECK(keys.value()[0].ok_count == 2);
  }
  ab::cli::Result again = ab::cli::run(argv, t.path());
  CHECK(again.exit_code == 1);
  CHECK(again.out.find("0 done, 2 skipped") != std::string::npos);

  // --task align with a file that has no transcript: that file fails, saying what to do.
  std::vector<std::string> align = argv;
  align.insert(align.begin() + 1, {"--task", "align", "--force"});
  ab::cli::Result a = ab::cli::run(align, t.path());
  CHECK(a.exit_code == 1);
  CHECK(a.out.find("b.wav: no transcript beside it (b.txt or .lab)") != std::string::npos);
}

TEST_CASE("built-in engine: --workers auto runs at most one worker per core (CPU-bound LibTorch)") {
  ab::test::TempDir t{"ab-cli-builtin-cap"};
  const fs::path model = t.path() / "tone.pt";
  REQUIRE(ab::cli::run({AB_MAKE_TONE_MODEL_BIN, model.string()}, t.path()).exit_code == 0);
  synth(t.path() / "c/a.wav", {"1000:0.3"}, t.path());
  const std::vector<std::string> base = {AB_BIN, "--dry-run", "--model", model.string(), "--out",
                                         (t.path() / "out").string(), (t.path() / "c").string()};
  const unsigned cores = static_cast<unsigned>(std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN)));
  ab::cli::Result r = ab::cli::run(base, t.path());
  CAPTURE(r.out);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("workers auto (at most " + std::to_string(cores) + " at once)") != std::string::npos);
  // An explicit N is the user's bound, above the core count if they ask for it.
  std::vector<std::string> seven = base;
  seven.insert(seven.begin() + 1, {"--workers", "7"});
  ab::cli::Result r7 = ab::cli::run(seven, t.path());
  CHECK(r7.out.find("workers 7 (at most 7 at once)") != std::string::npos);
}

TEST_CASE("built-in engine: a missing model is a usage error naming it") {
  ab::test::TempDir t{"ab-cli-builtin"};
  t.write("c/a.wav", "x");
  ab::cli::Result r = ab::cli::run({AB_BIN, "--model", (t.path() / "none.pt").string(), (t.path() / "c").string()}, t.path());
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("none.pt' not found") != std::string::npos);
}

TEST_CASE("built-in engine: a worker whose heartbeat stops mid-job is killed and the job retried; status blocks removed") {
  if (!fs::exists("/usr/bin/script")) {
    MESSAGE("skipped: /usr/bin/script (util-linux) is needed to give align-batch a terminal");
    return;
  }
  ab::test::TempDir t{"ab-cli-builtin"};
  const fs::path model = t.path() / "tone.pt";
  REQUIRE(ab::cli::run({AB_MAKE_TONE_MODEL_BIN, model.string()}, t.path()).exit_code == 0);
  std::vector<std::string> pieces;
  // 120 s of audio: long enough that the job spends a good while inside the worker.
  for (int i = 0; i < 40; ++i) pieces.push_back(i % 2 ? "1300:3" : "1000:3");
  synth(t.path() / "c/long.wav", pieces, t.path());
  // The first worker is stopped (SIGSTOP) as soon as its status block shows it inside the job
  // (phase >= decoding: WorkerStatus's uint32 phase at byte 12): the real worker, frozen mid-job.
  // Later workers run normally.
  const fs::path mark = t.path() / "stopped-once";
  const fs::path wrapper = t.write("worker.sh", R"sh(#!/bin/sh
shm=
prev=
for a in "$@"; do [ "$prev" = --status-shm ] && shm=$a; prev=$a; done
if [ ! -e MARK ]; then
  touch MARK
  ( while [ "$(od -An -t u4 -j 12 -N 4 /dev/shm/$shm 2>/dev/null | tr -d ' ')" -lt 3 ] 2>/dev/null; do sleep 0.005; done
    kill -STOP $$ ) &
fi
exec WORKER "$@"
)sh");
  {
    std::string text = ab::cli::slurp(wrapper);
    for (auto [from, to] : {std::pair<std::string, std::string>{"MARK", mark.string()}, {"WORKER", AB_WORKER_BIN}})
      for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) text.replace(at, from.size(), to);
    std::ofstream(wrapper) << text;
  }
  fs::permissions(wrapper, fs::perms::owner_all);
  ::setenv("AB_WORKER", wrapper.c_str(), 1);
  // script(1) gives align-batch a terminal, so the live line (and the workers' status) is drawn.
  const std::string line = std::string(AB_BIN) + " --model " + model.string() + " --hang-timeout 2s --out " +
                           (t.path() / "out").string() + " " + (t.path() / "c").string();
  ab::cli::Process p({"/usr/bin/script", "-qec", line, "/dev/null"}, t.path());
  ab::cli::Result r = p.wait();
  ::unsetenv("AB_WORKER");
  CAPTURE(r.out);
  CHECK(r.exit_code == 0);
  CHECK(fs::exists(mark));
  CHECK(r.out.find("long.wav: its worker has not beaten for ") != std::string::npos);
  CHECK(r.out.find("retry  long.wav (peak ") != std::string::npos);
  CHECK(r.out.find("its worker stopped responding (no heartbeat for 2 s) and was killed") != std::string::npos);
  CHECK(r.out.find("finished: 1 done, 0 skipped (already done), 0 failed, 1 retried") != std::string::npos);
  // The live line showed the worker's own status: the file, its phase, the fraction done.
  // The frozen worker's block said it was inside the job for the 2 s it hung.
  bool phase_shown = false;
  for (const char* phase : {"decoding", "emissions", "aligning", "writing"})
    if (r.out.find(std::string("| long.wav ") + phase + " ") != std::string::npos) phase_shown = true;
  CHECK(phase_shown);
  for (const char* ext : {".TextGrid", ".json", ".ctm"}) CHECK(fs::is_regular_file(t.path() / ("out/long" + std::string(ext))));
  // Both workers had a status block; none is left in /dev/shm, nor any worker process.
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/dev/shm", ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("ab-status-", 0) != 0) continue;
    const long pid = std::strtol(name.c_str() + 10, nullptr, 10);
    CHECK_MESSAGE(::kill(static_cast<pid_t>(pid), 0) == 0, "left behind: " << name);
  }
  CHECK(ab::cli::processes_with(model.string()).empty());
}

TEST_CASE("built-in engine: workers share one copy of the weights, removed at the end (a dead run's at the next start); off gives the same outputs") {
  ab::test::TempDir t{"ab-cli-shared-weights"};
  const fs::path model = t.path() / "big.pt";
  REQUIRE(ab::cli::run({AB_MAKE_TONE_MODEL_BIN, "--ballast-mib", "8", model.string()}, t.path()).exit_code == 0);
  for (int i = 0; i < 4; ++i) {
    synth(t.path() / ("c/f" + std::to_string(i) + ".wav"), {"1000:0.3", "1300:0.3"}, t.path());
    t.write("c/f" + std::to_string(i) + ".txt", "ab\n");
  }
  // What a SIGKILLed run would leave: its pid is gone.
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  REQUIRE(dead > 0);
  REQUIRE(::waitpid(dead, nullptr, 0) == dead);
  const fs::path leftover = "/dev/shm/ab-weights-" + std::to_string(dead) + "-0000000000000001";
  { std::ofstream(leftover) << "weights of a run that died"; }

  auto argv = [&](const std::string& out, const std::string& shared) {
    return std::vector<std::string>{AB_BIN, "--model", model.string(), "--progress", "plain", "--workers", "2",
                                    "--shared-weights", shared, "--out", (t.path() / out).string(),
                                    (t.path() / "c").string()};
  };
  ab::cli::Process p(argv("shared", "on"), t.path());
  const ab::cli::Result r = p.wait();
  CAPTURE(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_FALSE(fs::exists(leftover));
  // Two unpredicted jobs start at once (slow start), so two workers: one wrote the copy, one mapped it.
  const std::string logs = ab::cli::slurp(t.path() / "shared/.align-batch/logs/worker-1.log") +
                           ab::cli::slurp(t.path() / "shared/.align-batch/logs/worker-2.log");
  CHECK(logs.find("weights written to /dev/shm/ab-weights-" + std::to_string(p.pid()) + "-") != std::string::npos);
  CHECK(logs.find("weights mapped from /dev/shm/ab-weights-" + std::to_string(p.pid()) + "-") != std::string::npos);
  for (const auto& e : fs::directory_iterator("/dev/shm"))
    CHECK(e.path().filename().string().rfind("ab-weights-" + std::to_string(p.pid()) + "-", 0) != 0);

  const ab::cli::Result off = ab::cli::run(argv("private", "off"), t.path());
  REQUIRE(off.exit_code == 0);
  const std::string private_log = ab::cli::slurp(t.path() / "private/.align-batch/logs/worker-1.log");
  CHECK(private_log.find("loaded") != std::string::npos);
  CHECK(private_log.find("weights written") == std::string::npos);
  CHECK(private_log.find("weights mapped") == std::string::npos);
  for (int i = 0; i < 4; ++i)
    for (const char* ext : {".TextGrid", ".json", ".ctm"}) {
      const std::string name = "f" + std::to_string(i) + ext;
      CAPTURE(name);
      const std::string a = ab::cli::slurp(t.path() / "shared" / name);
      CHECK(!a.empty());
      CHECK(a == ab::cli::slurp(t.path() / "private" / name));
    }
}
