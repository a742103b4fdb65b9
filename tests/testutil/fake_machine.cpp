// A fake machine under a test directory (see fake_machine.h).
#include "tests/testutil/fake_machine.h"

#include <string>

namespace ab::test {

void write_fake_container(const TempDir& root, const FakeContainer& c) {
  root.write("proc/meminfo",
             "MemTotal: 25165824 kB\nMemFree: 20000000 kB\nMemAvailable: 20971520 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n");
  root.write("proc/self/cgroup", "0::/job\n");
  root.write("proc/self/mountinfo", "35 24 0:30 / /sys/fs/cgroup rw shared:9 - cgroup2 cgroup2 rw\n");
  root.write("sys/fs/cgroup/cgroup.controllers", "cpu memory pids\n");
  root.write("sys/fs/cgroup/job/memory.max", std::to_string(c.limit_bytes) + "\n");
  root.write("sys/fs/cgroup/job/memory.current", "536870912\n");
  const std::string kills = std::to_string(c.oom_kills);
  root.write("sys/fs/cgroup/job/memory.events", "oom " + kills + "\noom_kill " + kills + "\n");
  auto line = [](const char* kind, double avg10) {
    return std::string(kind) + " avg10=" + std::to_string(avg10) + " avg60=0.00 avg300=0.00 total=0\n";
  };
  root.write(c.psi_in_cgroup ? "sys/fs/cgroup/job/memory.pressure" : "proc/pressure/memory",
             line("some", c.psi_some_avg10) + line("full", c.psi_full_avg10));
}

}  // namespace ab::test
