// The LibTorch EmissionModel: a TorchScript file loaded once with torch::jit::load (no torch headers here).
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "worker/emission_model.h"

namespace ab {

/// Sets LibTorch's intra-op threads to `threads` and inter-op threads to 1. Call once, first.
void set_torch_threads(int threads);
/// LibTorch's intra-op thread count now (at::get_num_threads()).
int torch_threads();

/// A TorchScript model with the wav2vec2 contract, run on the CPU under c10::InferenceMode.
class TorchEmissionModel final : public EmissionModel {
 public:
  /// Loads `model_path` with the already parsed sidecar `info`. Throws std::runtime_error with a
  /// user-facing message (naming the file and what to do) if LibTorch cannot load it.
  TorchEmissionModel(const std::filesystem::path& model_path, ModelInfo info);
  ~TorchEmissionModel() override;

  const ModelInfo& info() const override { return info_; }
  EmissionChunk compute(const float* samples, std::size_t count) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  ModelInfo info_;
  std::filesystem::path model_path_;
};

}  // namespace ab
