// Machine and cgroup readings.
#include "memguard/machine_memory.h"

#include <algorithm>

#include "memguard/process_memory.h"
#include "memguard/text_fields.h"

namespace ab {

struct MachineMemory::Files {
  PolledFile meminfo, psi, usage, oom, stat;
};

MachineMemory::MachineMemory(std::filesystem::path root, const std::string& pid)
    : root_(std::move(root)), cgroup_(find_memory_cgroup(root_, pid)) {
  const bool v2 = cgroup_.cgroup && cgroup_.cgroup->version == CgroupVersion::kV2;
  const auto dir = cgroup_.cgroup ? cgroup_.cgroup->dir : std::filesystem::path();
  files_.reset(new Files{PolledFile(root_ / "proc/meminfo"),
                         PolledFile(v2 ? dir / "memory.pressure" : root_ / "proc/pressure/memory"),
                         PolledFile(dir / (v2 ? "memory.current" : "memory.usage_in_bytes")),
                         PolledFile(dir / (v2 ? "memory.events" : "memory.oom_control")),
                         PolledFile(dir / "memory.stat")});
}

MachineMemory::~MachineMemory() = default;

void MachineMemory::read(MachineReading* r, bool full) const {
  if (full || (cgroup_.cgroup && !r->cgroup)) {
    r->meminfo = read_meminfo(root_ / "proc");
    if (cgroup_.cgroup) r->cgroup = read_cgroup(*cgroup_.cgroup);
    r->psi = r->cgroup && r->cgroup->pressure ? r->cgroup->pressure : read_psi(root_ / "proc/pressure/memory");
  } else {
    // The fast path: the same values from files kept open.
    std::lock_guard<std::mutex> lock(files_mutex_);
    auto text = files_->meminfo.read();
    r->meminfo = text ? parse_meminfo(*text) : std::nullopt;
    text = files_->psi.read();
    std::optional<Psi> psi = text ? parse_psi(*text) : std::nullopt;
    if (cgroup_.cgroup) {
      const bool v2 = cgroup_.cgroup->version == CgroupVersion::kV2;
      text = files_->usage.read();
      std::string_view usage = text ? *text : std::string_view();
      r->cgroup->usage_bytes = text ? take_u64(&usage) : std::nullopt;
      text = files_->oom.read();
      r->cgroup->oom_kill_count = text ? parse_keyed_u64(*text, "oom_kill") : std::nullopt;
      text = files_->stat.read();
      r->cgroup->inactive_file_bytes = text ? parse_keyed_u64(*text, v2 ? "inactive_file" : "total_inactive_file") : std::nullopt;
      if (v2) r->cgroup->pressure = psi;
    }
    r->psi = psi ? psi : (cgroup_.cgroup && cgroup_.cgroup->version == CgroupVersion::kV2 ? read_psi(root_ / "proc/pressure/memory") : std::nullopt);
  }
  r->available_bytes.reset();
  if (r->meminfo && r->meminfo->mem_available_bytes) r->available_bytes = r->meminfo->mem_available_bytes;
  if (r->cgroup) {
    if (auto room = cgroup_available_bytes(*r->cgroup))
      r->available_bytes = r->available_bytes ? std::min(*r->available_bytes, *room) : *room;
  }
}

}  // namespace ab
