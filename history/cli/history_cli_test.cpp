// Black-box tests of `align-batch history`: the real binary against databases written here.
#include "history/history_store.h"

#include "tests/testutil/temp_dir.h"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <fstream>
#include <random>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

namespace {

struct Output {
  int exit_code = -1;
  std::string out, err;
};

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs align-batch with `args` in `cwd`; stdout and stderr go through files (no pipe deadlock).
Output run_cli(const std::vector<std::string>& args, const std::filesystem::path& cwd) {
  const auto out_path = cwd / ".stdout", err_path = cwd / ".stderr";
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int o = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0 || chdir(cwd.c_str()) != 0) _exit(126);
    std::vector<char*> argv{const_cast<char*>(AB_BIN)};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(AB_BIN, argv.data());
    _exit(127);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  Output r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = slurp(out_path);
  r.err = slurp(err_path);
  return r;
}

constexpr const char* kKey = "ctc:00112233445566778899aabbccddeeff";
constexpr const char* kCmdKey = "cmd:mytool --fast {in} {out}";

// Three runs of 40 jobs following peak = 1 GB + 20 × size (±2.5%), each 16 kHz 16-bit mono
// audio (32000 bytes per second, so the seconds line is 1 GB + 640000 B/s), plus a failed job
// with an awkward name under a second key in each run. Returns the database path.
std::filesystem::path make_history(const std::filesystem::path& out_dir) {
  const auto db = ab::default_history_path(out_dir);
  auto store = ab::HistoryStore::open(db);
  REQUIRE(store.ok());
  std::mt19937_64 rng(1);
  for (int r = 0; r < 3; ++r) {
    ab::RunInfo info;
    info.host = "box";
    info.cores = 2;
    info.mem_total_bytes = 25ull << 30;
    info.budget_bytes = 20ull << 30;
    info.settings.mem_budget = "20G";
    const auto run = *(*store)->begin_run(info);
    for (int i = 0; i < 40; ++i) {
      ab::JobRecord j;
      j.run_id = run;
      j.input_path = "/corpus/f" + std::to_string(i) + ".wav";
      j.input_size_bytes = 1'000'000 + rng() % 100'000'000;
      j.audio_duration_s = static_cast<double>(j.input_size_bytes) / 32000;
      j.job_key = kKey;
      const double noise = (static_cast<double>(rng() % 1000) - 500) / 20000;
      j.peak_pss_bytes = static_cast<std::uint64_t>(
          (1e9 + 20.0 * static_cast<double>(j.input_size_bytes)) * (1 + noise));
      j.peak_rss_bytes = j.peak_pss_bytes + 100'000'000;
      REQUIRE((*store)->record_job(j).ok());
    }
    ab::JobRecord bad;
    bad.run_id = run;
    bad.input_path = "/corpus/bad, \"quoted\".wav";
    bad.job_key = kCmdKey;
    bad.status = ab::JobStatus::kFailed;
    bad.exit_status = 3;
    bad.error = "not a sound file";
    REQUIRE((*store)->record_job(bad).ok());
    REQUIRE((*store)->end_run(run, 1).ok());
  }
  return db;
}

}  // namespace

TEST_CASE("history --json: one entry per key with the fitted law and its measured error") {
  ab::test::TempDir dir;
  const auto db = make_history(dir.path() / "out");
  const auto r = run_cli({"history", "--history", db.string(), "--json"}, dir.path());
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto keys = nlohmann::json::parse(r.out);
  REQUIRE(keys.size() == 2);
  const auto& k = keys[0]["key"] == kKey ? keys[0] : keys[1];
  CHECK(k["jobs"] == 120);
  CHECK(k["ok_jobs"] == 120);
  CHECK(k["size_fit"]["ratio"].get<double>() == doctest::Approx(20).epsilon(0.05));
  CHECK(k["size_fit"]["baseline_bytes"].get<double>() == doctest::Approx(1e9).epsilon(0.05));
  CHECK(k["duration_fit"]["ratio"].get<double>() == doctest::Approx(640000).epsilon(0.05));
  CHECK(k["duration_fit"]["baseline_bytes"].get<double>() == doctest::Approx(1e9).epsilon(0.05));
  CHECK(k["evaluated_jobs"] == 50);
  CHECK(k["median_abs_error"].get<double>() < 0.025);  // the noise is at most ±2.5%
  CHECK(k["coverage"].get<double>() >= 0.9);
  const auto& c = keys[0]["key"] == kKey ? keys[1] : keys[0];
  CHECK(c["key"] == kCmdKey);
  CHECK(c["ok_jobs"] == 0);
  CHECK(c["size_fit"].is_null());
}

