// Tests for windowed emissions: stitching equals one pass, the audio buffer is bounded, errors propagate.
#include "worker/windowed_emissions.h"

#include <cmath>
#include <random>

#include <doctest/doctest.h>

namespace ab {

namespace {

/// A plain C++ model whose frame t depends on the mean of frames t-reach..t+reach of the samples it
/// is given (clipped at the window's edges, as a real network's receptive field is), so windowed
/// and whole-file results agree only when the context covers the reach.
class ReachModel : public EmissionModel {
 public:
  explicit ReachModel(int reach_frames) : reach_(reach_frames) {
    info_.labels = {"<blk>", "a", "b", "c"};
    info_.sample_rate_hz = 1000;
    info_.samples_per_frame = 10;
  }
  const ModelInfo& info() const override { return info_; }
  EmissionChunk compute(const float* x, std::size_t count) override {
    ++calls;
    if (oom_above_samples && count > oom_above_samples) throw EngineOutOfMemory("fake: window too large");
    largest = std::max(largest, count);
    const std::int64_t spf = info_.samples_per_frame;
    const std::int64_t frames = static_cast<std::int64_t>(count) / spf;
    std::vector<double> mean(frames, 0.0);
    for (std::int64_t f = 0; f < frames; ++f) {
      for (std::int64_t s = 0; s < spf; ++s) mean[f] += x[f * spf + s];
      mean[f] /= spf;
    }
    EmissionChunk c;
    c.frames = frames;
    c.labels = 4;
    c.log_probs.resize(frames * 4);
    for (std::int64_t f = 0; f < frames; ++f) {
      double v = 0;
      for (std::int64_t g = std::max<std::int64_t>(0, f - reach_); g <= std::min(frames - 1, f + reach_); ++g) v += mean[g];
      double z = 0;
      for (int l = 0; l < 4; ++l) z += std::exp(v * (l + 1));
      for (int l = 0; l < 4; ++l) c.log_probs[f * 4 + l] = static_cast<float>(v * (l + 1) - std::log(z));
    }
    return c;
  }
  int calls = 0;
  std::size_t largest = 0;
  std::size_t oom_above_samples = 0;

 private:
  int reach_;
  ModelInfo info_;
};

/// Deterministic pseudo-random samples, served in awkward read sizes (at most 777 per call).
struct NoiseStream {
  explicit NoiseStream(std::int64_t total) : total(total) {}
  std::size_t operator()(float* out, std::size_t max) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::int64_t>({static_cast<std::int64_t>(max), 777, total - pos}));
    for (std::size_t i = 0; i < n; ++i) out[i] = dist(rng);
    pos += static_cast<std::int64_t>(n);
    return n;
  }
  std::int64_t total;
  std::int64_t pos = 0;
  std::mt19937 rng{1234};
  std::uniform_real_distribution<float> dist{-1.0f, 1.0f};
};

Emissions run(ReachModel& model, std::int64_t samples, WindowConfig config, WindowStats* stats = nullptr) {
  NoiseStream stream(samples);
  return compute_windowed_emissions(model, std::ref(stream), config, samples, {}, stats);
}

double max_abs_diff(const Emissions& a, const Emissions& b) {
  double d = 0;
  for (std::size_t i = 0; i < a.log_probs.size(); ++i) d = std::max(d, double(std::fabs(a.log_probs[i] - b.log_probs[i])));
  return d;
}

}  // namespace

TEST_CASE("windowed_emissions: windows with enough context stitch to exactly the whole-file pass") {
  ReachModel model(/*reach_frames=*/3);
  const std::int64_t samples = 10'375;  // 10.375 s at 1 kHz: 1037 whole frames and a partial one
  WindowStats whole_stats;
  const Emissions whole = run(model, samples, {1000.0, 0.0}, &whole_stats);
  CHECK(whole_stats.windows == 1);
  CHECK(whole.frames == 1037);
  CHECK(whole.labels == 4);
  CHECK(whole.log_probs.size() == 1037u * 4u);

  WindowStats st;
  const Emissions windowed = run(model, samples, {1.0, 0.05}, &st);  // 100-frame windows, 5 frames context
  CHECK(st.windows == 11);
  CHECK(st.samples == samples);
  REQUIRE(windowed.frames == whole.frames);
  CHECK(max_abs_diff(windowed, whole) < 1e-6);
  CHECK(st.peak_window_samples == (100 + 2 * 5) * 10u);
}

