// MemhogProcess: starts tests/memhog with a pipe on stdin and stdout, waits for "ready", kills and reaps it.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace ab::test {

/// A running memhog (or any program that prints a "ready" line). Its stdin is a pipe held open,
/// so `--hold-until-stdin-eof` holds until close_stdin() or destruction. Destruction SIGKILLs and
/// reaps it (its children die with it through PDEATHSIG).
class MemhogProcess {
 public:
  /// Starts `binary args...`. Throws std::runtime_error if it cannot be started.
  MemhogProcess(const std::string& binary, const std::vector<std::string>& args);
  ~MemhogProcess();
  MemhogProcess(const MemhogProcess&) = delete;
  MemhogProcess& operator=(const MemhogProcess&) = delete;

  pid_t pid() const { return pid_; }
  /// Blocks until the program prints a line starting with "ready" (true) or closes stdout (false).
  bool wait_ready();
  /// Closes the program's stdin: memhog then frees everything and exits.
  void close_stdin();
  /// Waits for exit; returns the wait status (as from waitpid). Idempotent.
  int wait();
  /// Sends SIGKILL (if still running) and reaps.
  void kill();

 private:
  pid_t pid_ = -1;
  int stdin_fd_ = -1;
  int stdout_fd_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

}  // namespace ab::test
