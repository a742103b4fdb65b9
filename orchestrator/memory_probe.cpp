// ProcMemoryProbe: memguard's /proc, meminfo, cgroup and PSI readers assembled into one sample.
#include "orchestrator/memory_probe.h"

#include <algorithm>

#include "memguard/machine_memory.h"
#include "memguard/process_memory.h"
#include "memguard/process_table.h"

namespace ab {

struct ProcMemoryProbe::Impl {
  std::filesystem::path proc_root;
  ProcessTable table;
  MachineMemory machine;
  MachineReading reading;
  bool have_full = false;
  std::uint64_t page_bytes = page_size_bytes();
  std::uint64_t ticks = 0;

  explicit Impl(std::filesystem::path root) : proc_root(root), table(root), machine(root.parent_path()) {}

  /// PSS and RSS of a tree; PSS falls back to RSS where smaps_rollup cannot be read.
  std::pair<std::uint64_t, std::uint64_t> tree_bytes(pid_t root) {
    std::uint64_t pss = 0, rss = 0;
    for (pid_t pid : table.tree(root)) {
      if (auto sm = read_smaps_rollup(proc_root, pid)) {
        pss += sm->pss_bytes;
        rss += sm->rss_bytes;
      } else if (auto st = read_statm(proc_root, pid)) {
        pss += st->resident_bytes;
        rss += st->resident_bytes;
      }
    }
    return {pss, rss};
  }
};

ProcMemoryProbe::ProcMemoryProbe(std::filesystem::path proc_root) : impl_(std::make_unique<Impl>(std::move(proc_root))) {}
ProcMemoryProbe::~ProcMemoryProbe() = default;

ProbeReading ProcMemoryProbe::read(const std::vector<LiveJob>& live, const std::vector<pid_t>& idle,
                                   std::int64_t now_ms) {
  ProbeReading r;
  r.sample.now_ms = now_ms;
  // A full rescan every 20th reading catches reused pids; otherwise only new pids are read.
  impl_->table.refresh(impl_->ticks++ % 20 == 0);
  for (const auto& job : live) {
    auto [pss, rss] = impl_->tree_bytes(job.pid);
    r.sample.jobs.push_back({job.id, pss, 0});
    r.rss_bytes[job.id] = rss;
  }
  for (pid_t pid : idle) r.sample.idle_pss_bytes += impl_->tree_bytes(pid).first;
  impl_->machine.read(&impl_->reading, !impl_->have_full);
  impl_->have_full = true;
  const MachineReading& m = impl_->reading;
  r.sample.mem_available_bytes = m.available_bytes;
  if (m.cgroup) {
    r.oom_kill_count = m.cgroup->oom_kill_count;
    if (!m.cgroup->unlimited) r.cgroup_limit_bytes = m.cgroup->limit_bytes;
  }
  if (m.psi && m.psi->has_full) r.sample.psi_full_avg10 = m.psi->full_avg10;
  return r;
}

}  // namespace ab
