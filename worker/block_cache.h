// BlockCache: large memory blocks kept mapped between a file's model windows, bounded by the peak in use.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>

namespace ab {

/// Large blocks (anonymous mappings) handed out and taken back, kept mapped once freed so the
/// next window's tensors of the same size reuse their pages instead of faulting in fresh zeroed
/// ones. A wav2vec2-base window allocates and frees gigabytes of activations; mapped afresh each
/// time (glibc does that for blocks over its mmap threshold) they cost as many page faults, a third
/// of the worker's CPU. The bound: a miss first unmaps cached blocks until the mapped total plus
/// the new block is no more than the most ever in use at once (or what is in use plus the new
/// block, if that is more), so the cache never holds more than the largest working set of the
/// file so far, and files of any length that run in same-sized windows stay flat. release() hands
/// everything cached back (the worker does it after each file's last window). Thread-safe.
class BlockCache {
 public:
  struct Stats {
    std::uint64_t in_use_bytes = 0;     ///< blocks handed out, not yet given back
    std::uint64_t cached_bytes = 0;     ///< blocks given back, still mapped
    // Since the last release():
    std::uint64_t high_water_bytes = 0; ///< most in_use_bytes at once
    std::uint64_t hits = 0;             ///< take()s served from the cache
    std::uint64_t misses = 0;           ///< take()s that mapped a new block
    std::uint64_t unmapped_bytes = 0;   ///< cached bytes unmapped to stay within the bound
  };

  /// A cached block of size B serves a request of n bytes when n <= B <= n + n / kSlackDivisor:
  /// close enough that its unused tail stays small.
  static constexpr std::size_t kSlackDivisor = 8;

  BlockCache() = default;
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;
  /// Unmaps the cached blocks; blocks still handed out stay mapped (their owners outlive us).
  ~BlockCache();

  /// A page-aligned block of at least `bytes` (> 0) bytes; nullptr if it cannot be mapped.
  void* take(std::size_t bytes);
  /// Takes back a block from take(); false (and nothing done) if `p` is not one of ours.
  bool give(void* p);
  /// Unmaps every cached block; returns the figures as they were, then lowers the high-water
  /// mark to what is in use now and zeroes the counters (hits, misses, unmapped_bytes).
  Stats release();
  Stats stats() const;

 private:
  void unmap_cached(std::multimap<std::size_t, void*>::iterator it);

  mutable std::mutex mu_;
  std::unordered_map<void*, std::size_t> in_use_;   // block -> its mapped size
  std::multimap<std::size_t, void*> cached_;       // mapped size -> block
  Stats stats_;
};

}  // namespace ab
