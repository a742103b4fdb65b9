// ProcSampler tests: the estimate/peak logic on a fake /proc, then real processes measured against the truth.
#include "memguard/proc_sampler.h"

#include <sys/mman.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "memguard/process_memory.h"
#include "tests/testutil/memhog_process.h"
#include "tests/testutil/temp_dir.h"

namespace ab {
namespace {

constexpr std::uint64_t kMiB = 1ull << 20;

// A fake /proc process: stat (for the tree), statm (RSS) and smaps_rollup (PSS/USS/swap), in MiB.
void fake_process(const test::TempDir& dir, pid_t pid, pid_t ppid, std::uint64_t rss_mib, std::uint64_t pss_mib,
                  std::uint64_t uss_mib) {
  const std::string p = "proc/" + std::to_string(pid) + "/";
  dir.write(p + "stat", std::to_string(pid) + " (fake) S " + std::to_string(ppid) +
                            " 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0\n");
  const std::uint64_t pages = rss_mib * kMiB / page_size_bytes();
  dir.write(p + "statm", std::to_string(pages * 2) + " " + std::to_string(pages) + " 0 1 0 1 0\n");
  dir.write(p + "smaps_rollup", "Rss: " + std::to_string(rss_mib * 1024) + " kB\nPss: " + std::to_string(pss_mib * 1024) +
                                    " kB\nPrivate_Clean: 0 kB\nPrivate_Dirty: " + std::to_string(uss_mib * 1024) +
                                    " kB\nSwap: 4 kB\n");
}

// The rss only, as statm changes at every tick while smaps_rollup is read every few.
void fake_rss(const test::TempDir& dir, pid_t pid, std::uint64_t rss_mib) {
  const std::uint64_t pages = rss_mib * kMiB / page_size_bytes();
  dir.write("proc/" + std::to_string(pid) + "/statm", std::to_string(pages * 2) + " " + std::to_string(pages) + " 0 1 0 1 0\n");
}

const WatchReading* find(const SamplerSnapshot& s, std::uint64_t key) {
  for (const auto& w : s.watches)
    if (w.key == key) return &w;
  return nullptr;
}

// Ticks (bounded; not a timing assertion) until the sampler has read smaps_rollup for `key` after `after`.
WatchReading tick_until_measured(ProcSampler& sampler, std::uint64_t key, std::chrono::steady_clock::time_point after) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    sampler.tick();
    auto snap = sampler.snapshot();
    if (auto w = find(snap, key); w && w->pss_measured && w->sampled_at > after) return *w;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  FAIL("the sampler never produced a measured reading for key " << key);
  return {};
}

// The kernel's own peak RSS for a process (VmHWM in /proc/PID/status): an independent truth.
std::uint64_t vm_hwm_bytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string key; in >> key;) {
    if (key == "VmHWM:") {
      std::uint64_t kib = 0;
      in >> kib;
      return kib * 1024;
    }
  }
  return 0;
}

bool within(std::uint64_t measured, std::uint64_t truth, double tolerance) {
  double d = static_cast<double>(measured) - static_cast<double>(truth);
  return std::abs(d) <= tolerance * static_cast<double>(truth);
}

}  // namespace

