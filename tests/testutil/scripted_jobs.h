// What the fake worker runners share (run_loop_test's FakeRunner, timed_runner.h's TimedRunner):
// a job scripted by its file name, the ends of the jobs a shutdown stops, and the memory reading
// of a runner whose jobs say what they hold. Header only, for tests that link ab_batch.
#pragma once

#include <signal.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "orchestrator/batch/memory_probe.h"
#include "orchestrator/batch/worker_runner.h"

namespace ab::test {

/// A job's script from its file name "<kind>-<mib>-<n>" (n: ticks or milliseconds, per fake).
struct ScriptedName {
  std::string stem, kind;
  std::uint64_t mib = 0;
  std::int64_t n = 0;
};

inline ScriptedName parse_scripted_name(const std::string& file_name) {
  ScriptedName s;
  s.stem = std::filesystem::path(file_name).stem().string();
  const auto d1 = s.stem.find('-'), d2 = s.stem.rfind('-');
  s.kind = s.stem.substr(0, d1);
  s.mib = std::stoull(s.stem.substr(d1 + 1, d2 - d1 - 1));
  s.n = std::stoll(s.stem.substr(d2 + 1));
  return s;
}

/// WorkerRunner::shutdown's ends for every job still running: stopped by us with SIGTERM. The
/// runner's map of running jobs is cleared.
template <class Running>
std::vector<JobEnd> stop_all(std::map<JobId, Running>& running) {
  std::vector<JobEnd> ends;
  for (const auto& entry : running) {
    JobEnd e;
    e.id = entry.first;
    e.killed_by_us = true;
    e.term_signal = SIGTERM;
    ends.push_back(e);
  }
  running.clear();
  return ends;
}

/// A reading of the live jobs as `runner.pss_bytes(id)` says (their RSS the same); the sum of
/// their PSS in `total_bytes`.
template <class Runner>
ProbeReading scripted_reading(const Runner& runner, const std::vector<LiveJob>& live, std::int64_t now_ms,
                              std::uint64_t& total_bytes) {
  ProbeReading r;
  r.sample.now_ms = now_ms;
  total_bytes = 0;
  for (const auto& l : live) {
    const std::uint64_t pss = runner.pss_bytes(l.id);
    r.sample.jobs.push_back({l.id, pss, 0});
    r.rss_bytes[l.id] = pss;
    total_bytes += pss;
  }
  return r;
}

}  // namespace ab::test
