// Black-box tests of `align-batch replay` over a real run's history: replay replays what ran.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include "tests/cli/cli_process.h"
#include "tests/testutil/temp_dir.h"

namespace fs = std::filesystem;

TEST_CASE("replay of a built-in run with --workers auto keeps its one-worker-per-core cap; the sweep never passes it") {
  ab::test::TempDir t{"ab-cli-replay"};
  const fs::path model = t.path() / "tone.pt";
  REQUIRE(ab::cli::run({AB_MAKE_TONE_MODEL_BIN, model.string()}, t.path()).exit_code == 0);
  fs::create_directories(t.path() / "c");
  for (int i = 0; i < 8; ++i) {
    const std::string wav = (t.path() / ("c/t" + std::to_string(i) + ".wav")).string();
    // Tone labels: a = 1000 Hz, b = 1300 Hz (worker/tools/tone_spec.h); lengths differ per file.
    REQUIRE(ab::cli::run({"/usr/bin/sox", "-n", "-r", "16000", "-c", "1", "-b", "16", wav, "synth",
                          std::to_string(0.2 + 0.1 * i), "sine", "1000"},
                         t.path())
                .exit_code == 0);
  }
  const std::string out = (t.path() / "out").string();
  ab::cli::Result r = ab::cli::run({AB_BIN, "--model", model.string(), "--progress", "plain", "--workers", "auto",
                                    "--sample-ms", "40", "--out", out, (t.path() / "c").string()},
                                   t.path());
  CAPTURE(r.err);
  REQUIRE(r.exit_code == 0);
  const long cores = std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN));

  r = ab::cli::run({AB_BIN, "replay", "--out", out, "--json"}, t.path());
  CAPTURE(r.err);
  REQUIRE(r.exit_code == 0);
  const auto replayed = nlohmann::json::parse(r.out);
  // The cap in force was one worker per core, and its tick 40 ms: replay uses both.
  CHECK(replayed["workers"] == std::to_string(cores));
  CHECK(replayed["sample_ms"] == 40);
  CHECK(replayed["result"]["peak_running"].get<long>() <= cores);
  CHECK(replayed["result"]["ok"] == 8);

  r = ab::cli::run({AB_BIN, "replay", "--out", out, "--json", "--sweep"}, t.path());
  CAPTURE(r.err);
  REQUIRE(r.exit_code == 0);
  const auto swept = nlohmann::json::parse(r.out);
  REQUIRE(swept["rows"].size() > 0);
  int recommended = 0;
  for (const auto& row : swept["rows"]) {
    const std::string workers = row["workers"].get<std::string>();
    CAPTURE(workers);
    REQUIRE(workers != "auto");
    CHECK(std::stol(workers) <= cores);
    recommended += row["recommended"].get<bool>() ? 1 : 0;
  }
  CHECK(recommended == 1);
}
