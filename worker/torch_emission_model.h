// The LibTorch EmissionModel: a TorchScript file loaded once with torch::jit::load (no torch headers here).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "worker/emission_model.h"

namespace ab {

/// Sets LibTorch's intra-op threads to `threads` and inter-op threads to 1. Call once, first.
void set_torch_threads(int threads);
/// LibTorch's intra-op thread count now (at::get_num_threads()).
int torch_threads();

/// Whether the model's parameters and buffers live in a shared read-only file (worker/shared_weights.h).
struct WeightSharing {
  bool shared = false;             ///< every shareable tensor now points into the mapping
  bool created = false;            ///< this worker wrote the file (first of its model key)
  std::uint64_t bytes = 0;         ///< the mapping's size (counted once by the parent, not per worker)
  std::uint64_t tensors = 0;       ///< tensors moved to the mapping
  std::uint64_t private_rss_freed_bytes = 0;  ///< RSS before the swap minus RSS after it (0 if it grew)
  std::string error;               ///< why sharing was not used (the private copy is kept)
};

/// A TorchScript model with the wav2vec2 contract, run on the CPU under c10::InferenceMode.
class TorchEmissionModel final : public EmissionModel {
 public:
  /// Loads `model_path` with the already parsed sidecar `info`. Throws std::runtime_error with a
  /// user-facing message (naming the file and what to do) if LibTorch cannot load it. With
  /// `shared_weights` (a path every worker of the same model key is given), the parameters and
  /// buffers are then moved into that file's read-only mapping (written by the first worker) and
  /// the private copy is freed; if that fails the private copy is kept and sharing().error says why.
  /// With `tensor_cache`, once the model is loaded LibTorch's large CPU tensors come from a
  /// process-wide BlockCache (worker/torch_block_allocator.h), emptied by release_scratch().
  TorchEmissionModel(const std::filesystem::path& model_path, ModelInfo info,
                     const std::filesystem::path& shared_weights = {}, bool tensor_cache = false);
  ~TorchEmissionModel() override;

  const ModelInfo& info() const override { return info_; }
  const WeightSharing& sharing() const { return sharing_; }
  EmissionChunk compute(const float* samples, std::size_t count) override;
  std::optional<ScratchStats> release_scratch() override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  ModelInfo info_;
  std::filesystem::path model_path_;
  WeightSharing sharing_;
};

}  // namespace ab
