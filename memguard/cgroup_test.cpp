// Tests for cgroup discovery and reading: parsers on captured and variant text, fake trees, and a real v1 cgroup.
#include "memguard/cgroup.h"

#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "memguard/budget.h"
#include "memguard/machine_memory.h"
#include "tests/testutil/cgroup_v1.h"
#include "tests/testutil/memhog_process.h"
#include "tests/testutil/temp_dir.h"

namespace ab {
namespace {

// Captured on this machine: `cat /proc/self/cgroup` (v1 memory controller, v2 hierarchy without memory).
constexpr const char* kProcCgroupHere = R"(9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/1e422e4b0a58a75d25af1a28e525ad53
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
)";

// Captured on this machine: the cgroup lines of `cat /proc/self/mountinfo`.
constexpr const char* kMountinfoHere = R"(22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
)";

// A systemd host on cgroup v2 alone (Debian 12 default): optional fields before the " - ".
constexpr const char* kMountinfoV2Host =
    "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n";

// A shell prefix that moves the shell into `cg`, so the program it execs is charged there from its start.
std::string in_cgroup(const test::CgroupV1& cg) {
  return "echo $$ > '" + (cg.dir() / "cgroup.procs").string() + "' && exec ";
}

}  // namespace

TEST_CASE("parse_proc_cgroup: v1 memory line, v2 line, combined controllers, hostile lines") {
  auto here = parse_proc_cgroup(kProcCgroupHere);
  REQUIRE(here);
  CHECK(*here->v1_memory_path == "/process_api/1e422e4b0a58a75d25af1a28e525ad53");
  CHECK(*here->v2_path == "/");

  auto v2 = parse_proc_cgroup("0::/user.slice/user-1000.slice/session-2.scope\n");
  REQUIRE(v2);
  CHECK_FALSE(v2->v1_memory_path);
  CHECK(*v2->v2_path == "/user.slice/user-1000.slice/session-2.scope");

  auto combined = parse_proc_cgroup("5:cpu,memory,cpuacct:/slurm/uid_1000/job_42\n");
  REQUIRE(combined);
  CHECK(*combined->v1_memory_path == "/slurm/uid_1000/job_42");

  auto near_miss = parse_proc_cgroup("4:memoryx:/a\n3:name=memory:/b\n");
  REQUIRE(near_miss);
  CHECK_FALSE(near_miss->v1_memory_path);

  const char* bad[] = {"", "\n", "garbage", "4:memory", "x:memory:/a", "4:memory:relative/path"};
  for (const char* t : bad) {
    CAPTURE(t);
    CHECK_FALSE(parse_proc_cgroup(t).has_value());
  }
}

TEST_CASE("parse_mountinfo finds the v1 memory and v2 mounts") {
  auto here = parse_mountinfo(kMountinfoHere);
  REQUIRE(here.v1_memory);
  CHECK(here.v1_memory->mount_point == "/sys/fs/cgroup/memory");
  CHECK(here.v1_memory->root == "/");
  REQUIRE(here.v2);
  CHECK(here.v2->mount_point == "/sys/fs/cgroup/unified");

  auto host = parse_mountinfo(kMountinfoV2Host);
  CHECK_FALSE(host.v1_memory);
  REQUIRE(host.v2);
  CHECK(host.v2->mount_point == "/sys/fs/cgroup");

  // A container that bind-mounts its own subtree, with an escaped space in the mount point.
  auto container = parse_mountinfo(
      "50 40 0:32 /docker/abc /sys/fs/cgroup/my\\040memory ro,nosuid - cgroup cgroup rw,memory\n");
  REQUIRE(container.v1_memory);
  CHECK(container.v1_memory->mount_point == "/sys/fs/cgroup/my memory");
  CHECK(container.v1_memory->root == "/docker/abc");

  auto junk = parse_mountinfo("no dash here\n1 2 3\n - cgroup2\n35 31 0:32 / /x rw - cgroup cgroup rw,cpu\n");
  CHECK_FALSE(junk.v1_memory);
  CHECK_FALSE(junk.v2);
}

TEST_CASE("parse_limit_bytes: numbers, max, the v1 sentinel, hostile text") {
  auto n = parse_limit_bytes("3221225472\n");
  REQUIRE(n);
  CHECK_FALSE(n->unlimited);
  CHECK(n->bytes == 3221225472ull);
  CHECK(parse_limit_bytes("max\n")->unlimited);
  CHECK(parse_limit_bytes("9223372036854771712\n")->unlimited);  // captured: v1 memory.limit_in_bytes here
  CHECK(parse_limit_bytes("4611686018427387904")->unlimited);    // 2^62: the threshold
  CHECK_FALSE(parse_limit_bytes("4611686018427387903")->unlimited);
  const char* bad[] = {"", "\n", "-1", "maximum", "12G", "1 2", "18446744073709551616"};
  for (const char* t : bad) {
    CAPTURE(t);
    CHECK_FALSE(parse_limit_bytes(t).has_value());
  }
}

