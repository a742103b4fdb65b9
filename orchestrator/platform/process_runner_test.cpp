// Tests of ProcessRunner with real processes: exit codes, signals, process groups, oom_score_adj,
// kill escalation, reaping, and a persistent protocol worker.
#include "orchestrator/platform/process_runner.h"

#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <boost/interprocess/shared_memory_object.hpp>

#include "tests/testutil/temp_dir.h"

using ab::JobEnd;
using ab::ProcessRunner;
using ab::ProcessRunnerConfig;
using ab::RunnerJob;

namespace {

std::map<ab::JobId, JobEnd> wait_all(ProcessRunner& runner, std::size_t count, int limit_ms = 20000) {
  std::map<ab::JobId, JobEnd> ends;
  const auto deadline = ab::monotonic_ms() + limit_ms;
  while (ends.size() < count && ab::monotonic_ms() < deadline)
    for (auto& e : runner.wait(50)) ends[e.id] = e;
  return ends;
}

RunnerJob sh_job(ab::JobId id, const std::string& script) { return {id, "job" + std::to_string(id), {"/bin/sh", "-c", script}, ""}; }

ProcessRunnerConfig config_for(const ab::test::TempDir& t) {
  ProcessRunnerConfig config;
  config.log_dir = t.path() / "logs";
  return config;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("exit status, signals and the log's tail come back per job") {
  ab::test::TempDir t;
  ProcessRunner runner(config_for(t));
  REQUIRE(runner.start(sh_job(1, "exit 0")).ok());
  REQUIRE(runner.start(sh_job(2, "echo 'bad input here' >&2; exit 3")).ok());
  REQUIRE(runner.start(sh_job(3, "kill -SEGV $$")).ok());
  auto ends = wait_all(runner, 3);
  REQUIRE(ends.size() == 3);
  CHECK(ends[1].ok);
  CHECK(ends[1].exit_code == 0);
  CHECK_FALSE(ends[2].ok);
  CHECK(ends[2].exit_code == 3);
  CHECK(ends[2].error.find("exited with status 3") != std::string::npos);
  CHECK(ends[2].error.find("bad input here") != std::string::npos);
  CHECK(ends[3].term_signal == SIGSEGV);
  CHECK_FALSE(ends[3].killed_by_us);
  CHECK(runner.live().empty());
}

TEST_CASE("a command's peak RSS comes back from wait4, however short the command was") {
  ab::test::TempDir t;
  ProcessRunner runner(config_for(t));
  // 150 MiB written (so resident) and freed within a few tens of ms: shorter than most sampling.
  REQUIRE(runner.start({1, "big", {"/usr/bin/python3", "-c", "b = b'x' * (150 << 20)"}, ""}).ok());
  REQUIRE(runner.start(sh_job(2, "exit 0")).ok());
  auto ends = wait_all(runner, 2);
  REQUIRE(ends.size() == 2);
  REQUIRE(ends[1].ok);
  REQUIRE(ends[1].peak_rss_bytes);
  CHECK(*ends[1].peak_rss_bytes >= (150ull << 20));
  // A shell's own peak is below this test process's RSS, which its pre-exec copy counted: wait4
  // cannot tell it, so none is given (not this process's size passed off as the command's).
  CHECK_FALSE(ends[2].peak_rss_bytes);
}

TEST_CASE("a missing program fails at start with a message naming it") {
  ab::test::TempDir t;
  ProcessRunner runner(config_for(t));
  const auto started = runner.start({1, "x", {"/nonexistent/tool", "a"}, ""});
  CHECK_FALSE(started.ok());
  CHECK(started.error().find("/nonexistent/tool") != std::string::npos);
}

TEST_CASE("each job runs in its own process group with a raised oom_score_adj") {
  ab::test::TempDir t;
  ProcessRunner runner(config_for(t));
  const std::string out = (t.path() / "ids").string();
  REQUIRE(runner.start(sh_job(1, "echo $(ps -o pgid= -p $$) $$ $(cat /proc/self/oom_score_adj) > '" + out + "'")).ok());
  auto ends = wait_all(runner, 1);
  REQUIRE(ends[1].ok);
  std::istringstream in(read_file(out));
  long pgid = 0, pid = 0, adj = 0;
  in >> pgid >> pid >> adj;
  CHECK(pgid == pid);
  CHECK(pgid != ::getpgrp());
  CHECK(adj == 500);
}

TEST_CASE("a command starts with default signals, an empty mask and the parent-death signal") {
  ab::test::TempDir t;
  ProcessRunner runner(config_for(t));  // ignores SIGPIPE in this process
  // An ignored SIGINT here, and a blocked SIGUSR1: neither may reach the command.
  struct sigaction ignore {}, old_int {};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGINT, &ignore, &old_int);
  sigset_t usr1, old_mask;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  ::pthread_sigmask(SIG_BLOCK, &usr1, &old_mask);
  const std::string sig = (t.path() / "sig").string(), death = (t.path() / "death").string();
  auto first = runner.start(sh_job(1, "exec grep -E '^Sig(Blk|Ign)' /proc/self/status > '" + sig + "'"));
  auto second = runner.start({2, "death", {"/usr/bin/python3", "-c",
                                           "import ctypes; v = ctypes.c_int(); "
                                           "ctypes.CDLL(None).prctl(2, ctypes.byref(v)); "  // PR_GET_PDEATHSIG
                                           "open('" + death + "', 'w').write(str(v.value))"}, ""});
  const bool started = first.ok() && second.ok();
  const std::string error = first.error() + second.error();
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::sigaction(SIGINT, &old_int, nullptr);
  REQUIRE_MESSAGE(started, error);
  auto ends = wait_all(runner, 2);
  REQUIRE(ends[1].ok);
  REQUIRE(ends[2].ok);
  CHECK(read_file(sig) == "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
  CHECK(read_file(death) == std::to_string(SIGKILL));
}

TEST_CASE("commands log per slot, not per job; a failed one's output also gets a file of its own") {
  ab::test::TempDir t;
  ProcessRunner runner(config_for(t));
  // 12 commands, at most 2 at a time; job 7 fails, job 4 writes nothing.
  std::map<ab::JobId, JobEnd> ends;
  ab::JobId next = 1;
  while (ends.size() < 12) {
    while (next <= 12 && runner.live().size() < 2) {
      const std::string script = next == 7 ? "echo 'seven went wrong' >&2; exit 1"
                                 : next == 4 ? "true"
                                             : "echo out-" + std::to_string(next);
      REQUIRE(runner.start(sh_job(next, script)).ok());
      ++next;
    }
    for (auto& e : runner.wait(50)) ends[e.id] = e;
  }
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(t.path() / "logs"))
    names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"7-job7.log", "slot-1.log", "slot-2.log"});
  const std::string all = read_file((t.path() / "logs" / "slot-1.log").string()) +
                          read_file((t.path() / "logs" / "slot-2.log").string());
  for (int id : {1, 2, 3, 5, 6, 8, 9, 10, 11, 12}) {
    const std::string out = "out-" + std::to_string(id) + "\n";
    CHECK(all.find(out + "--- job " + std::to_string(id) + " job" + std::to_string(id) + ": " +
                   std::to_string(out.size()) + " bytes above, exited with status 0 ---\n") != std::string::npos);
  }
  CHECK(all.find("--- job 4 ") == std::string::npos);  // no output, no line
  CHECK(read_file((t.path() / "logs" / "7-job7.log").string()) == "seven went wrong\n");
  CHECK(ends[7].error.find("seven went wrong") != std::string::npos);
  CHECK(ends[7].error.find("7-job7.log") != std::string::npos);
}

