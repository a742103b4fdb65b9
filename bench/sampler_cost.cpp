// sampler_cost: CPU cost of ProcSampler ticked at its interval watching N live processes, against a `ps` polling peer.
//
// Usage: sampler_cost MEMHOG [PROCESSES=16] [SECONDS=10] [MIB_EACH=64]
// Starts PROCESSES memhogs (each touching MIB_EACH MiB, so smaps_rollup has real page tables to
// walk), then measures for SECONDS each:
//   1. ProcSampler at its defaults (50 ms, smaps_rollup every 4th tick): CPU time of the thread ticking it,
//      from CLOCK_THREAD_CPUTIME_ID;
//   2. RSS and machine readings only (smaps ration ~0): the fixed cost of a tick;
//   3. no ration, smaps_rollup every 4th tick (what the ration saves);
//   4. the peer: `ps -o rss= -p PIDS` run every 50 ms, the usual shell-script watcher (CPU time of
//      the ps children from getrusage(RUSAGE_CHILDREN)).
// Prints each as a percentage of one core and the ratios between them.
#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "memguard/proc_sampler.h"

extern char** environ;

namespace {

struct Hog {
  pid_t pid = -1;
  int stdin_fd = -1;
};

Hog start_hog(const std::string& memhog, int mib) {
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) std::exit(2);  // no leaks into later hogs
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_addclose(&fa, in[1]);
  posix_spawn_file_actions_addclose(&fa, out[0]);
  std::string mib_s = std::to_string(mib);
  char* argv[] = {const_cast<char*>(memhog.c_str()), const_cast<char*>("--mib"), mib_s.data(), nullptr};
  Hog h;
  if (::posix_spawn(&h.pid, memhog.c_str(), &fa, nullptr, argv, environ) != 0) {
    std::fprintf(stderr, "sampler_cost: cannot start %s\n", memhog.c_str());
    std::exit(2);
  }
  posix_spawn_file_actions_destroy(&fa);
  ::close(in[0]);
  ::close(out[1]);
  h.stdin_fd = in[1];
  char c;
  while (::read(out[0], &c, 1) == 1 && c != '\n') {
  }
  ::close(out[0]);
  return h;
}

std::uint64_t thread_cpu_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

double percent_of_core(std::uint64_t cpu_ns, double wall_s) { return 100.0 * static_cast<double>(cpu_ns) / (wall_s * 1e9); }

struct Measure {
  double percent = 0;
  std::uint64_t ticks = 0;
  double us_per_tick = 0;
};

Measure measure_sampler(const std::vector<Hog>& hogs, double smaps_cpu_share, double seconds) {
  ab::SamplerConfig config;
  config.smaps_cpu_share = smaps_cpu_share;
  ab::ProcSampler sampler(config);
  for (std::size_t i = 0; i < hogs.size(); ++i) sampler.watch(i, hogs[i].pid);
  // Ticked as the run loop ticks it: once per interval, on a deadline, on this thread.
  const auto interval = std::chrono::milliseconds(config.interval_ms);
  auto next = std::chrono::steady_clock::now();
  auto tick_for = [&](std::chrono::duration<double> span) {
    const auto end = std::chrono::steady_clock::now() + span;
    while (std::chrono::steady_clock::now() < end) {
      sampler.tick();
      next += interval;
      std::this_thread::sleep_until(next);
    }
  };
  tick_for(std::chrono::milliseconds(200));  // past the first (cold) ticks
  const auto t0 = std::chrono::steady_clock::now();
  const std::uint64_t cpu0 = thread_cpu_ns(), tick0 = sampler.snapshot().tick;
  tick_for(std::chrono::duration<double>(seconds));
  const std::uint64_t cpu1 = thread_cpu_ns(), tick1 = sampler.snapshot().tick;
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  Measure m;
  m.percent = percent_of_core(cpu1 - cpu0, wall);
  m.ticks = tick1 - tick0;
  m.us_per_tick = m.ticks ? static_cast<double>(cpu1 - cpu0) / 1e3 / static_cast<double>(m.ticks) : 0;
  return m;
}

