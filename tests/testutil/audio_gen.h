// Test audio: tone sequences written as real files in every format libsndfile can write, and a
// Goertzel detector to check a tone survived decoding and resampling.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace ab::test {

/// A container/encoding to write: libsndfile format flags and the usual file extension.
struct AudioFormat {
  std::string name;       ///< "wav", "flac", "ogg-vorbis", "ogg-opus", "mp3", "aiff"
  std::string extension;  ///< ".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff"
  int sf_format = 0;      ///< SF_FORMAT_* major | subtype
  bool lossy = false;
};

/// Every format align-batch promises to read. Opus only exists at 8/12/16/24/48 kHz; callers can
/// ask can_write() first.
std::vector<AudioFormat> audio_formats();

/// Whether this libsndfile can write `format` at `rate_hz` with `channels` (MP3 needs LAME).
bool can_write(const AudioFormat& format, int rate_hz, int channels);

/// One piece of a tone sequence; frequency_hz 0 is silence.
struct Tone {
  double frequency_hz = 440.0;
  double duration_s = 1.0;
  double amplitude = 0.5;
};

/// Mono samples of `tones` back to back at `rate_hz` (phase-continuous sine pieces).
std::vector<float> tone_samples(const std::vector<Tone>& tones, int rate_hz);

/// Writes `interleaved` (frames * channels samples) to `path`. Returns "" or an error message.
std::string write_audio(const std::string& path, const AudioFormat& format, int rate_hz, int channels,
                        const std::vector<float>& interleaved);

/// Writes `tones` with the same signal on every channel. Returns "" or an error message.
std::string write_tones(const std::string& path, const AudioFormat& format, int rate_hz, int channels,
                        const std::vector<Tone>& tones);

/// Goertzel: mean power of `x[0..n)` at `frequency_hz` (a full-scale sine of amplitude A gives A*A/4).
double goertzel_power(const float* x, std::size_t n, double frequency_hz, double rate_hz);

}  // namespace ab::test
