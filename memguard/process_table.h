// Which processes exist and who their parents are, so a worker's whole tree can be found.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ab {

/// `root` and all its descendants (root first, breadth-first) given (pid, ppid) pairs. Pure.
/// Empty when `root` is not among the pids.
std::vector<pid_t> tree_members(pid_t root, const std::vector<std::pair<pid_t, pid_t>>& pid_ppid);

/// The newest pid the kernel handed out in this pid namespace: the last field of /proc/loadavg
/// ("0.00 0.01 0.05 1/171 12345"). While it stays put no process was created anywhere, so there is
/// nothing new for a refresh to find. nullopt when unreadable.
std::optional<pid_t> read_last_pid(const std::filesystem::path& proc_root);

/// A cached table of pid → ppid read from /proc/PID/stat.
///
/// This kernel (and many distribution kernels) lacks /proc/PID/task/TID/children
/// (CONFIG_PROC_CHILDREN), so descendants are found by listing every pid. To keep that cheap at
/// sampling speed, refresh() reads stat only for pids it has not seen before: a process's parent
/// changes only when it is reparented to init or a subreaper, which takes it out of a worker's tree
/// anyway. A full refresh (every few ticks) re-reads everything, which also catches a pid that was
/// reused between two scans.
class ProcessTable {
 public:
  explicit ProcessTable(std::filesystem::path proc_root = "/proc");

  /// Lists `proc_root`'s pid folders; reads stat for new pids (all pids when `full`). Processes
  /// that vanish mid-scan are skipped.
  void refresh(bool full = false);

  /// `root` and its descendants as of the last refresh (root first); empty if root is unknown.
  std::vector<pid_t> tree(pid_t root) const;

  /// How many stat files the last refresh read (the scan's cost, for tests and the benchmark).
  std::size_t stats_read_last_refresh() const { return stats_read_; }
  std::size_t size() const { return ppid_.size(); }

 private:
  struct Entry {
    pid_t ppid = 0;
    std::uint64_t seen = 0;  // the refresh that last listed it
  };
  std::filesystem::path proc_root_;
  std::unordered_map<pid_t, Entry> ppid_;
  std::uint64_t refreshes_ = 0;
  std::unordered_map<pid_t, std::vector<pid_t>> children_;
  std::size_t stats_read_ = 0;
};

}  // namespace ab
