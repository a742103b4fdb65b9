// ProcSampler: a thread that samples the memory of watched process trees and of the machine.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "memguard/machine_memory.h"
#include "memguard/process_table.h"

namespace ab {

class Nvml;

/// 50 ms: a worker growing at 1 GiB/s (a large tensor allocation) moves ~50 MiB between two
/// samples, well inside the default reserve (budget.cpp); the cost at this rate is measured by
/// bench/sampler_cost.sh (16 processes: see its output, target < 1% of one core).
inline constexpr std::int64_t kDefaultSampleIntervalMs = 50;
/// smaps_rollup walks every page table entry (~1 ms per GiB resident on this machine's kernel), so
/// it is read every 4th tick (200 ms); between those, PSS is estimated from the change in RSS.
inline constexpr std::uint32_t kDefaultSmapsEveryTicks = 4;
/// Every 20th tick (1 s) the process table is re-read whole (see ProcessTable).
inline constexpr std::uint32_t kDefaultFullScanEveryTicks = 20;

/// Memory of one process tree (a worker and all its descendants) at one moment, summed.
struct TreeMemory {
  std::uint64_t rss_bytes = 0;
  std::uint64_t pss_bytes = 0;   ///< shared pages split between their users: sums correctly
  std::uint64_t uss_bytes = 0;   ///< private pages only: what killing the tree frees
  std::uint64_t swap_bytes = 0;
  std::uint64_t vram_bytes = 0;  ///< NVML per-process GPU memory; 0 without NVML
  std::size_t processes = 0;     ///< members read; 0 when the root is gone
  /// RSS as smaps_rollup itself reported it (statm's for members without a rollup): the base that
  /// later PSS estimates move from, read at the same instant as the PSS it goes with.
  std::uint64_t smaps_rss_bytes = 0;
  /// PSS/USS came from smaps_rollup for every member (false: estimated from RSS, or a member's
  /// smaps_rollup was not readable and its RSS was used instead).
  bool pss_measured = false;
};

/// Reads a tree now, smaps_rollup included. `table` is refreshed (fully) first; pass null to use a
/// fresh one. `proc_root` is "/proc" live.
TreeMemory read_tree_memory(pid_t root_pid, const std::filesystem::path& proc_root, ProcessTable* table = nullptr);

/// One watched tree in a snapshot.
struct WatchReading {
  std::uint64_t key = 0;
  pid_t root_pid = 0;
  std::uint64_t rss_bytes = 0, pss_bytes = 0, uss_bytes = 0, swap_bytes = 0, vram_bytes = 0;
  std::uint64_t peak_rss_bytes = 0, peak_pss_bytes = 0, peak_uss_bytes = 0, peak_vram_bytes = 0;
  std::size_t processes = 0;   ///< 0: the root has exited (or not been sampled yet)
  bool pss_measured = false;   ///< this tick read smaps_rollup; otherwise PSS/USS are estimates
  std::chrono::steady_clock::time_point sampled_at{};  ///< default (epoch) until first sampled
};

/// Everything one tick saw.
struct SamplerSnapshot {
  std::uint64_t tick = 0;  ///< ticks done so far; 0: nothing sampled yet
  std::chrono::steady_clock::time_point sampled_at{};
  std::vector<WatchReading> watches;  ///< in key order
  MachineReading machine;
};

struct SamplerConfig {
  std::filesystem::path root = "/";  ///< "/" live; tests point it at a fake tree (root/proc, root/sys)
  std::int64_t interval_ms = kDefaultSampleIntervalMs;
  std::uint32_t smaps_every_ticks = kDefaultSmapsEveryTicks;    ///< 1: every tick
  std::uint32_t full_scan_every_ticks = kDefaultFullScanEveryTicks;
  bool read_vram = true;  ///< open NVML once, if present
  /// Called on the sampler thread after every tick, outside any lock: react at sampling speed. It
  /// must be quick and must not call stop().
  std::function<void(const SamplerSnapshot&)> on_tick;
};

/// Samples watched process trees on its own thread. All methods are thread-safe.
///
/// Each tick: RSS of every tree member from statm, plus the machine (meminfo, cgroup usage, PSI).
/// Every smaps_every_ticks ticks, and on a tree's first tick: PSS, USS and swap from smaps_rollup,
/// and VRAM from NVML. Between those, PSS is estimated as last PSS + (RSS now - RSS then), so a
/// peak that rises and falls between two smaps reads is still caught.
class ProcSampler {
 public:
  explicit ProcSampler(SamplerConfig config = {});
  ~ProcSampler();  ///< stops the thread
  ProcSampler(const ProcSampler&) = delete;
  ProcSampler& operator=(const ProcSampler&) = delete;

  /// Starts the sampling thread (once).
  void start();
  /// Stops and joins it; safe to call twice.
  void stop();
  /// Takes one sample on the caller's thread: tests drive the sampler with this instead of start().
  void tick();

  /// Watches `root_pid` and all its descendants under `key` (a worker or job id). Re-watching a
  /// key replaces it and restarts its peaks.
  void watch(std::uint64_t key, pid_t root_pid);
  void unwatch(std::uint64_t key);
  /// Restarts a key's peaks from its current reading: a persistent worker begins a new job.
  void reset_peaks(std::uint64_t key);

  /// The latest tick's readings.
  SamplerSnapshot snapshot() const;
  /// A fresh reading of one tree, smaps_rollup and VRAM included, independent of the thread: taken
  /// right before a kill, because the situation may have changed since the last tick.
  TreeMemory read_tree_now(pid_t root_pid) const;

  /// The sampler thread's kernel thread id (0 before start): for measuring its CPU time.
  pid_t thread_tid() const { return thread_tid_.load(); }
  const MachineMemory& machine() const { return machine_; }
  /// Why VRAM reads are unavailable ("" when NVML is open).
  const std::string& vram_unavailable_reason() const { return nvml_reason_; }

 private:
  struct Watch {
    pid_t root_pid = 0;
    std::uint64_t generation = 0;   // bumped by watch()/reset_peaks(): a tick begun before is stale for peaks
    bool have_smaps = false;
    std::uint64_t rss_at_smaps_bytes = 0, pss_at_smaps_bytes = 0, uss_at_smaps_bytes = 0;
    WatchReading reading;
  };
  void run();

  SamplerConfig config_;
  std::filesystem::path proc_root_;
  MachineMemory machine_;
  std::unique_ptr<Nvml> nvml_;
  std::string nvml_reason_;

  std::mutex tick_mutex_;  // one tick at a time (thread or tick() callers); guards table_, tick_count_
  ProcessTable table_;
  std::uint64_t tick_count_ = 0;

  mutable std::mutex mutex_;  // guards watches_, snapshot_, next_generation_
  std::map<std::uint64_t, Watch> watches_;
  SamplerSnapshot snapshot_;
  std::uint64_t next_generation_ = 1;

  std::mutex stop_mutex_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread thread_;
  std::atomic<pid_t> thread_tid_{0};
};

}  // namespace ab
