// ProcMemoryProbe on a fake /proc: with shared weights, each worker is charged without its share of
// them (Pss_Shmem) and the copy is charged once, never below the model file's size.
#include "orchestrator/platform/proc_memory_probe.h"

#include <doctest/doctest.h>

#include <fstream>
#include <string>

#include "memguard/process_memory.h"
#include "tests/testutil/temp_dir.h"

namespace ab {
namespace {

constexpr std::uint64_t kMiB = 1ull << 20;

// A fake /proc process (stat, statm, smaps_rollup with Pss_Shmem), sizes in MiB.
void fake_worker(const test::TempDir& dir, pid_t pid, std::uint64_t rss_mib, std::uint64_t pss_mib,
                 std::uint64_t pss_shmem_mib) {
  const std::string p = "proc/" + std::to_string(pid) + "/";
  dir.write(p + "stat", std::to_string(pid) + " (worker) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0\n");
  const std::uint64_t pages = rss_mib * kMiB / page_size_bytes();
  dir.write(p + "statm", std::to_string(pages * 2) + " " + std::to_string(pages) + " 0 1 0 1 0\n");
  dir.write(p + "smaps_rollup", "Rss: " + std::to_string(rss_mib * 1024) + " kB\nPss: " + std::to_string(pss_mib * 1024) +
                                    " kB\nPss_Shmem: " + std::to_string(pss_shmem_mib * 1024) +
                                    " kB\nPrivate_Clean: 0 kB\nPrivate_Dirty: 60 kB\nSwap: 0 kB\n");
}

}  // namespace

TEST_CASE("ProcMemoryProbe: shared weights are charged once, each worker without its share of them") {
  test::TempDir dir;
  // Two workers mapping a 1200 MiB copy: each shows 600 MiB of it in its PSS.
  fake_worker(dir, 100, 1400, 800, 600);  // running job 7
  fake_worker(dir, 200, 1300, 700, 600);  // idle
  const auto weights = dir.path() / "ab-weights-1-00000000000000ab";
  {
    std::ofstream f(weights, std::ios::binary);
    f << std::string(1 << 20, 'w');  // 1 MiB written so far
  }
  const std::vector<LiveJob> live = {{7, 100}};
  const std::vector<pid_t> idle = {200};

  SUBCASE("charged without Pss_Shmem; the copy once, at least the model file's size") {
    ProcMemoryProbe probe(dir.path() / "proc", weights, 1200 * kMiB);
    const ProbeReading r = probe.read(live, idle, 0);
    REQUIRE(r.sample.jobs.size() == 1);
    CHECK(r.sample.jobs[0].id == 7);
    CHECK(r.sample.jobs[0].pss_bytes == 200 * kMiB);
    CHECK(r.sample.idle_pss_bytes == 100 * kMiB);
    CHECK(r.sample.idle_workers == 1);
    CHECK(r.sample.shared_bytes == 1200 * kMiB);  // not written whole yet: the expected size holds the room
    // A fresh exact reading (taken before a kill) is charged the same way.
    const ProbeReading exact = probe.read(live, idle, 10, /*exact=*/true);
    REQUIRE(exact.sample.jobs.size() == 1);
    CHECK(exact.sample.jobs[0].pss_bytes == 200 * kMiB);
  }
  SUBCASE("the file's allocated size once it is larger than expected") {
    ProcMemoryProbe probe(dir.path() / "proc", weights, 0);
    const ProbeReading r = probe.read(live, idle, 0);
    CHECK(r.sample.shared_bytes >= kMiB);
    CHECK(r.sample.shared_bytes <= kMiB + 64 * 1024);
  }
  SUBCASE("without shared weights PSS is charged whole and nothing is shared") {
    ProcMemoryProbe probe(dir.path() / "proc");
    const ProbeReading r = probe.read(live, idle, 0);
    REQUIRE(r.sample.jobs.size() == 1);
    CHECK(r.sample.jobs[0].pss_bytes == 800 * kMiB);
    CHECK(r.sample.idle_pss_bytes == 700 * kMiB);
    CHECK(r.sample.shared_bytes == 0);
  }
}

}  // namespace ab
