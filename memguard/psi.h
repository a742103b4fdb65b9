// Pressure stall information (/proc/pressure/memory, a v2 cgroup's memory.pressure): parser and reader.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string_view>

namespace ab {

/// Percent of wall time in which some (or all, "full") runnable tasks stalled on memory.
struct Psi {
  double some_avg10 = 0, some_avg60 = 0, some_avg300 = 0;
  double full_avg10 = 0, full_avg60 = 0, full_avg300 = 0;
  std::uint64_t some_total_us = 0, full_total_us = 0;
  bool has_full = false;  ///< the "full" line is absent for CPU PSI and some older kernels
};

/// Parses "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull ...". The "some" line is required;
/// averages must lie in [0, 100].
std::optional<Psi> parse_psi(std::string_view text);

/// Reads a PSI file; nullopt where the kernel lacks PSI (file missing, or EOPNOTSUPP when disabled).
std::optional<Psi> read_psi(const std::filesystem::path& path);

}  // namespace ab
