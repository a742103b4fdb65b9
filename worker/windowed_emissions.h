// Emissions for a whole file computed window by window from streamed audio and stitched by frames.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "worker/ctc_aligner.h"
#include "worker/emission_model.h"

namespace ab {

/// Window sizes, in seconds of audio at the model's rate.
struct WindowConfig {
  double window_s = 30.0;   ///< frames kept from each window (the model sees this plus context)
  double context_s = 2.0;   ///< extra audio on each side of a window, whose frames are discarded
};

/// A whole file's emissions, compact: frames x labels float32 log-probabilities, row-major.
struct Emissions {
  std::int64_t frames = 0;
  int labels = 0;
  std::vector<float> log_probs;
  EmissionView view() const { return EmissionView{log_probs.data(), frames, labels}; }
  std::uint64_t bytes() const { return log_probs.size() * sizeof(float); }
};

/// Figures of one windowed run.
struct WindowStats {
  int windows = 0;
  std::int64_t samples = 0;              ///< samples read (model rate)
  std::size_t peak_window_samples = 0;   ///< largest window handed to the model, context included
  std::size_t peak_buffer_samples = 0;   ///< largest audio buffer held at once
};

/// Reads up to `max` samples into `out`; returns how many, 0 at the end of the stream.
using SampleReader = std::function<std::size_t(float* out, std::size_t max)>;
/// Called after each window with the number of samples consumed so far.
using WindowProgress = std::function<void(std::int64_t samples_done)>;

/// `expected_samples` (0: unknown) sizes the result up front, so it is not reallocated as it grows.
/// Runs `model` over the stream in windows of `config.window_s` (plus `config.context_s` on each
/// side, clipped at the ends) and keeps, from each window, only the frames of its own span, so the
/// audio held at once is bounded by the window and the result equals one pass over the whole file
/// wherever the model's receptive field fits in the context. Frames are aligned to
/// samples_per_frame; a trailing partial frame is dropped. Model exceptions propagate (the caller
/// retries EngineOutOfMemory / std::bad_alloc with smaller windows).
Emissions compute_windowed_emissions(EmissionModel& model, const SampleReader& read, const WindowConfig& config,
                                     std::int64_t expected_samples = 0, const WindowProgress& progress = {},
                                     WindowStats* stats = nullptr);

}  // namespace ab
