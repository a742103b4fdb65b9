// Max-per-bucket down-sampling of job memory timelines.
#include "history/timeline.h"

#include <algorithm>

namespace ab {
namespace {

// The budget is checked against PSS, so PSS is the peak that must survive; RSS stands in when the
// sampler never read smaps_rollup (e.g. a kernel without it).
bool use_pss(const std::vector<TimelinePoint>& points) {
  return std::any_of(points.begin(), points.end(),
                     [](const TimelinePoint& p) { return p.pss_bytes > 0; });
}

std::uint64_t height(const TimelinePoint& p, bool pss) { return pss ? p.pss_bytes : p.rss_bytes; }

}  // namespace

std::size_t peak_index(const std::vector<TimelinePoint>& points) {
  if (points.empty()) return 0;
  const bool pss = use_pss(points);
  std::size_t best = 0;
  for (std::size_t i = 1; i < points.size(); ++i)
    if (height(points[i], pss) > height(points[best], pss)) best = i;
  return best;
}

std::vector<TimelinePoint> downsample_timeline(const std::vector<TimelinePoint>& points,
                                               std::size_t max_points) {
  if (points.size() <= max_points) return points;
  std::vector<TimelinePoint> kept;
  if (max_points == 0) return kept;
  kept.reserve(max_points);
  const bool pss = use_pss(points);
  const std::size_t n = points.size();
  for (std::size_t b = 0; b < max_points; ++b) {
    // Bucket b covers [n*b/max, n*(b+1)/max): contiguous, non-empty since n > max_points.
    const std::size_t begin = n * b / max_points;
    const std::size_t end = n * (b + 1) / max_points;
    std::size_t best = begin;
    for (std::size_t i = begin + 1; i < end; ++i)
      if (height(points[i], pss) > height(points[best], pss)) best = i;
    kept.push_back(points[best]);
  }
  return kept;
}

}  // namespace ab
