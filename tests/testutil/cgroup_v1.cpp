// Test cgroups (v1 memory controller): create, limit, populate, clean up.
#include "tests/testutil/cgroup_v1.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace ab::test {
namespace {

namespace fs = std::filesystem;

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Result<Done> write_file(const fs::path& p, const std::string& value) {
  std::ofstream out(p);
  out << value;
  out.flush();
  if (!out) return Result<Done>::failure("cannot write " + value + " to " + p.string() + ": " + std::strerror(errno));
  return Done{};
}

}  // namespace

std::unique_ptr<CgroupV1> CgroupV1::create(std::uint64_t limit_bytes, std::string* why_not) {
  // The memory line of /proc/self/cgroup: "4:memory:/process_api/1e42".
  std::string own;
  {
    std::istringstream lines(slurp("/proc/self/cgroup"));
    for (std::string line; std::getline(lines, line);) {
      auto a = line.find(':'), b = line.find(':', a + 1);
      if (a == std::string::npos || b == std::string::npos) continue;
      std::string controllers = "," + line.substr(a + 1, b - a - 1) + ",";
      if (controllers.find(",memory,") != std::string::npos) own = line.substr(b + 1);
    }
  }
  // The v1 memory mount from mountinfo: "... /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory".
  std::string mount, mount_root;
  {
    std::istringstream lines(slurp("/proc/self/mountinfo"));
    for (std::string line; std::getline(lines, line);) {
      auto dash = line.find(" - cgroup ");
      if (dash == std::string::npos) continue;
      std::string opts = "," + line.substr(line.rfind(' ') + 1) + ",";
      if (opts.find(",memory,") == std::string::npos) continue;
      std::istringstream f(line.substr(0, dash));
      std::string id, parent, dev;
      f >> id >> parent >> dev >> mount_root >> mount;
      break;
    }
  }
  if (own.empty() || mount.empty()) {
    *why_not = "no cgroup v1 memory hierarchy is mounted for this process (cgroup v2 only, or none)";
    return nullptr;
  }
  std::string rel = own;
  if (mount_root != "/" && rel.rfind(mount_root, 0) == 0) rel = rel.substr(mount_root.size());
  static std::atomic<int> counter{0};
  std::string name = "ab-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  fs::path dir = fs::path(mount) / fs::path(rel).relative_path() / name;
  if (::mkdir(dir.c_str(), 0755) != 0) {
    *why_not = "mkdir " + dir.string() + ": " + std::strerror(errno) + " (creating cgroups is not permitted here)";
    return nullptr;
  }
  std::unique_ptr<CgroupV1> cg(new CgroupV1(dir, (own == "/" ? "" : own) + "/" + name));
  if (auto limited = write_file(dir / "memory.limit_in_bytes", std::to_string(limit_bytes)); !limited) {
    *why_not = limited.error();
    return nullptr;  // the destructor removes the directory
  }
  // Keep the test's own OOM from spilling into swap, where there is swap accounting to allow it.
  (void)write_file(dir / "memory.memsw.limit_in_bytes", std::to_string(limit_bytes));
  return cg;
}

CgroupV1::~CgroupV1() {
  using namespace std::chrono;
  auto deadline = steady_clock::now() + seconds(10);
  for (;;) {
    std::istringstream procs(slurp(dir_ / "cgroup.procs"));
    bool any = false;
    for (pid_t pid; procs >> pid;) {
      ::kill(pid, SIGKILL);
      any = true;
    }
    if (!any && ::rmdir(dir_.c_str()) == 0) return;
    if (!any && errno == ENOENT) return;
    if (steady_clock::now() > deadline) {
      std::fprintf(stderr, "CgroupV1: could not remove %s: %s\n", dir_.c_str(), std::strerror(errno));
      return;
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
}

Result<Done> CgroupV1::add_pid(pid_t pid) { return write_file(dir_ / "cgroup.procs", std::to_string(pid)); }

std::optional<std::uint64_t> CgroupV1::oom_kill_count() const {
  std::istringstream lines(slurp(dir_ / "memory.oom_control"));
  std::string key;
  std::uint64_t value;
  while (lines >> key >> value)
    if (key == "oom_kill") return value;
  return std::nullopt;
}

bool cgroup_v1_unavailable() {
  // Evaluated while doctest registers the tests (static initialisation), once per binary.
  static const bool unavailable = [] {
    const char* required = std::getenv("AB_REQUIRE_CGROUP");
    if (required && std::string(required) == "1") return false;
    std::string why_not;
    if (CgroupV1::create(1ull << 20, &why_not)) return false;
    std::fprintf(stderr, "SKIPPING the tests that need a v1 memory cgroup: %s\n", why_not.c_str());
    return true;
  }();
  return unavailable;
}

}  // namespace ab::test
