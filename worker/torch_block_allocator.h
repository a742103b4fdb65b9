// LibTorch's CPU allocator with large tensors served from a BlockCache (no torch headers here).
#pragma once

#include <cstddef>
#include <optional>

#include "worker/block_cache.h"

namespace ab {

/// Makes LibTorch's CPU allocator hand out tensors of `min_bytes` and more from one process-wide
/// BlockCache (smaller ones, and every tensor allocated before, stay with c10's own allocator).
/// Call after the model is loaded, so its weights never pass through the cache. Idempotent.
void install_torch_block_cache(std::size_t min_bytes);
/// BlockCache::release() (after a file's last window): the figures since the last call, or
/// nullopt if the cache was never installed.
std::optional<BlockCache::Stats> release_torch_block_cache();
/// The cache's figures; nullopt if it was never installed.
std::optional<BlockCache::Stats> torch_block_cache_stats();

}  // namespace ab
