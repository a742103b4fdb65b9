// Windowed emissions: bounded audio buffer, frames stitched from overlapping windows.
#include "worker/windowed_emissions.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace ab {

Emissions compute_windowed_emissions(EmissionModel& model, const SampleReader& read, const WindowConfig& config,
                                     std::int64_t expected_samples, const WindowProgress& progress,
                                     WindowStats* stats) {
  const ModelInfo& info = model.info();
  const std::int64_t spf = info.samples_per_frame;
  const std::int64_t window_frames =
      std::max<std::int64_t>(1, std::llround(config.window_s * info.sample_rate_hz / double(spf)));
  const std::int64_t context_frames =
      std::max<std::int64_t>(0, std::llround(config.context_s * info.sample_rate_hz / double(spf)));
  // Reads happen in blocks of about a second so the buffer never overshoots the window by much.
  const std::size_t read_block = static_cast<std::size_t>(std::max<std::int64_t>(spf, info.sample_rate_hz));

  Emissions em;
  em.labels = static_cast<int>(info.labels.size());
  WindowStats local;
  WindowStats& st = stats ? *stats : local;
  st = WindowStats{};
  if (expected_samples > 0) {
    // A few frames of slack: the header's length can be off by a resampler's rounding.
    em.log_probs.reserve(static_cast<std::size_t>((expected_samples / spf + 4) * em.labels));
  }

  std::vector<float> buf;        // audio samples [buf_start, buf_start + buf.size())
  // Never more than one window and its two contexts: reserved once, never reallocated.
  buf.reserve(static_cast<std::size_t>((window_frames + 2 * context_frames) * spf));
  std::int64_t buf_start = 0;
  bool eof = false;
  std::int64_t next_frame = 0;   // first frame not yet produced
  while (true) {
    const std::int64_t left = std::min(context_frames, next_frame);
    const std::int64_t want_end = (next_frame + window_frames + context_frames) * spf;
    while (!eof && buf_start + static_cast<std::int64_t>(buf.size()) < want_end) {
      const std::size_t need = static_cast<std::size_t>(want_end - buf_start) - buf.size();
      const std::size_t old = buf.size();
      buf.resize(old + std::min(need, read_block));
      const std::size_t got = read(buf.data() + old, buf.size() - old);
      buf.resize(old + got);
      st.samples += static_cast<std::int64_t>(got);
      if (got == 0) eof = true;
    }
    st.peak_buffer_samples = std::max(st.peak_buffer_samples, buf.capacity());
    const std::int64_t have_end = buf_start + static_cast<std::int64_t>(buf.size());
    const std::int64_t win_start = (next_frame - left) * spf;
    const std::int64_t win_end = std::min(want_end, have_end);
    const bool last = eof && win_end == have_end;
    // Not even one whole frame beyond what is produced: the stream is done.
    if (win_end - next_frame * spf < spf) break;

    const std::size_t count = static_cast<std::size_t>(win_end - win_start);
    EmissionChunk chunk = model.compute(buf.data() + (win_start - buf_start), count);
    ++st.windows;
    st.peak_window_samples = std::max(st.peak_window_samples, count);
    if (chunk.labels != em.labels) {
      throw std::runtime_error("the model returned " + std::to_string(chunk.labels) + " labels per frame, the sidecar lists " +
                               std::to_string(em.labels));
    }
    const std::int64_t take_end = last ? chunk.frames : std::min(chunk.frames, left + window_frames);
    if (take_end <= left) {
      if (last) break;
      throw std::runtime_error("the model returned " + std::to_string(chunk.frames) + " frames for " +
                               std::to_string(count) + " samples; expected about " + std::to_string(count / spf) +
                               " (samples_per_frame " + std::to_string(spf) + " in the sidecar)");
    }
    em.log_probs.insert(em.log_probs.end(), chunk.log_probs.begin() + left * em.labels,
                        chunk.log_probs.begin() + take_end * em.labels);
    next_frame += take_end - left;
    if (progress) progress(std::min(have_end, next_frame * spf));
    if (last) break;
    // Keep only the next window's left context.
    const std::int64_t keep_from = std::max<std::int64_t>(buf_start, (next_frame - context_frames) * spf);
    if (keep_from > buf_start) {
      buf.erase(buf.begin(), buf.begin() + (keep_from - buf_start));
      buf_start = keep_from;
    }
  }
  em.frames = next_frame;
  // Without a size hint, doubling may have left up to half unused; a reserved vector stays put.
  if (em.log_probs.capacity() > em.log_probs.size() + em.log_probs.size() / 4) em.log_probs.shrink_to_fit();
  return em;
}

}  // namespace ab
