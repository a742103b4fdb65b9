// A fake machine under a test directory, for code that reads /proc and /sys below a root path.
#pragma once
#include <cstdint>

#include "tests/testutil/temp_dir.h"

namespace ab::test {

/// A 24 GiB machine (20 GiB available, no swap) whose process sits in the v2 cgroup "/job".
struct FakeContainer {
  std::uint64_t limit_bytes = 3ull << 30;  ///< the cgroup's memory.max
  int oom_kills = 0;                       ///< memory.events' oom and oom_kill
  double psi_some_avg10 = 0, psi_full_avg10 = 0;
  bool psi_in_cgroup = false;  ///< memory.pressure in the cgroup, else /proc/pressure/memory
};

/// Writes `c` as proc/meminfo, proc/self/{cgroup,mountinfo} and sys/fs/cgroup/... under `root`.
void write_fake_container(const TempDir& root, const FakeContainer& c);

}  // namespace ab::test
