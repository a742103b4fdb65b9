// The CTC alignment's least working memory (see alignment_size.h).
#include "protocol/alignment_size.h"

#include <algorithm>
#include <cstdio>

namespace ab {

std::uint64_t alignment_floor_bytes(std::int64_t frames, std::size_t tokens, std::int64_t min_band_states) {
  const auto T = static_cast<std::uint64_t>(std::max<std::int64_t>(frames, 1));
  const std::uint64_t K = tokens;
  const auto band = static_cast<std::uint64_t>(std::max<std::int64_t>(min_band_states, 1));
  // Outside the passes: per CTC state (2K+1) its label, skip flag, earliest and latest frame (13
  // bytes), the result's spans and 64 KiB for the allocator.
  const std::uint64_t fixed = (2 * K + 1) * 13 + K * kAlignmentTokenSpanBytes + (64u << 10);
  // One banded pass: 2-bit back-pointers for T-1 frames, the band's bounds per frame (2 x int32),
  // two score rows of band+4 floats, a cut flag per frame; and the per-token score sums.
  const std::uint64_t pass = (T - 1) * ((band + 3) / 4) + T * 8 + (band + 4) * 8 + T;
  return fixed + pass + K * sizeof(double);
}

std::int64_t alignment_frames_at_least(std::int64_t samples, int samples_per_frame, std::int64_t slack) {
  if (samples_per_frame <= 0) return 0;
  return std::max<std::int64_t>(0, samples / samples_per_frame - slack);
}

std::string alignment_too_big_message(const std::string& name, std::int64_t frames, std::size_t tokens,
                                      std::uint64_t need_bytes, std::uint64_t cap_bytes) {
  auto mib = [](std::uint64_t bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
    return std::string(buf);
  };
  const std::uint64_t need_mib = (need_bytes + (1u << 20) - 1) >> 20;
  return (name.empty() ? std::string() : name + ": ") + "aligning " + std::to_string(frames) + " frames with " +
         std::to_string(tokens) + " tokens needs at least " + mib(need_bytes) +
         " of search memory but the cap (--max-trellis-mib) is " + mib(cap_bytes) + "; rerun it with --max-trellis-mib " +
         std::to_string(need_mib) + " or more, or split the file";
}

}  // namespace ab
