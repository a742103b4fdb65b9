// The machine's and its container's memory in one reading: meminfo, the memory cgroup, PSI.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>

#include "memguard/cgroup.h"
#include "memguard/meminfo.h"
#include "memguard/psi.h"

namespace ab {

/// One reading of the machine and the cgroup this process lives in.
struct MachineReading {
  std::optional<Meminfo> meminfo;
  std::optional<CgroupReading> cgroup;  ///< when a memory cgroup was found
  std::optional<Psi> psi;               ///< the v2 cgroup's memory.pressure, else /proc/pressure/memory
  /// Room left: the least of MemAvailable and the cgroup's limit - (usage - inactive_file).
  std::optional<std::uint64_t> available_bytes;
};

/// Reads MachineReadings under a root directory ("/" live, a fake tree in tests). Finds the memory
/// cgroup once, at construction.
class MachineMemory {
 public:
  ~MachineMemory();
  /// `pid` is whose cgroup to follow: "self" for this process.
  explicit MachineMemory(std::filesystem::path root = "/", const std::string& pid = "self");

  /// The cgroup found at construction, or the reason there is none.
  const CgroupLookup& cgroup() const { return cgroup_; }

  /// A full reading (the cgroup's limit walk and swap files too), or, when !full, only what
  /// changes at sampling speed (meminfo, cgroup usage and oom_kill, PSI) on top of `*reading`.
  void read(MachineReading* reading, bool full) const;
  MachineReading read() const {
    MachineReading r;
    read(&r, true);
    return r;
  }

 private:
  std::filesystem::path root_;
  CgroupLookup cgroup_;
  // The fast path's files, kept open: 58 us per reading by path here, about a third of that open.
  struct Files;
  mutable std::mutex files_mutex_;
  std::unique_ptr<Files> files_;
};

}  // namespace ab