TEST_CASE("kill sends SIGTERM, then SIGKILL after the grace period, to the whole group") {
  ab::test::TempDir t;
  ProcessRunner runner(config_for(t));
  const std::string pidfile = (t.path() / "grandchild").string();
  // The shell ignores SIGTERM and so does its background child: only SIGKILL ends them.
  REQUIRE(runner.start(sh_job(1, "trap '' TERM; sleep 30 & echo $! > '" + pidfile + "'; wait; wait")).ok());
  REQUIRE(runner.start(sh_job(2, "sleep 30")).ok());
  while (read_file(pidfile).empty()) usleep(10000);
  const pid_t grandchild = static_cast<pid_t>(std::stol(read_file(pidfile)));
  runner.kill(1, 300);
  runner.kill(2, 300);
  auto ends = wait_all(runner, 2);
  REQUIRE(ends.size() == 2);
  CHECK(ends[1].killed_by_us);
  CHECK(ends[1].term_signal == SIGKILL);  // escalated
  CHECK(ends[2].term_signal == SIGTERM);  // stopped cleanly
  usleep(200000);
  // Nothing of the group outlived it (a zombie awaiting its new parent's reaping is dead too).
  const std::string stat = read_file("/proc/" + std::to_string(grandchild) + "/stat");
  CHECK((stat.empty() || stat.find(") Z ") != std::string::npos));
}