TEST_CASE("history, default location and table; --out finds <out>/.align-batch/history.sqlite") {
  ab::test::TempDir dir;
  make_history(dir.path() / "aligned");  // the main command's default --out
  const auto table = run_cli({"history"}, dir.path());
  INFO(table.err);
  REQUIRE(table.exit_code == 0);
  CHECK(table.out.find(kKey) != std::string::npos);
  CHECK(table.out.find("MEDIAN PEAK") != std::string::npos);
  CHECK(table.out.find("of 50") != std::string::npos);
  // Both lines, each with its own margin: ~953.7 MiB + 20.00/B and ~953.7 MiB + 625.0 KiB/s.
  CHECK(table.out.find("/B +") != std::string::npos);
  CHECK(table.out.find("KiB/s +") != std::string::npos);
  make_history(dir.path() / "elsewhere");
  CHECK(run_cli({"history", "--out", "elsewhere"}, dir.path()).exit_code == 0);
}

TEST_CASE("history --csv: a header and one quoted-where-needed row per key") {
  ab::test::TempDir dir;
  const auto db = make_history(dir.path() / "out");
  const auto r = run_cli({"history", "--csv", "--history", db.string()}, dir.path());
  REQUIRE(r.exit_code == 0);
  std::istringstream lines(r.out);
  std::vector<std::string> rows;
  for (std::string l; std::getline(lines, l);) rows.push_back(l);
  REQUIRE(rows.size() == 3);
  CHECK(rows[0].rfind("key,jobs,ok_jobs,median_peak_bytes,baseline_bytes,ratio_bytes_per_byte,margin,"
                      "duration_baseline_bytes,ratio_bytes_per_s,duration_margin,", 0) == 0);
  const std::string& k_row = rows[1].rfind(kKey, 0) == 0 ? rows[1] : rows[2];
  std::vector<std::string> cells;
  std::istringstream cs(k_row);
  for (std::string c; std::getline(cs, c, ',');) cells.push_back(c);
  REQUIRE(cells.size() == 14);
  CHECK(std::stod(cells[8]) == doctest::Approx(640000).epsilon(0.05));  // ratio_bytes_per_s
  CHECK(std::stod(cells[9]) > 0);                                      // duration_margin
  const auto run_csv = run_cli({"history", "run", "1", "--csv", "--history", db.string()}, dir.path());
  REQUIRE(run_csv.exit_code == 0);
  CHECK(run_csv.out.find("\"/corpus/bad, \"\"quoted\"\".wav\"") != std::string::npos);
}

