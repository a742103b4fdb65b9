// Black-box tests of `align-batch CORPUS -- COMMAND`: usage errors, the external-command engine,
// and real processes under the memory guard (memhog as the workload, real signals, real cgroups).
#include <doctest/doctest.h>

#include <signal.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>

#include "history/history_store.h"
#include "history/job_key.h"
#include "tests/cli/cli_process.h"
#include "tests/testutil/audio_gen.h"
#include "tests/testutil/cgroup_v1.h"
#include "tests/testutil/temp_dir.h"

namespace fs = std::filesystem;
using ab::cli::Process;
using ab::cli::Result;

namespace {

/// A corpus of files whose sizes (KiB) the workload turns into memory: memhog allocates
/// `mib_per_kib` MiB per KiB of input (via --mib-per-mib 1024 * mib_per_kib).
struct Fixture {
  ab::test::TempDir dir{"ab-cli"};
  fs::path corpus() const { return dir.path() / "corpus"; }
  fs::path out() const { return dir.path() / "out"; }
  fs::path counts() const { return dir.path() / "counts"; }

  Fixture() { fs::create_directories(counts()); }
  void add(const std::string& relative, std::size_t kib) { dir.write("corpus/" + relative, std::string(kib * 1024, 'a')); }

  /// The external command: counts its attempts per file, optionally crashes once for the file
  /// whose stem is `crash_stem`, then execs memhog (which writes {out}.done atomically at exit).
  std::vector<std::string> command(double mib_per_kib, int ramp_ms, double hold_s, const std::string& crash_stem = "") const {
    return {"/bin/sh", "-c",
            "echo x >> \"$0\"; if [ \"$4\" = '" + crash_stem + "' ] && [ ! -e \"$0.crashed\" ]; then touch \"$0.crashed\"; "
            "kill -SEGV $$; fi; exec \"$1\" --in \"$2\" --mib-per-mib " + std::to_string(mib_per_kib * 1024) +
            " --ramp-ms " + std::to_string(ramp_ms) + " --hold-s " + std::to_string(hold_s) + " --out \"$3.done\"",
            (counts() / "{stem}.count").string(), AB_MEMHOG_BIN, "{in}", "{out}", "{stem}"};
  }
  std::vector<std::string> argv(const std::vector<std::string>& options, const std::vector<std::string>& command) const {
    std::vector<std::string> a = {AB_BIN};
    a.insert(a.end(), options.begin(), options.end());
    a.push_back("--out");
    a.push_back(out().string());
    a.push_back(corpus().string());
    a.push_back("--");
    a.insert(a.end(), command.begin(), command.end());
    return a;
  }
  Result run(const std::vector<std::string>& options, const std::vector<std::string>& command) const {
    return ab::cli::run(argv(options, command), dir.path());
  }
  int attempts(const std::string& stem) const {
    std::string s = ab::cli::slurp(counts() / (stem + ".count"));
    return static_cast<int>(std::count(s.begin(), s.end(), '\n'));
  }
  /// Files under --out other than align-batch's own folder.
  std::set<std::string> outputs() const {
    std::set<std::string> out;
    if (!fs::exists(this->out())) return out;
    for (auto it = fs::recursive_directory_iterator(this->out()); it != fs::recursive_directory_iterator(); ++it) {
      if (it->path().filename() == ".align-batch") {
        it.disable_recursion_pending();
        continue;
      }
      if (it->is_regular_file()) out.insert(it->path().lexically_relative(this->out()).string());
    }
    return out;
  }
};

Result run_ab(const std::vector<std::string>& args, const fs::path& dir) {
  std::vector<std::string> a = {AB_BIN};
  a.insert(a.end(), args.begin(), args.end());
  return ab::cli::run(a, dir);
}

}  // namespace