TEST_CASE("shutdown stops and reaps everything") {
  ab::test::TempDir t;
  ProcessRunner runner(config_for(t));
  REQUIRE(runner.start(sh_job(1, "sleep 30")).ok());
  REQUIRE(runner.start(sh_job(2, "trap '' TERM; sleep 30")).ok());
  const auto live = runner.live();
  REQUIRE(live.size() == 2);
  auto ends = runner.shutdown(300);
  CHECK(ends.size() == 2);
  CHECK(runner.live().empty());
  for (const auto& l : live) {
    int status = 0;
    CHECK(::waitpid(l.pid, &status, WNOHANG) == -1);  // reaped already: no zombie left
  }
}

TEST_CASE("a persistent worker answers protocol lines and is reused between jobs") {
  ab::test::TempDir t;
  // A protocol-speaking worker in Python (the real one needs a model): ready line, then one
  // result per job; a job whose audio contains "bad" fails, one containing "crash" kills it; "edge"
  // reports band_limited (a string for "odd": not the protocol's boolean, so ignored).
  const auto script = t.write("worker.py", R"(import json, os, sys, time
print(json.dumps({"ready": True, "pid": os.getpid(), "sample_rate": 16000, "labels": 3, "rss_bytes": 1}), flush=True)
for line in sys.stdin:
    job = json.loads(line)
    if "crash" in job["audio"]:
        os.kill(os.getpid(), 9)
    if "busy" in job["audio"]:
        t = time.process_time()
        while time.process_time() - t < 0.3: pass
    ok = "bad" not in job["audio"]
    res = {"id": job["id"], "ok": ok, "idle_rss_bytes": 1000, "peak_rss_bytes": 5000}
    if not ok: res["error"] = job["audio"] + ": not a sound file"
    if "edge" in job["audio"]: res["band_limited"] = True
    if "odd" in job["audio"]: res["band_limited"] = "yes"
    print(json.dumps(res), flush=True)
)");
  ProcessRunnerConfig config = config_for(t);
  config.worker_argv = {"/usr/bin/python3", script.string()};
  ProcessRunner runner(config);
  auto job = [](ab::JobId id, const std::string& audio) {
    return RunnerJob{id, audio, {}, "{\"id\": " + std::to_string(id) + ", \"audio\": \"" + audio + "\"}"};
  };
  REQUIRE(runner.start(job(1, "/a.wav")).ok());
  auto ends = wait_all(runner, 1);
  REQUIRE(ends[1].ok);
  CHECK(ends[1].idle_rss_bytes.value_or(0) == 1000);
  CHECK(ends[1].peak_rss_bytes.value_or(0) == 5000);  // the worker's own per-job peak, not wait4's
  CHECK_FALSE(ends[1].band_limited);
  CHECK(ends[1].worker_first_job);  // its wall time carries the worker's start-up
  REQUIRE(runner.idle_pids().size() == 1);
  const pid_t worker = runner.idle_pids()[0];
  // The result line's band_limited reaches JobEnd; a failed job's or a non-boolean one does not.
  REQUIRE(runner.start(job(6, "/edge.wav")).ok());
  ends = wait_all(runner, 1);
  REQUIRE(ends[6].ok);
  CHECK(ends[6].band_limited);
  CHECK_FALSE(ends[6].worker_first_job);
  REQUIRE(runner.start(job(7, "/bad-edge.wav")).ok());
  ends = wait_all(runner, 1);
  CHECK_FALSE(ends[7].ok);
  CHECK_FALSE(ends[7].band_limited);
  REQUIRE(runner.start(job(8, "/odd.wav")).ok());
  ends = wait_all(runner, 1);
  REQUIRE(ends[8].ok);
  CHECK_FALSE(ends[8].band_limited);
  REQUIRE(runner.start(job(2, "/bad.wav")).ok());
  ends = wait_all(runner, 1);
  CHECK_FALSE(ends[2].ok);
  CHECK(ends[2].job_error);
  CHECK(ends[2].error == "/bad.wav: not a sound file");
  // A job's CPU time on a persistent worker is the worker's CPU across that job: 0.3 s of busy
  // loop (process_time, so a loaded machine only stretches the wall time), not the worker's total.
  REQUIRE(runner.start(job(4, "/busy.wav")).ok());
  ends = wait_all(runner, 1);
  REQUIRE(ends[4].ok);
  CHECK(ends[4].cpu_s >= 0.28);
  CHECK(ends[4].cpu_s <= 0.6);
  REQUIRE(runner.start(job(5, "/a.wav")).ok());
  ends = wait_all(runner, 1);
  CHECK(ends[5].cpu_s < 0.2);
  REQUIRE(runner.start(job(3, "/crash.wav")).ok());
  CHECK(runner.live().at(0).pid == worker);  // the same worker took all three jobs
  ends = wait_all(runner, 1);
  CHECK_FALSE(ends[3].ok);
  CHECK_FALSE(ends[3].job_error);
  CHECK(ends[3].term_signal == SIGKILL);
  CHECK(runner.stats().workers_started == 1);
  runner.shutdown(1000);
}