TEST_CASE("ProcSampler on a fake /proc: cheap ticks estimate PSS from RSS, peaks survive, reset restarts them") {
  test::TempDir dir;
  fake_process(dir, 1, 0, 1, 1, 1);
  fake_process(dir, 100, 1, 300, 200, 150);   // the worker
  fake_process(dir, 101, 100, 100, 60, 40);   // its child
  fake_process(dir, 200, 1, 50, 50, 50);      // a stranger
  SamplerConfig config;
  config.root = dir.path();
  config.smaps_every_ticks = 4;
  config.scan_every_ticks = 1;  // the fake tree has no loadavg: look for new processes every tick
  config.read_vram = false;
  ProcSampler sampler(config);
  sampler.watch(7, 100);

  sampler.tick();  // tick 1: dear
  CHECK(sampler.snapshot().tick == 1);
  auto w = *find(sampler.snapshot(), 7);
  CHECK(w.processes == 2);
  CHECK(w.pss_measured);
  CHECK(w.rss_bytes == 400 * kMiB);
  CHECK(w.pss_bytes == 260 * kMiB);
  CHECK(w.uss_bytes == 190 * kMiB);
  CHECK(w.swap_bytes == 8 * 1024);

  fake_rss(dir, 101, 900);  // the child spikes by 800 MiB between two smaps reads
  sampler.tick();           // tick 2: cheap
  w = *find(sampler.snapshot(), 7);
  CHECK_FALSE(w.pss_measured);
  CHECK(w.rss_bytes == 1200 * kMiB);
  CHECK(w.pss_bytes == 1060 * kMiB);  // 260 + 800
  CHECK(w.uss_bytes == 990 * kMiB);   // 190 + 800

  fake_rss(dir, 101, 50);  // ... and falls below where it was
  sampler.tick();          // tick 3: cheap
  w = *find(sampler.snapshot(), 7);
  CHECK(w.pss_bytes == 210 * kMiB);  // 260 - 50
  CHECK(w.peak_rss_bytes == 1200 * kMiB);
  CHECK(w.peak_pss_bytes == 1060 * kMiB);
  CHECK(w.peak_uss_bytes == 990 * kMiB);

  // A grandchild appears; the next dear tick reads everything again.
  fake_process(dir, 102, 101, 30, 30, 30);
  sampler.tick();  // tick 4: cheap, but the new process's RSS counts at once
  w = *find(sampler.snapshot(), 7);
  CHECK(w.processes == 3);
  CHECK(w.rss_bytes == 380 * kMiB);
  sampler.tick();  // tick 5: dear
  w = *find(sampler.snapshot(), 7);
  CHECK(w.pss_measured);
  CHECK(w.pss_bytes == 290 * kMiB);  // 200 + 60 + 30 from the (unchanged) rollups

  // A new job on the same worker: peaks restart from the current reading.
  sampler.reset_peaks(7);
  w = *find(sampler.snapshot(), 7);
  CHECK(w.peak_pss_bytes == 1060 * kMiB);  // the snapshot is the last tick's, taken before the reset
  sampler.tick();
  w = *find(sampler.snapshot(), 7);
  CHECK(w.peak_rss_bytes == 380 * kMiB);
  CHECK(w.peak_pss_bytes == 290 * kMiB);

  // A member vanishing mid-read is skipped: an exited process's statm reads empty (or fails with
  // ESRCH) through the file the sampler keeps open.
  dir.write("proc/101/statm", "");
  sampler.tick();
  w = *find(sampler.snapshot(), 7);
  CHECK(w.processes == 2);
  CHECK(w.rss_bytes == 330 * kMiB);

  // The root exiting leaves an empty reading with the peaks kept; unwatch removes the key.
  std::filesystem::remove_all(dir.path() / "proc/100");
  sampler.tick();
  w = *find(sampler.snapshot(), 7);
  CHECK(w.processes == 0);
  CHECK(w.rss_bytes == 0);
  CHECK(w.pss_bytes == 0);
  CHECK(w.peak_rss_bytes == 380 * kMiB);
  sampler.unwatch(7);
  sampler.tick();
  CHECK(sampler.snapshot().watches.empty());
  CHECK(sampler.snapshot().tick == 9);

  // read_tree_now reads smaps for every member, independent of the ticks.
  auto now = sampler.read_tree_now(101);
  CHECK(now.pss_measured);
  CHECK(now.processes == 1);  // 101's statm is gone; 102 remains
  CHECK(now.pss_bytes == 30 * kMiB);
}

