// Black-box tests of setup errors: what is the run's fault, not a file's, stops the run once with
// one message and exit 2 before the corpus is processed, instead of one failure per file.
#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>

#include "history/history_store.h"
#include "tests/cli/cli_process.h"
#include "tests/testutil/temp_dir.h"

namespace fs = std::filesystem;

namespace {

std::size_t count_of(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + needle.size())) ++n;
  return n;
}

/// Jobs history recorded, all runs.
std::size_t recorded_jobs(const fs::path& db) {
  auto h = ab::HistoryStore::open(db, ab::HistoryStore::Create::kNever);
  if (!h) return 0;
  std::size_t n = 0;
  // Held by name: a range-for over runs().value() would iterate a temporary's moved-out vector.
  const auto runs = h.value()->runs();
  if (!runs) return 0;
  for (const auto& run : runs.value()) n += h.value()->jobs_for_run(run.id).value().size();
  return n;
}

struct ToneCorpus {
  ab::test::TempDir t{"ab-cli-setup"};
  fs::path model = t.path() / "tone.pt";
  explicit ToneCorpus(int files) {
    REQUIRE(ab::cli::run({AB_MAKE_TONE_MODEL_BIN, model.string()}, t.path()).exit_code == 0);
    for (int i = 0; i < files; ++i) {
      REQUIRE(ab::cli::synth(t.path() / ("c/f" + std::to_string(i) + ".wav"), {"1000:0.3", "1300:0.3"}, t.path()));
      t.write("c/f" + std::to_string(i) + ".txt", "ab\n");
    }
  }
  ab::cli::Result run(const std::string& model_path, std::vector<std::string> extra = {}) const {
    std::vector<std::string> argv = {AB_BIN, "--model", model_path, "--progress", "plain", "--out", (t.path() / "out").string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back((t.path() / "c").string());
    return ab::cli::run(argv, t.path());
  }
};

}  // namespace

TEST_CASE("setup error: a model the worker cannot load ends the run at its first ready:false, once, exit 2") {
  ToneCorpus k(6);
  const fs::path junk = k.t.write("junk.pt", "this is not TorchScript");
  fs::copy_file(k.t.path() / "tone.json", k.t.path() / "junk.json");
  ab::cli::Result r = k.run(junk.string());
  CAPTURE(r.out);
  CAPTURE(r.err);
  CHECK(r.exit_code == 2);
  CHECK(count_of(r.err, "align-batch-worker could not start: ") == 1);
  CHECK(r.err.find("cannot load this model") != std::string::npos);
  CHECK(r.out.find("failed files") == std::string::npos);
  // No file is blamed: history holds no job, so the next run (with a good model) does them all.
  CHECK(recorded_jobs(k.t.path() / "out/.align-batch/history.sqlite") == 0);
  ab::cli::Result good = k.run(k.model.string());
  CHECK(good.exit_code == 0);
  CHECK(good.out.find("6 done") != std::string::npos);
}

TEST_CASE("setup error: a budget below what one worker needs idle stops before the corpus, saying both figures") {
  ToneCorpus k(4);
  // A loaded worker holds LibTorch and the model: ~160 MiB RSS; its PSS is less where other
  // processes map the same libraries, but well above 20 MiB. Seen at its ready line ("even idle
  // (its PSS once the model was loaded)") or, when the guard stops it first, while it loads.
  ab::cli::Result r = k.run(k.model.string(), {"--mem-budget", "20M"});
  CAPTURE(r.err);
  CHECK(r.exit_code == 2);
  CHECK(count_of(r.err, "one align-batch-worker needs ") == 1);
  CHECK(r.err.find("even idle") != std::string::npos);
  CHECK(r.err.find("the budget 20.0 MiB") != std::string::npos);
  CHECK(r.out.find("failed files") == std::string::npos);
  CHECK(r.err.find("split the file") == std::string::npos);
  // At most one guard stop per worker the cold start began (two): the last shows a loading
  // worker alone above the high-water mark. Before, 4 files took 10 stops and failed one by one.
  CHECK(count_of(r.err, "stopping it to stay inside the budget") <= 2);
  // Known from history, it stops before any worker starts.
  REQUIRE(k.run(k.model.string()).exit_code == 0);
  fs::remove_all(k.t.path() / "out/.align-batch/logs");
  ab::cli::Result known = k.run(k.model.string(), {"--mem-budget", "20M", "--force"});
  CAPTURE(known.err);
  CHECK(known.exit_code == 2);
  CHECK(known.err.find("(the smallest peak of the 4 jobs history holds for this model), more than the budget 20.0 MiB") !=
        std::string::npos);
  CHECK_FALSE(fs::exists(k.t.path() / "out/.align-batch/logs/worker-1.log"));
}

