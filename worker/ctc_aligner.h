// CtcAligner: CTC forced alignment (Viterbi) whose memory grows linearly with the number of frames.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"
#include "protocol/alignment_size.h"
#include "protocol/transcript.h"

namespace ab {

/// A read-only view of emissions: `frames` rows of `num_labels` log-probabilities, row-major.
struct EmissionView {
  const float* log_probs = nullptr;
  std::int64_t frames = 0;
  int num_labels = 0;
  const float* row(std::int64_t frame) const { return log_probs + frame * num_labels; }
};

/// Settings of one alignment.
struct AlignerConfig {
  int blank = 0;
  /// Upper bound on the aligner's working memory (back-pointers, band bounds, score rows, the
  /// result). A request that cannot fit even a minimal band fails with a clear error instead of
  /// exhausting memory. 256 MiB: the worker's --max-trellis-mib default.
  std::uint64_t max_trellis_bytes = 256ull << 20;
  /// The whole trellis (every reachable frame x state, 2 bits each) is searched when it needs at
  /// most this much (and fits the cap): exact. 16 MiB = 64M frame-states: about 3 minutes of
  /// speech at 15 characters a second and 20 ms frames.
  std::uint64_t max_exact_bytes = 16ull << 20;
  /// Otherwise a band of this many states follows the best partial path (2 bits per state and
  /// frame: 128 bytes per frame, 23 MiB for an hour at 20 ms). If the path found runs within
  /// band/8 states of an edge the band imposed (a better path may lie outside), the search is
  /// repeated with a band 4 times wider, as long as the cap allows.
  /// 512 states = 256 tokens of slack around the best partial path.
  std::int64_t band_states = 512;
  /// Narrowest band (in CTC states) worth trying; below this the request is refused.
  /// 64 states = 32 tokens of slack. The least memory a job needs follows from it
  /// (protocol/alignment_size.h), which the parent and the worker check before decoding.
  std::int64_t min_band_states = kAlignmentMinBandStates;
  /// Name used in error messages (the audio file).
  std::string source_name;
};

/// Where one transcript token lies: frames [start_frame, end_frame) (end exclusive).
struct TokenSpan {
  int token = 0;                  ///< label id
  std::int64_t start_frame = 0;
  std::int64_t end_frame = 0;     ///< exclusive; > start_frame
  float score = 0.0f;             ///< mean log-probability of the token over its frames
};

/// Where one word lies: from its first token's start to its last token's end.
struct WordSpan {
  std::int64_t start_frame = 0;
  std::int64_t end_frame = 0;     ///< exclusive
  float score = 0.0f;             ///< mean of its tokens' scores
};

/// The best path of the transcript through the emissions.
struct Alignment {
  std::vector<TokenSpan> tokens;  ///< one per transcript token, in order
  double log_prob = 0.0;          ///< total log-probability of the path (blanks included)
  std::int64_t band_states = 0;   ///< width of the state band searched (== states when exact)
  std::int64_t states = 0;        ///< 2 * tokens + 1
  bool exact = false;             ///< true when the whole trellis was searched
  int passes = 0;                 ///< searches run (a band the path ran up against is widened and rerun)
  /// The path ran along an edge of the widest band the cap allows: it may not be the best path.
  bool band_limited = false;
  std::uint64_t work_bytes = 0;   ///< bytes the aligner held at its peak (one pass plus the result)
};

/// Aligns `tokens` (label ids, none equal to the blank) to `emissions` with the standard CTC
/// topology: optional blanks between tokens, a repeated token needs a blank between its copies.
/// Exact (full trellis) when that fits config.max_exact_bytes, otherwise a band of states that
/// follows the best partial path: memory O(frames * band + tokens), never above the cap.
/// Errors (naming config.source_name): no tokens, a token out of range or equal to blank,
/// infeasible (frames < tokens + repeats), the cap too small for this many frames, the band
/// losing the path even at the widest the cap allows (raise the cap), no finite-score path.
Result<Alignment> align_ctc(const EmissionView& emissions, const std::vector<int>& tokens, const AlignerConfig& config);

/// Minimum number of frames that can carry `tokens`: tokens + adjacent repeats.
std::int64_t min_frames_for(const std::vector<int>& tokens);

/// Word spans from token spans: word i covers tokens [first_token, first_token + token_count).
std::vector<WordSpan> word_spans(const Alignment& alignment, const std::vector<TranscriptWord>& words);

}  // namespace ab