TEST_CASE("worker_env reaches persistent workers where the parent's environment lacks the name; commands never get it") {
  ab::test::TempDir t;
  // The worker fails each job with the value of the variable the job names as its error.
  const auto script = t.write("worker.py", R"PY(import json, os, sys
print(json.dumps({"ready": True, "pid": os.getpid(), "sample_rate": 16000, "labels": 3, "rss_bytes": 1}), flush=True)
for line in sys.stdin:
    job = json.loads(line)
    print(json.dumps({"id": job["id"], "ok": False, "error": os.environ.get(job["audio"], "(unset)")}), flush=True)
)PY");
  ::setenv("AB_TEST_USER_SET", "mine", 1);
  ::unsetenv("AB_TEST_ADDED");
  ProcessRunnerConfig config = config_for(t);
  config.worker_argv = {"/usr/bin/python3", script.string()};
  config.worker_env = {"AB_TEST_ADDED=PASSIVE", "AB_TEST_USER_SET=ours"};
  ProcessRunner runner(config);
  auto value_of = [&](ab::JobId id, const std::string& name) {
    REQUIRE(runner.start(RunnerJob{id, name, {}, "{\"id\": " + std::to_string(id) + ", \"audio\": \"" + name + "\"}"}).ok());
    return wait_all(runner, 1)[id].error;
  };
  CHECK(value_of(1, "AB_TEST_ADDED") == "PASSIVE");
  CHECK(value_of(2, "AB_TEST_USER_SET") == "mine");  // the user's own setting wins
  CHECK(value_of(3, "PATH") == std::getenv("PATH"));  // the rest of the parent's environment is there
  runner.shutdown(1000);
  // A command (external-command mode) runs with the parent's environment alone.
  ProcessRunnerConfig command_config = config_for(t);
  command_config.worker_env = config.worker_env;
  ProcessRunner commands(command_config);
  REQUIRE(commands.start(sh_job(4, "test -z \"$AB_TEST_ADDED\" && test \"$AB_TEST_USER_SET\" = mine")).ok());
  CHECK(wait_all(commands, 1)[4].ok);
  ::unsetenv("AB_TEST_USER_SET");
}