TEST_CASE("ProcSampler on a fake /proc: a tree watched again under a new key soon after keeps its smaps reading") {
  // A persistent worker takes job after job, each watched under its own key: the rollup is read
  // when the tree's turn comes, not again for every job (a LibTorch worker's costs a few ms).
  test::TempDir dir;
  fake_process(dir, 1, 0, 1, 1, 1);
  fake_process(dir, 100, 1, 300, 200, 150);  // the worker
  SamplerConfig config;
  config.root = dir.path();
  config.smaps_every_ticks = 4;
  config.smaps_cpu_share = 0;  // the tick count alone decides
  config.scan_every_ticks = 1;
  config.read_vram = false;
  ProcSampler sampler(config);
  sampler.watch(1, 100);
  sampler.tick();  // tick 0: new, read
  CHECK(find(sampler.snapshot(), 1)->pss_measured);
  sampler.unwatch(1);
  fake_rss(dir, 100, 340);  // the next job grows it by 40 MiB
  sampler.watch(2, 100);
  sampler.tick();  // tick 1: not new to the sampler, and not due
  auto w = *find(sampler.snapshot(), 2);
  CHECK_FALSE(w.pss_measured);
  CHECK(w.pss_bytes == 240 * kMiB);  // 200 + 40, from the reading it kept
  CHECK(w.peak_pss_bytes == 240 * kMiB);
  sampler.tick();
  sampler.tick();
  sampler.tick();  // tick 4: its turn
  CHECK(find(sampler.snapshot(), 2)->pss_measured);

  // Let go for longer than smaps_every_ticks, it is new again: its old reading may be stale.
  sampler.unwatch(2);
  for (int i = 0; i < 6; ++i) sampler.tick();
  sampler.watch(3, 100);
  sampler.tick();
  CHECK(find(sampler.snapshot(), 3)->pss_measured);
}

TEST_CASE("ProcSampler: the smaps ration stops dear reads once spent; without a ration they follow the tick count") {
  test::TempDir dir;
  fake_process(dir, 1, 0, 1, 1, 1);
  fake_process(dir, 100, 1, 300, 200, 150);
  fake_process(dir, 200, 1, 50, 40, 30);
  auto count_measured = [&](double share) {
    SamplerConfig config;
    config.root = dir.path();
    config.smaps_every_ticks = 4;
    config.smaps_cpu_share = share;
    config.smaps_credit_cap_ns = 0;  // nothing saved up: the first reads overdraw the ration
    config.read_vram = false;
    int measured = 0;
    ProcSampler sampler(config);
    sampler.watch(1, 100);
    sampler.watch(2, 200);
    for (int i = 0; i < 20; ++i) {
      sampler.tick();
      for (const auto& w : sampler.snapshot().watches) measured += w.pss_measured;
    }
    return measured;
  };
  CHECK(count_measured(0) == 10);      // ticks 0, 4, 8, 12, 16 for each of two trees
  CHECK(count_measured(1e-12) == 2);   // the first read of each tree only; estimates after
}

TEST_CASE("ProcSampler: a real child touching 200 MiB is measured within 5% (RSS and PSS)") {
  ProcSampler sampler;  // the defaults: smaps every 4th tick
  test::MemhogProcess hog(AB_MEMHOG_BIN, {"--mib", "200"});
  sampler.watch(1, hog.pid());
  REQUIRE(hog.wait_ready());
  auto ready_at = std::chrono::steady_clock::now();
  auto w = tick_until_measured(sampler, 1, ready_at);
  const std::uint64_t truth = 200 * kMiB;
  std::printf("200 MiB child: peak RSS %.1f MiB, peak PSS %.1f MiB, USS %.1f MiB, kernel VmHWM %.1f MiB\n",
              w.peak_rss_bytes / double(kMiB), w.peak_pss_bytes / double(kMiB), w.uss_bytes / double(kMiB),
              vm_hwm_bytes(hog.pid()) / double(kMiB));
  CHECK(w.processes == 1);
  CHECK(within(w.peak_rss_bytes, truth, 0.05));
  CHECK(within(w.peak_pss_bytes, truth, 0.05));
  CHECK(within(w.uss_bytes, truth, 0.05));
  CHECK(within(w.peak_rss_bytes, vm_hwm_bytes(hog.pid()), 0.05));

  auto now = sampler.read_tree_now(hog.pid());
  CHECK(now.pss_measured);
  CHECK(within(now.pss_bytes, truth, 0.05));

  // Machine readings arrive on the same ticks.
  auto snap = sampler.snapshot();
  REQUIRE(snap.machine.meminfo);
  CHECK(snap.machine.meminfo->mem_total_bytes.value_or(0) > truth);
  CHECK(snap.machine.available_bytes.value_or(0) > 0);
}