TEST_CASE("parse_keyed_u64: memory.events and memory.oom_control") {
  // Captured: v1 memory.oom_control here.
  const char* oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n";
  CHECK(parse_keyed_u64(oom_control, "oom_kill") == 0u);
  CHECK(parse_keyed_u64(oom_control, "under_oom") == 0u);
  const char* events = "low 0\nhigh 12\nmax 3\noom 2\noom_kill 2\noom_group_kill 0\n";
  CHECK(parse_keyed_u64(events, "oom_kill") == 2u);   // not oom_group_kill, not oom
  CHECK(parse_keyed_u64(events, "oom") == 2u);
  CHECK_FALSE(parse_keyed_u64("oom_kill_disable 0\nunder_oom 0\n", "oom_kill"));  // kernels before 4.13
  CHECK_FALSE(parse_keyed_u64("oom_kill x\n", "oom_kill"));
  CHECK_FALSE(parse_keyed_u64("oom_kill\n", "oom_kill"));
  CHECK_FALSE(parse_keyed_u64("oom_kill -1\n", "oom_kill"));
}

TEST_CASE("find_memory_cgroup and read_cgroup on a fake v1 tree") {
  test::TempDir root;
  root.write("proc/self/cgroup", kProcCgroupHere);
  root.write("proc/self/mountinfo", kMountinfoHere);
  const std::string dir = "sys/fs/cgroup/memory/process_api/1e422e4b0a58a75d25af1a28e525ad53/";
  root.write(dir + "memory.limit_in_bytes", "9223372036854771712\n");
  root.write(dir + "memory.usage_in_bytes", "11026432\n");
  root.write(dir + "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n");
  root.write(dir + "memory.memsw.limit_in_bytes", "9223372036854771712\n");
  root.write(dir + "memory.memsw.usage_in_bytes", "11485184\n");
  // The parent process_api group is limited to 3 GiB: the kernel reports it as hierarchical.
  root.write(dir + "memory.stat", "cache 100\nrss 200\nhierarchical_memory_limit 3221225472\n"
                                  "hierarchical_memsw_limit 9223372036854771712\ntotal_inactive_file 1048576\n");
  root.write("proc/meminfo", "MemTotal: 25165824 kB\nMemAvailable: 20971520 kB\n");

  auto found = find_memory_cgroup(root.path());
  REQUIRE(found.cgroup);
  CHECK(found.cgroup->version == CgroupVersion::kV1);
  CHECK(found.cgroup->dir == root.path() / dir.substr(0, dir.size() - 1));
  auto r = read_cgroup(*found.cgroup);
  CHECK_FALSE(r.unlimited);
  CHECK(r.limit_bytes == 3221225472ull);
  CHECK(r.usage_bytes == 11026432u);
  CHECK(r.oom_kill_count == 3u);
  CHECK_FALSE(r.memsw_limit_bytes);
  CHECK(r.memsw_usage_bytes == 11485184u);
  CHECK(r.inactive_file_bytes == 1048576u);
  CHECK(cgroup_available_bytes(r) == 3221225472ull - (11026432 - 1048576));

  // The machine reading takes the lesser of MemAvailable (20 GiB) and the cgroup's room.
  MachineMemory machine(root.path());
  auto m = machine.read();
  REQUIRE(m.available_bytes);
  CHECK(*m.available_bytes == 3221225472ull - (11026432 - 1048576));
  CHECK_FALSE(m.psi);  // no pressure file in the fake tree
}

TEST_CASE("find_memory_cgroup and read_cgroup on a fake v2 tree with a limited ancestor") {
  test::TempDir root;
  root.write("proc/self/cgroup", "0::/user.slice/job.scope\n");
  root.write("proc/self/mountinfo", kMountinfoV2Host);
  root.write("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n");
  root.write("sys/fs/cgroup/user.slice/memory.max", "2147483648\n");
  root.write("sys/fs/cgroup/user.slice/job.scope/memory.max", "max\n");
  root.write("sys/fs/cgroup/user.slice/job.scope/memory.current", "1073741824\n");
  root.write("sys/fs/cgroup/user.slice/job.scope/memory.events",
             "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n");
  root.write("sys/fs/cgroup/user.slice/job.scope/memory.stat", "anon 900000000\nfile 100000000\ninactive_file 73741824\n");
  root.write("sys/fs/cgroup/user.slice/job.scope/memory.swap.max", "0\n");
  root.write("sys/fs/cgroup/user.slice/job.scope/memory.pressure",
             "some avg10=4.00 avg60=1.00 avg300=0.50 total=1000\nfull avg10=2.00 avg60=0.50 avg300=0.10 total=500\n");
  root.write("proc/pressure/memory", "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n");

  auto found = find_memory_cgroup(root.path());
  REQUIRE(found.cgroup);
  CHECK(found.cgroup->version == CgroupVersion::kV2);
  CHECK(found.cgroup->path == "/user.slice/job.scope");
  auto r = read_cgroup(*found.cgroup);
  CHECK(r.limit_bytes == 2147483648ull);  // the parent's limit binds the unlimited child
  CHECK(r.usage_bytes == 1073741824ull);
  CHECK(r.oom_kill_count == 1u);
  CHECK(r.swap_limit_bytes == 0u);
  REQUIRE(r.pressure);
  CHECK(r.pressure->full_avg10 == doctest::Approx(2.0));
  CHECK(cgroup_available_bytes(r) == 2147483648ull - (1073741824ull - 73741824ull));

  // The cgroup's pressure is preferred over the machine's.
  root.write("proc/meminfo", "MemTotal: 25165824 kB\nMemAvailable: 20971520 kB\n");
  auto m = MachineMemory(root.path()).read();
  REQUIRE(m.psi);
  CHECK(m.psi->some_avg10 == doctest::Approx(4.0));

  // Without the memory controller in the v2 hierarchy there is no memory cgroup, and we say why.
  root.write("sys/fs/cgroup/cgroup.controllers", "cpu pids\n");
  auto none = find_memory_cgroup(root.path());
  CHECK_FALSE(none.cgroup);
  CHECK(none.reason.find("no memory controller") != std::string::npos);
}

