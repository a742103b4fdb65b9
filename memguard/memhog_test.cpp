// Tests of tests/memhog itself, the workload other modules' tests and benchmarks rely on.
#include <sys/wait.h>

#include <doctest/doctest.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include "memguard/proc_sampler.h"
#include "memguard/process_table.h"
#include "tests/testutil/memhog_process.h"
#include "tests/testutil/temp_dir.h"

namespace ab {
namespace {
constexpr std::uint64_t kMiB = 1ull << 20;
}

TEST_CASE("memhog: --in FILE --mib-per-mib R grows with its input; --out and --exit-code on exit") {
  test::TempDir dir;
  auto in = dir.write("input.bin", std::string(10 * kMiB, 'x'));
  auto out = dir.path() / "out.txt";
  test::MemhogProcess hog(AB_MEMHOG_BIN, {"--in", in.string(), "--mib-per-mib", "3", "--out", out.string(),
                                          "--exit-code", "3", "--hold-until-stdin-eof"});
  REQUIRE(hog.wait_ready());
  auto m = read_tree_memory(hog.pid(), "/proc");
  CHECK(m.rss_bytes >= 30 * kMiB);
  CHECK(m.rss_bytes <= 30 * kMiB + 8 * kMiB);  // plus the program itself
  CHECK_FALSE(std::filesystem::exists(out));    // written only on the way out
  hog.close_stdin();
  int status = hog.wait();
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 3);
  std::ifstream f(out);
  std::string text;
  std::getline(f, text);
  CHECK(text == "ok");
  CHECK_FALSE(std::filesystem::exists(out.string() + ".tmp"));
}

TEST_CASE("memhog: --hold-s exits by itself; a bad flag exits 2") {
  test::MemhogProcess quick(AB_MEMHOG_BIN, {"--mib", "1", "--hold-s", "0"});
  CHECK(quick.wait_ready());
  int status = quick.wait();
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);

  test::MemhogProcess bad(AB_MEMHOG_BIN, {"--gigabytes", "5"});
  CHECK_FALSE(bad.wait_ready());
  status = bad.wait();
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 2);
}

TEST_CASE("memhog: its children die with it") {
  pid_t child_pid = 0;
  {
    test::MemhogProcess hog(AB_MEMHOG_BIN, {"--child-mib", "1", "--child-depth", "2"});
    REQUIRE(hog.wait_ready());
    ProcessTable table;
    table.refresh();
    auto tree = table.tree(hog.pid());
    REQUIRE(tree.size() == 3);
    child_pid = tree[2];
  }  // SIGKILL to the top: PDEATHSIG takes the chain down
  bool gone = false;
  for (int i = 0; i < 500 && !gone; ++i) {
    std::ifstream stat("/proc/" + std::to_string(child_pid) + "/stat");
    std::string line;
    gone = !std::getline(stat, line) || line.find(") Z ") != std::string::npos;
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(gone);
}

}  // namespace ab
