// End-to-end test of the torch-free chain on real files: tone audio in every format, rate and
// channel count -> AudioSource -> per-frame tone detector emissions -> align_ctc / decode_greedy,
// checking every token boundary against the synthesis within one frame.
#include <algorithm>
#include <cmath>
#include <doctest/doctest.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/testutil/audio_gen.h"
#include "tests/testutil/temp_dir.h"
#include "worker/alignment_writer.h"
#include "worker/audio_source.h"
#include "worker/ctc_aligner.h"
#include "worker/ctc_decoder.h"

namespace {

constexpr int kRate = 16000;
constexpr int kSamplesPerFrame = 320;  // 20 ms, as wav2vec2
/// Label i (1..4) is a tone; multiples of 50 Hz so each falls on a bin of a 320-sample frame.
const double kToneHz[] = {0.0, 400.0, 700.0, 1100.0, 1600.0};
constexpr int kLabels = 5;

/// One frame's log-probabilities: each tone's energy against a fixed floor for the blank.
void frame_emissions(const float* x, float* out) {
  double logits[kLabels];
  logits[0] = std::log(0.004);  // silence: below a tone of amplitude ~0.13
  for (int i = 1; i < kLabels; ++i) logits[i] = std::log(ab::test::goertzel_power(x, kSamplesPerFrame, kToneHz[i], kRate) + 1e-7);
  double mx = logits[0];
  for (double v : logits) mx = std::max(mx, v);
  double z = 0;
  for (double v : logits) z += std::exp(v - mx);
  for (int i = 0; i < kLabels; ++i) out[i] = float(logits[i] - mx - std::log(z));
}

struct Piece {
  int label;  // 0: silence
  double duration_s;
};

}  // namespace

TEST_CASE("tone audio in every format, rate and channel count aligns to the synthesis within one frame") {
  // "a b | c a a(after a gap) | d b", with silences of several lengths and two tokens back to back.
  const std::vector<Piece> pieces = {{0, 0.31}, {1, 0.25}, {2, 0.18}, {0, 0.12}, {3, 0.3},  {1, 0.2},
                                     {0, 0.1},  {1, 0.22}, {0, 0.4},  {4, 0.27}, {2, 0.33}, {0, 0.25}};
  std::vector<ab::test::Tone> tones;
  std::vector<int> tokens;
  std::vector<double> starts_s, ends_s;
  double t = 0;
  for (const Piece& p : pieces) {
    tones.push_back({kToneHz[p.label], p.duration_s, p.label ? 0.5 : 0.0});
    if (p.label) tokens.push_back(p.label), starts_s.push_back(t), ends_s.push_back(t + p.duration_s);
    t += p.duration_s;
  }
  ab::LabelSet labels;
  labels.labels = {"<blk>", "a", "b", "c", "d"};
  labels.word_separator = "";

  ab::test::TempDir dir("ab-e2e");
  int runs = 0;
  double worst_error_frames = 0;
  for (const ab::test::AudioFormat& format : ab::test::audio_formats()) {
    for (int rate : {8000, 22050, 44100, 48000}) {
      for (int channels : {1, 2}) {
        if (!ab::test::can_write(format, rate, channels)) continue;
        CAPTURE(format.name);
        CAPTURE(rate);
        CAPTURE(channels);
        const std::string path = (dir.path() / ("e2e_" + format.name + std::to_string(rate) + "_" +
                                                std::to_string(channels) + format.extension)).string();
        REQUIRE(ab::test::write_tones(path, format, rate, channels, tones) == "");
        auto src = ab::AudioSource::open(path, kRate);
        REQUIRE(src.ok());
        // Stream: frames are cut from the samples as they arrive.
        std::vector<float> pending, emissions, block(1000);
        while (const std::size_t n = src->read(block.data(), block.size())) {
          pending.insert(pending.end(), block.begin(), block.begin() + std::ptrdiff_t(n));
          std::size_t used = 0;
          for (; used + kSamplesPerFrame <= pending.size(); used += kSamplesPerFrame) {
            emissions.resize(emissions.size() + kLabels);
            frame_emissions(pending.data() + used, emissions.data() + emissions.size() - kLabels);
          }
          pending.erase(pending.begin(), pending.begin() + std::ptrdiff_t(used));
        }
        REQUIRE(src->error() == "");
        const ab::EmissionView view{emissions.data(), std::int64_t(emissions.size() / kLabels), kLabels};
        ab::AlignerConfig config;
        config.source_name = path;
        const auto aligned = ab::align_ctc(view, tokens, config);
        REQUIRE(aligned.ok());
        const ab::FrameClock clock{kSamplesPerFrame, kRate};
        for (std::size_t k = 0; k < tokens.size(); ++k) {
          const double start_err = std::fabs(clock.seconds(aligned->tokens[k].start_frame) - starts_s[k]) / 0.02;
          const double end_err = std::fabs(clock.seconds(aligned->tokens[k].end_frame) - ends_s[k]) / 0.02;
          worst_error_frames = std::max({worst_error_frames, start_err, end_err});
          CHECK(start_err <= 1.0);
          CHECK(end_err <= 1.0);
        }
        if (runs == 0) {
          // The outputs of one run: JSON read back holds the same times.
          ab::Transcript transcript;
          transcript.tokens = tokens;
          for (std::size_t k = 0; k < tokens.size(); ++k)
            transcript.words.push_back({labels.labels[std::size_t(tokens[k])], k, 1});
          const auto timed = ab::timed_from_alignment(*aligned, transcript, labels, clock, src->duration_s(), "e2e");
          const auto written = ab::write_alignment_outputs(timed, (dir.path() / "e2e").string());
          REQUIRE(written.ok());
          const auto j = nlohmann::json::parse(std::ifstream(written.value()[1]));
          REQUIRE(j["words"].size() == tokens.size());
          for (std::size_t k = 0; k < tokens.size(); ++k)
            CHECK(std::fabs(j["words"][k]["start_s"].get<double>() - starts_s[k]) <= 0.02);
        }
        // Transcription of the same emissions returns the exact sequence.
        const ab::Decoding decoded = ab::decode_greedy(view, labels);
        CHECK(decoded.text() == "abcaadb");
        ++runs;
      }
    }
  }
  MESSAGE(runs << " files aligned; worst boundary error " << worst_error_frames << " frames");
  CHECK(runs >= 30);
}