TEST_CASE("a persistent worker whose idle memory creeps up is replaced") {
  ab::test::TempDir t;
  // Reports 100 MiB more idle RSS after every job: the second report crosses the 150 MiB limit.
  const auto script = t.write("worker.py", R"(import json, os, sys
print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
n = 0
for line in sys.stdin:
    n += 1
    job = json.loads(line)
    print(json.dumps({"id": job["id"], "ok": True, "idle_rss_bytes": n * 100 * 1024 * 1024}), flush=True)
)");
  ProcessRunnerConfig config = config_for(t);
  config.worker_argv = {"/usr/bin/python3", script.string()};
  config.recycle_growth_bytes = 150ull << 20;
  ProcessRunner runner(config);
  std::vector<pid_t> pids;
  for (ab::JobId id = 1; id <= 4; ++id) {
    REQUIRE(runner.start({id, "j", {}, "{\"id\": " + std::to_string(id) + "}"}).ok());
    pids.push_back(runner.live().at(0).pid);
    auto ends = wait_all(runner, 1);
    REQUIRE(ends[id].ok);
  }
  // Jobs 1-2 on the first worker (100, 200 MiB: 200 > 100 + 150? no), job 3 reports 300 MiB
  // (> 100 + 150): that worker is retired after job 3, and job 4 runs on a new one.
  CHECK(pids[0] == pids[1]);
  CHECK(pids[1] == pids[2]);
  CHECK(pids[3] != pids[2]);
  CHECK(runner.stats().workers_recycled == 1);
  CHECK(runner.stats().workers_started == 2);
  runner.shutdown(1000);
}

TEST_CASE("a worker that cannot load its model fails the job with its message, and later starts too") {
  ab::test::TempDir t;
  const auto script = t.write("worker.py", R"(import json, sys
print(json.dumps({"ready": False, "error": "model.pt: not a TorchScript file"}), flush=True)
sys.exit(3)
)");
  ProcessRunnerConfig config = config_for(t);
  config.worker_argv = {"/usr/bin/python3", script.string()};
  ProcessRunner runner(config);
  REQUIRE(runner.start({1, "a", {}, "{\"id\": 1}"}).ok());
  auto ends = wait_all(runner, 1);
  REQUIRE(ends.count(1) == 1);
  CHECK_FALSE(ends[1].ok);
  CHECK(ends[1].exit_code == 3);
  const auto refused = runner.start({2, "b", {}, "{\"id\": 2}"});
  CHECK_FALSE(refused.ok());
  CHECK(refused.error().find("model.pt: not a TorchScript file") != std::string::npos);
  CHECK(refused.error().find("check --model") != std::string::npos);
  CHECK(runner.stats().workers_started == 1);
  // The run's fault, not the file's: the loop ends the run with this one message.
  CHECK(runner.setup_error().find("model.pt: not a TorchScript file") != std::string::npos);
}

TEST_CASE("a worker still loading its model is never silent; its silence counts from its ready line") {
  ab::test::TempDir t;
  // It never beats (it does not map its status block) and takes 1.5 s to load: before the fix
  // it was "silent" from its spawn, and on a loaded machine a real worker's start-up (LibTorch's
  // dynamic loading comes before its first beat) was killed as hung by --hang-timeout 2s.
  const auto script = t.write("worker.py", R"(import json, os, sys, time
time.sleep(1.5)
print(json.dumps({"ready": True, "pid": os.getpid(), "sample_rate": 16000, "labels": 3, "rss_bytes": 1}), flush=True)
for line in sys.stdin:
    time.sleep(1.0)
    print(json.dumps({"id": json.loads(line)["id"], "ok": True, "idle_rss_bytes": 1}), flush=True)
)");
  ProcessRunnerConfig config = config_for(t);
  config.worker_argv = {"/usr/bin/python3", script.string()};
  config.status_blocks = true;
  ProcessRunner runner(config);
  const std::int64_t started = ab::monotonic_ms();
  REQUIRE(runner.start({1, "a", {}, R"({"id": 1, "audio": "/a.wav"})"}).ok());
  std::int64_t loading_polls = 0, max_silent_loading = -1, max_silent_ready = -1, counted_before_ready = 0;
  std::map<ab::JobId, JobEnd> ends;
  while (ends.empty() && ab::monotonic_ms() - started < 20000) {
    for (auto& e : runner.wait(50)) ends[e.id] = e;
    const bool ready = runner.ready_idle_bytes().has_value();
    for (const auto& w : runner.progress()) {
      if (!ready) {
        ++loading_polls;
        max_silent_loading = std::max(max_silent_loading, w.silent_ms);
      } else {
        // Counted from the ready line, which came at least 1.5 s after `started`.
        if (w.silent_ms > ab::monotonic_ms() - started - 1500) ++counted_before_ready;
        max_silent_ready = std::max(max_silent_ready, w.silent_ms);
      }
    }
  }
  REQUIRE(ends.size() == 1);
  CHECK(ends[1].ok);
  CHECK(loading_polls > 5);          // it was polled while loading, for over a second
  CHECK(max_silent_loading == 0);    // and never counted silent then
  CHECK(max_silent_ready > 0);       // once ready, its silence (no beats at all) did count,
  CHECK(counted_before_ready == 0);  // from the ready line on
  runner.shutdown(1000);
}

