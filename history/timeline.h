// Job memory timelines: one sample per memguard tick, and the bounded down-sampling history stores.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ab {

/// One memory reading of a job's worker tree, `t_ms` after the job started.
struct TimelinePoint {
  std::int64_t t_ms = 0;
  std::uint64_t rss_bytes = 0;
  std::uint64_t pss_bytes = 0;
  std::uint64_t vram_bytes = 0;
};

/// Points kept per job by default: 64 draws a usable curve and costs ~2 KiB per job in SQLite.
constexpr std::size_t kDefaultTimelinePoints = 64;

/// Reduces `points` (in time order) to at most `max_points`, in time order, keeping the shape's
/// upper envelope: the points are cut into `max_points` contiguous buckets and each bucket keeps
/// its highest point. The highest point overall (by PSS, or by RSS when no point has PSS) is
/// therefore always kept. Inputs already short enough come back unchanged; `max_points == 0`
/// gives an empty timeline.
std::vector<TimelinePoint> downsample_timeline(const std::vector<TimelinePoint>& points,
                                               std::size_t max_points);

/// Index of the highest point (by PSS, or by RSS when no point has PSS); points.size() if empty.
std::size_t peak_index(const std::vector<TimelinePoint>& points);

}  // namespace ab
