// A c10::Allocator that serves large CPU tensors from a BlockCache and the rest like c10's default.
#include "worker/torch_block_allocator.h"

#include <atomic>

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>

namespace ab {

namespace {

class BlockCacheAllocator final : public c10::Allocator {
 public:
  explicit BlockCacheAllocator(std::size_t min_bytes) : min_bytes_(min_bytes) {}

  c10::DataPtr allocate(std::size_t n) const override {
    void* p = nullptr;
    if (n >= min_bytes_) {
      p = cache_.take(n);
      // The wording LibTorch's own allocator uses, which the worker reads as out of memory.
      TORCH_CHECK(p != nullptr, "BlockCacheAllocator: can't allocate memory: you tried to allocate ", n, " bytes");
    } else {
      p = c10::alloc_cpu(n);  // throws its own "can't allocate memory" error
    }
    return {p, p, &deleter, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &deleter; }

  BlockCache& cache() const { return cache_; }

 private:
  static void deleter(void* p);
  const std::size_t min_bytes_;
  mutable BlockCache cache_;
};

// Never destroyed: tensors may be freed during static destruction, after any owner would be gone.
std::atomic<BlockCacheAllocator*> g_allocator{nullptr};

void BlockCacheAllocator::deleter(void* p) {
  if (p == nullptr) return;
  if (!g_allocator.load(std::memory_order_acquire)->cache_.give(p)) c10::free_cpu(p);
}

}  // namespace

void install_torch_block_cache(std::size_t min_bytes) {
  if (g_allocator.load(std::memory_order_acquire) != nullptr) return;
  auto* a = new BlockCacheAllocator(min_bytes);
  g_allocator.store(a, std::memory_order_release);
  c10::SetCPUAllocator(a, /*priority=*/1);
}

std::optional<BlockCache::Stats> release_torch_block_cache() {
  if (auto* a = g_allocator.load(std::memory_order_acquire)) return a->cache().release();
  return std::nullopt;
}

std::optional<BlockCache::Stats> torch_block_cache_stats() {
  if (auto* a = g_allocator.load(std::memory_order_acquire)) return a->cache().stats();
  return std::nullopt;
}

}  // namespace ab
