// RunLock: flock on a file under the output directory, holder's pid and command line inside.
#include "orchestrator/platform/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include <fmt/format.h>

#include "protocol/wire_path.h"

namespace fs = std::filesystem;

namespace ab {

std::string own_command_line() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  const std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string out;
  std::size_t start = 0;
  while (start < raw.size()) {
    std::size_t end = raw.find('\0', start);
    if (end == std::string::npos) end = raw.size();
    out += (out.empty() ? "" : " ") + display_path(std::string_view(raw).substr(start, end - start));
    start = end + 1;
  }
  return out;
}

Result<std::unique_ptr<RunLock>> RunLock::acquire(const fs::path& path, const std::string& what) {
  using R = Result<std::unique_ptr<RunLock>>;
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return R::failure(fmt::format("cannot open the lock file {} ({}); check that {} is writable", display_path(path.string()),
                                  std::strerror(errno), display_path(path.parent_path().string())));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err != EWOULDBLOCK) {
      ::close(fd);
      return R::failure(fmt::format("cannot lock {} ({}); a file system without flock (NFS?) cannot hold {}",
                                    display_path(path.string()), std::strerror(err), what));
    }
    // The holder writes "pid\ncommand line\n" right after locking; a moment before that it is empty.
    char buf[4096];
    const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    ::close(fd);
    std::string text(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
    const auto nl = text.find('\n');
    const std::string pid = nl == std::string::npos ? std::string() : text.substr(0, nl);
    std::string command = nl == std::string::npos ? std::string() : text.substr(nl + 1);
    while (!command.empty() && command.back() == '\n') command.pop_back();
    return R::failure(fmt::format(
        "{} is in use by another align-batch run ({}{}); two runs on one output would each do all the work and "
        "each assume the whole memory budget: wait for it to finish, or give this run another --out (lock: {})",
        what, pid.empty() ? std::string("pid unknown: it is starting") : "pid " + pid,
        command.empty() ? std::string() : ": " + command, display_path(path.string())));
  }
  const std::string text = fmt::format("{}\n{}\n", ::getpid(), own_command_line());
  // Should this fail, the lock is held all the same; only a second run's message is poorer.
  if (::ftruncate(fd, 0) == 0) (void)!::pwrite(fd, text.data(), text.size(), 0);
  return R(std::unique_ptr<RunLock>(new RunLock(path, fd)));
}

RunLock::~RunLock() {
  // Emptied first so that nobody reads our pid after we are gone; the file itself stays (removing
  // it would let a third run lock a new file while a second still holds the old one).
  (void)!::ftruncate(fd_, 0);
  ::close(fd_);
}

}  // namespace ab