TEST_CASE("ProcSampler: two children sharing 100 MiB — RSS counts it twice, PSS once") {
  const std::string name = "/ab-memguard-test-" + std::to_string(::getpid());
  ::shm_unlink(name.c_str());
  SamplerConfig config;
  config.smaps_every_ticks = 1;
  ProcSampler sampler(config);
  {
    test::MemhogProcess a(AB_MEMHOG_BIN, {"--shared-mib", "100", "--shared-name", name});
    REQUIRE(a.wait_ready());
    test::MemhogProcess b(AB_MEMHOG_BIN, {"--shared-mib", "100", "--shared-name", name});
    REQUIRE(b.wait_ready());
    sampler.watch(1, a.pid());
    sampler.watch(2, b.pid());
    sampler.tick();
    auto snap = sampler.snapshot();
    const WatchReading* wa = find(snap, 1);
    const WatchReading* wb = find(snap, 2);
    REQUIRE(wa);
    REQUIRE(wb);
    std::uint64_t rss = wa->rss_bytes + wb->rss_bytes, pss = wa->pss_bytes + wb->pss_bytes;
    std::printf("shared 100 MiB: RSS %.1f + %.1f = %.1f MiB, PSS %.1f + %.1f = %.1f MiB\n", wa->rss_bytes / double(kMiB),
                wb->rss_bytes / double(kMiB), rss / double(kMiB), wa->pss_bytes / double(kMiB),
                wb->pss_bytes / double(kMiB), pss / double(kMiB));
    CHECK(within(rss, 200 * kMiB, 0.05));
    CHECK(within(pss, 100 * kMiB, 0.05));
    CHECK(within(wa->pss_bytes, 50 * kMiB, 0.05));
    CHECK(wa->uss_bytes < 5 * kMiB);  // nothing of the shared mapping is private to either
    a.close_stdin();
    b.close_stdin();
    CHECK(a.wait() == 0);
    CHECK(b.wait() == 0);
  }
  ::shm_unlink(name.c_str());  // memhog unlinks it; this is only for a failed run
}

TEST_CASE("ProcSampler: a grandchild's memory counts toward its worker's tree") {
  ProcSampler sampler(SamplerConfig{});
  test::MemhogProcess worker(AB_MEMHOG_BIN, {"--mib", "10", "--child-mib", "100", "--child-depth", "2"});
  REQUIRE(worker.wait_ready());
  sampler.watch(5, worker.pid());
  sampler.tick();
  auto w = *find(sampler.snapshot(), 5);
  std::printf("worker 10 MiB + grandchild 100 MiB: %zu processes, RSS %.1f MiB, PSS %.1f MiB\n", w.processes,
              w.rss_bytes / double(kMiB), w.pss_bytes / double(kMiB));
  CHECK(w.processes == 3);
  CHECK(within(w.rss_bytes, 110 * kMiB, 0.05));
  CHECK(within(w.pss_bytes, 110 * kMiB, 0.05));

  auto now = sampler.read_tree_now(worker.pid());
  CHECK(now.processes == 3);
  CHECK(within(now.pss_bytes, 110 * kMiB, 0.05));

  // The worker dies (and with it its descendants): the tree empties.
  worker.kill();
  auto gone = sampler.read_tree_now(worker.pid());
  CHECK(gone.processes == 0);
  CHECK(gone.rss_bytes == 0);
}

}  // namespace ab
