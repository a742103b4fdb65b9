// Fakes behind the batch driver's seams that run in virtual time: a clock, a worker runner whose
// wait() advances it to the next job end, and a memory probe reading the runner's scripts. A run
// of minutes takes microseconds, so timeouts, hang detection and sampling deadlines are tested
// without any real waiting. Header only: only tests that link ab_batch include it.
#pragma once

#include <signal.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "orchestrator/batch/clock.h"
#include "orchestrator/batch/memory_probe.h"
#include "orchestrator/batch/worker_runner.h"
#include "tests/testutil/scripted_jobs.h"

namespace ab::test {

/// Time moves only when told to.
class FakeClock : public Clock {
 public:
  std::int64_t now_ms() override { return now_; }
  std::int64_t unix_ms() override { return 1'700'000'000'000 + now_; }
  void advance_to(std::int64_t t_ms) { now_ = std::max(now_, t_ms); }

 private:
  std::int64_t now_ = 1'000'000;  // not 0: the driver must measure from its own start
};

/// Scripts each job from its file name "<kind>-<mib>-<ms>": it holds <mib> MiB from its start and
/// ends after <ms> of virtual time. Kinds: ok; fail (exits 1); slow (never ends by itself); hang
/// (its first attempt's heartbeat never moves and it never ends; later attempts run as ok). A kill
/// ends the job `kill_takes_ms` later (it obeys SIGTERM), or at once with a grace of 0 (SIGKILL).
class TimedRunner : public WorkerRunner {
 public:
  struct Job {
    std::string stem, kind;
    std::uint64_t mib = 0;
    std::int64_t duration_ms = 0;
    std::int64_t started_ms = 0;
    std::int64_t ends_ms = -1;  ///< -1: not by itself
    bool killed = false;
    bool hung = false;
  };
  struct Kill {
    std::string stem;
    std::int64_t after_ms = 0;  ///< since the job started
  };

  explicit TimedRunner(FakeClock& clock) : clock_(clock) {}

  Result<Done> start(const RunnerJob& job) override {
    const ScriptedName script = parse_scripted_name(job.name);
    Job j;
    j.stem = script.stem;
    j.kind = script.kind;
    j.mib = script.mib;
    j.duration_ms = script.n;
    j.started_ms = clock_.now_ms();
    const bool first = ++attempts_[j.stem] == 1;
    j.hung = j.kind == "hang" && first;
    if (j.kind != "slow" && !j.hung) j.ends_ms = j.started_ms + j.duration_ms;
    running_[job.id] = j;
    starts.push_back(j.stem);
    max_running = std::max(max_running, running_.size());
    return Done{};
  }

  std::vector<JobEnd> wait(int timeout_ms) override {
    const std::int64_t now = clock_.now_ms();
    std::int64_t next = now + std::max(0, timeout_ms);
    for (const auto& [id, j] : running_)
      if (j.ends_ms >= 0) next = std::min(next, std::max(now, j.ends_ms));
    clock_.advance_to(next);
    ++waits;
    std::vector<JobEnd> ends;
    for (auto it = running_.begin(); it != running_.end();) {
      const Job& j = it->second;
      if (j.ends_ms < 0 || j.ends_ms > next) {
        ++it;
        continue;
      }
      JobEnd e;
      e.id = it->first;
      e.wall_s = static_cast<double>(j.ends_ms - j.started_ms) / 1000.0;
      e.peak_rss_bytes = j.mib << 20;
      if (j.killed) {
        e.killed_by_us = true;
        e.term_signal = SIGTERM;
        e.error = "worker killed by signal 15";
      } else {
        e.ok = j.kind != "fail";
        e.exit_code = e.ok ? 0 : 1;
        if (!e.ok) e.error = "command exited with status 1";
      }
      ends.push_back(e);
      it = running_.erase(it);
    }
    return ends;
  }

  void kill(JobId id, int grace_ms) override {
    auto it = running_.find(id);
    if (it == running_.end() || it->second.killed) return;
    Job& j = it->second;
    j.killed = true;
    j.ends_ms = clock_.now_ms() + (grace_ms == 0 ? 0 : kill_takes_ms);
    kills.push_back({j.stem, clock_.now_ms() - j.started_ms});
  }

  std::vector<LiveJob> live() const override {
    std::vector<LiveJob> out;
    for (const auto& [id, j] : running_) out.push_back({id, static_cast<pid_t>(1000 + id)});
    return out;
  }
  std::vector<pid_t> idle_pids() const override { return {}; }

  std::vector<WorkerProgress> progress() const override {
    std::vector<WorkerProgress> out;
    const std::int64_t now = clock_.now_ms();
    for (const auto& [id, j] : running_) {
      WorkerProgress w;
      w.id = id;
      w.phase = "aligning";
      w.fraction_done = j.duration_ms > 0 ? std::min(1.0, static_cast<double>(now - j.started_ms) / j.duration_ms) : 0;
      w.silent_ms = j.hung ? now - j.started_ms : 0;  // a live worker's heartbeat moves every wait
      out.push_back(w);
    }
    return out;
  }

  std::vector<JobEnd> shutdown(int) override { return stop_all(running_); }

  std::uint64_t pss_bytes(JobId id) const { return running_.at(id).mib << 20; }

  std::int64_t kill_takes_ms = 10;
  std::vector<std::string> starts;  ///< every attempt's file stem, in start order
  std::vector<Kill> kills;
  std::size_t max_running = 0;
  std::size_t waits = 0;

 private:
  FakeClock& clock_;
  std::map<JobId, Job> running_;
  std::map<std::string, int> attempts_;
};

/// Memory as the TimedRunner's scripts say; counts its readings.
class TimedProbe : public MemoryProbe {
 public:
  explicit TimedProbe(const TimedRunner& runner) : runner_(runner) {}
  ProbeReading read(const std::vector<LiveJob>& live, const std::vector<pid_t>&, std::int64_t now_ms,
                    bool = false) override {
    ++reads;
    std::uint64_t total = 0;
    ProbeReading r = scripted_reading(runner_, live, now_ms, total);
    r.sample.shared_bytes = shared_bytes;
    r.sample.mem_available_bytes = mem_available_bytes;
    r.sample.psi_full_avg10 = psi_full_avg10;
    return r;
  }
  std::size_t reads = 0;
  /// The machine around the jobs, in every reading.
  std::uint64_t shared_bytes = 0;
  std::optional<std::uint64_t> mem_available_bytes;
  std::optional<double> psi_full_avg10;

 private:
  const TimedRunner& runner_;
};

}  // namespace ab::test
