// Effective budget arithmetic.
#include "memguard/budget.h"

#include <algorithm>
#include <tuple>

#include <fmt/format.h>

namespace ab {

// Default reserve: 5% of the limit, at least 256 MiB, at most 2 GiB, never more than half the limit.
// It covers what the budget does not watch: the parent itself (SQLite, sampler, logs ~50-100 MiB),
// the kernel's page tables and slab charged to the cgroup, shells and tools beside the run, and the
// growth of a worker between two samples (a tensor allocation of 1 GiB/s over one 50 ms tick is
// ~50 MiB). 5% of the limit mirrors earlyoom, whose default acts when MemAvailable drops under 10%
// (the scheduler's high_water of 0.90 supplies the rest); the 2 GiB cap stops big machines from
// wasting memory, the 256 MiB floor keeps small containers safe, and the half-limit cap leaves a
// tiny cgroup something to run in.
std::uint64_t default_reserve_bytes(std::uint64_t limit_bytes) {
  constexpr std::uint64_t kMinReserveBytes = 256ull << 20;
  constexpr std::uint64_t kMaxReserveBytes = 2ull << 30;
  std::uint64_t r = std::clamp<std::uint64_t>(limit_bytes / 20, kMinReserveBytes, kMaxReserveBytes);
  return std::min(r, limit_bytes / 2);
}

// The reserve is headroom below the hard limit (cgroup or MemTotal), so it is taken from the limit,
// not from --mem-budget: effective = min(--mem-budget, limit - reserve). Subtracting it from the
// flag as well would turn `--mem-budget 1G` on a 24 GiB machine (reserve 1.2 GiB) into an error
// although 23 GiB stay free around it.
Result<BudgetInputs> parse_budget_flags(std::string_view mem_budget, std::string_view reserve) {
  BudgetInputs in;
  for (auto [text, flag, field] : {std::tuple{mem_budget, "--mem-budget", &in.mem_budget},
                                   std::tuple{reserve, "--reserve", &in.reserve}}) {
    if (text.empty()) continue;
    auto spec = parse_budget_spec(text, flag);
    if (!spec) return Result<BudgetInputs>::failure(spec.error());
    *field = spec.value();
  }
  return in;
}

Result<Budget> effective_budget(const BudgetInputs& in) {
  Budget b;
  b.limit_bytes = in.mem_total_bytes;
  b.ceiling_source = "MemTotal";
  if (in.cgroup_limit_bytes && *in.cgroup_limit_bytes < b.limit_bytes) {
    b.limit_bytes = *in.cgroup_limit_bytes;
    b.ceiling_source = "cgroup limit";
  }
  b.reserve_bytes = in.reserve ? resolve_budget_spec(*in.reserve, b.limit_bytes) : default_reserve_bytes(b.limit_bytes);
  if (b.reserve_bytes >= b.limit_bytes) {
    return Result<Budget>::failure(fmt::format("--reserve {} leaves nothing of the {} {}; lower --reserve",
                                               format_bytes(b.reserve_bytes), format_bytes(b.limit_bytes),
                                               b.ceiling_source));
  }
  b.ceiling_bytes = b.limit_bytes;
  b.effective_bytes = b.limit_bytes - b.reserve_bytes;
  if (in.mem_budget) {
    std::uint64_t flag = resolve_budget_spec(*in.mem_budget, b.limit_bytes);
    if (flag < b.effective_bytes) {
      b.ceiling_bytes = flag;
      b.ceiling_source = "--mem-budget";
      b.effective_bytes = flag;
    }
  }
  if (b.effective_bytes < kMinBudgetBytes) {
    return Result<Budget>::failure(
        b.ceiling_source == "--mem-budget"
            ? fmt::format("--mem-budget {} is less than the {} any worker needs; a size takes a unit, e.g. 800M or 12G",
                          format_bytes(b.effective_bytes), format_bytes(kMinBudgetBytes))
            : fmt::format("the {} {} less the {} reserve leaves {}, less than the {} any worker needs; lower --reserve",
                          format_bytes(b.limit_bytes), b.ceiling_source, format_bytes(b.reserve_bytes),
                          format_bytes(b.effective_bytes), format_bytes(kMinBudgetBytes)));
  }
  return b;
}

}  // namespace ab