TEST_CASE("status block names are unguessable: the parent's pid and 64 random bits, new each time") {
  std::set<std::string> names;
  const std::string prefix = "ab-status-" + std::to_string(::getpid()) + "-";
  for (int i = 0; i < 100; ++i) {
    const std::string name = ab::status_block_name(::getpid());
    CHECK(name.rfind(prefix, 0) == 0);
    CHECK(name.size() == prefix.size() + 16);
    CHECK(name.find_first_not_of("0123456789abcdef", prefix.size()) == std::string::npos);
    names.insert(name);
  }
  CHECK(names.size() == 100);
}

TEST_CASE("retire_idle tells idle persistent workers beyond `keep` to exit; they are reaped, busy ones untouched") {
  ab::test::TempDir t;
  // Job "hold" waits for a line on its own stdin to never come (it is only ended by shutdown).
  const auto script = t.write("worker.py", R"(import json, os, sys, time
print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
for line in sys.stdin:
    job = json.loads(line)
    if job.get("hold"):
        time.sleep(30)
    print(json.dumps({"id": job["id"], "ok": True}), flush=True)
)");
  ProcessRunnerConfig config = config_for(t);
  config.worker_argv = {"/usr/bin/python3", script.string()};
  ProcessRunner runner(config);
  // Three workers: two finish a job each and idle, one stays busy.
  REQUIRE(runner.start({1, "a", {}, "{\"id\": 1, \"hold\": true}"}).ok());
  REQUIRE(runner.start({2, "b", {}, "{\"id\": 2}"}).ok());
  REQUIRE(runner.start({3, "c", {}, "{\"id\": 3}"}).ok());
  auto ends = wait_all(runner, 2);
  REQUIRE(ends.size() == 2);
  const auto idle = runner.idle_pids();
  REQUIRE(idle.size() == 2);
  CHECK(runner.retire_idle(1) == 1);
  CHECK(runner.retire_idle(1) == 0);  // the one kept is still the only usable idle worker
  CHECK(runner.retire_idle(0) == 1);
  CHECK(runner.stats().workers_retired == 2);
  // Both exit on EOF and are reaped quietly (no job end reported); the busy worker runs on.
  for (int i = 0; i < 250 && !runner.idle_pids().empty(); ++i) CHECK(runner.wait(20).empty());
  CHECK(runner.idle_pids().empty());
  for (pid_t pid : idle) CHECK(::kill(pid, 0) != 0);
  REQUIRE(runner.live().size() == 1);
  CHECK(runner.live()[0].id == 1);
  // A new job gets a new worker.
  REQUIRE(runner.start({4, "d", {}, "{\"id\": 4}"}).ok());
  CHECK(runner.stats().workers_started == 4);
  runner.shutdown(1000);
}

TEST_CASE("status blocks of a parent that died are removed; a live parent's are kept") {
  namespace bip = boost::interprocess;
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  REQUIRE(dead > 0);
  int status = 0;
  REQUIRE(::waitpid(dead, &status, 0) == dead);  // reaped: the pid no longer exists
  const std::string stale = "ab-status-" + std::to_string(dead) + "-1";
  const std::string alive = "ab-status-" + std::to_string(::getpid()) + "-999";
  for (const auto& name : {stale, alive}) {
    bip::shared_memory_object shm(bip::create_only, name.c_str(), bip::read_write);
    shm.truncate(64);
  }
  CHECK(ab::remove_stale_status_blocks() >= 1);
  CHECK_FALSE(std::filesystem::exists("/dev/shm/" + stale));
  CHECK(std::filesystem::exists("/dev/shm/" + alive));
  bip::shared_memory_object::remove(alive.c_str());
}