TEST_CASE("usage errors exit 2 with a message that says what to do") {
  ab::test::TempDir t{"ab-cli"};
  t.write("c/a.wav", "x");
  const std::string c = (t.path() / "c").string();
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  for (const Case& k : std::vector<Case>{
           {{"--mem-budget", "12 parsecs", c, "--", "true"}, "--mem-budget"},
           {{"--mem-budget", "-5G", c, "--", "true"}, "--mem-budget"},
           {{"--mem-budget", "800", c, "--", "true"}, "--mem-budget 800 B is less than the 16.0 MiB any worker needs"},
           {{"--reserve", "lots", c, "--", "true"}, "--reserve"},
           {{"--vram-budget", "lots", c, "--", "true"}, "--vram-budget 'lots'"},
           {{"--workers", "0", c, "--", "true"}, "--workers '0'"},
           {{"--workers", "many", c, "--", "true"}, "use auto or a whole number"},
           {{"--timeout", "soon", c, "--", "true"}, "--timeout 'soon'"},
           {{"--progress", "loud", c, "--", "true"}, "--progress"},
           {{"--no-such-flag", c, "--", "true"}, "no-such-flag"},
           {{"--", "true"}, "no corpus given"},
           {{c, "--"}, "no command after '--'"},
           {{c, "--", "tool", "{input}"}, "unknown placeholder {input}"},
           {{c, "--", "/no/such/tool", "{in}"}, "'/no/such/tool' not found"},
           {{(t.path() / "missing").string(), "--", "true"}, "does not exist"},
       }) {
    CAPTURE(k.args);
    Result r = run_ab(k.args, t.path());
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(k.message) != std::string::npos);
    CHECK(r.out.empty());
    CHECK_FALSE(fs::exists(t.path() / "aligned"));  // a usage error writes nothing, not even history
  }
}

TEST_CASE("--help exits 0 and documents the exit status") {
  ab::test::TempDir t{"ab-cli"};
  Result r = run_ab({"--help"}, t.path());
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("--mem-budget") != std::string::npos);
  CHECK(r.out.find("130 interrupted") != std::string::npos);
}

TEST_CASE("external command: every file done, outputs mirror the tree, hostile names arrive intact") {
  Fixture f;
  f.add("a.wav", 1);
  f.add("spk/b.flac", 2);
  f.add("spk/we ird;$(touch pwned) 'q\".wav", 1);
  f.add("-dash.wav", 1);
  f.add("new\nline.wav", 1);
  Result r = f.run({"--progress", "plain", "--mem-budget", "1G"}, f.command(1, 0, 0));
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("5 done") != std::string::npos);
  CHECK(f.outputs() == std::set<std::string>{"a.done", "spk/b.done", "spk/we ird;$(touch pwned) 'q\".done", "-dash.done",
                                             "new\nline.done"});
  CHECK_FALSE(fs::exists(f.dir.path() / "pwned"));
  CHECK(f.attempts("a") == 1);
  CHECK(f.attempts("-dash") == 1);
  // Resume: nothing to do the second time.
  Result again = f.run({"--progress", "plain", "--mem-budget", "1G"}, f.command(1, 0, 0));
  CHECK(again.exit_code == 0);
  CHECK(again.out.find("0 done, 5 skipped") != std::string::npos);
  CHECK(f.attempts("a") == 1);
}

TEST_CASE("a failing file is listed with its reason, exit 1; the others finish") {
  Fixture f;
  f.add("good.wav", 1);
  f.add("bad.wav", 1);
  Result r = f.run({"--progress", "plain"},
                   {"/bin/sh", "-c", "case \"$0\" in *bad.wav) echo 'cannot parse header' >&2; exit 4;; esac; touch \"$1.done\"",
                    "{in}", "{out}"});
  CHECK(r.exit_code == 1);
  CHECK(r.out.find("1 done") != std::string::npos);
  CHECK(r.out.find("failed files:") != std::string::npos);
  CHECK(r.out.find("bad.wav: command exited with status 4") != std::string::npos);
  CHECK(r.out.find("cannot parse header") != std::string::npos);
  CHECK(f.outputs() == std::set<std::string>{"good.done"});
}

TEST_CASE("--dry-run prints the plan and runs nothing") {
  Fixture f;
  f.add("a.wav", 3);
  f.add("b.wav", 1);
  Result r = f.run({"--dry-run", "--mem-budget", "2G"}, f.command(1, 0, 0));
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("run\t" + (f.corpus() / "a.wav").string()) != std::string::npos);
  CHECK(r.out.find("plan: 2 to run, 0 skipped") != std::string::npos);
  CHECK(r.out.find("budget 2.0 GiB") != std::string::npos);
  // An external command with --workers auto: memory alone caps concurrency.
  CHECK(r.out.find("workers auto\n") != std::string::npos);
  CHECK(f.attempts("a") == 0);
  CHECK_FALSE(fs::exists(f.out()));
}

