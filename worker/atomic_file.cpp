// Atomic file writing: temporary file beside the target, fsync, rename, fsync the directory.
#include "worker/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

namespace ab {

namespace {

std::string errno_text(int err) { return std::strerror(err); }

std::atomic<unsigned> g_temp_counter{0};

}  // namespace

Result<std::string> write_file_atomically(const std::string& path, std::string_view content) {
  using R = Result<std::string>;
  // The temporary's name must fit NAME_MAX (255 bytes) whatever the final name is: a 250-byte
  // name plus ".tmp.PID.N" would not. So: a dot, at most the first 100 bytes of the name, then
  // ".tmp.PID.N" (at most 128 bytes), in the same directory.
  const std::filesystem::path target(path);
  const std::string name = target.filename().string();
  const std::string temp = (target.parent_path() / ("." + name.substr(0, 100) + ".tmp." + std::to_string(::getpid()) +
                                                    "." + std::to_string(g_temp_counter++)))
                               .string();
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;
    return R::failure(path + ": cannot create temporary file " + temp + " (" + errno_text(err) +
                      "); check that the output directory exists and is writable");
  }
  auto fail = [&](const std::string& step, int err) {
    ::close(fd);
    ::unlink(temp.c_str());
    return R::failure(path + ": " + step + " failed (" + errno_text(err) + "); nothing was written under this name" +
                      (err == ENOSPC ? "; free some disk space" : ""));
  };
  const char* data = content.data();
  std::size_t left = content.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, data, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("writing", errno);
    }
    data += n;
    left -= static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) return fail("fsync", errno);
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    return R::failure(path + ": closing the temporary file failed (" + errno_text(err) + ")");
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    return R::failure(path + ": rename from " + temp + " failed (" + errno_text(err) + ")");
  }
  // The rename is durable only once the directory entry is on disk.
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return path;
}

}  // namespace ab
