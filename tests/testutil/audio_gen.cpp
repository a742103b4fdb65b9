// Test audio generation with libsndfile, and a Goertzel tone detector.
#include "tests/testutil/audio_gen.h"

#include <sndfile.h>

#include <cmath>

namespace ab::test {

std::vector<AudioFormat> audio_formats() {
  return {
      {"wav", ".wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, false},
      {"flac", ".flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_16, false},
      {"ogg-vorbis", ".ogg", SF_FORMAT_OGG | SF_FORMAT_VORBIS, true},
      {"ogg-opus", ".opus", SF_FORMAT_OGG | SF_FORMAT_OPUS, true},
      {"mp3", ".mp3", SF_FORMAT_MPEG | SF_FORMAT_MPEG_LAYER_III, true},
      {"aiff", ".aiff", SF_FORMAT_AIFF | SF_FORMAT_PCM_16, false},
  };
}

bool can_write(const AudioFormat& format, int rate_hz, int channels) {
  SF_INFO info{};
  info.samplerate = rate_hz;
  info.channels = channels;
  info.format = format.sf_format;
  if (!sf_format_check(&info)) return false;
  if ((format.sf_format & SF_FORMAT_SUBMASK) == SF_FORMAT_OPUS) {
    // libsndfile's Opus encoder accepts only Opus's native rates.
    return rate_hz == 8000 || rate_hz == 12000 || rate_hz == 16000 || rate_hz == 24000 || rate_hz == 48000;
  }
  return true;
}

std::vector<float> tone_samples(const std::vector<Tone>& tones, int rate_hz) {
  std::vector<float> out;
  double phase = 0.0;
  for (const Tone& tone : tones) {
    const auto n = static_cast<std::size_t>(std::llround(tone.duration_s * rate_hz));
    const double step = 2.0 * M_PI * tone.frequency_hz / rate_hz;
    for (std::size_t i = 0; i < n; ++i) {
      out.push_back(static_cast<float>(tone.amplitude * std::sin(phase)));
      phase = std::fmod(phase + step, 2.0 * M_PI);
    }
  }
  return out;
}

std::string write_audio(const std::string& path, const AudioFormat& format, int rate_hz, int channels,
                        const std::vector<float>& interleaved) {
  SF_INFO info{};
  info.samplerate = rate_hz;
  info.channels = channels;
  info.format = format.sf_format;
  SNDFILE* file = sf_open(path.c_str(), SFM_WRITE, &info);
  if (!file) return path + ": cannot write " + format.name + " (" + sf_strerror(nullptr) + ")";
  const sf_count_t frames = static_cast<sf_count_t>(interleaved.size() / std::size_t(channels));
  const sf_count_t wrote = sf_writef_float(file, interleaved.data(), frames);
  std::string error;
  if (wrote != frames) error = path + ": short write (" + sf_strerror(file) + ")";
  if (sf_close(file) != 0 && error.empty()) error = path + ": close failed";
  return error;
}

std::string write_tones(const std::string& path, const AudioFormat& format, int rate_hz, int channels,
                        const std::vector<Tone>& tones) {
  const std::vector<float> mono = tone_samples(tones, rate_hz);
  std::vector<float> interleaved;
  interleaved.reserve(mono.size() * std::size_t(channels));
  for (float v : mono)
    for (int c = 0; c < channels; ++c) interleaved.push_back(v);
  return write_audio(path, format, rate_hz, channels, interleaved);
}

double goertzel_power(const float* x, std::size_t n, double frequency_hz, double rate_hz) {
  if (n == 0) return 0.0;
  const double w = 2.0 * M_PI * frequency_hz / rate_hz;
  const double coeff = 2.0 * std::cos(w);
  double s1 = 0.0, s2 = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const double s0 = x[i] + coeff * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  const double power = s1 * s1 + s2 * s2 - coeff * s1 * s2;  // |X(f)|^2
  return power / (double(n) * double(n));                    // A sine of amplitude A gives ~A^2/4
}

}  // namespace ab::test
