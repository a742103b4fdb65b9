// The memory cgroup a process lives in (v1 or v2): where it is, its limit, usage, OOM kills, pressure.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "memguard/psi.h"

namespace ab {

/// The memory-relevant lines of /proc/PID/cgroup.
struct CgroupMembership {
  std::optional<std::string> v1_memory_path;  ///< from "4:memory:/a/b" (also "4:cpu,memory:/a/b")
  std::optional<std::string> v2_path;         ///< from "0::/a/b"
};

/// Parses /proc/PID/cgroup ("hierarchy-id:controllers:path" lines). nullopt if no line parses.
std::optional<CgroupMembership> parse_proc_cgroup(std::string_view text);

/// A cgroup hierarchy's mount: where it is mounted and which cgroup path appears there (mountinfo's
/// "root" field: "/" normally, "/docker/abc" when a container bind-mounts its own subtree).
struct CgroupMount {
  std::string mount_point;
  std::string root;
};

/// Where the v1 memory hierarchy and the v2 hierarchy are mounted.
struct CgroupMounts {
  std::optional<CgroupMount> v1_memory;
  std::optional<CgroupMount> v2;
};

/// Parses /proc/PID/mountinfo; mount points have their \040-style escapes decoded.
CgroupMounts parse_mountinfo(std::string_view text);

/// A limit file's value: "max" (v2) and v1's huge sentinel (anything ≥ 2^62; the kernel writes
/// PAGE_COUNTER_MAX * page size = 9223372036854771712) both mean unlimited.
struct LimitBytes {
  bool unlimited = true;
  std::uint64_t bytes = 0;  ///< when !unlimited
};

/// Parses memory.max / memory.limit_in_bytes / memory.memsw.limit_in_bytes text.
std::optional<LimitBytes> parse_limit_bytes(std::string_view text);

/// The value of `key` in "key value" lines (memory.events, memory.oom_control, memory.stat).
std::optional<std::uint64_t> parse_keyed_u64(std::string_view text, std::string_view key);

enum class CgroupVersion { kV1, kV2 };

/// A located memory cgroup.
struct MemoryCgroup {
  CgroupVersion version = CgroupVersion::kV2;
  std::string path;                ///< as /proc/PID/cgroup names it, e.g. "/process_api/1e42"
  std::filesystem::path dir;       ///< its directory of control files (under the root given)
  std::filesystem::path mount_dir; ///< the hierarchy's mount directory; ancestors stop here
};

/// find_memory_cgroup's answer: a cgroup, or why there is none ("no memory controller mounted").
struct CgroupLookup {
  std::optional<MemoryCgroup> cgroup;
  std::string reason;
};

/// Finds the memory cgroup of process `pid` ("self" for this one) from `root`/proc/PID/cgroup and
/// `root`/proc/PID/mountinfo. Prefers v1's memory hierarchy when the process is in one; uses v2
/// when the v2 hierarchy has the memory controller.
CgroupLookup find_memory_cgroup(const std::filesystem::path& root = "/", const std::string& pid = "self");

/// One reading of a memory cgroup. Empty fields: the file is missing or unreadable.
struct CgroupReading {
  bool unlimited = true;                     ///< no limit on this cgroup or any ancestor
  std::optional<std::uint64_t> limit_bytes;  ///< effective limit: the least of its own and its ancestors'
  std::optional<std::uint64_t> usage_bytes;  ///< v2 memory.current, v1 memory.usage_in_bytes
  std::optional<std::uint64_t> oom_kill_count;   ///< v2 memory.events, v1 memory.oom_control
  /// Page cache the kernel drops first (memory.stat inactive_file, v1 total_inactive_file). Usage
  /// counts it, so limit - usage alone would call a cgroup full of cached audio "out of memory".
  std::optional<std::uint64_t> inactive_file_bytes;
  std::optional<std::uint64_t> memsw_limit_bytes;  ///< v1 memory+swap limit; empty also when unlimited
  std::optional<std::uint64_t> memsw_usage_bytes;
  std::optional<std::uint64_t> swap_limit_bytes;   ///< v2 swap alone (memory.swap.max); empty also when unlimited
  std::optional<std::uint64_t> swap_usage_bytes;
  std::optional<Psi> pressure;               ///< v2 memory.pressure
};

/// Reads every file of the cgroup. The limit walks ancestors (v2) or memory.stat's
/// hierarchical_memory_limit (v1), because a parent's limit binds a child too.
CgroupReading read_cgroup(const MemoryCgroup& cgroup);

/// Room left before the limit: limit - (usage - inactive_file). Empty when unlimited or unread.
std::optional<std::uint64_t> cgroup_available_bytes(const CgroupReading& reading);

/// Only usage, inactive_file and oom_kill: the values worth reading at sampling speed.
void read_cgroup_usage(const MemoryCgroup& cgroup, CgroupReading* reading);

}  // namespace ab