TEST_CASE("a run records each file's audio duration in history; --dry-run and history run --csv show it") {
  Fixture f;
  const auto formats = ab::test::audio_formats();
  auto format = [&](const std::string& name) {
    auto it = std::find_if(formats.begin(), formats.end(), [&](const auto& x) { return x.name == name; });
    REQUIRE(it != formats.end());
    return *it;
  };
  fs::create_directories(f.corpus());
  REQUIRE(ab::test::write_tones((f.corpus() / "w16k.wav").string(), format("wav"), 16000, 1, {{440, 2.0, 0.5}}) == "");
  REQUIRE(ab::test::write_tones((f.corpus() / "w8k.wav").string(), format("wav"), 8000, 1, {{440, 3.5, 0.5}}) == "");
  REQUIRE(ab::test::write_tones((f.corpus() / "f44k.flac").string(), format("flac"), 44100, 2, {{440, 1.25, 0.5}}) == "");
  f.add("not-audio.wav", 1);  // the external command does not care; there is simply no duration
  const std::map<std::string, double> expected_s = {{"w16k.wav", 2.0}, {"w8k.wav", 3.5}, {"f44k.flac", 1.25}};

  Result plan = f.run({"--dry-run"}, f.command(1, 0, 0));
  CAPTURE(plan.out);
  CHECK(plan.exit_code == 0);
  CHECK(plan.out.find("w8k.wav\t" + std::to_string(fs::file_size(f.corpus() / "w8k.wav") / 1024) + ".") != std::string::npos);
  CHECK(plan.out.find("\taudio 3.50 s\tpeak unknown (no history)\tcommand\t-\tnew\t") != std::string::npos);
  CHECK(plan.out.find("\taudio 1.25 s\t") != std::string::npos);
  CHECK(plan.out.find("not-audio.wav\t1.0 KiB\taudio unknown\t") != std::string::npos);

  Result r = f.run({"--progress", "plain", "--mem-budget", "1G"}, f.command(1, 0, 0));
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("4 done") != std::string::npos);
  const fs::path db = f.out() / ".align-batch/history.sqlite";
  std::int64_t run_id = 0;
  {
    auto h = ab::HistoryStore::open(db, ab::HistoryStore::Create::kNever);
    REQUIRE(h.ok());
    auto runs = h.value()->runs();
    REQUIRE(runs.ok());
    REQUIRE(runs.value().size() == 1);
    run_id = runs.value()[0].id;
    auto jobs = h.value()->jobs_for_run(run_id);
    REQUIRE(jobs.ok());
    REQUIRE(jobs.value().size() == 4);
    for (const auto& j : jobs.value()) {
      const std::string name = fs::path(j.input_path).filename().string();
      CAPTURE(name);
      CHECK(j.status == ab::JobStatus::kOk);
      if (name == "not-audio.wav") {
        CHECK_FALSE(j.audio_duration_s.has_value());
      } else {
        REQUIRE(j.audio_duration_s.has_value());
        CHECK(std::abs(*j.audio_duration_s - expected_s.at(name)) < 0.001);
      }
    }
  }
  Result csv = run_ab({"history", "--history", db.string(), "--csv", "run", std::to_string(run_id)}, f.dir.path());
  CAPTURE(csv.out);
  CHECK(csv.exit_code == 0);
  CHECK(csv.out.find((f.corpus() / "w8k.wav").string() + "," + std::to_string(fs::file_size(f.corpus() / "w8k.wav")) + ",3.5,ok,") !=
        std::string::npos);
  CHECK(csv.out.find((f.corpus() / "not-audio.wav").string() + ",1024,,ok,") != std::string::npos);
}

TEST_CASE("--progress json: one JSON object per line, ending with the summary") {
  Fixture f;
  f.add("a.wav", 1);
  f.add("b.wav", 1);
  Result r = f.run({"--progress", "json"}, f.command(1, 0, 0));
  CHECK(r.exit_code == 0);
  std::istringstream in(r.out);
  std::string line;
  int starts = 0, ends = 0;
  nlohmann::json last;
  while (std::getline(in, line)) {
    last = nlohmann::json::parse(line);  // throws (test fails) on anything that is not JSON
    if (last["event"] == "start") ++starts;
    if (last["event"] == "end") ++ends;
  }
  CHECK(starts == 2);
  CHECK(ends == 2);
  CHECK(last["event"] == "summary");
  CHECK(last["done"] == 2);
  CHECK(last["exit_code"] == 0);
}