/// Like wav2vec2's feature encoder: frame t reads samples [hop*t, hop*t + kernel), so a window of
/// N samples yields floor((N - kernel) / hop) + 1 frames, fewer than N / hop.
class ConvLikeModel : public EmissionModel {
 public:
  ConvLikeModel() {
    info_.labels = {"<blk>", "a"};
    info_.sample_rate_hz = 16000;
    info_.samples_per_frame = 320;
  }
  const ModelInfo& info() const override { return info_; }
  EmissionChunk compute(const float* x, std::size_t count) override {
    EmissionChunk c;
    c.labels = 2;
    c.frames = count < 400 ? 0 : static_cast<std::int64_t>((count - 400) / 320 + 1);
    for (std::int64_t f = 0; f < c.frames; ++f) {
      double sum = 0;
      for (int s = 0; s < 400; ++s) sum += x[f * 320 + s];
      c.log_probs.push_back(static_cast<float>(sum));
      c.log_probs.push_back(static_cast<float>(-sum));
    }
    return c;
  }

 private:
  ModelInfo info_;
};

TEST_CASE("windowed_emissions: a wav2vec2-like receptive field (400 samples, hop 320) stitches without gaps") {
  ConvLikeModel model;
  const std::int64_t samples = 16000 * 7 + 123;
  NoiseStream a(samples), b(samples);
  const Emissions whole = compute_windowed_emissions(model, std::ref(a), {100.0, 0.0}, samples);
  WindowStats st;
  const Emissions windowed = compute_windowed_emissions(model, std::ref(b), {1.0, 0.1}, samples, {}, &st);
  CHECK(st.windows == 7);
  CHECK(whole.frames == (samples - 400) / 320 + 1);
  REQUIRE(windowed.frames == whole.frames);
  CHECK(windowed.log_probs == whole.log_probs);
}

TEST_CASE("windowed_emissions: too little context changes frames at window edges (the test can fail)") {
  ReachModel model(/*reach_frames=*/3);
  const Emissions whole = run(model, 10'000, {1000.0, 0.0});
  const Emissions windowed = run(model, 10'000, {1.0, 0.01});  // 1 frame of context < reach 3
  REQUIRE(windowed.frames == whole.frames);
  CHECK(max_abs_diff(windowed, whole) > 1e-3);
}

TEST_CASE("windowed_emissions: the audio held at once is bounded by the window, not the stream") {
  ReachModel model(0);
  WindowStats minute, hour;
  const Emissions a = run(model, 60'000, {5.0, 1.0}, &minute);
  const Emissions b = run(model, 3'600'000, {5.0, 1.0}, &hour);
  CHECK(a.frames == 6'000);
  CHECK(b.frames == 360'000);
  CHECK(hour.peak_window_samples == minute.peak_window_samples);
  CHECK(hour.peak_window_samples == 7'000u);  // 5 s + 2 x 1 s context at 1 kHz
  // The buffer: one window and its two contexts, whatever the length.
  CHECK(hour.peak_buffer_samples == 7'000u);
  CHECK(hour.peak_buffer_samples == minute.peak_buffer_samples);
  // The result is sized once from the hint: no doubling slack.
  CHECK(b.log_probs.capacity() <= b.log_probs.size() + 4u * 4u);
}

TEST_CASE("windowed_emissions: short streams, empty streams and a trailing partial frame") {
  ReachModel model(0);
  CHECK(run(model, 0, {1.0, 0.1}).frames == 0);
  CHECK(run(model, 9, {1.0, 0.1}).frames == 0);   // less than one 10-sample frame
  CHECK(run(model, 10, {1.0, 0.1}).frames == 1);
  CHECK(run(model, 1'005, {1.0, 0.1}).frames == 100);
  CHECK(run(model, 1'015, {1.0, 0.1}).frames == 101);
}

TEST_CASE("windowed_emissions: the model's out-of-memory and label mismatches reach the caller") {
  ReachModel model(0);
  model.oom_above_samples = 500;
  CHECK_THROWS_AS(run(model, 5'000, {1.0, 0.0}), EngineOutOfMemory);
  Emissions half = run(model, 5'000, {0.5, 0.0});  // the caller's retry: half-size windows fit
  CHECK(half.frames == 500);
  CHECK(model.largest <= 500u);
}

}  // namespace ab
