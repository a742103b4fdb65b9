// memhog: allocates, touches and holds memory on command; the stand-in workload for real-process tests and benchmarks.
//
// Usage: memhog [flags]
//   --mib N              private anonymous memory to allocate and touch (default 0)
//   --shared-mib N       shared memory to map and touch, from POSIX shm object --shared-name
//   --shared-name NAME   shm object name ("/ab-x"); processes given the same name share the pages;
//                        each memhog shm_unlink()s it at exit (ENOENT ignored)
//   --child-mib N        fork a child chain (--child-depth levels, default 1) whose last process
//                        allocates and touches N MiB; children die with their parent (PDEATHSIG)
//   --child-depth D      1: a child holds the memory; 2: a grandchild does (default 1)
//   --in FILE --mib-per-mib R   also allocate R MiB per MiB of FILE's size (memory grows with input)
//   --ramp-ms T          spread the allocation over T ms instead of all at once (default 0)
//   --hold-s S           after "ready", hold for S seconds (fractions allowed), then exit
//   --hold-ms-per-mib R  with --hold-s, hold R ms longer per MiB of private memory (work that
//                        grows with the input, as a real aligner's time and memory both do)
//   --hold-until-stdin-eof   after "ready", hold until stdin reaches EOF (the default)
//   --out FILE           write "ok\n" to FILE (via FILE.tmp + rename) just before a normal exit
//   --exit-code N        exit with N (default 0)
// Prints "ready pid=P rss_target_mib=M" on stdout once every byte (children's too) is touched.
// Exit status 2 for bad flags or failed allocation, with a message on stderr.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

namespace {

constexpr std::size_t kMiB = 1 << 20;

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "memhog: %s\n", msg.c_str());
  std::exit(2);
}

// Maps `mib` MiB of private anonymous memory and writes every page, over `ramp_ms`.
void touch_private(std::size_t mib, long ramp_ms) {
  if (mib == 0) return;
  std::size_t bytes = mib * kMiB;
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) die("cannot map " + std::to_string(mib) + " MiB: " + std::strerror(errno));
  ::madvise(p, bytes, MADV_NOHUGEPAGE);  // 4 KiB pages: RSS rises smoothly as pages are touched
  auto* c = static_cast<unsigned char*>(p);
  long page = ::sysconf(_SC_PAGESIZE);
  for (std::size_t m = 0; m < mib; ++m) {
    for (std::size_t off = 0; off < kMiB; off += static_cast<std::size_t>(page)) c[m * kMiB + off] = static_cast<unsigned char>(m + 1);
    if (ramp_ms > 0) std::this_thread::sleep_for(std::chrono::microseconds(ramp_ms * 1000 / static_cast<long>(mib)));
  }
}

void touch_shared(std::size_t mib, const std::string& name) {
  if (mib == 0) return;
  if (name.empty()) die("--shared-mib needs --shared-name");
  int fd = ::shm_open(name.c_str(), O_CREAT | O_RDWR, 0600);
  if (fd < 0) die("shm_open " + name + ": " + std::strerror(errno));
  std::size_t bytes = mib * kMiB;
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) die("ftruncate " + name + ": " + std::strerror(errno));
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) die("cannot map shared " + name + ": " + std::strerror(errno));
  auto* c = static_cast<volatile unsigned char*>(p);
  long page = ::sysconf(_SC_PAGESIZE);
  for (std::size_t off = 0; off < bytes; off += static_cast<std::size_t>(page)) c[off] = 1;
}

double number_arg(int& i, int argc, char** argv) {
  if (i + 1 >= argc) die(std::string(argv[i]) + " needs a value");
  char* end = nullptr;
  double v = std::strtod(argv[++i], &end);
  if (!end || *end || v < 0) die(std::string(argv[i - 1]) + ": not a non-negative number: " + argv[i]);
  return v;
}