TEST_CASE("real processes (b): a worker that segfaults mid-job is retried and the batch finishes") {
  Fixture f;
  for (const char* n : {"a.wav", "crashme.wav", "c.wav"}) f.add(n, 1);
  Result r = f.run({"--progress", "plain", "--mem-budget", "1G"}, f.command(10, 100, 0.1, "crashme"));
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("3 done") != std::string::npos);
  CHECK(r.out.find("1 retried") != std::string::npos);
  CHECK(f.attempts("crashme") == 2);
  CHECK(f.attempts("a") == 1);
  CHECK(r.err.find("killed by signal 11") != std::string::npos);
  CHECK(f.outputs().size() == 3);
}

TEST_CASE("real processes (d): a file needing more than the whole budget fails clearly; the rest finish") {
  Fixture f;
  f.add("s1.wav", 2);
  f.add("s2.wav", 2);
  f.add("s3.wav", 2);
  f.add("huge.wav", 40);  // 40 KiB × 10 MiB/KiB = 400 MiB against a 150 MiB budget
  Result r = f.run({"--progress", "plain", "--mem-budget", "150M", "--sample-ms", "20"}, f.command(10, 1500, 0.2));
  CHECK(r.exit_code == 1);
  CHECK(r.out.find("3 done") != std::string::npos);
  CHECK(r.out.find(f.corpus().string() + "/huge.wav: needs ~") != std::string::npos);
  CHECK(r.out.find("but the budget is 150.0 MiB") != std::string::npos);
  CHECK(f.outputs() == std::set<std::string>{"s1.done", "s2.done", "s3.done"});
}

TEST_CASE("real processes (c): parent SIGKILLed mid-run; the re-run redoes only unfinished files") {
  Fixture f;
  for (int i = 0; i < 8; ++i) f.add("f" + std::to_string(i) + ".wav", 1);
  const auto command = f.command(5, 0, 0.7);
  Process p(f.argv({"--progress", "plain", "--workers", "2", "--mem-budget", "1G"}, command), f.dir.path());
  REQUIRE(ab::cli::eventually([&] { return f.outputs().size() >= 2; }));
  p.signal(SIGKILL);
  p.wait();
  const auto outputs_before = f.outputs();
  CHECK(outputs_before.size() < 8);
  // Finished = recorded as ok in history. (An output moved into place a moment before the kill,
  // but not yet recorded, is redone: duplicate work, never lost work.)
  std::set<std::string> done_before;
  {
    auto h = ab::HistoryStore::open(f.out() / ".align-batch/history.sqlite", ab::HistoryStore::Create::kNever);
    REQUIRE(h.ok());
    auto runs = h.value()->runs();
    REQUIRE(runs.ok());
    REQUIRE(runs.value().size() == 1);
    auto jobs = h.value()->jobs_for_run(runs.value()[0].id);
    REQUIRE(jobs.ok());
    for (const auto& j : jobs.value())
      if (j.status == ab::JobStatus::kOk) done_before.insert(fs::path(j.input_path).stem().string() + ".done");
  }
  CHECK(done_before.size() >= 1);
  for (const auto& d : done_before) CHECK(outputs_before.count(d) == 1);
  // No orphan: the running jobs die with their parent (PR_SET_PDEATHSIG).
  CHECK(ab::cli::eventually([&] { return ab::cli::processes_with(f.corpus().string()).empty(); }, 5000));
  Result r = f.run({"--progress", "plain", "--workers", "2", "--mem-budget", "1G"}, command);
  CHECK(r.exit_code == 0);
  CHECK(f.outputs().size() == 8);
  for (int i = 0; i < 8; ++i) {
    const std::string stem = "f" + std::to_string(i);
    CAPTURE(stem);
    if (done_before.count(stem + ".done")) CHECK(f.attempts(stem) == 1);  // finished work is never redone
    else CHECK(f.attempts(stem) >= 1);
  }
  CHECK(r.out.find(std::to_string(done_before.size()) + " skipped") != std::string::npos);
  // Nothing half-written anywhere under --out: only whole outputs, and no staging left behind.
  for (const auto& o : f.outputs()) CHECK(o.size() > 5);
  CHECK(f.outputs().size() == 8);
  CHECK((!fs::exists(f.out() / ".align-batch/staging") || fs::is_empty(f.out() / ".align-batch/staging")));
}

