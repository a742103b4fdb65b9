// The machine's memory from /proc/meminfo: pure parser and reader.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string_view>

namespace ab {

/// The /proc/meminfo fields memguard uses. Any may be missing (MemAvailable needs Linux 3.14).
struct Meminfo {
  std::optional<std::uint64_t> mem_total_bytes;
  std::optional<std::uint64_t> mem_free_bytes;
  std::optional<std::uint64_t> mem_available_bytes;
  std::optional<std::uint64_t> swap_total_bytes;
  std::optional<std::uint64_t> swap_free_bytes;
};

/// Parses "MemTotal:  24684092 kB" lines. A malformed value leaves its field empty; the result is
/// nullopt only when MemTotal is missing or malformed (then nothing else can be trusted either).
std::optional<Meminfo> parse_meminfo(std::string_view text);

/// Reads `proc_root`/meminfo ("/proc" live).
std::optional<Meminfo> read_meminfo(const std::filesystem::path& proc_root);

}  // namespace ab
