// Tests for the memory report's warnings on fake machines, and one gathered from this machine.
#include "memguard/memory_report.h"

#include <doctest/doctest.h>

#include <algorithm>

#include "tests/testutil/fake_machine.h"
#include "tests/testutil/temp_dir.h"

namespace ab {
namespace {

constexpr std::uint64_t kGiB = 1ull << 30;

bool has_warning(const MemoryReport& r, const std::string& text) {
  return std::any_of(r.warnings.begin(), r.warnings.end(), [&](const std::string& w) { return w.find(text) != std::string::npos; });
}


}  // namespace

TEST_CASE("memory report in a 3 GiB container: cgroup warning, budget from the cgroup, pressure, OOM kills") {
  test::TempDir root;
  // A 3 GiB v2 cgroup that has seen 2 OOM kills and is under pressure now.
  test::write_fake_container(root, {3ull << 30, 2, 30.0, 25.0, true});
  MemoryReport r = gather_memory_report({BudgetSpec{12 * kGiB, 0, false}, std::nullopt, std::nullopt, 0}, root.path(),
                                        "libnvidia-ml-absent.so.1");
  REQUIRE(r.cgroup.cgroup);
  CHECK(r.budget.ok());
  CHECK(r.budget->limit_bytes == 3 * kGiB);
  CHECK(r.budget->effective_bytes == 3 * kGiB - (256ull << 20));
  CHECK(r.psi_source.find("memory.pressure") != std::string::npos);
  CHECK_FALSE(r.gpu.available);
  CHECK(r.warnings[0] == "this process is in a cgroup limited to 3.0 GiB: the machine's free memory is not your budget");
  CHECK(has_warning(r, "--mem-budget 12.0 GiB is more than the 3.0 GiB cgroup limit minus the 256.0 MiB reserve allow: using 2.8 GiB"));
  CHECK(has_warning(r, "already killed 2 process(es)"));
  CHECK(has_warning(r, "memory pressure is high right now: all tasks stalled on memory 25.0%"));
  CHECK_FALSE(has_warning(r, "MemAvailable"));
}

TEST_CASE("memory report on a bare machine: no cgroup, no PSI, little available, a reserve too large") {
  test::TempDir root;
  root.write("proc/meminfo", "MemTotal: 8388608 kB\nMemAvailable: 1048576 kB\n");  // 8 GiB, 1 GiB available
  root.write("proc/self/cgroup", "0::/\n");
  root.write("proc/self/mountinfo", "27 1 254:0 / / rw - ext4 /dev/vda rw\n");
  MemoryReport a = gather_memory_report({}, root.path(), "libnvidia-ml-absent.so.1");
  CHECK(a.budget.ok());
  CHECK(a.budget->ceiling_source == "MemTotal");
  CHECK(has_warning(a, "only 1.0 GiB is available now (MemAvailable) but the budget is 7.6 GiB"));
  CHECK(has_warning(a, "no /proc/pressure/memory"));
  CHECK(has_warning(a, "no memory cgroup found (no memory cgroup hierarchy is mounted)"));

  MemoryReport b = gather_memory_report({std::nullopt, BudgetSpec{8 * kGiB, 0, false}, std::nullopt, 0}, root.path(),
                                        "libnvidia-ml-absent.so.1");
  CHECK_FALSE(b.budget.ok());
  CHECK(b.warnings[0] == "--reserve 8.0 GiB leaves nothing of the 8.0 GiB MemTotal; lower --reserve");

  test::TempDir empty;
  MemoryReport c = gather_memory_report({}, empty.path(), "libnvidia-ml-absent.so.1");
  CHECK_FALSE(c.budget.ok());
  CHECK(c.budget.error().find("cannot read MemTotal") == 0);
}

TEST_CASE("memory report on this machine") {
  MemoryReport r = gather_memory_report({});
  REQUIRE(r.meminfo);
  CHECK(r.cores_online >= 1);
  CHECK(r.cores_usable >= 1);
  CHECK(r.budget.ok());
  CHECK(r.budget->effective_bytes > 0);
  CHECK(r.budget->effective_bytes < *r.meminfo->mem_total_bytes);
}

}  // namespace ab
