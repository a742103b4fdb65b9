// MemoryReport: everything memguard can find out about this machine's memory, with plain warnings (for doctor).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "memguard/budget.h"
#include "memguard/cgroup.h"
#include "memguard/meminfo.h"
#include "memguard/nvml.h"
#include "memguard/psi.h"

namespace ab {

struct MemoryReport {
  unsigned cores_online = 0;  ///< sysconf(_SC_NPROCESSORS_ONLN)
  unsigned cores_usable = 0;  ///< this process's CPU affinity mask (cpusets, taskset)
  std::optional<Meminfo> meminfo;
  CgroupLookup cgroup;
  std::optional<CgroupReading> cgroup_reading;
  std::optional<Psi> psi;
  std::string psi_source;  ///< the file it came from, or "" when the kernel has no PSI
  NvmlProbe gpu;
  BudgetInputs budget_inputs;
  Result<Budget> budget = Budget{};  ///< the error says why there is none
  std::vector<std::string> warnings;  ///< plain sentences, most important first
};

/// Reads everything under `root` ("/" live) and computes the budget for `flags` (only mem_budget
/// and reserve are used; the cgroup limit and MemTotal are filled in from what was read).
MemoryReport gather_memory_report(const BudgetInputs& flags, const std::filesystem::path& root = "/",
                                  const char* nvml_library = Nvml::kLibrary);

/// The warnings for a report: a cgroup limit below MemTotal, a budget above what is available,
/// OOM kills already seen, no PSI, pressure now, no MemTotal at all. Pure.
std::vector<std::string> memory_warnings(const MemoryReport& report);

}  // namespace ab
