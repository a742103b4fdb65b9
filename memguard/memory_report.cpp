// Gathering the memory report and deciding what deserves a warning.
#include "memguard/memory_report.h"

#include <sched.h>
#include <unistd.h>

#include <fmt/format.h>

namespace ab {

MemoryReport gather_memory_report(const BudgetInputs& flags, const std::filesystem::path& root, const char* nvml_library) {
  MemoryReport r;
  r.cores_online = static_cast<unsigned>(std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN)));
  cpu_set_t set;
  CPU_ZERO(&set);
  r.cores_usable = ::sched_getaffinity(0, sizeof set, &set) == 0 ? static_cast<unsigned>(CPU_COUNT(&set)) : r.cores_online;

  r.meminfo = read_meminfo(root / "proc");
  r.cgroup = find_memory_cgroup(root);
  if (r.cgroup.cgroup) r.cgroup_reading = read_cgroup(*r.cgroup.cgroup);
  if (r.cgroup_reading && r.cgroup_reading->pressure) {
    r.psi = r.cgroup_reading->pressure;
    r.psi_source = (r.cgroup.cgroup->dir / "memory.pressure").string();
  } else if (auto p = read_psi(root / "proc/pressure/memory")) {
    r.psi = p;
    r.psi_source = "/proc/pressure/memory";
  }
  r.gpu = probe_nvml(nvml_library);

  r.budget_inputs = flags;
  r.budget_inputs.cgroup_limit_bytes = r.cgroup_reading ? r.cgroup_reading->limit_bytes : std::nullopt;
  r.budget_inputs.mem_total_bytes = r.meminfo ? r.meminfo->mem_total_bytes.value_or(0) : 0;
  if (r.budget_inputs.mem_total_bytes > 0) {
    r.budget = effective_budget(r.budget_inputs);
  } else {
    r.budget = Result<Budget>::failure("cannot read MemTotal from " + (root / "proc/meminfo").string() +
                                       ", so there is no budget; is /proc mounted?");
  }
  r.warnings = memory_warnings(r);
  return r;
}

std::vector<std::string> memory_warnings(const MemoryReport& r) {
  std::vector<std::string> w;
  const std::uint64_t total = r.meminfo ? r.meminfo->mem_total_bytes.value_or(0) : 0;
  const auto* cg = r.cgroup_reading ? &*r.cgroup_reading : nullptr;
  if (!r.budget.ok()) w.push_back(r.budget.error());
  if (cg && cg->limit_bytes && total && *cg->limit_bytes < total) {
    w.push_back(fmt::format("this process is in a cgroup limited to {}: the machine's free memory is not your budget",
                            format_bytes(*cg->limit_bytes)));
  }
  if (r.budget_inputs.mem_budget && !r.budget_inputs.mem_budget->is_percent && r.budget.ok() &&
      r.budget_inputs.mem_budget->bytes > r.budget->effective_bytes) {
    w.push_back(fmt::format("--mem-budget {} is more than the {} {} minus the {} reserve allow: using {}",
                            format_bytes(r.budget_inputs.mem_budget->bytes), format_bytes(r.budget->limit_bytes),
                            r.budget->ceiling_source, format_bytes(r.budget->reserve_bytes), format_bytes(r.budget->effective_bytes)));
  }
  if (r.meminfo && r.meminfo->mem_available_bytes && r.budget.ok() && *r.meminfo->mem_available_bytes < r.budget->effective_bytes) {
    w.push_back(fmt::format("only {} is available now (MemAvailable) but the budget is {}: other programs hold memory, "
                            "so workers may be stopped early; close them or lower --mem-budget",
                            format_bytes(*r.meminfo->mem_available_bytes), format_bytes(r.budget->effective_bytes)));
  }
  if (r.meminfo && !r.meminfo->mem_available_bytes)
    w.push_back("/proc/meminfo has no MemAvailable (Linux before 3.14): the machine's free memory cannot be watched");
  if (cg && cg->oom_kill_count.value_or(0) > 0) {
    w.push_back(fmt::format("the kernel has already killed {} process(es) in this cgroup for lack of memory (oom_kill)",
                            *cg->oom_kill_count));
  }
  if (!r.psi) {
    w.push_back("the kernel reports no memory pressure (no /proc/pressure/memory; boot with psi=1 to enable): "
                "only MemAvailable and the cgroup will warn of trouble");
  } else if (r.psi->has_full && r.psi->full_avg10 >= 10.0) {
    w.push_back(fmt::format("memory pressure is high right now: all tasks stalled on memory {:.1f}% of the last 10 s",
                            r.psi->full_avg10));
  }
  if (!r.cgroup.cgroup && total) w.push_back("no memory cgroup found (" + r.cgroup.reason + "): the budget rests on MemTotal alone");
  if (r.cores_usable < r.cores_online) {
    w.push_back(fmt::format("this process may use {} of the {} cores (CPU affinity): workers' threads are sized to {}",
                            r.cores_usable, r.cores_online, r.cores_usable));
  }
  return w;
}

}  // namespace ab
