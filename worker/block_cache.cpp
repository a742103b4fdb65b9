// BlockCache: anonymous mappings reused between windows, never more than the peak in use.
#include "worker/block_cache.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>

namespace ab {

namespace {

std::size_t page_rounded(std::size_t bytes) {
  static const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return (bytes + page - 1) / page * page;
}

}  // namespace

BlockCache::~BlockCache() { release(); }

void BlockCache::unmap_cached(std::multimap<std::size_t, void*>::iterator it) {
  ::munmap(it->second, it->first);
  stats_.cached_bytes -= it->first;
  cached_.erase(it);
}

void* BlockCache::take(std::size_t bytes) {
  const std::size_t size = page_rounded(std::max<std::size_t>(bytes, 1));
  std::lock_guard<std::mutex> lock(mu_);
  // The smallest cached block that fits, if it is not much bigger than asked.
  if (auto it = cached_.lower_bound(size); it != cached_.end() && it->first <= size + size / kSlackDivisor) {
    void* p = it->second;
    const std::size_t have = it->first;
    cached_.erase(it);
    stats_.cached_bytes -= have;
    in_use_.emplace(p, have);
    stats_.in_use_bytes += have;
    stats_.high_water_bytes = std::max(stats_.high_water_bytes, stats_.in_use_bytes);
    ++stats_.hits;
    return p;
  }
  // A new mapping: first make room under the bound, largest cached blocks first.
  const std::uint64_t bound = std::max<std::uint64_t>(stats_.high_water_bytes, stats_.in_use_bytes + size);
  while (!cached_.empty() && stats_.in_use_bytes + stats_.cached_bytes + size > bound) {
    stats_.unmapped_bytes += std::prev(cached_.end())->first;
    unmap_cached(std::prev(cached_.end()));
  }
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    // Perhaps only the cache is in the way: give it all back and try once more.
    while (!cached_.empty()) unmap_cached(std::prev(cached_.end()));
    p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
  }
  in_use_.emplace(p, size);
  stats_.in_use_bytes += size;
  stats_.high_water_bytes = std::max(stats_.high_water_bytes, stats_.in_use_bytes);
  ++stats_.misses;
  return p;
}

bool BlockCache::give(void* p) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = in_use_.find(p);
  if (it == in_use_.end()) return false;
  const std::size_t size = it->second;
  in_use_.erase(it);
  stats_.in_use_bytes -= size;
  cached_.emplace(size, p);
  stats_.cached_bytes += size;
  return true;
}

BlockCache::Stats BlockCache::release() {
  std::lock_guard<std::mutex> lock(mu_);
  const Stats before = stats_;
  while (!cached_.empty()) unmap_cached(std::prev(cached_.end()));
  stats_.high_water_bytes = stats_.in_use_bytes;
  stats_.hits = stats_.misses = stats_.unmapped_bytes = 0;
  return before;
}

BlockCache::Stats BlockCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace ab
