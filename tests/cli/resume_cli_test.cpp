// Black-box tests of resume: a file is done only while its audio, transcript, task, job key and
// outputs are unchanged; anything else runs again and the summary says why (orchestrator/resume.h).
#include <doctest/doctest.h>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

#include "tests/cli/cli_process.h"
#include "tests/testutil/temp_dir.h"

namespace fs = std::filesystem;

namespace {

void synth(const fs::path& path, const std::vector<std::string>& pieces, const fs::path& dir) {
  REQUIRE(ab::cli::synth(path, pieces, dir));
}

/// The tone model, a small corpus (a.wav and b.wav aligned, c.wav without a transcript) and a runner.
struct BuiltinCorpus {
  ab::test::TempDir t{"ab-cli-resume"};
  fs::path model = t.path() / "tone.pt";
  BuiltinCorpus() {
    REQUIRE(ab::cli::run({AB_MAKE_TONE_MODEL_BIN, model.string()}, t.path()).exit_code == 0);
    // Tone labels: a = 1000 Hz, b = 1300 Hz (worker/tools/tone_spec.h).
    synth(t.path() / "c/a.wav", {"1000:0.3", "1300:0.3"}, t.path());
    t.write("c/a.txt", "ab\n");
    synth(t.path() / "c/b.wav", {"1300:0.3", "1000:0.3"}, t.path());
    t.write("c/b.txt", "ba\n");
    synth(t.path() / "c/c.wav", {"1000:0.4"}, t.path());
  }
  fs::path out(const std::string& rel = "") const { return t.path() / "out" / rel; }
  ab::cli::Result run(std::vector<std::string> extra = {}) const {
    std::vector<std::string> argv = {AB_BIN, "--model", model.string(), "--progress", "plain", "--out", out().string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back((t.path() / "c").string());
    return ab::cli::run(argv, t.path());
  }
  std::string corpus(const std::string& rel) const { return (t.path() / "c" / rel).string(); }
};

}  // namespace

TEST_CASE("resume: an edited transcript, a deleted or edited output, a new task: only those files run again, each with why") {
  BuiltinCorpus k;
  ab::cli::Result first = k.run();
  CAPTURE(first.err);
  REQUIRE(first.exit_code == 0);
  CHECK(first.out.find("3 done") != std::string::npos);
  // --task auto: c.wav has no transcript while the others have one; the summary names it.
  CHECK(first.out.find("1 file was transcribed, not aligned: no transcript beside it") != std::string::npos);
  CHECK(first.out.find("  " + k.corpus("c.wav") + "\n") != std::string::npos);
  CHECK(k.run().out.find("0 done, 3 skipped") != std::string::npos);

  // The transcript's content changed (its size too here; content is what counts, see below).
  k.t.write("c/a.txt", "abab\n");
  ab::cli::Result edited = k.run();
  CAPTURE(edited.out);
  CHECK(edited.exit_code == 0);
  CHECK(edited.out.find("1 done, 2 skipped") != std::string::npos);
  CHECK(edited.out.find("  " + k.corpus("a.wav") + ": transcript changed\n") != std::string::npos);
  CHECK(ab::cli::slurp(k.out("a.ctm")).find("abab") != std::string::npos);

  // Same size, same mtime, other content: still changed (the hash, not the stat, decides).
  const auto mtime = fs::last_write_time(k.corpus("b.txt"));
  k.t.write("c/b.txt", "ab\n");
  fs::last_write_time(k.corpus("b.txt"), mtime);
  ab::cli::Result same_stat = k.run();
  CHECK(same_stat.out.find("1 done, 2 skipped") != std::string::npos);
  CHECK(same_stat.out.find(k.corpus("b.wav") + ": transcript changed") != std::string::npos);

  // A deleted output is made again; an edited one too.
  fs::remove(k.out("b.TextGrid"));
  std::ofstream(k.out("c.json"), std::ios::app) << " ";
  ab::cli::Result outputs = k.run();
  CAPTURE(outputs.out);
  CHECK(outputs.out.find("2 done, 1 skipped") != std::string::npos);
  CHECK(outputs.out.find(k.corpus("b.wav") + ": output missing: " + k.out("b.TextGrid").string()) != std::string::npos);
  CHECK(outputs.out.find(k.corpus("c.wav") + ": output changed: " + k.out("c.json").string()) != std::string::npos);
  CHECK(outputs.out.find("ran: 1 output changed, 1 output missing") != std::string::npos);
  CHECK(fs::is_regular_file(k.out("b.TextGrid")));
  CHECK(k.run().out.find("0 done, 3 skipped") != std::string::npos);

  // Another task is other work: transcribing what was aligned runs it again.
  ab::cli::Result transcribe = k.run({"--task", "transcribe"});
  CHECK(transcribe.out.find("2 done, 1 skipped") != std::string::npos);
  CHECK(transcribe.out.find(k.corpus("a.wav") + ": task changed (was align)") != std::string::npos);

  // A transcript added where there was none: the file is aligned now, not transcribed.
  k.t.write("c/c.txt", "a\n");
  ab::cli::Result added = k.run();
  CHECK(added.out.find(k.corpus("c.wav") + ": task changed (was transcribe)") != std::string::npos);
  CHECK(added.out.find("transcribed, not aligned") == std::string::npos);
}

TEST_CASE("resume: --dry-run shows a header, the task and transcript of each file, and why it would run") {
  BuiltinCorpus k;
  k.t.write("c/b.lab", "ab\n");  // b has both: the .txt is used, and the run says so once
  ab::cli::Result plan = k.run({"--dry-run"});
  CAPTURE(plan.out);
  CHECK(plan.exit_code == 0);
  CHECK(plan.out.find("action\tfile\tsize\taudio\tpeak\ttask\ttranscript\twhy\n") != std::string::npos);
  CHECK(plan.out.find("run\t" + k.corpus("a.wav") + "\t") != std::string::npos);
  CHECK(plan.out.find("\talign\t" + k.corpus("a.txt") + "\tnew\n") != std::string::npos);
  CHECK(plan.out.find("\ttranscribe (no transcript)\t-\tnew\n") != std::string::npos);
  CHECK(plan.out.find("1 file has both a .txt and a .lab transcript; the .txt is used (e.g. " + k.corpus("b.txt") +
                      ", not " + k.corpus("b.lab") + ")") != std::string::npos);
  REQUIRE(k.run().exit_code == 0);
  fs::remove(k.out("a.ctm"));
  ab::cli::Result again = k.run({"--dry-run"});
  CHECK(again.out.find("run\t" + k.corpus("a.wav")) != std::string::npos);
  CHECK(again.out.find("\toutput missing: " + k.out("a.ctm").string() + "\n") != std::string::npos);
  CHECK(again.out.find("skip\t" + k.corpus("b.wav")) != std::string::npos);
  CHECK(again.out.find("\tdone\n") != std::string::npos);
}

TEST_CASE("resume with an external command: outputs it wrote are checked, a changed command is a new key; --dry-run shows each command line") {
  ab::test::TempDir t{"ab-cli-resume-cmd"};
  t.write("c/a.wav", "aaaa");
  t.write("c/b.wav", "bbbb");
  t.write("c/b.txt", "hello\n");
  const std::string out = (t.path() / "out").string();
  // The command writes {out}EXT ($2 is {out}).
  auto run_out = [&](const std::string& ext, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {AB_BIN, "--progress", "plain", "--out", out};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.insert(argv.end(),
                {(t.path() / "c").string(), "--", "/bin/sh", "-c", "echo x > \"$2" + ext + "\"", "sh", "{in}", "{out}"});
    return ab::cli::run(argv, t.path());
  };
  REQUIRE(run_out(".done").exit_code == 0);
  CHECK(run_out(".done").out.find("0 done, 2 skipped") != std::string::npos);
  fs::remove(t.path() / "out/a.done");
  ab::cli::Result missing = run_out(".done");
  CHECK(missing.out.find("1 done, 1 skipped") != std::string::npos);
  CHECK(missing.out.find((t.path() / "c/a.wav").string() + ": output missing: " + (t.path() / "out/a.done").string()) !=
        std::string::npos);
  CHECK(fs::exists(t.path() / "out/a.done"));
  // A command may read the transcript too: editing it runs that file again.
  t.write("c/b.txt", "hello there\n");
  CHECK(run_out(".done").out.find((t.path() / "c/b.wav").string() + ": transcript changed") != std::string::npos);
  // Another command template is another job key.
  ab::cli::Result other = run_out(".out2");
  CHECK(other.out.find("2 done, 0 skipped") != std::string::npos);
  CHECK(other.out.find((t.path() / "c/a.wav").string() + ": model or command changed") != std::string::npos);

  // The plan shows the command line each file would run, quoted for a shell.
  ab::cli::Result plan = run_out(".x", {"--dry-run"});
  CAPTURE(plan.out);
  CHECK(plan.out.find("\twhy\tcommand\n") != std::string::npos);
  CHECK(plan.out.find("\tcommand\t-\tmodel or command changed\t/bin/sh -c 'echo x > \"$2.x\"' sh " +
                      (t.path() / "c/a.wav").string() + " " + (t.path() / "out/a").string() + "\n") != std::string::npos);
}
