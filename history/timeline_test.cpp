// downsample_timeline tests: bounded size, time order, and the true peak always kept.
#include "history/timeline.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <random>

using ab::TimelinePoint;

namespace {

std::vector<TimelinePoint> ramp(std::size_t n) {
  std::vector<TimelinePoint> v;
  for (std::size_t i = 0; i < n; ++i)
    v.push_back({static_cast<std::int64_t>(i * 50), 1000 + i, 500 + i, 0});
  return v;
}

bool contains_time(const std::vector<TimelinePoint>& v, std::int64_t t_ms) {
  return std::any_of(v.begin(), v.end(), [&](const TimelinePoint& p) { return p.t_ms == t_ms; });
}

}  // namespace

TEST_CASE("short timelines come back unchanged") {
  const auto in = ramp(10);
  const auto out = ab::downsample_timeline(in, 64);
  REQUIRE(out.size() == 10);
  for (std::size_t i = 0; i < 10; ++i) CHECK(out[i].t_ms == in[i].t_ms);
}

TEST_CASE("a 1000-point timeline with one spike keeps 64 points, in order, spike included") {
  auto in = ramp(1000);
  in[537].pss_bytes = 1'000'000;  // a 25 ms allocation burst between two ordinary ticks
  const auto out = ab::downsample_timeline(in, 64);
  REQUIRE(out.size() == 64);
  CHECK(contains_time(out, in[537].t_ms));
  for (std::size_t i = 1; i < out.size(); ++i) CHECK(out[i - 1].t_ms < out[i].t_ms);
  // The ramp's envelope survives: the last kept point is the last bucket's max, the end of it.
  CHECK(out.back().t_ms == in.back().t_ms);
}

TEST_CASE("without PSS readings the RSS peak is the one kept") {
  std::vector<TimelinePoint> in;
  for (int i = 0; i < 300; ++i) in.push_back({i * 10, static_cast<std::uint64_t>(i % 7), 0, 0});
  in[123].rss_bytes = 999;
  const auto out = ab::downsample_timeline(in, 16);
  CHECK(out.size() == 16);
  CHECK(contains_time(out, 1230));
  CHECK(ab::peak_index(in) == 123);
}

TEST_CASE("edge sizes: 0 points wanted, 1 point wanted, empty input") {
  auto in = ramp(100);
  in[40].pss_bytes = 10'000;
  CHECK(ab::downsample_timeline(in, 0).empty());
  const auto one = ab::downsample_timeline(in, 1);
  REQUIRE(one.size() == 1);
  CHECK(one[0].t_ms == in[40].t_ms);
  CHECK(ab::downsample_timeline({}, 5).empty());
  CHECK(ab::peak_index({}) == 0);
}

TEST_CASE("random timelines: size = min(n, max), order kept, peak kept (500 cases, fixed seed)") {
  std::mt19937_64 rng(42);
  for (int c = 0; c < 500; ++c) {
    const std::size_t n = rng() % 2000, max_points = 1 + rng() % 100;
    std::vector<TimelinePoint> in;
    std::int64_t t = 0;
    for (std::size_t i = 0; i < n; ++i) {
      t += 1 + static_cast<std::int64_t>(rng() % 100);
      in.push_back({t, rng() % 1'000'000, rng() % 1'000'000, rng() % 1000});
    }
    const auto out = ab::downsample_timeline(in, max_points);
    REQUIRE(out.size() == std::min(n, max_points));
    for (std::size_t i = 1; i < out.size(); ++i) REQUIRE(out[i - 1].t_ms < out[i].t_ms);
    if (n > 0) {
      const auto peak = in[ab::peak_index(in)];
      REQUIRE(contains_time(out, peak.t_ms));
      const auto kept_max = std::max_element(out.begin(), out.end(), [](auto& a, auto& b) {
        return a.pss_bytes < b.pss_bytes;
      });
      REQUIRE(kept_max->pss_bytes == peak.pss_bytes);
    }
  }
}
