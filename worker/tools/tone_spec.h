// The tone test model's fixed design, shared by make-tone-model and the tests that synthesise audio for it.
#pragma once

#include <string>
#include <vector>

namespace ab::tone {

constexpr int kSampleRateHz = 16000;
constexpr int kSamplesPerFrame = 320;  ///< 20 ms; every tone below has a whole number of cycles in it
/// Labels: blank (silence), the word separator and eight letters, each a tone.
inline const std::vector<std::string>& labels() {
  static const std::vector<std::string> kLabels = {"<blk>", "|", "a", "b", "c", "d", "e", "f", "g", "h"};
  return kLabels;
}
/// Frequency of label `k` (k >= 1): 400, 700, ... 2800 Hz, all multiples of 50 Hz (one 20 ms frame
/// holds whole cycles, so the detectors are orthogonal) and below 8 kHz audio's Nyquist rate.
constexpr double frequency_hz(int label) { return 400.0 + 300.0 * (label - 1); }
/// Amplitude below which a frame counts as silence (blank), relative to full scale.
constexpr double kBlankAmplitude = 0.05;
/// Logit scale per unit of amplitude: a 0.5 tone scores 20, blank 2, other tones about 0.
constexpr double kGain = 40.0;

}  // namespace ab::tone