TEST_CASE("history runs and history run ID") {
  ab::test::TempDir dir;
  const auto db = make_history(dir.path() / "out");
  const auto runs = run_cli({"history", "runs", "--json", "--history", db.string()}, dir.path());
  INFO(runs.err);
  REQUIRE(runs.exit_code == 0);
  const auto j = nlohmann::json::parse(runs.out);
  REQUIRE(j.size() == 3);
  CHECK(j[0]["id"] == 3);  // newest first
  CHECK(j[0]["jobs"] == 41);
  CHECK(j[0]["ok_jobs"] == 40);
  CHECK(j[0]["exit_code"] == 1);
  CHECK(j[0]["settings"]["mem_budget"] == "20G");
  CHECK(j[0]["settings"]["settings_version"] == ab::RunSettings::kVersion);

  const auto one = run_cli({"history", "--history", db.string(), "run", "2", "--json"}, dir.path());
  REQUIRE(one.exit_code == 0);
  const auto r = nlohmann::json::parse(one.out);
  CHECK(r["run"]["id"] == 2);
  REQUIRE(r["jobs"].size() == 41);
  CHECK(r["jobs"][40]["status"] == "failed");
  CHECK(r["jobs"][40]["error"] == "not a sound file");
  CHECK(r["jobs"][40]["exit_status"] == 3);

  const auto table = run_cli({"history", "run", "2", "--history", db.string()}, dir.path());
  REQUIRE(table.exit_code == 0);
  CHECK(table.out.find("41 jobs, 40 ok") != std::string::npos);
  CHECK(table.out.find("not a sound file") != std::string::npos);

  const auto missing = run_cli({"history", "run", "99", "--history", db.string()}, dir.path());
  CHECK(missing.exit_code == 2);
  CHECK(missing.out.empty());
  CHECK(missing.err.find("no run 99") != std::string::npos);
  CHECK(missing.err.find(db.string()) != std::string::npos);
}

TEST_CASE("history forget KEY removes the key; an unknown key is an error") {
  ab::test::TempDir dir;
  const auto db = make_history(dir.path() / "out");
  const auto f = run_cli({"history", "forget", kCmdKey, "--history", db.string()}, dir.path());
  INFO(f.err);
  REQUIRE(f.exit_code == 0);
  CHECK(f.out.find("forgot 3 jobs") != std::string::npos);
  const auto keys = nlohmann::json::parse(
      run_cli({"history", "--json", "--history", db.string()}, dir.path()).out);
  REQUIRE(keys.size() == 1);
  CHECK(keys[0]["key"] == kKey);
  const auto again = run_cli({"history", "forget", kCmdKey, "--history", db.string()}, dir.path());
  CHECK(again.exit_code == 2);
  CHECK(again.err.find("no jobs with key") != std::string::npos);
}

TEST_CASE("errors: no database (none created), a corrupt one (untouched)") {
  ab::test::TempDir dir;
  const auto none = run_cli({"history", "--history", "nothing/here.sqlite"}, dir.path());
  CHECK(none.exit_code == 2);
  CHECK(none.err.find("nothing/here.sqlite: no history database there") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir.path() / "nothing"));

  const auto corrupt = dir.write("bad.sqlite", std::string(8192, 'x'));
  const auto c = run_cli({"history", "--history", corrupt.string()}, dir.path());
  CHECK(c.exit_code == 2);
  CHECK(c.err.find("not a readable align-batch history") != std::string::npos);
  CHECK(slurp(corrupt) == std::string(8192, 'x'));
}

TEST_CASE("bad usage exits 2 (orchestrator/main.cpp maps CLI11's parse errors to 2)") {
  ab::test::TempDir dir;
  const auto both = run_cli({"history", "--json", "--csv"}, dir.path());
  CHECK(both.exit_code == 2);
  CHECK(both.err.find("excludes") != std::string::npos);
  CHECK(run_cli({"history", "run"}, dir.path()).exit_code == 2);
  CHECK(run_cli({"history", "run", "abc"}, dir.path()).exit_code == 2);
  CHECK(run_cli({"history", "forget"}, dir.path()).exit_code == 2);
}

TEST_CASE("one exit map: a missing or corrupt history is 2 for history, replay and report alike") {
  ab::test::TempDir dir;
  const auto corrupt = dir.write("bad.sqlite", std::string(8192, 'x'));
  for (const std::string& db : {std::string("nothing/here.sqlite"), corrupt.string()}) {
    for (const char* command : {"history", "replay", "report"}) {
      const auto r = run_cli({command, "--history", db}, dir.path());
      INFO(command << " " << db << ": " << r.err);
      CHECK(r.exit_code == 2);
      CHECK(r.err.find(db) != std::string::npos);
    }
  }
  CHECK_FALSE(std::filesystem::exists(dir.path() / "nothing"));
}