TEST_CASE("shared weights: a link planted under the weights name is left alone at the end, its target untouched") {
  ab::test::TempDir t;
  const auto target = t.write("victim.txt", "the user's own file\n");
  const auto planted = t.path() / ("ab-weights-" + std::to_string(::getpid()) + "-0000000000000bad");
  std::filesystem::create_symlink(target, planted);
  ProcessRunnerConfig config = config_for(t);
  config.shared_weights = planted;
  {
    ProcessRunner runner(config);
    runner.shutdown(1000);
  }
  CHECK(std::filesystem::is_symlink(planted));  // not ours: never removed
  CHECK(read_file(target.string()) == "the user's own file\n");
}

TEST_CASE("shared weights: each worker is given the file, its peak leaves the weights out, the file goes at the end") {
  ab::test::TempDir t;
  // A stand-in worker that writes the shared file as the first real worker would, says how big
  // it is, and reports a per-job peak (VmHWM) that counts the mapping whole.
  const auto script = t.write("worker.py", R"(import json, sys
path = sys.argv[sys.argv.index("--shared-weights") + 1]
open(path, "wb").write(b"w" * 4096)
print(json.dumps({"ready": True, "shared_weights_bytes": 3000}), flush=True)
for line in sys.stdin:
    job = json.loads(line)
    print(json.dumps({"id": job["id"], "ok": True, "idle_rss_bytes": 1000, "peak_rss_bytes": 5000}), flush=True)
)");
  // Files a dead parent left beside it go when the runner starts; a live parent's stay.
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  REQUIRE(dead > 0);
  REQUIRE(::waitpid(dead, nullptr, 0) == dead);
  const auto stale = t.write("ab-weights-" + std::to_string(dead) + "-00000000000000ab", "old");
  const auto alive = t.write("ab-weights-" + std::to_string(::getpid()) + "-00000000000000cd", "in use");
  const auto mine = t.path() / ("ab-weights-" + std::to_string(::getpid()) + "-00000000000000ef");
  ProcessRunnerConfig config = config_for(t);
  config.worker_argv = {"/usr/bin/python3", script.string()};
  config.shared_weights = mine;
  {
    ProcessRunner runner(config);
    CHECK_FALSE(std::filesystem::exists(stale));
    CHECK(std::filesystem::exists(alive));
    REQUIRE(runner.start({1, "a", {}, "{\"id\": 1}"}).ok());
    REQUIRE(runner.start({2, "b", {}, "{\"id\": 2}"}).ok());
    auto ends = wait_all(runner, 2);
    REQUIRE(ends.size() == 2);
    for (ab::JobId id : {1, 2}) {
      CHECK(ends[id].ok);
      CHECK(ends[id].peak_rss_bytes.value_or(0) == 2000);  // 5000 less the 3000 mapped
    }
    CHECK(std::filesystem::exists(mine));
    runner.shutdown(2000);
    CHECK_FALSE(std::filesystem::exists(mine));  // the run is over: no worker maps it any more
  }
  CHECK(std::filesystem::exists(alive));
}

TEST_CASE("shared weights: the parent creates the file itself, empty, 0600, under a fresh random name") {
  ab::test::TempDir t;
  auto a = ab::create_shared_weights_file(42, t.path());
  auto b = ab::create_shared_weights_file(42, t.path());
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a.value() != b.value());
  for (const auto& p : {a.value(), b.value()}) {
    CHECK(p.parent_path() == t.path());
    CHECK(p.filename().string().rfind("ab-weights-42-", 0) == 0);
    CHECK(p.filename().string().size() == std::string("ab-weights-42-").size() + 16);
    struct stat st {};
    REQUIRE(::lstat(p.c_str(), &st) == 0);
    CHECK(S_ISREG(st.st_mode));
    CHECK(st.st_size == 0);
    CHECK((st.st_mode & 07777) == 0600);
    CHECK(st.st_uid == ::geteuid());
  }
  auto missing = ab::create_shared_weights_file(42, t.path() / "no-such-dir");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().find("cannot create a shared weights file in") != std::string::npos);
}