TEST_CASE("real processes: Ctrl-C stops the workers cleanly, exit 130, no orphans; a re-run finishes") {
  Fixture f;
  for (int i = 0; i < 4; ++i) f.add("g" + std::to_string(i) + ".wav", 1);
  const auto slow = f.command(5, 0, 30);
  Process p(f.argv({"--progress", "plain", "--workers", "2", "--mem-budget", "1G"}, slow), f.dir.path());
  // Cold start (no history yet) runs two jobs at a time: wait for one to be under way.
  REQUIRE(ab::cli::eventually([&] { return f.attempts("g0") + f.attempts("g1") + f.attempts("g2") + f.attempts("g3") >= 1; }));
  ::usleep(300000);
  p.signal(SIGINT);
  Result r = p.wait();
  CHECK(r.exit_code == 130);
  CHECK(r.out.find("interrupted") != std::string::npos);
  CHECK(ab::cli::processes_with(f.corpus().string()).empty());
  CHECK(f.outputs().empty());
  Result again = f.run({"--progress", "plain", "--mem-budget", "1G"}, f.command(5, 0, 0));
  CHECK(again.exit_code == 0);
  CHECK(f.outputs().size() == 4);
}

TEST_CASE("real processes (a): inside a memory cgroup far below naive parallelism, every file done, no OOM kill" *
          doctest::skip(ab::test::cgroup_v1_unavailable())) {
  std::string why_not;
  // 320 MiB for eight jobs of ~100 MiB each: naive parallelism (all eight) needs 800 MiB.
  auto cg = ab::test::CgroupV1::create(320ull << 20, &why_not);
  REQUIRE_MESSAGE(cg, "cannot create a v1 memory cgroup here: " << why_not);
  const auto oom_before = cg->oom_kill_count();
  Fixture f;
  for (int i = 0; i < 8; ++i) f.add("h" + std::to_string(i) + ".wav", 10);  // 10 KiB × 10 = 100 MiB each
  Process p(f.argv({"--progress", "plain", "--reserve", "32M"}, f.command(10, 400, 0.3)), f.dir.path(), [&] {
    if (!cg->add_pid(::getpid())) ::_exit(99);
  });
  Result r = p.wait();
  CAPTURE(r.out);
  CAPTURE(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("8 done") != std::string::npos);
  CHECK(f.outputs().size() == 8);
  const auto oom_after = cg->oom_kill_count();
  if (oom_before && oom_after) CHECK(*oom_after == *oom_before);
  CHECK(r.out.find("killed by the kernel") == std::string::npos);
}

TEST_CASE("a second Ctrl-C kills workers that ignore SIGTERM; exit 130, nothing left behind") {
  Fixture f;
  f.add("s0.wav", 1);
  const std::string marker = (f.dir.path() / "started").string();
  Process p(f.argv({"--progress", "plain"},
                   {"/bin/sh", "-c", "trap '' TERM; touch \"$1\"; sleep 60 & wait; wait", "{in}", marker}),
            f.dir.path());
  REQUIRE(ab::cli::eventually([&] { return fs::exists(marker); }));
  p.signal(SIGINT);
  ::usleep(500000);
  // SIGTERM was sent and ignored; the 10 s grace has not run out: the job still lives.
  CHECK_FALSE(ab::cli::processes_with(f.corpus().string()).empty());
  p.signal(SIGINT);
  Result r = p.wait();
  CHECK(r.exit_code == 130);
  CHECK(ab::cli::eventually([&] { return ab::cli::processes_with(f.corpus().string()).empty(); }, 5000));
}

TEST_CASE("--config reads options from a file (CLI11 format)") {
  Fixture f;
  f.add("a.wav", 1);
  f.dir.write("bad.toml", "mem-budget = \"12 parsecs\"\n");
  Result bad = f.run({"--config", (f.dir.path() / "bad.toml").string()}, f.command(1, 0, 0));
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("--mem-budget") != std::string::npos);
  f.dir.write("good.toml", "progress = \"json\"\nmem-budget = \"1G\"\n");
  Result good = f.run({"--config", (f.dir.path() / "good.toml").string()}, f.command(1, 0, 0));
  CHECK(good.exit_code == 0);
  CHECK(good.out.find("\"event\":\"summary\"") != std::string::npos);
}

