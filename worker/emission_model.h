// The seam between the worker loop and LibTorch: a model that turns one window of audio into emissions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "protocol/model_info.h"

namespace ab {

/// Emissions of one window: `frames` rows of `labels` log-probabilities, row-major.
struct EmissionChunk {
  std::int64_t frames = 0;
  std::int64_t labels = 0;
  std::vector<float> log_probs;
};

/// Thrown by an EmissionModel when the engine ran out of memory (LibTorch's allocator failed);
/// the loop retries the job once with smaller windows. `std::bad_alloc` is treated the same way.
struct EngineOutOfMemory : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// What an engine kept between one file's windows (EmissionModel::release_scratch()).
struct ScratchStats {
  std::uint64_t peak_bytes = 0;  ///< most bytes in its blocks at once
  std::uint64_t reused = 0;      ///< blocks served again instead of mapped afresh
  std::uint64_t mapped = 0;      ///< blocks mapped afresh
};

/// An acoustic model with the torchaudio wav2vec2 contract. The real one is TorchEmissionModel
/// (the only LibTorch code the loop reaches); tests may use a plain C++ one.
class EmissionModel {
 public:
  virtual ~EmissionModel() = default;
  /// The sidecar: labels, rates, blank.
  virtual const ModelInfo& info() const = 0;
  /// Emissions (log-probabilities, always: logits are normalised here) for `count` mono samples at
  /// info().sample_rate_hz. Throws EngineOutOfMemory or std::bad_alloc on allocation failure and
  /// std::runtime_error for anything else the engine rejects.
  virtual EmissionChunk compute(const float* samples, std::size_t count) = 0;
  /// Called after a file's last window (and before a retry): memory the engine keeps between
  /// windows goes back to the system. Returns what it kept since the last call, if it keeps any.
  virtual std::optional<ScratchStats> release_scratch() { return std::nullopt; }
};

}  // namespace ab
