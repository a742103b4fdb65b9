// Black-box tests of `--executor slurm` against a real single-node Slurm (slurm-wlm 22.05 with
// slurmdbd) that this binary starts once (scripts/slurm-node.sh) and stops at exit.
#include <signal.h>

#include <doctest/doctest.h>

#include <filesystem>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "history/history_store.h"
#include "tests/cli/cli_process.h"
#include "tests/testutil/slurm_node.h"
#include "tests/testutil/temp_dir.h"

namespace fs = std::filesystem;
using ab::cli::Process;
using ab::cli::Result;

namespace {

/// The node every test here shares: 1500 MB of schedulable memory, 8 CPUs (more than the cores:
/// SlurmdParameters=config_overrides), so several tasks run at once.
ab::test::SlurmNode* node() {
  static std::unique_ptr<ab::test::SlurmNode> n =
      std::make_unique<ab::test::SlurmNode>(fs::path(AB_SOURCE_DIR) / "scripts" / "slurm-node.sh", 1500, 8);
  return n.get();
}

/// Skips (visibly) when the node cannot run here; CI installs Slurm (scripts/setup.sh test).
#define REQUIRE_SLURM()                                                        \
  do {                                                                         \
    if (!node()->ok()) {                                                       \
      MESSAGE("skipped: no private Slurm node here: " << node()->error());     \
      return;                                                                  \
    }                                                                          \
  } while (0)

/// Files of k units; memhog holds 40 MiB per unit (1 MiB per 1 KiB... at 40 KiB a unit).
struct Corpus {
  ab::test::TempDir dir{"ab-slurm-cli"};
  fs::path corpus() const { return dir.path() / "corpus"; }
  fs::path out() const { return dir.path() / "out"; }
  void add(const std::string& name, int units) { dir.write("corpus/" + name + ".wav", std::string(units * 40 * 1024, 'a')); }
  std::vector<std::string> argv(double hold_s, const std::vector<std::string>& options = {}) const {
    std::vector<std::string> a = {AB_BIN, "--executor", "slurm", "--progress", "plain", "--out", out().string()};
    a.insert(a.end(), options.begin(), options.end());
    a.insert(a.end(), {corpus().string(), "--", AB_MEMHOG_BIN, "--in", "{in}", "--mib-per-mib", "1024", "--ramp-ms", "200",
                       "--hold-s", std::to_string(hold_s), "--out", "{out}.done"});
    return a;
  }
  std::size_t outputs() const {
    std::size_t n = 0;
    for (const auto& e : fs::recursive_directory_iterator(out()))
      if (e.path().extension() == ".done" && e.path().string().find("/.align-batch/") == std::string::npos) ++n;
    return n;
  }
};

std::string sacct_states(const std::string& array_id) {
  return ab::test::shell_output("sacct -n -P -X -j " + array_id + " -o State");
}

}  // namespace

TEST_CASE("slurm: a corpus finishes on a real Slurm with every output and the summary; history holds every peak; a re-run submits nothing") {
  REQUIRE_SLURM();
  Corpus c;
  for (int k = 1; k <= 7; ++k) c.add("f" + std::to_string(k), 1 + k % 3);
  // Each job holds its peak 1.2 s: sacct samples every second (JobAcctGatherFrequency=task=1)
  // and saw no peak at all of 0.5 s jobs under load.
  Result r = ab::cli::run(c.argv(1.2), c.dir.path());
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("finished: 7 done, 0 skipped (already done), 0 failed") != std::string::npos);
  CHECK(c.outputs() == 7);
  // The submitter writes the run's report, as a local run does.
  CHECK(r.out.find("report: " + (c.out() / ".align-batch" / "report-1.html").string()) != std::string::npos);
  CHECK(std::filesystem::exists(c.out() / ".align-batch" / "report-1.html"));
  // Cold: a first wave of 5 tasks, then the other 2 sized from their peaks.
  CHECK(r.err.find("submitted array") != std::string::npos);
  CHECK(r.err.find("5 tasks at --mem=750.0 MiB each") != std::string::npos);

  auto h = ab::HistoryStore::open(c.out() / ".align-batch" / "history.sqlite", ab::HistoryStore::Create::kNever);
  REQUIRE(h.ok());
  auto keys = h.value()->keys();
  REQUIRE(keys.ok());
  REQUIRE(keys.value().size() == 1);  // sacct's rows are not a key of their own
  const std::string key = keys.value().front().job_key;
  auto jobs = h.value()->jobs_for_key(key);
  REQUIRE(jobs.ok());
  CHECK(jobs.value().size() == 7);
  for (const auto& j : jobs.value()) {
    CHECK(j.status == ab::JobStatus::kOk);
    // memhog holds 40 MiB a unit; the tasks' own readings see it.
    const double units = static_cast<double>(j.input_size_bytes) / (40 * 1024);
    CHECK(static_cast<double>(j.peak_pss_bytes) >= units * 40 * (1 << 20) * 0.9);
  }
  // sacct's figures for every task, beside them (MaxRSS where sacct showed it before the run ended).
  auto runs = h.value()->runs(1);
  REQUIRE(runs.ok());
  REQUIRE(runs.value().size() == 1);
  auto tasks = h.value()->slurm_tasks_for_run(runs.value().front().id);
  REQUIRE(tasks.ok());
  CHECK(tasks.value().size() == 7);
  std::size_t with_rss = 0;
  for (const auto& t : tasks.value()) with_rss += t.max_rss_bytes.value_or(0) > 0;
  // A task whose MaxRSS sacct had not shown when the last file was decided is recorded without
  // it (the run does not wait ~3 s for a figure predictions do not use), and the closing line says
  // how many.
  if (with_rss < 7)
    CHECK(r.err.find("(" + std::to_string(7 - with_rss) + " tasks' MaxRSS not yet in sacct, counted as 0)") != std::string::npos);
  else
    CHECK(r.err.find("not yet in sacct") == std::string::npos);

  Result again = ab::cli::run(c.argv(1.2), c.dir.path());
  CHECK(again.exit_code == 0);
  CHECK(again.out.find("0 done, 7 skipped") != std::string::npos);
  CHECK(again.err.find("submitted array") == std::string::npos);
}

