// SharedWeights: one read-only copy of a model's tensors, in a file every worker of one model key maps.
//
// No LibTorch here: the engine (torch_emission_model.cpp) lists its parameters and buffers as
// WeightBlobs, this file writes them once and maps them, and the engine then points each tensor
// at its bytes in the mapping (torch::from_blob, no copy). The file:
//
//   [header: magic, version, complete flag, index bytes, data offset, total bytes][index JSON]
//   [each blob's bytes at a 64-byte aligned offset (c10's own CPU alignment)]
//
// The first worker writes it under an exclusive flock() of the file itself and sets the complete
// flag last; the others wait on the lock, find the flag, and map it. A writer that dies leaves
// the flag clear (the lock goes with the process), so the next worker writes it again.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"

namespace ab {

/// One tensor's bytes as the engine holds them (contiguous). `dtype` and `sizes` are checked
/// against the file's index, so a worker never maps another model's bytes.
struct WeightBlob {
  std::string name;
  std::string dtype;
  std::vector<std::int64_t> sizes;
  const void* data = nullptr;
  std::size_t bytes = 0;
};

class SharedWeights {
 public:
  /// Maps `path` read-only, first writing `blobs` into it when it holds no complete copy. Every
  /// blob's bytes in the mapping are compared with the worker's own: a file that differs (another
  /// model, a damaged copy) is an error, never used. Failure (no space, unwritable, a mismatch)
  /// comes back as an error naming the file; the caller keeps its private copy.
  static Result<std::unique_ptr<SharedWeights>> open(const std::filesystem::path& path,
                                                     const std::vector<WeightBlob>& blobs);
  ~SharedWeights();
  SharedWeights(const SharedWeights&) = delete;
  SharedWeights& operator=(const SharedWeights&) = delete;

  /// Blob `i`'s bytes inside the read-only mapping (same order as the blobs given to open()).
  const void* data(std::size_t i) const { return static_cast<const char*>(base_) + offsets_.at(i); }
  /// Bytes of tensor data in the file (the sum of the blobs' sizes).
  std::uint64_t data_bytes() const { return data_bytes_; }
  /// The whole mapping's size.
  std::uint64_t mapped_bytes() const { return mapped_bytes_; }
  /// True when this process wrote the file (it was the first of its model key).
  bool created() const { return created_; }

 private:
  SharedWeights() = default;
  void* base_ = nullptr;
  std::uint64_t mapped_bytes_ = 0;
  std::uint64_t data_bytes_ = 0;
  std::vector<std::uint64_t> offsets_;
  bool created_ = false;
};

}  // namespace ab
