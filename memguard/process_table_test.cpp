// Tests for the process-tree walk: pure, on a fake /proc, and on a real worker with a grandchild.
#include "memguard/process_table.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <string>

#include "tests/testutil/memhog_process.h"
#include "tests/testutil/temp_dir.h"

namespace ab {
namespace {

std::string stat_line(pid_t pid, pid_t ppid) {
  return std::to_string(pid) + " (w) S " + std::to_string(ppid) + " 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0\n";
}

}  // namespace

TEST_CASE("tree_members: descendants breadth-first, strangers excluded") {
  //   10 ─┬─ 11 ── 13
  //       └─ 12
  //   20 ── 21   (another worker)
  std::vector<std::pair<pid_t, pid_t>> t = {{1, 0}, {10, 1}, {11, 10}, {12, 10}, {13, 11}, {20, 1}, {21, 20}};
  auto m = tree_members(10, t);
  REQUIRE(m.size() == 4);
  CHECK(m[0] == 10);
  CHECK(std::is_permutation(m.begin() + 1, m.begin() + 3, std::vector<pid_t>{11, 12}.begin()));
  CHECK(m[3] == 13);
  CHECK(tree_members(20, t) == std::vector<pid_t>{20, 21});
  CHECK(tree_members(13, t) == std::vector<pid_t>{13});
  CHECK(tree_members(99, t).empty());
  // A corrupt cycle must end.
  CHECK(tree_members(5, {{5, 6}, {6, 5}}).size() == 2);
}

TEST_CASE("ProcessTable on a fake /proc: new pids read once, vanished and malformed pids skipped") {
  test::TempDir dir;
  auto proc = dir.path() / "proc";
  dir.write("proc/1/stat", stat_line(1, 0));
  dir.write("proc/10/stat", stat_line(10, 1));
  dir.write("proc/11/stat", stat_line(11, 10));
  dir.write("proc/12/stat", "garbage");          // unreadable stat: left out
  std::filesystem::create_directories(proc / "13");  // a pid folder whose process exited mid-scan
  dir.write("proc/self/stat", stat_line(1, 0));  // non-numeric names are ignored
  dir.write("proc/meminfo", "MemTotal: 1 kB\n");

  ProcessTable table(proc);
  table.refresh();
  CHECK(table.stats_read_last_refresh() == 5);  // 1, 10, 11, 12, 13
  CHECK(table.size() == 3);
  CHECK(table.tree(10) == std::vector<pid_t>{10, 11});

  // A new grandchild appears: an incremental refresh reads only its stat.
  dir.write("proc/14/stat", stat_line(14, 11));
  table.refresh();
  CHECK(table.stats_read_last_refresh() == 3);  // 14, and 12 and 13 again (never cached)
  CHECK(table.tree(10) == std::vector<pid_t>{10, 11, 14});

  // 11 exits: its folder goes, and so does it from the tree (14 is reparented by the kernel).
  std::filesystem::remove_all(proc / "11");
  dir.write("proc/14/stat", stat_line(14, 1));
  table.refresh(/*full=*/true);
  CHECK(table.tree(10) == std::vector<pid_t>{10});
  CHECK(table.tree(11).empty());
}

TEST_CASE("ProcessTable on the real /proc finds a worker's child and grandchild") {
  test::MemhogProcess worker(AB_MEMHOG_BIN, {"--mib", "1", "--child-mib", "1", "--child-depth", "2"});
  REQUIRE(worker.wait_ready());
  ProcessTable table;
  table.refresh();
  auto tree = table.tree(worker.pid());
  REQUIRE(tree.size() == 3);
  CHECK(tree[0] == worker.pid());
  // Each member's parent is the one before it: worker → child → grandchild.
  ProcessTable again;
  again.refresh(true);
  CHECK(again.tree(tree[1]) == std::vector<pid_t>{tree[1], tree[2]});

  worker.kill();
  table.refresh();
  CHECK(table.tree(worker.pid()).empty());
}

}  // namespace ab

namespace ab {

TEST_CASE("read_last_pid: captured /proc/loadavg, hostile text, and the live file") {
  test::TempDir dir;
  dir.write("proc/loadavg", "10.93 10.77 8.13 12/171 13062\n");  // captured here under load
  CHECK(read_last_pid(dir.path() / "proc") == 13062);
  const char* bad[] = {"", "\n", "10.93 10.77 8.13 12/171", "10.93 10.77 8.13 12/171 x", "1 2 3 4 5", "13062"};
  for (const char* t : bad) {
    CAPTURE(t);
    dir.write("proc/loadavg", t);
    CHECK_FALSE(read_last_pid(dir.path() / "proc"));
  }
  auto live = read_last_pid("/proc");
  REQUIRE(live);
  CHECK(*live > 0);
}

}  // namespace ab
