// One process's memory and parentage from /proc/PID/{statm,smaps_rollup,stat}: pure parsers, thin readers.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace ab {

/// /proc/PID/statm, converted to bytes with the page size given.
struct Statm {
  std::uint64_t size_bytes = 0;      ///< total program size (VmSize)
  std::uint64_t resident_bytes = 0;  ///< RSS
  std::uint64_t shared_bytes = 0;    ///< resident file-backed + shmem pages
};

/// Parses "size resident shared text lib data dt" (in pages). Needs the first three fields.
std::optional<Statm> parse_statm(std::string_view text, std::uint64_t page_size_bytes);

/// /proc/PID/smaps_rollup totals. USS is what the process alone holds: Private_Clean + Private_Dirty.
struct SmapsRollup {
  std::uint64_t rss_bytes = 0;
  std::uint64_t pss_bytes = 0;
  std::uint64_t uss_bytes = 0;
  std::uint64_t swap_bytes = 0;
};

/// Parses smaps_rollup text ("Rss:   1700 kB" lines). Rss and Pss are required; Private_* and
/// Swap default to 0 when absent. Unknown lines (Pss_Dirty, Pss_Anon on newer kernels) are ignored.
std::optional<SmapsRollup> parse_smaps_rollup(std::string_view text);

/// The fields of /proc/PID/stat the tree walk needs.
struct ProcStat {
  pid_t pid = 0;
  pid_t ppid = 0;
  char state = '?';
  std::uint64_t start_time_ticks = 0;  ///< field 22: tells a reused pid from the old one
};

/// Parses "pid (comm) state ppid ...". comm may hold spaces and parentheses: the last ')' ends it.
std::optional<ProcStat> parse_proc_stat(std::string_view text);

/// Why a read failed. kGone (the pid exited or never was) is normal for a process tree.
enum class ReadError { kNone, kGone, kDenied, kMalformed };

/// Reads a small /proc or /sys file whole. Returns nullopt and sets *error on failure.
std::optional<std::string> read_small_file(const std::filesystem::path& path, ReadError* error = nullptr);

/// Readers: `proc_root` is the directory holding the pid folders ("/proc" on a live system,
/// a fake tree in tests).
std::optional<Statm> read_statm(const std::filesystem::path& proc_root, pid_t pid, ReadError* error = nullptr);
std::optional<SmapsRollup> read_smaps_rollup(const std::filesystem::path& proc_root, pid_t pid,
                                             ReadError* error = nullptr);
std::optional<ProcStat> read_proc_stat(const std::filesystem::path& proc_root, pid_t pid,
                                       ReadError* error = nullptr);

/// The system page size (sysconf), for parse_statm.
std::uint64_t page_size_bytes();

}  // namespace ab