std::uint64_t children_cpu_ns() {
  rusage ru{};
  ::getrusage(RUSAGE_CHILDREN, &ru);
  auto ns = [](const timeval& tv) { return static_cast<std::uint64_t>(tv.tv_sec) * 1000000000ull + tv.tv_usec * 1000ull; };
  return ns(ru.ru_utime) + ns(ru.ru_stime);
}

Measure measure_ps_peer(const std::vector<Hog>& hogs, double seconds) {
  std::string pids;
  for (const auto& h : hogs) pids += (pids.empty() ? "" : ",") + std::to_string(h.pid);
  const std::string cmd = "ps -o rss= -p " + pids + " > /dev/null";
  const auto t0 = std::chrono::steady_clock::now();
  const std::uint64_t cpu0 = children_cpu_ns();
  Measure m;
  auto next = t0;
  while (std::chrono::steady_clock::now() - t0 < std::chrono::duration<double>(seconds)) {
    if (std::system(cmd.c_str()) != 0) {
      std::fprintf(stderr, "sampler_cost: '%s' failed\n", cmd.c_str());
      break;
    }
    ++m.ticks;
    next += std::chrono::milliseconds(ab::kDefaultSampleIntervalMs);
    std::this_thread::sleep_until(next);
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::uint64_t cpu = children_cpu_ns() - cpu0;
  m.percent = percent_of_core(cpu, wall);
  m.us_per_tick = m.ticks ? static_cast<double>(cpu) / 1e3 / static_cast<double>(m.ticks) : 0;
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: sampler_cost MEMHOG [PROCESSES=16] [SECONDS=10] [MIB_EACH=64]\n");
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const std::string memhog = argv[1];
  const int n = argc > 2 ? std::atoi(argv[2]) : 16;
  const double seconds = argc > 3 ? std::atof(argv[3]) : 10.0;
  const int mib = argc > 4 ? std::atoi(argv[4]) : 64;
  std::vector<Hog> hogs;
  for (int i = 0; i < n; ++i) hogs.push_back(start_hog(memhog, mib));

  std::printf("sampler_cost: %d live processes of %d MiB each, %.0f s per measurement, interval %lld ms\n", n, mib,
              seconds, static_cast<long long>(ab::kDefaultSampleIntervalMs));
  Measure def = measure_sampler(hogs, ab::kDefaultSmapsCpuShare, seconds);
  std::printf("  ProcSampler defaults (smaps ration %.2f%%):   %6.3f%% of one core  (%llu ticks, %.0f us/tick)  target < 1%%: %s\n",
              100 * ab::kDefaultSmapsCpuShare, def.percent, static_cast<unsigned long long>(def.ticks), def.us_per_tick,
              def.percent < 1.0 ? "met" : "NOT met");
  Measure rss_only = measure_sampler(hogs, 1e-9, seconds);
  std::printf("  ProcSampler, RSS and machine only:          %6.3f%% of one core  (%llu ticks, %.0f us/tick)\n",
              rss_only.percent, static_cast<unsigned long long>(rss_only.ticks), rss_only.us_per_tick);
  Measure dear = measure_sampler(hogs, 0, seconds);
  std::printf("  ProcSampler, no ration (smaps every %u ticks): %6.3f%% of one core  (%llu ticks, %.0f us/tick)\n",
              ab::kDefaultSmapsEveryTicks, dear.percent, static_cast<unsigned long long>(dear.ticks), dear.us_per_tick);
  Measure ps = measure_ps_peer(hogs, seconds);
  std::printf("  peer: ps -o rss= every %lld ms (RSS only):   %6.3f%% of one core  (%llu runs, %.0f us/run)\n",
              static_cast<long long>(ab::kDefaultSampleIntervalMs), ps.percent, static_cast<unsigned long long>(ps.ticks),
              ps.us_per_tick);
  if (def.percent > 0) {
    std::printf("  ratios: no-ration / defaults = %.1fx; ps peer / defaults = %.1fx\n", dear.percent / def.percent,
                ps.percent / def.percent);
  }
  for (auto& h : hogs) {
    ::close(h.stdin_fd);
    ::waitpid(h.pid, nullptr, 0);
  }
  return def.percent < 1.0 ? 0 : 1;
}
