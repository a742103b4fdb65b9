// Tests for BlockCache: reuse of freed blocks, the bound on what it keeps, release.
#include "worker/block_cache.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include <doctest/doctest.h>

namespace ab {

namespace {

constexpr std::size_t kMiB = 1 << 20;

/// Whether [p, p + bytes) is mapped in this process (mincore fails with ENOMEM where it is not).
bool mapped(void* p, std::size_t bytes) {
  std::vector<unsigned char> v(bytes / static_cast<std::size_t>(sysconf(_SC_PAGESIZE)) + 1);
  return mincore(p, bytes, v.data()) == 0;
}

}  // namespace

TEST_CASE("block cache: a freed block serves the next request of about its size, its pages kept") {
  BlockCache c;
  void* a = c.take(3 * kMiB);
  REQUIRE(a != nullptr);
  CHECK(reinterpret_cast<std::uintptr_t>(a) % 4096 == 0);
  std::memset(a, 7, 3 * kMiB);
  CHECK(c.give(a));
  CHECK(c.stats().cached_bytes == 3 * kMiB);
  // Slightly smaller (within 1/8): the same block, still holding what was written.
  void* b = c.take(3 * kMiB - 100'000);
  CHECK(b == a);
  CHECK(static_cast<unsigned char*>(b)[12345] == 7);
  BlockCache::Stats s = c.stats();
  CHECK(s.hits == 1);
  CHECK(s.misses == 1);
  CHECK(s.in_use_bytes == 3 * kMiB);
  CHECK(s.cached_bytes == 0);
  CHECK(c.give(b));
  // Much smaller: not worth a 3 MiB block; bigger: does not fit. Both are new mappings.
  void* small = c.take(kMiB);
  CHECK(small != a);
  CHECK(c.stats().misses == 2);
  CHECK(c.give(small));
  CHECK_FALSE(c.give(small));  // not handed out any more
  int x = 0;
  CHECK_FALSE(c.give(&x));     // never ours
}

TEST_CASE("block cache: never maps more than the most in use at once, however the sizes vary") {
  BlockCache c;
  // A "window": blocks of its sizes taken together, then all freed. Then windows of other sizes.
  auto window = [&](std::size_t unit) {
    std::vector<void*> held;
    for (std::size_t k = 1; k <= 6; ++k) {
      held.push_back(c.take(k * unit));
      REQUIRE(held.back() != nullptr);
      const BlockCache::Stats now = c.stats();
      CHECK(now.in_use_bytes + now.cached_bytes <= now.high_water_bytes);
    }
    for (void* p : held) CHECK(c.give(p));
  };
  const std::size_t peak_of = 21;  // 1 + 2 + ... + 6 units
  window(kMiB);
  BlockCache::Stats s = c.stats();
  CHECK(s.high_water_bytes == peak_of * kMiB);
  CHECK(s.cached_bytes == peak_of * kMiB);
  window(kMiB);  // the same sizes again: every block reused, nothing mapped
  CHECK(c.stats().hits == 6);
  CHECK(c.stats().misses == 6);
  // Larger windows: the high-water mark rises to theirs; the mapped total never passes it.
  for (std::size_t unit : {kMiB + kMiB / 2, kMiB / 2, 2 * kMiB, kMiB}) {
    window(unit);
    s = c.stats();
    CHECK(s.in_use_bytes == 0);
    CHECK(s.cached_bytes <= s.high_water_bytes);
  }
  CHECK(s.high_water_bytes == peak_of * 2 * kMiB);
  CHECK(s.unmapped_bytes > 0);  // to make room for blocks that the cached ones could not serve
}

TEST_CASE("block cache: release() unmaps what it holds, returns the file's figures and starts afresh") {
  BlockCache c;
  void* a = c.take(2 * kMiB);
  void* b = c.take(4 * kMiB);
  std::memset(b, 1, 4 * kMiB);
  CHECK(c.give(b));
  CHECK(mapped(b, 4 * kMiB));
  const BlockCache::Stats s = c.release();
  CHECK(s.high_water_bytes == 6 * kMiB);
  CHECK(s.misses == 2);
  CHECK_FALSE(mapped(b, 4 * kMiB));  // given back to the system
  CHECK(mapped(a, 2 * kMiB));        // still in use
  const BlockCache::Stats after = c.stats();
  CHECK(after.cached_bytes == 0);
  CHECK(after.high_water_bytes == 2 * kMiB);
  CHECK(after.misses == 0);
  CHECK(c.give(a));
}

}  // namespace ab
