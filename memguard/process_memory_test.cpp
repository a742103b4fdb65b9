// Table tests for the statm, smaps_rollup and stat parsers, with text captured on this machine and hostile text.
#include "memguard/process_memory.h"

#include <unistd.h>

#include <doctest/doctest.h>

#include "tests/testutil/temp_dir.h"

namespace ab {

// Captured with `cat /proc/self/smaps_rollup` on Linux 6.18 (Debian 12 userland), this machine.
constexpr const char* kRollupLinux618 = R"(55c4426e9000-7fffa6b9e000 ---p 00000000 00:00 0                          [rollup]
Rss:                1700 kB
Pss:                 543 kB
Pss_Dirty:           116 kB
Pss_Anon:            116 kB
Pss_File:            427 kB
Pss_Shmem:             0 kB
Shared_Clean:       1456 kB
Shared_Dirty:          0 kB
Private_Clean:       128 kB
Private_Dirty:       116 kB
Referenced:         1700 kB
Anonymous:           116 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
)";

// The Linux 4.14-5.x layout: no Pss_Anon/Pss_File/Pss_Shmem/Pss_Dirty lines, and swap in use.
constexpr const char* kRollupLinux414 = R"(00400000-7ffd1b7e5000 ---p 00000000 00:00 0                          [rollup]
Rss:              204800 kB
Pss:              153600 kB
Shared_Clean:      51200 kB
Shared_Dirty:          0 kB
Private_Clean:      1024 kB
Private_Dirty:    152576 kB
Referenced:       204800 kB
Anonymous:        152576 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:               2048 kB
SwapPss:            2048 kB
Locked:                0 kB
)";

TEST_CASE("parse_smaps_rollup on real and older-kernel text") {
  auto a = parse_smaps_rollup(kRollupLinux618);
  REQUIRE(a);
  CHECK(a->rss_bytes == 1700ull * 1024);
  CHECK(a->pss_bytes == 543ull * 1024);
  CHECK(a->uss_bytes == (128ull + 116) * 1024);
  CHECK(a->swap_bytes == 0);
  CHECK(a->pss_shmem_bytes == 0);

  auto b = parse_smaps_rollup(kRollupLinux414);
  REQUIRE(b);
  CHECK(b->rss_bytes == 204800ull * 1024);
  CHECK(b->pss_bytes == 153600ull * 1024);
  CHECK(b->uss_bytes == (1024ull + 152576) * 1024);
  CHECK(b->swap_bytes == 2048ull * 1024);
  CHECK(b->pss_shmem_bytes == 0);  // no such line before 5.8

  // A worker mapping shared weights under /dev/shm: their share shows as Pss_Shmem.
  auto c = parse_smaps_rollup("Rss: 1398784 kB\nPss: 380928 kB\nPss_Shmem: 308224 kB\nPrivate_Dirty: 63488 kB\n");
  REQUIRE(c);
  CHECK(c->pss_shmem_bytes == 308224ull * 1024);
  CHECK(c->pss_bytes == 380928ull * 1024);
}

TEST_CASE("parse_smaps_rollup rejects hostile text") {
  struct Row {
    const char* name;
    const char* text;
  };
  const Row rows[] = {
      {"empty", ""},
      {"no Pss", "Rss: 10 kB\nPrivate_Dirty: 10 kB\n"},
      {"no Rss", "Pss: 10 kB\n"},
      {"truncated value", "Rss: 10 kB\nPss: "},
      {"truncated unit", "Rss: 10 kB\nPss: 5"},
      {"wrong unit", "Rss: 10 MB\nPss: 5 kB\n"},
      {"negative", "Rss: -10 kB\nPss: 5 kB\n"},
      {"absurd", "Rss: 99999999999999999999 kB\nPss: 5 kB\n"},
      {"beyond any address space", "Rss: 2251799813685248 kB\nPss: 5 kB\n"},
      {"junk after unit", "Rss: 10 kB x\nPss: 5 kB\n"},
      {"bad Private_Dirty", "Rss: 10 kB\nPss: 5 kB\nPrivate_Dirty: lots\n"},
  };
  for (const auto& r : rows) {
    CAPTURE(r.name);
    CHECK_FALSE(parse_smaps_rollup(r.text).has_value());
  }
  // Missing optional fields default to zero; a missing final newline is fine.
  auto minimal = parse_smaps_rollup("Rss: 10 kB\nPss: 5 kB");
  REQUIRE(minimal);
  CHECK(minimal->uss_bytes == 0);
  CHECK(minimal->pss_bytes == 5120);
}

TEST_CASE("parse_statm") {
  // Captured: `cat /proc/self/statm` on this machine ("765 422 394 5 0 123 0"), 4 KiB pages.
  auto s = parse_statm("765 422 394 5 0 123 0\n", 4096);
  REQUIRE(s);
  CHECK(s->size_bytes == 765ull * 4096);
  CHECK(s->resident_bytes == 422ull * 4096);
  CHECK(s->shared_bytes == 394ull * 4096);
  CHECK(parse_statm("10 5 2", 65536)->resident_bytes == 5ull * 65536);  // arm64 64 KiB pages

  const char* bad[] = {"", "\n", "765", "765 422", "765 -422 1", "a b c", "765 422 39x4",
                       "99999999999999999999 1 1", "1 1125899906842624 1"};
  for (const char* t : bad) {
    CAPTURE(t);
    CHECK_FALSE(parse_statm(t, 4096).has_value());
  }
}

