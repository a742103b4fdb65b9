// Black-box tests of the run lock: one run per output directory and per history file.
#include <doctest/doctest.h>

#include <signal.h>
#include <unistd.h>

#include "tests/cli/cli_process.h"
#include "tests/testutil/temp_dir.h"

namespace fs = std::filesystem;

namespace {

struct LockFixture {
  ab::test::TempDir t{"ab-cli-lock"};
  fs::path started = t.path() / "started";
  LockFixture() { t.write("c/a.wav", "aaaa"); }
  /// A run whose command marks that it started, then sleeps `hold_s`.
  std::vector<std::string> argv(const std::string& out, const std::vector<std::string>& extra, double hold_s) const {
    std::vector<std::string> a = {AB_BIN, "--progress", "plain", "--out", (t.path() / out).string()};
    a.insert(a.end(), extra.begin(), extra.end());
    a.insert(a.end(), {(t.path() / "c").string(), "--", "/bin/sh", "-c",
                       "touch \"$1\"; sleep " + std::to_string(hold_s) + "; touch \"$2.done\"", "sh", started.string(),
                       "{out}"});
    return a;
  }
};

}  // namespace

TEST_CASE("run lock: a second run on the same --out exits 2 at once, naming the first run's pid and command") {
  LockFixture f;
  ab::cli::Process first(f.argv("out", {}, 30), f.t.path());
  REQUIRE(ab::cli::eventually([&] { return fs::exists(f.started); }));
  ab::cli::Result second = ab::cli::run(f.argv("out", {}, 0), f.t.path());
  CAPTURE(second.err);
  CHECK(second.exit_code == 2);
  CHECK(second.err.find("output directory " + (f.t.path() / "out").string() + " is in use by another align-batch run (pid " +
                        std::to_string(first.pid()) + ": " + AB_BIN + " --progress plain --out ") != std::string::npos);
  CHECK(second.err.find("wait for it to finish, or give this run another --out") != std::string::npos);
  CHECK(second.out.empty());

  // Another --out but the same --history: the history is locked too.
  const std::string history = (f.t.path() / "shared.sqlite").string();
  first.signal(SIGKILL);  // the kernel releases a dead run's lock: nothing stale blocks the next one
  first.wait();
  fs::remove(f.started);
  ab::cli::Process holder(f.argv("out1", {"--history", history}, 30), f.t.path());
  REQUIRE(ab::cli::eventually([&] { return fs::exists(f.started); }));
  ab::cli::Result other_out = ab::cli::run(f.argv("out2", {"--history", history}, 0), f.t.path());
  CHECK(other_out.exit_code == 2);
  CHECK(other_out.err.find("history " + history + " is in use by another align-batch run (pid " +
                           std::to_string(holder.pid()) + ": ") != std::string::npos);
  CHECK_FALSE(fs::exists(f.t.path() / "out2/a.done"));
  // A dry run writes nothing and needs no lock.
  CHECK(ab::cli::run(f.argv("out1", {"--history", history, "--dry-run"}, 0), f.t.path()).exit_code == 0);
  holder.signal(SIGINT);
  CHECK(holder.wait().exit_code == 130);

  // Once the first run has ended, a run on its --out goes ahead (and finishes its file).
  ab::cli::Result after = ab::cli::run(f.argv("out", {}, 0), f.t.path());
  CAPTURE(after.err);
  CHECK(after.exit_code == 0);
  CHECK(fs::exists(f.t.path() / "out/a.done"));
}
