// Memory sizes as users type them (12G, 800M, 1.5T, 75%) and as we print them (3.0 GiB).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/bytes.h"  // format_bytes
#include "common/result.h"

namespace ab {

/// Parses a byte count: plain bytes ("1048576") or a number with a binary unit K, M, G, T, each
/// optionally followed by "iB" or "B" ("12G", "12GiB", "12GB", "1.5T", "512k"); all units are
/// powers of 1024. Surrounding spaces are allowed. Returns nullopt for anything else, for zero,
/// negatives, NaN/inf, exponents, and values that do not fit in 64 bits.
std::optional<std::uint64_t> parse_size_bytes(std::string_view text);

/// A memory amount as given on the command line: absolute bytes, or a percentage of a limit
/// known only at run time (the effective limit, see budget.h).
struct BudgetSpec {
  std::uint64_t bytes = 0;  ///< when !is_percent
  double percent = 0;       ///< when is_percent: in (0, 100]
  bool is_percent = false;
};

/// Parses a size (see parse_size_bytes) or a percentage "75%" / "12.5%" in (0, 100].
/// `flag` names the option in the error message, e.g. "--mem-budget '12 parsecs': not a size;
/// use e.g. 12G, 800M, 1.5T or 75%".
Result<BudgetSpec> parse_budget_spec(std::string_view text, std::string_view flag);

/// Resolves a spec against the limit a percentage refers to.
std::uint64_t resolve_budget_spec(const BudgetSpec& spec, std::uint64_t limit_bytes);

}  // namespace ab
