// AudioSource: any libsndfile audio file as a stream of mono float32 samples at the model's rate.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "common/result.h"

namespace ab {

/// Streams one audio file (WAV, FLAC, Ogg Vorbis/Opus, MP3, AIFF, anything libsndfile reads) as
/// mono float32 at `target_rate_hz`: channels are averaged, the rate is converted with
/// libsamplerate's streaming API, and the file is read in blocks (memory does not grow with it).
class AudioSource {
 public:
  /// Opens `path`. Errors name the file and say what is wrong: missing/vanished, permission
  /// denied, empty (0 bytes), not a sound file, truncated or corrupt, zero-length audio. Ogg and
  /// MP3 files whose framing shows they were cut short fail here (see container_end.h); files
  /// whose header length turns out longer than what decodes fail in read() (error()).
  static Result<AudioSource> open(const std::string& path, int target_rate_hz);

  AudioSource(AudioSource&&) noexcept;
  AudioSource& operator=(AudioSource&&) noexcept;
  ~AudioSource();

  /// Writes up to `max_samples` mono samples at the target rate to `out`; returns how many.
  /// Returns 0 only at the end of the stream, or on a read error (then error() is non-empty).
  std::size_t read(float* out, std::size_t max_samples);

  /// Non-empty after read() failed mid-stream or the stream ended short of the header's length
  /// (MP3: by more than 1% + 2304 samples) (message names the file, both lengths and what to do).
  const std::string& error() const;

  /// True once read() has returned every sample.
  bool at_end() const;

  const std::string& path() const;
  /// Duration of the audio as the file's header states it: input_frames() / input_rate_hz().
  double duration_s() const;
  /// Frames (samples per channel) in the file at its own rate.
  std::int64_t input_frames() const;
  int input_rate_hz() const;
  int channels() const;
  int target_rate_hz() const;
  /// Expected number of output samples: round(input_frames * target / input rate); the stream may
  /// end up to 2 samples short of it (libsamplerate rounding).
  std::int64_t expected_output_samples() const;
  /// libsndfile's name of the container and encoding, e.g. "FLAC (Free Lossless Audio Codec)".
  std::string format_name() const;

 private:
  struct Impl;
  explicit AudioSource(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ab
