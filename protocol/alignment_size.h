// The CTC alignment's least working memory, known before the emissions exist: from the audio's
// length, the model's frame rate and the transcript's token count. The worker's aligner refuses a
// job above --max-trellis-mib with this figure; the parent (plan) and the worker (before the
// model runs) refuse such a file as early as its size is known, with the same figure and advice.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace ab {

/// Bytes the aligner keeps per token of its result (worker/ctc_aligner.h's TokenSpan).
constexpr std::uint64_t kAlignmentTokenSpanBytes = 32;
/// The narrowest band of CTC states the aligner tries (AlignerConfig::min_band_states).
constexpr std::int64_t kAlignmentMinBandStates = 64;

/// The least working memory align_ctc() needs for `frames` frames and `tokens` tokens: its state
/// tables, the result and one pass of the narrowest band.
std::uint64_t alignment_floor_bytes(std::int64_t frames, std::size_t tokens,
                                    std::int64_t min_band_states = kAlignmentMinBandStates);

/// Frames the model gives at least for `samples` samples at its rate (a trailing partial frame is
/// dropped), less `slack` frames for the resampler's rounding; never negative.
std::int64_t alignment_frames_at_least(std::int64_t samples, int samples_per_frame, std::int64_t slack = 2);

/// "aligning N frames with K tokens needs at least X MiB of search memory but the cap
/// (--max-trellis-mib) is C MiB; rerun it with --max-trellis-mib M or more, or split the file",
/// prefixed "NAME: " unless `name` is empty.
std::string alignment_too_big_message(const std::string& name, std::int64_t frames, std::size_t tokens,
                                      std::uint64_t need_bytes, std::uint64_t cap_bytes);

}  // namespace ab
