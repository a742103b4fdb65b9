// The effective memory budget: min(--mem-budget, min(cgroup limit, MemTotal) - reserve). Pure.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"
#include "memguard/size.h"

namespace ab {

/// The reserve when --reserve is not given, for a limit of `limit_bytes` (see budget.cpp for why).
std::uint64_t default_reserve_bytes(std::uint64_t limit_bytes);

/// What the budget is computed from.
struct BudgetInputs {
  std::optional<BudgetSpec> mem_budget;             ///< --mem-budget; none when not given
  std::optional<BudgetSpec> reserve;                ///< --reserve; none: default_reserve_bytes
  std::optional<std::uint64_t> cgroup_limit_bytes;  ///< none: no cgroup or unlimited
  std::uint64_t mem_total_bytes = 0;                ///< /proc/meminfo MemTotal
};

/// The budget and how it was reached, for the scheduler and for doctor to explain.
struct Budget {
  std::uint64_t limit_bytes = 0;    ///< min(cgroup limit, MemTotal): what percentages refer to
  std::uint64_t ceiling_bytes = 0;  ///< --mem-budget when it binds, else limit
  std::string ceiling_source;       ///< what binds: "--mem-budget", "cgroup limit" or "MemTotal"
  std::uint64_t reserve_bytes = 0;
  std::uint64_t effective_bytes = 0;  ///< min(--mem-budget, limit - reserve)
};

/// The flags' part of BudgetInputs: --mem-budget and --reserve parsed (empty text: not given),
/// the machine's fields left for the caller. The error names the flag and the accepted forms.
Result<BudgetInputs> parse_budget_flags(std::string_view mem_budget, std::string_view reserve);

/// Computes the effective budget: min(--mem-budget, limit - reserve). A percentage --mem-budget or
/// --reserve is of `limit_bytes`. The error (user-facing) when less than kMinBudgetBytes is left.
Result<Budget> effective_budget(const BudgetInputs& inputs);

/// The smallest effective budget accepted: no worker, not even `true`, runs in less (a shell's RSS
/// alone is ~1-4 MiB), so a smaller one is a mistake, most often a size without its unit
/// (`--mem-budget 800` is 800 bytes).
constexpr std::uint64_t kMinBudgetBytes = 16ull << 20;

}  // namespace ab