TEST_CASE("parse_proc_stat finds ppid after a hostile comm") {
  // Captured: `cat /proc/self/stat` on this machine.
  auto a = parse_proc_stat(
      "7124 (cat) R 7111 7111 6146 0 -1 4194304 101 0 0 0 0 0 0 0 20 0 1 0 45036 3133440 380 "
      "18446744073709551615 94709304033280 94709304053161 140732213613536 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n");
  REQUIRE(a);
  CHECK(a->pid == 7124);
  CHECK(a->ppid == 7111);
  CHECK(a->state == 'R');
  CHECK(a->start_time_ticks == 45036);
  CHECK(a->cpu_ticks == 0);
  auto busy = parse_proc_stat("9 (w) S 1 9 9 0 -1 0 0 0 0 0 250 31 7 2 20 0 4 0 1234 0 0");
  REQUIRE(busy);
  CHECK(busy->cpu_ticks == 281);  // utime 250 + stime 31; children's 7 + 2 are not its own
  CHECK(busy->start_time_ticks == 1234);

  // comm may contain spaces and ") (" — a program can name itself anything up to 15 bytes.
  auto b = parse_proc_stat("42 (a) b) (c d) S 7 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 999 0 0");
  REQUIRE(b);
  CHECK(b->pid == 42);
  CHECK(b->ppid == 7);
  CHECK(b->start_time_ticks == 999);

  const char* bad[] = {"", "7124", "7124 (cat", "7124 (cat) R", "7124 (cat) R x 1 2 3",
                       "7124 (cat) RR 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5",
                       "0 (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5",
                       "7124 (cat) R 7111 7111 6146"};
  for (const char* t : bad) {
    CAPTURE(t);
    CHECK_FALSE(parse_proc_stat(t).has_value());
  }
}

TEST_CASE("readers: a live process, a vanished pid, and a fake tree") {
  auto self = read_statm("/proc", ::getpid());
  REQUIRE(self);
  CHECK(self->resident_bytes > 0);
  auto stat = read_proc_stat("/proc", ::getpid());
  REQUIRE(stat);
  CHECK(stat->ppid == ::getppid());

  ReadError err = ReadError::kNone;
  CHECK_FALSE(read_statm("/proc", 0x7ffffff0, &err));  // above any pid_max: never exists
  CHECK(err == ReadError::kGone);

  test::TempDir dir;
  dir.write("proc/77/smaps_rollup", kRollupLinux414);
  dir.write("proc/78/smaps_rollup", "Rss: junk\n");
  auto fake = read_smaps_rollup(dir.path() / "proc", 77, &err);
  REQUIRE(fake);
  CHECK(err == ReadError::kNone);
  CHECK(fake->pss_bytes == 153600ull * 1024);
  CHECK_FALSE(read_smaps_rollup(dir.path() / "proc", 78, &err));
  CHECK(err == ReadError::kMalformed);
}

}  // namespace ab

namespace ab {

TEST_CASE("StatmReader keeps files open, survives exits, and sweeps unused files") {
  test::TempDir dir;
  dir.write("proc/5/statm", "10 4 2 1 0 3 0\n");
  dir.write("proc/6/statm", "10 8 2 1 0 3 0\n");
  StatmReader reader(dir.path() / "proc");
  CHECK(reader.read(5)->resident_bytes == 4 * page_size_bytes());
  CHECK(reader.read(6)->resident_bytes == 8 * page_size_bytes());
  CHECK(reader.open_files() == 2);
  dir.write("proc/5/statm", "10 7 2 1 0 3 0\n");  // rewritten in place: the open file sees it
  CHECK(reader.read(5)->resident_bytes == 7 * page_size_bytes());
  dir.write("proc/6/statm", "");                   // how an exited process reads through an open file
  ReadError err = ReadError::kNone;
  CHECK_FALSE(reader.read(6, &err));
  CHECK(err == ReadError::kGone);
  CHECK_FALSE(reader.read(7, &err));               // never existed
  CHECK(err == ReadError::kGone);
  reader.sweep();  // 5 was read since construction: kept
  CHECK(reader.open_files() == 1);
  reader.sweep();  // not read since the last sweep: closed
  CHECK(reader.open_files() == 0);

  // The real thing: our own statm through a kept file, twice.
  StatmReader live;
  auto a = live.read(::getpid());
  auto b = live.read(::getpid());
  REQUIRE(a);
  REQUIRE(b);
  CHECK(b->resident_bytes > 0);
  CHECK(live.open_files() == 1);
}

TEST_CASE("PolledFile re-reads a file from the start and reports a missing one") {
  test::TempDir dir;
  auto path = dir.write("memory.current", "123\n");
  PolledFile f(path);
  CHECK(f.read() == std::string_view("123\n"));
  dir.write("memory.current", "4567\n");
  CHECK(f.read() == std::string_view("4567\n"));
  PolledFile missing(dir.path() / "nope");
  CHECK_FALSE(missing.read());
  PolledFile meminfo("/proc/meminfo");
  REQUIRE(meminfo.read());
  CHECK(meminfo.read()->substr(0, 9) == "MemTotal:");
}

}  // namespace ab
