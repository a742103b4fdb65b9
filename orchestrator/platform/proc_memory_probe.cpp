// ProcMemoryProbe: memguard's ProcSampler, driven one tick per loop iteration, as one MemorySample.
//
// The sampler's own rationing applies: statm (RSS) for every tree member every tick, smaps_rollup
// (PSS) at most every few ticks within a CPU share, PSS estimated from the RSS change in between.
// Reading smaps_rollup of every tree every tick instead cost the parent 7% of a core with four
// 50 MiB workers at 50 ms (measured with /usr/bin/time on this 2-core machine).
#include "orchestrator/platform/proc_memory_probe.h"

#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <set>

#include "memguard/cgroup.h"
#include "memguard/machine_memory.h"
#include "memguard/process_memory.h"
#include "memguard/proc_sampler.h"

namespace ab {
namespace {

// Idle workers are watched under keys that cannot collide with job ids.
constexpr std::uint64_t kIdleKeyBit = 1ull << 63;

/// The kernel's count of OOM kills since boot (`oom_kill` in PROC/vmstat), none before 4.13.
std::optional<std::uint64_t> read_vmstat_oom_kills(const std::filesystem::path& proc_root) {
  const auto text = read_small_file(proc_root / "vmstat");
  if (!text) return std::nullopt;
  return parse_keyed_u64(*text, "oom_kill");
}

}  // namespace

struct ProcMemoryProbe::Impl {
  ProcSampler sampler;
  std::map<std::uint64_t, pid_t> watched;  ///< key → root pid
  std::filesystem::path shared_weights;
  std::uint64_t expected_shared_bytes = 0;
  std::filesystem::path proc_root;

  Impl(const std::filesystem::path& proc, std::filesystem::path shared, std::uint64_t expected)
      : sampler(config_for(proc)), shared_weights(std::move(shared)), expected_shared_bytes(expected), proc_root(proc) {}

  /// A tree's PSS less its share of the shared weights (charged once, as shared_bytes).
  std::uint64_t own_pss(std::uint64_t pss_bytes, std::uint64_t pss_shmem_bytes) const {
    if (shared_weights.empty()) return pss_bytes;
    return pss_bytes > pss_shmem_bytes ? pss_bytes - pss_shmem_bytes : 0;
  }

  /// The shared weights' resident size (tmpfs pages are allocated as written and stay until the
  /// file is removed, mapped or not), but never below the expected size: before the first worker
  /// has written it the room must already be held. The model file is larger than its tensors by
  /// its code and pickles only (1.2 MiB for wav2vec2-large), so the charge is about exact; if no
  /// worker could share, it is one copy too many, on the safe side.
  std::uint64_t shared_bytes() const {
    if (shared_weights.empty()) return 0;
    struct stat st {};
    const std::uint64_t now = ::stat(shared_weights.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_blocks) * 512 : 0;
    return std::max(now, expected_shared_bytes);
  }

  static SamplerConfig config_for(const std::filesystem::path& proc_root) {
    SamplerConfig c;
    c.root = proc_root.parent_path();
    return c;
  }

  void sync(const std::map<std::uint64_t, pid_t>& want) {
    for (auto it = watched.begin(); it != watched.end();) {
      auto w = want.find(it->first);
      if (w == want.end() || w->second != it->second) {
        sampler.unwatch(it->first);
        it = watched.erase(it);
      } else {
        ++it;
      }
    }
    for (const auto& [key, pid] : want)
      if (!watched.count(key)) {
        sampler.watch(key, pid);
        watched[key] = pid;
      }
  }
};

ProcMemoryProbe::ProcMemoryProbe(std::filesystem::path proc_root, std::filesystem::path shared_weights,
                                 std::uint64_t expected_shared_bytes)
    : impl_(std::make_unique<Impl>(proc_root, std::move(shared_weights), expected_shared_bytes)) {}
ProcMemoryProbe::~ProcMemoryProbe() = default;

ProbeReading ProcMemoryProbe::read(const std::vector<LiveJob>& live, const std::vector<pid_t>& idle,
                                   std::int64_t now_ms, bool exact) {
  std::map<std::uint64_t, pid_t> want;
  for (const auto& job : live) want[job.id] = job.pid;
  for (pid_t pid : idle) want[kIdleKeyBit | static_cast<std::uint64_t>(pid)] = pid;
  impl_->sync(want);
  impl_->sampler.tick();
  const SamplerSnapshot& snap = impl_->sampler.snapshot();

  ProbeReading r;
  r.sample.now_ms = now_ms;
  r.sample.shared_bytes = impl_->shared_bytes();
  for (const auto& w : snap.watches) {
    if (w.key & kIdleKeyBit) {
      r.sample.idle_pss_bytes += impl_->own_pss(w.pss_bytes, w.pss_shmem_bytes);
      ++r.sample.idle_workers;
      continue;
    }
    if (exact && !w.pss_measured) {
      const TreeMemory now = impl_->sampler.read_tree_now(w.root_pid);
      r.sample.jobs.push_back({w.key, impl_->own_pss(now.pss_bytes, now.pss_shmem_bytes), now.vram_bytes});
      r.rss_bytes[w.key] = now.rss_bytes;
      continue;
    }
    r.sample.jobs.push_back({w.key, impl_->own_pss(w.pss_bytes, w.pss_shmem_bytes), w.vram_bytes});
    r.rss_bytes[w.key] = w.rss_bytes;
  }
  const MachineReading& m = snap.machine;
  r.sample.mem_available_bytes = m.available_bytes;
  if (m.cgroup) {
    r.oom_kill_count = m.cgroup->oom_kill_count;
    if (!m.cgroup->unlimited) r.cgroup_limit_bytes = m.cgroup->limit_bytes;
  }
  // Outside a memory cgroup with a counter: the kernel's machine-wide one (/proc/vmstat oom_kill,
  // Linux 4.13+). Any OOM kill on the machine during a job then counts as evidence for its SIGKILL.
  if (!r.oom_kill_count) r.oom_kill_count = read_vmstat_oom_kills(impl_->proc_root);
  if (m.psi && m.psi->has_full) r.sample.psi_full_avg10 = m.psi->full_avg10;
  return r;
}

}  // namespace ab
