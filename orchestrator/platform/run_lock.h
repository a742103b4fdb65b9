// RunLock: one run per output directory (and per history file), held for the run's life.
//
// Two runs on one --out would each do all the work and each assume the whole memory budget. A
// run takes flock(LOCK_EX) on OUT/.align-batch/lock (and on HISTORY.lock when --history points
// elsewhere) and writes its pid and command line into it; the kernel releases the lock when the
// process ends, however it ends, so a stale lock never blocks anyone.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "common/result.h"

namespace ab {

class RunLock {
 public:
  /// Locks `path` (created 0644 with missing parent directories) without waiting. Fails, naming
  /// the holder's pid and command line as it wrote them, when another process holds it; `what`
  /// names what the lock protects in that message ("output directory OUT").
  static Result<std::unique_ptr<RunLock>> acquire(const std::filesystem::path& path, const std::string& what);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  RunLock(std::filesystem::path path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::filesystem::path path_;
  int fd_ = -1;
};

/// This process's command line (/proc/self/cmdline), arguments joined by spaces, non-UTF-8 bytes
/// shown as \xHH.
std::string own_command_line();

}  // namespace ab
