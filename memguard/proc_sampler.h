// ProcSampler: samples the memory of watched process trees and of the machine, one tick at a time.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "memguard/machine_memory.h"
#include "memguard/process_memory.h"
#include "memguard/process_table.h"

namespace ab {

class Nvml;

/// 50 ms: a worker growing at 1 GiB/s (a large tensor allocation) moves ~50 MiB between two
/// samples, well inside the default reserve (budget.cpp); the cost at this rate is measured by
/// bench/sampler_cost.sh (16 processes: see its output, target < 1% of one core).
inline constexpr std::int64_t kDefaultSampleIntervalMs = 50;
/// A tree's smaps_rollup is read at most every 4th tick (200 ms); between reads, PSS is estimated
/// from the change in RSS.
inline constexpr std::uint32_t kDefaultSmapsEveryTicks = 4;
/// smaps_rollup walks every page-table entry: measured on this machine, 1.8 ms of CPU for a
/// process with 64 MiB resident (~28 us per MiB), so 16 workers of 1 GiB would cost ~0.5 s per
/// round. Reads are therefore also rationed to this share of one core (0.3%), oldest tree first;
/// RSS-based estimates fill the gaps. bench/sampler_cost.sh measures the total.
inline constexpr double kDefaultSmapsCpuShare = 0.003;
/// The ration may be saved up to this much CPU time, so a burst of new trees is read at once.
inline constexpr std::int64_t kSmapsCreditCapNs = 20'000'000;
/// New descendants are looked for every 2nd tick (100 ms), and only when /proc/loadavg says a
/// process was created since the last look: listing /proc costs 120 us with 171 processes here.
inline constexpr std::uint32_t kDefaultScanEveryTicks = 2;
/// Every 100th tick (5 s) the process table is re-read whole (see ProcessTable): 2.5 ms of CPU with
/// 171 processes here, so 0.05% of a core; it bounds how long a reused pid can hide a new process.
inline constexpr std::uint32_t kDefaultFullScanEveryTicks = 100;

/// Memory of one process tree (a worker and all its descendants) at one moment, summed.
struct TreeMemory {
  std::uint64_t rss_bytes = 0;
  std::uint64_t pss_bytes = 0;   ///< shared pages split between their users: sums correctly
  std::uint64_t uss_bytes = 0;   ///< private pages only: what killing the tree frees
  std::uint64_t swap_bytes = 0;
  std::uint64_t pss_shmem_bytes = 0;  ///< the part of pss_bytes in shared memory (SmapsRollup)
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
  /// The part of pss_bytes in shared memory, as of the last smaps_rollup read (between reads the
  /// estimate keeps it: only new private pages move PSS with RSS).
  std::uint64_t pss_shmem_bytes = 0;
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
  std::uint32_t smaps_every_ticks = kDefaultSmapsEveryTicks;    ///< 1: every tick (within the ration)
  /// Most of one core smaps_rollup reads may use (0.003 = 0.3%); 0: no ration, the tick count alone
  /// decides. A tree never read yet is read regardless.
  double smaps_cpu_share = kDefaultSmapsCpuShare;
  /// How much of the ration may be saved up (and is there at the start).
  std::int64_t smaps_credit_cap_ns = kSmapsCreditCapNs;
  std::uint32_t scan_every_ticks = kDefaultScanEveryTicks;  ///< 1: every tick
  std::uint32_t full_scan_every_ticks = kDefaultFullScanEveryTicks;
  bool read_vram = true;  ///< open NVML once, if present
};

/// Samples watched process trees, one tick() at a time on the caller's thread: the run loop
/// ticks it at most once per --sample-ms (orchestrator/memory_probe). Not thread-safe.
///
/// Each tick: RSS of every tree member from statm, plus the machine (meminfo, cgroup usage, PSI).
/// On a tree's first tick, and then at most every smaps_every_ticks ticks within a CPU ration
/// (smaps_cpu_share, oldest reading first): PSS, USS and swap from smaps_rollup, and VRAM from
/// NVML. Between those, PSS is estimated as last PSS + (RSS now - RSS then), so a peak that rises
/// and falls between two smaps reads is still caught.
class ProcSampler {
 public:
  explicit ProcSampler(SamplerConfig config = {});
  ~ProcSampler();
  ProcSampler(const ProcSampler&) = delete;
  ProcSampler& operator=(const ProcSampler&) = delete;

  /// Takes one sample.
  void tick();

  /// Watches `root_pid` and all its descendants under `key` (a worker or job id). Re-watching a
  /// key replaces it and restarts its peaks. A tree unwatched within the last smaps_every_ticks
  /// ticks (a persistent worker between two jobs, or idle and then busy) keeps its last smaps
  /// reading: it is not read again as new (a LibTorch worker's rollup costs a few ms, and short
  /// jobs would pay it for every file), only when its turn comes.
  void watch(std::uint64_t key, pid_t root_pid);
  void unwatch(std::uint64_t key);
  /// Restarts a key's peaks from its current reading: a persistent worker begins a new job.
  void reset_peaks(std::uint64_t key);

  /// The latest tick's readings, valid until the next tick(): no copy on the run loop's tick.
  const SamplerSnapshot& snapshot() const { return snapshot_; }
  /// A fresh reading of one tree, smaps_rollup and VRAM included, apart from the ticks: taken
  /// right before a kill, because the situation may have changed since the last tick.
  TreeMemory read_tree_now(pid_t root_pid) const;

  const MachineMemory& machine() const { return machine_; }
  /// Why VRAM reads are unavailable ("" when NVML is open).
  const std::string& vram_unavailable_reason() const { return nvml_reason_; }

 private:
  struct Watch {
    pid_t root_pid = 0;
    bool have_smaps = false;
    std::uint64_t smaps_tick = 0;   // the tick of the last smaps read
    std::uint64_t rss_at_smaps_bytes = 0, pss_at_smaps_bytes = 0, uss_at_smaps_bytes = 0;
    WatchReading reading;
  };

  SamplerConfig config_;
  std::filesystem::path proc_root_;
  MachineMemory machine_;
  std::unique_ptr<Nvml> nvml_;
  std::string nvml_reason_;

  ProcessTable table_;
  StatmReader statm_reader_;
  std::uint64_t tick_count_ = 0;
  std::optional<pid_t> last_pid_;  // /proc/loadavg's newest pid at the last table refresh
  std::int64_t smaps_credit_ns_ = 0;  // the ration's balance; may go negative
  std::chrono::steady_clock::time_point last_tick_at_{};

  std::map<std::uint64_t, Watch> watches_;
  /// Trees unwatched lately, by root pid, with the tick they were let go at (watch() takes them up).
  std::map<pid_t, std::pair<Watch, std::uint64_t>> recent_;
  SamplerSnapshot snapshot_;
};

}  // namespace ab