TEST_CASE("real processes: a job the kernel OOM-kills inside the cgroup is detected and fails with its need; the rest finish" *
          doctest::skip(ab::test::cgroup_v1_unavailable())) {
  std::string why_not;
  auto cg = ab::test::CgroupV1::create(200ull << 20, &why_not);
  REQUIRE_MESSAGE(cg, "cannot create a v1 memory cgroup here: " << why_not);
  Fixture f;
  f.add("small.wav", 2);   // 20 MiB
  f.add("burst.wav", 30);  // 300 MiB at once (no ramp): the kernel kills it before any sample can
  // Sampling every 5 s (the loop still wakes at once when a child dies): the guard cannot see the
  // burst, so it is the kernel that stops it, and align-batch must notice.
  Process p(f.argv({"--progress", "plain", "--reserve", "16M", "--sample-ms", "5000"}, f.command(10, 0, 0.2)),
            f.dir.path(), [&] {
              if (!cg->add_pid(::getpid())) ::_exit(99);
            });
  Result r = p.wait();
  CAPTURE(r.out);
  CAPTURE(r.err);
  CHECK(r.exit_code == 1);
  CHECK(r.out.find("1 done") != std::string::npos);
  CHECK(r.out.find("killed by the kernel (OOM)") != std::string::npos);
  CHECK(r.err.find("killed by the kernel (out of memory)") != std::string::npos);
  // No sample ever saw its burst, yet its need is known to exceed what the cgroup left it: 200 MiB
  // less what a sample last saw of the other job, which holds up to 20 MiB (+ ~2 MiB of its own),
  // so 178-200 MiB; raised by 1.25 (222-250 MiB) it cannot fit the 184 MiB budget, so it fails at
  // once instead of feeding the OOM killer again.
  const std::string said = f.corpus().string() + "/burst.wav: needs ~";
  const auto at = r.out.find(said);
  REQUIRE(at != std::string::npos);
  const double need_mib = std::strtod(r.out.c_str() + at + said.size(), nullptr);
  CHECK(need_mib >= 222.0);
  CHECK(need_mib <= 250.0);
  CHECK(r.out.find(" MiB at peak but the budget is 184.0 MiB", at) != std::string::npos);
  CHECK(f.attempts("burst") == 1);
  CHECK(f.outputs() == std::set<std::string>{"small.done"});
}

TEST_CASE("on a terminal: one live line redrawn in place (done/total, running, memory vs budget, ETA)") {
  if (!fs::exists("/usr/bin/script")) {
    MESSAGE("skipped: /usr/bin/script (util-linux) is needed to give align-batch a terminal");
    return;
  }
  Fixture f;
  for (int i = 0; i < 3; ++i) f.add("t" + std::to_string(i) + ".wav", 1);
  // script(1) runs the command on a pseudo-terminal; the argv is joined into one shell line, so
  // every part here is a plain path without spaces or quotes.
  std::string line;
  for (const auto& a : f.argv({"--mem-budget", "1G"}, {AB_MEMHOG_BIN, "--in", "{in}", "--mib-per-mib", "1024", "--hold-s", "0.4"}))
    line += (line.empty() ? "" : " ") + a;
  Result r = ab::cli::run({"/usr/bin/script", "-qec", line, "/dev/null"}, f.dir.path());
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("\r\033[K") != std::string::npos);
  CHECK(r.out.find("/3 done | running ") != std::string::npos);
  CHECK(r.out.find(" of 1.0 GiB | ") != std::string::npos);
  CHECK(r.out.find("ETA") != std::string::npos);
  CHECK(r.out.find("finished: 3 done") != std::string::npos);
  // On a terminal, finished files do not get a line each: the live line shows them.
  CHECK(r.out.find("done   t0.wav") == std::string::npos);
}

namespace {

/// The predicted peaks (MiB) a --dry-run plan prints, by file name.
std::map<std::string, double> planned_peaks_mib(const std::string& plan) {
  std::map<std::string, double> peaks;
  std::istringstream in(plan);
  std::string line;
  while (std::getline(in, line)) {
    const auto at = line.find("peak ~");
    if (line.rfind("run\t", 0) != 0 || at == std::string::npos) continue;
    const std::string path = line.substr(4, line.find('\t', 4) - 4);
    peaks[fs::path(path).filename().string()] = std::stod(line.substr(at + 6));
    CHECK(line.find("MiB", at) != std::string::npos);
  }
  return peaks;
}

}  // namespace

