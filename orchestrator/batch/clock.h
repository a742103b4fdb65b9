// The run's clock: monotonic milliseconds (std::chrono::steady_clock, CLOCK_MONOTONIC on Linux).
#pragma once

#include <chrono>
#include <cstdint>

namespace ab {

/// Current monotonic time in milliseconds.
inline std::int64_t monotonic_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace ab