TEST_CASE("find_memory_cgroup: a container's bind-mounted subtree, and nothing mounted") {
  test::TempDir root;
  root.write("proc/self/cgroup", "4:memory:/docker/abc\n");
  root.write("proc/self/mountinfo", "50 40 0:32 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n");
  root.write("sys/fs/cgroup/memory/memory.limit_in_bytes", "1073741824\n");
  auto found = find_memory_cgroup(root.path());
  REQUIRE(found.cgroup);
  CHECK(found.cgroup->dir == root.path() / "sys/fs/cgroup/memory");
  CHECK(read_cgroup(*found.cgroup).limit_bytes == 1073741824ull);

  root.write("proc/self/mountinfo", "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n");
  auto none = find_memory_cgroup(root.path());
  CHECK_FALSE(none.cgroup);
  CHECK(none.reason == "no memory cgroup hierarchy is mounted");

  auto missing = find_memory_cgroup(root.path() / "nowhere");
  CHECK_FALSE(missing.cgroup);
  CHECK(missing.reason.find("cannot read") != std::string::npos);
}

TEST_CASE("a real v1 memory cgroup's limit is read back as the budget, and its OOM kill is counted" *
          doctest::skip(test::cgroup_v1_unavailable())) {
  std::string why_not;
  auto cg = test::CgroupV1::create(300ull << 20, &why_not);
  REQUIRE_MESSAGE(cg, "cannot create a v1 memory cgroup here: " << why_not);
  {
    // A process placed in the cgroup before it allocates (a shell moves itself, then execs memhog):
    // memguard finds the cgroup from that process's /proc entry.
    test::MemhogProcess hog("/bin/sh", {"-c", in_cgroup(*cg) + AB_MEMHOG_BIN " --mib 20"});
    REQUIRE(hog.wait_ready());
    auto found = find_memory_cgroup("/", std::to_string(hog.pid()));
    REQUIRE_MESSAGE(found.cgroup, found.reason);
    CHECK(found.cgroup->version == CgroupVersion::kV1);
    CHECK(found.cgroup->path == cg->path());
    CHECK(found.cgroup->dir == cg->dir());
    auto r = read_cgroup(*found.cgroup);
    CHECK(r.limit_bytes == 300ull << 20);
    REQUIRE(r.usage_bytes);
    CHECK(*r.usage_bytes >= 20ull << 20);  // memhog's touched pages are charged here
    CHECK(*r.usage_bytes < 300ull << 20);
    CHECK(r.oom_kill_count == 0u);

    auto b = effective_budget({std::nullopt, std::nullopt, r.limit_bytes, 24ull << 30});
    REQUIRE(b.ok());
    CHECK(b->ceiling_source == "cgroup limit");
    CHECK(b->limit_bytes == 300ull << 20);
    CHECK(b->effective_bytes == (300ull << 20) - (150ull << 20));  // tiny cgroup: half is reserved
  }
  {
    // Asking for more than the limit: the kernel kills it, and both readers count the kill.
    test::MemhogProcess hog("/bin/sh", {"-c", in_cgroup(*cg) + AB_MEMHOG_BIN " --mib 400"});
    CHECK_FALSE(hog.wait_ready());
    int status = hog.wait();
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGKILL);
    auto found = find_memory_cgroup("/", "self");
    REQUIRE(found.cgroup);
    // The kernel counts the kill just after sending SIGKILL, so the count may trail the death a
    // little: wait for it (bounded; not a timing assertion).
    const MemoryCgroup test_cgroup{CgroupVersion::kV1, cg->path(), cg->dir(), found.cgroup->mount_dir};
    auto reading = read_cgroup(test_cgroup);
    for (int i = 0; i < 500 && reading.oom_kill_count.value_or(0) == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      reading = read_cgroup(test_cgroup);
    }
    CHECK(reading.oom_kill_count == 1u);
    CHECK(cg->oom_kill_count() == 1u);
  }
}

}  // namespace ab