TEST_CASE("tuned settings stored by replay --apply: later runs of the key start from them, the log says so") {
  Fixture f;
  for (int i = 0; i < 4; ++i) f.add("f" + std::to_string(i) + ".wav", 10 + 10 * i);
  // Held 0.3 s at its peak, so the 50 ms sampler records it and history can predict.
  const auto command = f.command(1, 0, 0.3);
  REQUIRE(f.run({"--progress", "plain", "--mem-budget", "2G"}, command).exit_code == 0);
  const fs::path db = f.out() / ".align-batch/history.sqlite";
  {
    auto h = ab::HistoryStore::open(db, ab::HistoryStore::Create::kNever);
    REQUIRE(h.ok());
    const nlohmann::json tuned = {{"workers", "1"}, {"high_water", 0.8}, {"prediction_scale", 1.3},
                                  {"budget_bytes", 512ull << 20}, {"cores", 2}, {"source", "align-batch replay --sweep"}};
    REQUIRE(h.value()->store_tuned_settings(ab::job_key_for_command(command), tuned).ok());
  }

  // Dry runs: the plan under the tuned settings, and with every one of them set on the command line.
  Result tuned = f.run({"--dry-run", "--force"}, command);
  CHECK(tuned.exit_code == 0);
  CHECK(tuned.out.find("tuned settings for this key from align-batch replay --sweep (" + db.string() +
                       "): --workers 1, --high-water 0.80, --margin 1.30, --mem-budget 512.0 MiB\n") != std::string::npos);
  CHECK(tuned.out.find("budget 512.0 MiB") != std::string::npos);
  CHECK(tuned.out.find("workers 1") != std::string::npos);
  Result own = f.run({"--dry-run", "--force", "--workers", "3", "--high-water", "0.9", "--margin", "1", "--mem-budget", "1G"}, command);
  CHECK(own.exit_code == 0);
  CHECK(own.out.find("none applied; kept as given (command line or --config): --workers, --high-water, --margin, --mem-budget") != std::string::npos);
  CHECK(own.out.find("budget 1.0 GiB") != std::string::npos);
  CHECK(own.out.find("workers 3") != std::string::npos);
  // A --config file's option counts as given too.
  const fs::path config = f.dir.write("tuned.toml", "workers = \"2\"\n");
  Result configured = f.run({"--dry-run", "--force", "--config", config.string()}, command);
  CHECK(configured.out.find("--high-water 0.80, --margin 1.30, --mem-budget 512.0 MiB; kept as given (command line or --config): --workers\n") != std::string::npos);
  CHECK(configured.out.find("workers 2") != std::string::npos);
  // The tuned margin scales every prediction by 1.3 (same history, same estimator).
  const auto with_margin = planned_peaks_mib(tuned.out), without = planned_peaks_mib(own.out);
  CAPTURE(tuned.out);
  CAPTURE(own.out);
  REQUIRE(with_margin.size() == 4);
  REQUIRE(without.size() == 4);
  for (const auto& [name, mib] : without) {
    CAPTURE(name);
    CHECK(with_margin.at(name) / mib == doctest::Approx(1.3).epsilon(0.02));
  }

  // A real run: the log line, the budget it used, and the settings recorded with the run.
  Result run = f.run({"--force", "--progress", "json"}, command);
  CHECK(run.exit_code == 0);
  std::istringstream in(run.out);
  std::string line;
  bool logged = false;
  nlohmann::json last;
  while (std::getline(in, line)) {
    last = nlohmann::json::parse(line);
    if (last["event"] == "message" && last["text"].get<std::string>().find("tuned settings for this key") != std::string::npos)
      logged = true;
  }
  CHECK(logged);
  CHECK(last["budget_bytes"] == 512ull << 20);
  CHECK(last["done"] == 4);
  auto h = ab::HistoryStore::open(db, ab::HistoryStore::Create::kNever);
  REQUIRE(h.ok());
  auto runs = h.value()->runs();
  REQUIRE(runs.ok());
  REQUIRE(runs.value().size() == 2);
  const ab::RunSettings& settings = runs.value()[0].info.settings;  // newest first
  CHECK(settings.workers == "1");
  CHECK(settings.workers_cap == 1u);
  CHECK(settings.high_water.value_or(0) == doctest::Approx(0.8));
  CHECK(settings.margin.value_or(0) == doctest::Approx(1.3));
  CHECK(runs.value()[0].info.budget_bytes == 512ull << 20);
}