TEST_CASE("setup error: a command that cannot be executed fails the run once, not every file") {
  ab::test::TempDir t{"ab-cli-setup-cmd"};
  for (int i = 0; i < 5; ++i) t.write("c/f" + std::to_string(i) + ".wav", "x");
  const fs::path script = t.write("tool.sh", "#!/no/such/interpreter\necho hi\n");
  fs::permissions(script, fs::perms::owner_all);
  const std::string out = (t.path() / "out").string();
  ab::cli::Result r = ab::cli::run({AB_BIN, "--progress", "plain", "--out", out, (t.path() / "c").string(), "--",
                                    script.string(), "{in}"},
                                   t.path());
  CAPTURE(r.err);
  CAPTURE(r.out);
  CHECK(r.exit_code == 2);
  CHECK(count_of(r.err + r.out, "cannot run '" + script.string() + "'") == 1);
  CHECK(r.out.find("failed files") == std::string::npos);
  // A directory is no program: a usage error before anything runs.
  ab::cli::Result dir = ab::cli::run({AB_BIN, "--out", out, (t.path() / "c").string(), "--", "/tmp", "{in}"}, t.path());
  CHECK(dir.exit_code == 2);
  CHECK(dir.err.find("command '/tmp' not found or not executable") != std::string::npos);
  // Not executable at all: the same.
  const fs::path plain = t.write("plain.sh", "echo hi\n");
  ab::cli::Result noexec = ab::cli::run({AB_BIN, "--out", out, (t.path() / "c").string(), "--", plain.string()}, t.path());
  CHECK(noexec.exit_code == 2);
  CHECK(noexec.err.find("not found or not executable") != std::string::npos);
}

TEST_CASE("a job whose estimate already exceeds the budget fails unstarted, naming its need and the budget") {
  ab::test::TempDir t{"ab-cli-setup-big"};
  t.write("c/big.wav", std::string(40 * 1024, 'a'));  // 40 KiB x 10 MiB/KiB = ~400 MiB
  // ~10-60 MiB: enough jobs for history to fit a line (with fewer it predicts the largest peak).
  for (int i = 1; i <= 6; ++i) t.write("c/small" + std::to_string(i) + ".wav", std::string(i * 1024, 'a'));
  const fs::path count = t.path() / "count";
  const std::vector<std::string> command = {"/bin/sh", "-c", "echo \"$2\" >> \"$0\"; exec \"$1\" --in \"$2\" --mib-per-mib 10240 --hold-s 0.4",
                                            count.string(), AB_MEMHOG_BIN, "{in}"};
  auto run = [&](std::vector<std::string> extra) {
    std::vector<std::string> argv = {AB_BIN, "--progress", "plain", "--out", (t.path() / "out").string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back((t.path() / "c").string());
    argv.push_back("--");
    argv.insert(argv.end(), command.begin(), command.end());
    return ab::cli::run(argv, t.path());
  };
  REQUIRE(run({"--mem-budget", "1G"}).exit_code == 0);  // history learns ~10 MiB per KiB
  // The plan says so before anything runs (it said "at least 1 at once by the largest prediction").
  ab::cli::Result plan = run({"--mem-budget", "150M", "--force", "--dry-run"});
  CAPTURE(plan.out);
  CHECK(plan.out.find("; 1 file predicted above the budget (largest ~") != std::string::npos);
  CHECK(plan.out.find("): it would fail unstarted\n") != std::string::npos);
  CHECK(plan.out.find("at once by the largest prediction") == std::string::npos);
  const std::string before = ab::cli::slurp(count);
  ab::cli::Result r = run({"--mem-budget", "150M", "--force"});
  CAPTURE(r.out);
  CHECK(r.exit_code == 1);
  CHECK(r.out.find((t.path() / "c/big.wav").string() + ": needs ~") != std::string::npos);
  CHECK(r.out.find("but the budget is 150.0 MiB") != std::string::npos);
  CHECK(r.out.find("6 done") != std::string::npos);
  // big.wav was never started: only the small files ran again.
  const std::string after = ab::cli::slurp(count).substr(before.size());
  CHECK(after.find("big.wav") == std::string::npos);
  CHECK(after.find("small1.wav") != std::string::npos);
}

TEST_CASE("usage: an unknown --config key or section is named; an unknown option gets the closest one; -j N means --workers N") {
  ab::test::TempDir t{"ab-cli-setup-usage"};
  t.write("c/a.wav", "x");
  const std::string c = (t.path() / "c").string();
  const fs::path typo = t.write("typo.toml", "workerz = 3\n");
  ab::cli::Result key = ab::cli::run({AB_BIN, "--config", typo.string(), c, "--", "true"}, t.path());
  CHECK(key.exit_code == 2);
  CHECK(key.err.find("--config: unknown key 'workerz'; did you mean 'workers'?") != std::string::npos);
  const fs::path section = t.write("section.toml", "[runner]\nworkers = 3\n");
  ab::cli::Result sec = ab::cli::run({AB_BIN, "--config", section.string(), c, "--", "true"}, t.path());
  CHECK(sec.exit_code == 2);
  CHECK(sec.err.find("--config: unknown section [runner]") != std::string::npos);
  ab::cli::Result option = ab::cli::run({AB_BIN, "--mem-budgt", "1G", c, "--", "true"}, t.path());
  CHECK(option.exit_code == 2);
  CHECK(option.err.find("--mem-budgt: unknown option; did you mean --mem-budget?") != std::string::npos);
  CHECK_FALSE(fs::exists(t.path() / "aligned"));
  ab::cli::Result j = ab::cli::run({AB_BIN, "--dry-run", "-j", "3", c, "--", "true"}, t.path());
  CHECK(j.exit_code == 0);
  CHECK(j.out.find("workers 3 (at most 3 at once)") != std::string::npos);
}