TEST_CASE("slurm: a task whose request was too small is killed by Slurm; its file is resubmitted larger and finishes") {
  REQUIRE_SLURM();
  Corpus c;
  // Two small files teach history a peak of ~40 MiB (fewer than 5 jobs: the peaks' quantile
  // predicts every file alike), so the big one's first request is far too small.
  c.add("small1", 1);
  c.add("small2", 1);
  Result first = ab::cli::run(c.argv(0.3), c.dir.path());
  REQUIRE(first.exit_code == 0);
  c.add("big", 6);  // 240 MiB
  Result r = ab::cli::run(c.argv(0.3), c.dir.path());
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("finished: 1 done, 2 skipped") != std::string::npos);
  CHECK(c.outputs() == 3);
  std::smatch m;
  REQUIRE(std::regex_search(r.err, m, std::regex(R"((\d+) out of memory \((\d+) files resubmitted\))")));
  CHECK(std::stoi(m[2]) >= 1);
  // The first array's only task ended OUT_OF_MEMORY (Slurm's cgroup limit) or FAILED (the task's
  // own guard stopped the job first and its scheduler found it too big); either way it asked
  // for less than the file needed.
  std::smatch a;
  REQUIRE(std::regex_search(r.err, a, std::regex(R"(submitted array (\d+): 1 task at --mem=([0-9.]+) MiB)")));
  CHECK(std::stod(a[2]) < 240);
  const std::string states = sacct_states(a[1]);
  CHECK((states.find("OUT_OF_MEMORY") != std::string::npos || states.find("FAILED") != std::string::npos));
}

TEST_CASE("slurm: Ctrl-C cancels the arrays it submitted (and only those), exit 130") {
  REQUIRE_SLURM();
  Corpus c;
  for (int k = 1; k <= 3; ++k) c.add("slow" + std::to_string(k), 1);
  // Someone else's job on the same cluster: must survive our Ctrl-C.
  int rc = 0;
  const std::string other =
      ab::test::shell_output("sbatch --parsable --mem=50M -o /dev/null --wrap 'sleep 60'", &rc);
  REQUIRE(rc == 0);
  const std::string other_id = other.substr(0, other.find_first_not_of("0123456789"));
  Process p(c.argv(60), c.dir.path());
  std::string err, ours;
  REQUIRE(ab::cli::eventually([&] {
    err = p.err_so_far();
    std::smatch a;
    if (!std::regex_search(err, a, std::regex(R"(submitted array (\d+))"))) return false;
    ours = a[1];
    return true;
  }));
  REQUIRE(ab::cli::eventually([&] { return sacct_states(ours).find("RUNNING") != std::string::npos; }));
  p.signal(SIGINT);
  Result r = p.wait();
  INFO(r.err);
  CHECK(r.exit_code == 130);
  CHECK(r.err.find("scancel " + ours) != std::string::npos);
  CHECK(ab::cli::eventually([&] {
    const std::string s = sacct_states(ours);
    return s.find("RUNNING") == std::string::npos && s.find("PENDING") == std::string::npos;
  }));
  CHECK(sacct_states(ours).find("CANCELLED") != std::string::npos);
  CHECK(sacct_states(other_id).find("RUNNING") != std::string::npos);
  ab::test::shell_output("scancel " + other_id);
}

TEST_CASE("slurm: file names with a newline, a leading space, '#' or '@' reach their task intact (the shard file is NUL-separated)") {
  REQUIRE_SLURM();
  Corpus c;
  const std::vector<std::string> names = {"two\nlines", " lead", "#hash", "@at", "plain"};
  for (const auto& n : names) c.add(n, 1);
  Result r = ab::cli::run(c.argv(0.2), c.dir.path());
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("finished: 5 done, 0 skipped (already done), 0 failed") != std::string::npos);
  for (const auto& n : names) CHECK_MESSAGE(fs::exists(c.out() / (n + ".done")), "no output for '" << n << "'");
  // The shard files hold the names as they are, each ended by a NUL.
  std::size_t shards = 0;
  for (const auto& e : fs::recursive_directory_iterator(c.out() / ".align-batch" / "slurm"))
    if (e.path().extension() == ".shard") ++shards;
  CHECK(shards == 5);
}