void hold(double hold_s) {
  if (hold_s >= 0) {
    std::this_thread::sleep_for(std::chrono::duration<double>(hold_s));
    return;
  }
  char buf[256];
  while (::read(0, buf, sizeof buf) > 0) {
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t mib = 0, shared_mib = 0, child_mib = 0, child_depth = 1;
  std::string shared_name, in_file, out_file;
  double mib_per_mib = 0, hold_s = -1, hold_ms_per_mib = 0;
  long ramp_ms = 0;
  int exit_code = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--mib") mib = static_cast<std::size_t>(number_arg(i, argc, argv));
    else if (a == "--shared-mib") shared_mib = static_cast<std::size_t>(number_arg(i, argc, argv));
    else if (a == "--shared-name" && i + 1 < argc) shared_name = argv[++i];
    else if (a == "--child-mib") child_mib = static_cast<std::size_t>(number_arg(i, argc, argv));
    else if (a == "--child-depth") child_depth = static_cast<std::size_t>(number_arg(i, argc, argv));
    else if (a == "--in" && i + 1 < argc) in_file = argv[++i];
    else if (a == "--mib-per-mib") mib_per_mib = number_arg(i, argc, argv);
    else if (a == "--ramp-ms") ramp_ms = static_cast<long>(number_arg(i, argc, argv));
    else if (a == "--hold-s") hold_s = number_arg(i, argc, argv);
    else if (a == "--hold-ms-per-mib") hold_ms_per_mib = number_arg(i, argc, argv);
    else if (a == "--hold-until-stdin-eof") hold_s = -1;
    else if (a == "--out" && i + 1 < argc) out_file = argv[++i];
    else if (a == "--exit-code") exit_code = static_cast<int>(number_arg(i, argc, argv));
    else die("unknown or incomplete flag " + a + " (see the comment at the top of tests/memhog.cpp)");
  }
  if (!in_file.empty()) {
    struct stat st {};
    if (::stat(in_file.c_str(), &st) != 0) die(in_file + ": " + std::strerror(errno));
    mib += static_cast<std::size_t>(mib_per_mib * static_cast<double>(st.st_size) / kMiB);
  }

  // The child chain: each level forks the next; the last allocates. Readiness climbs back up a pipe.
  pid_t child = 0;
  if (child_mib > 0 && child_depth > 0) {
    int ready[2];
    if (::pipe(ready) != 0) die(std::string("pipe: ") + std::strerror(errno));
    pid_t parent = ::getpid();
    child = ::fork();
    if (child < 0) die(std::string("fork: ") + std::strerror(errno));
    if (child == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) _exit(0);  // the parent died before prctl
      ::close(ready[0]);
      ::close(0);  // only the top process watches stdin
      pid_t grandchild = 0;
      if (child_depth > 1) {
        int inner[2];
        if (::pipe(inner) != 0) _exit(2);
        pid_t me = ::getpid();
        grandchild = ::fork();
        if (grandchild == 0) {
          ::prctl(PR_SET_PDEATHSIG, SIGKILL);
          if (::getppid() != me) _exit(0);
          touch_private(child_mib, ramp_ms);
          (void)!::write(inner[1], "r", 1);
          for (;;) ::pause();
        }
        char c;
        if (::read(inner[0], &c, 1) != 1) _exit(2);
      } else {
        touch_private(child_mib, ramp_ms);
      }
      (void)!::write(ready[1], "r", 1);
      for (;;) ::pause();  // dies with its parent
    }
    ::close(ready[1]);
    char c;
    if (::read(ready[0], &c, 1) != 1) die("the child died before touching its memory");
    ::close(ready[0]);
  }

  touch_private(mib, ramp_ms);
  touch_shared(shared_mib, shared_name);
  std::printf("ready pid=%d rss_target_mib=%zu\n", static_cast<int>(::getpid()), mib + shared_mib);
  std::fflush(stdout);

  hold(hold_s < 0 ? hold_s : hold_s + hold_ms_per_mib * static_cast<double>(mib) / 1000);

  if (!shared_name.empty()) ::shm_unlink(shared_name.c_str());
  if (child > 0) {
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
  }
  if (!out_file.empty()) {
    std::string tmp = out_file + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "w");
    if (!f || std::fputs("ok\n", f) < 0 || std::fclose(f) != 0 || std::rename(tmp.c_str(), out_file.c_str()) != 0)
      die("cannot write " + out_file);
  }
  return exit_code;
}
