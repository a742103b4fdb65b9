// Machine and cgroup readings.
#include "memguard/machine_memory.h"

#include <algorithm>

namespace ab {

MachineMemory::MachineMemory(std::filesystem::path root, const std::string& pid)
    : root_(std::move(root)), cgroup_(find_memory_cgroup(root_, pid)) {}

void MachineMemory::read(MachineReading* r, bool full) const {
  r->meminfo = read_meminfo(root_ / "proc");
  if (cgroup_.cgroup) {
    if (full || !r->cgroup) {
      r->cgroup = read_cgroup(*cgroup_.cgroup);
    } else {
      read_cgroup_usage(*cgroup_.cgroup, &*r->cgroup);
      if (cgroup_.cgroup->version == CgroupVersion::kV2) r->cgroup->pressure = read_psi(cgroup_.cgroup->dir / "memory.pressure");
    }
  }
  r->psi = r->cgroup && r->cgroup->pressure ? r->cgroup->pressure : read_psi(root_ / "proc/pressure/memory");
  r->available_bytes.reset();
  if (r->meminfo && r->meminfo->mem_available_bytes) r->available_bytes = r->meminfo->mem_available_bytes;
  if (r->cgroup) {
    if (auto room = cgroup_available_bytes(*r->cgroup))
      r->available_bytes = r->available_bytes ? std::min(*r->available_bytes, *room) : *room;
  }
}

}  // namespace ab
