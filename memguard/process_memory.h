// One process's memory and parentage from /proc/PID/{statm,smaps_rollup,stat}: pure parsers, thin readers.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

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
  /// The part of PSS in shared memory (tmpfs, /dev/shm; kernel 5.8+, else 0): with shared
  /// weights (worker/shared_weights.h) this worker's share of the one copy all workers map.
  std::uint64_t pss_shmem_bytes = 0;
};

/// Parses smaps_rollup text ("Rss:   1700 kB" lines). Rss and Pss are required; Private_*, Swap
/// and Pss_Shmem default to 0 when absent. Unknown lines (Pss_Dirty, Pss_Anon) are ignored.
std::optional<SmapsRollup> parse_smaps_rollup(std::string_view text);

/// The fields of /proc/PID/stat the tree walk needs.
struct ProcStat {
  pid_t pid = 0;
  pid_t ppid = 0;
  char state = '?';
  std::uint64_t start_time_ticks = 0;  ///< field 22: tells a reused pid from the old one
  std::uint64_t cpu_ticks = 0;         ///< fields 14-15, utime + stime, all threads (clock ticks)
};

/// Parses "pid (comm) state ppid ...". comm may hold spaces and parentheses: the last ')' ends it.
std::optional<ProcStat> parse_proc_stat(std::string_view text);

/// Why a read failed. kGone (the pid exited or never was) is normal for a process tree.
enum class ReadError { kNone, kGone, kDenied, kMalformed };

/// Reads a small /proc or /sys file whole. Returns nullopt and sets *error on failure.
std::optional<std::string> read_small_file(const std::filesystem::path& path, ReadError* error = nullptr);

/// Re-reads an already open /proc or cgroup file from offset 0 into *out (pread). Keeping a file
/// open skips the path walk that dominates the cost of a small /proc read. A process that exited
/// reads as an error (ESRCH) or as empty: both give false with kGone.
bool pread_whole(int fd, std::string* out, ReadError* error = nullptr);

/// Readers: `proc_root` is the directory holding the pid folders ("/proc" on a live system,
/// a fake tree in tests).
std::optional<Statm> read_statm(const std::filesystem::path& proc_root, pid_t pid, ReadError* error = nullptr);
std::optional<SmapsRollup> read_smaps_rollup(const std::filesystem::path& proc_root, pid_t pid,
                                             ReadError* error = nullptr);
std::optional<ProcStat> read_proc_stat(const std::filesystem::path& proc_root, pid_t pid,
                                       ReadError* error = nullptr);

/// A file read again and again at sampling speed (/proc/meminfo, a cgroup's memory.current):
/// opened on first use and re-read from offset 0, reopened once if a read fails.
class PolledFile {
 public:
  explicit PolledFile(std::filesystem::path path) : path_(std::move(path)) {}
  ~PolledFile();
  PolledFile(const PolledFile&) = delete;
  PolledFile& operator=(const PolledFile&) = delete;
  /// The whole file, or nullopt when it cannot be opened or read.
  std::optional<std::string_view> read();

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  std::string buf_;
};

/// Reads /proc/PID/statm of many pids at sampling speed, keeping each file open between reads
/// (measured here: 16 statm reads cost 108 us by path). A reused pid is safe: the old open file
/// fails with ESRCH once its process is gone, and the pid's file is then opened afresh.
class StatmReader {
 public:
  explicit StatmReader(std::filesystem::path proc_root = "/proc");
  ~StatmReader();
  StatmReader(const StatmReader&) = delete;
  StatmReader& operator=(const StatmReader&) = delete;

  std::optional<Statm> read(pid_t pid, ReadError* error = nullptr);
  /// Closes the files of pids not read since the previous sweep().
  void sweep();
  std::size_t open_files() const { return open_.size(); }

 private:
  struct Entry {
    int fd = -1;
    bool used = false;
  };
  /// Beyond this many open files, further pids are read by path (a worker with a huge tree must
  /// not exhaust the parent's descriptors).
  static constexpr std::size_t kMaxOpenFiles = 256;
  std::filesystem::path proc_root_;
  std::unordered_map<pid_t, Entry> open_;
  std::string buf_;
};

/// The system page size (sysconf), for parse_statm.
std::uint64_t page_size_bytes();

}  // namespace ab
