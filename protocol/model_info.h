// The model's sidecar JSON (MODEL.json beside MODEL.pt): labels, blank, star, rates; torch-free.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/transcript.h"
#include "common/sidecar_path.h"

namespace ab {

/// What the emissions of a model mean, as the sidecar describes them (docs/worker-protocol.md).
struct ModelInfo {
  enum class Outputs { kLogProbs, kLogits };

  std::vector<std::string> labels;   ///< one entry per emission column; single characters except blank
  int blank = 0;                     ///< index of the CTC blank
  std::optional<int> star;           ///< index of the "any other character" token, if the model has one
  std::string word_separator;        ///< label that marks word boundaries ("|"); empty: none
  int sample_rate_hz = 16000;        ///< rate the model expects its waveform at
  int samples_per_frame = 320;       ///< hop between emission frames, in samples at sample_rate_hz
  Outputs outputs = Outputs::kLogProbs;  ///< logits get a log_softmax in the engine

  /// Seconds per emission frame.
  double frame_s() const { return static_cast<double>(samples_per_frame) / sample_rate_hz; }
  /// Index of `label`, or -1.
  int index_of(std::string_view label) const;
};

/// Result of parsing a sidecar: `info` on success, otherwise a message saying what is wrong.
struct ModelInfoParse {
  std::optional<ModelInfo> info;
  std::string error;
};

/// Parses sidecar JSON text (pure; no I/O). Checks every field's type and range.
ModelInfoParse parse_model_info(std::string_view json_text);


/// The labels a transcript is normalised to (transcript.h), as the sidecar gives them.
LabelSet label_set_of(const ModelInfo& info);

/// Reads and parses the sidecar of `model_path`; errors name the sidecar file.
ModelInfoParse read_model_info(const std::filesystem::path& model_path);

}  // namespace ab