namespace {

std::uint64_t meminfo_kib(const std::string& field) {
  std::istringstream in(ab::cli::slurp("/proc/meminfo"));
  std::string name;
  std::uint64_t kib = 0;
  std::string unit;
  while (in >> name >> kib) {
    std::getline(in, unit);
    if (name == field + ":") return kib;
  }
  return 0;
}

/// The newest run's row in `db`.
ab::RunRow newest_run(const fs::path& db) {
  auto h = ab::HistoryStore::open(db, ab::HistoryStore::Create::kNever);
  REQUIRE(h.ok());
  auto runs = h.value()->runs();
  REQUIRE(runs.ok());
  REQUIRE(!runs.value().empty());
  return runs.value()[0];
}

}  // namespace

TEST_CASE("a run records the machine it had (MemTotal, cores, budget, limit), so replay --mem-budget 75% works") {
  Fixture f;
  f.add("a.wav", 1);
  f.add("b.wav", 2);
  Result r = f.run({"--progress", "json", "--reserve", "100M"}, f.command(1, 0, 0));
  REQUIRE(r.exit_code == 0);
  const std::string last_line = r.out.substr(r.out.rfind('\n', r.out.size() - 2) + 1);
  const nlohmann::json summary = nlohmann::json::parse(last_line);
  const fs::path db = f.out() / ".align-batch/history.sqlite";
  const ab::RunRow run = newest_run(db);
  const std::uint64_t mem_total = meminfo_kib("MemTotal") * 1024;
  REQUIRE(mem_total > 0);
  CHECK(run.info.mem_total_bytes == mem_total);
  CHECK(run.info.cores == static_cast<std::uint32_t>(::sysconf(_SC_NPROCESSORS_ONLN)));
  CHECK(run.info.budget_bytes == summary["budget_bytes"].get<std::uint64_t>());
  CHECK(run.info.settings.reserve_bytes == 100ull << 20);
  // No NVIDIA driver here: no GPU budget (a machine with one gets NVML's free memory less a reserve).
  if (!fs::exists("/proc/driver/nvidia")) CHECK(run.info.settings.vram_budget_bytes == 0);
  CHECK(r.err.find("GPU budget") == std::string::npos);
  // This process's own cgroup may be limited: the run records the limit it had, or null.
  const std::uint64_t limit = run.info.settings.limit_bytes.value_or(0);
  CHECK(limit <= mem_total);
  CHECK(run.info.budget_bytes == limit - (100ull << 20));
  Result replayed = run_ab({"replay", "--history", db.string(), "--mem-budget", "75%", "--json"}, f.dir.path());
  CAPTURE(replayed.err);
  REQUIRE(replayed.exit_code == 0);
  const auto out = nlohmann::json::parse(replayed.out);
  const double expected = std::min(static_cast<double>(limit - (100ull << 20)), 0.75 * static_cast<double>(limit));
  CHECK(out["budget_bytes"].get<double>() == doctest::Approx(expected).epsilon(1e-9));
}

TEST_CASE("inside a memory cgroup the run records its limit, and replay --mem-budget 75% takes 75% of it" *
          doctest::skip(ab::test::cgroup_v1_unavailable())) {
  std::string why_not;
  auto cg = ab::test::CgroupV1::create(400ull << 20, &why_not);
  REQUIRE_MESSAGE(cg, "cannot create a v1 memory cgroup here: " << why_not);
  Fixture f;
  f.add("a.wav", 1);
  Process p(f.argv({"--progress", "plain", "--reserve", "32M"}, f.command(1, 0, 0)), f.dir.path(), [&] {
    if (!cg->add_pid(::getpid())) ::_exit(99);
  });
  Result r = p.wait();
  REQUIRE(r.exit_code == 0);
  const fs::path db = f.out() / ".align-batch/history.sqlite";
  const ab::RunRow run = newest_run(db);
  CHECK(run.info.mem_total_bytes == meminfo_kib("MemTotal") * 1024);
  CHECK(run.info.settings.cgroup_limit_bytes == 400ull << 20);
  CHECK(run.info.settings.limit_bytes == 400ull << 20);
  CHECK(run.info.budget_bytes == (400ull - 32) << 20);
  Result replayed = run_ab({"replay", "--history", db.string(), "--mem-budget", "75%", "--json"}, f.dir.path());
  REQUIRE(replayed.exit_code == 0);
  CHECK(nlohmann::json::parse(replayed.out)["budget_bytes"] == 300ull << 20);
}
