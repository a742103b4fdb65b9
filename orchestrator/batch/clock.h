// Clock: the batch driver's one source of time, a seam so tests run timeouts, hang detection and
// the sampling deadline in virtual time (a fake clock advanced by a fake runner's wait()).
#pragma once

#include <chrono>
#include <cstdint>

namespace ab {

/// Current monotonic time in milliseconds (std::chrono::steady_clock: CLOCK_MONOTONIC on Linux).
inline std::int64_t monotonic_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

class Clock {
 public:
  virtual ~Clock() = default;
  /// Monotonic milliseconds: what timeouts, heartbeats and sampling deadlines are measured in.
  virtual std::int64_t now_ms() = 0;
  /// Milliseconds since the Unix epoch: when a job started, for history and reports.
  virtual std::int64_t unix_ms() = 0;
};

/// The machine's clocks. Waiting is not the clock's: the worker runner's wait() blocks.
class SystemClock : public Clock {
 public:
  std::int64_t now_ms() override { return monotonic_ms(); }
  std::int64_t unix_ms() override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  /// One for every driver that is not given a clock.
  static SystemClock& instance() {
    static SystemClock clock;
    return clock;
  }
};

}  // namespace ab
