// CtcDecoder: greedy CTC decoding (transcription) with token and word timings, fed in windows.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "worker/ctc_aligner.h"
#include "protocol/transcript.h"

namespace ab {

/// One emitted token: the label's run of best frames [start_frame, end_frame).
struct DecodedToken {
  int label = 0;
  std::int64_t start_frame = 0;
  std::int64_t end_frame = 0;  ///< exclusive
  float score = 0.0f;          ///< mean log-probability over its frames
};

/// One decoded word: tokens between word separators.
struct DecodedWord {
  std::string text;            ///< concatenated label texts
  std::size_t first_token = 0;  ///< index into Decoding::tokens
  std::size_t token_count = 0;
  std::int64_t start_frame = 0;
  std::int64_t end_frame = 0;  ///< exclusive
  float score = 0.0f;          ///< mean of its tokens' scores
};

/// The greedy transcription of some emissions.
struct Decoding {
  std::vector<DecodedToken> tokens;  ///< word separators excluded
  std::vector<DecodedWord> words;
  std::string text() const;          ///< words joined by single spaces
};

/// Greedy (best path) CTC decoder: takes the best label per frame, merges repeats, drops blanks.
/// Emissions may arrive in consecutive windows (push), so it never needs them all at once.
/// A run of the star label decodes as the label's text.
class CtcDecoder {
 public:
  explicit CtcDecoder(LabelSet labels);
  /// Appends `emissions` (the next frames, continuing the previous push).
  void push(const EmissionView& emissions);
  /// Ends the stream and returns the decoding; the decoder is then empty and reusable.
  Decoding finish();

 private:
  void close_run();
  LabelSet labels_;
  std::int64_t frame_ = 0;
  int run_label_ = -1;
  std::int64_t run_start_ = 0;
  double run_sum_ = 0.0;
  std::vector<DecodedToken> tokens_;
  std::vector<bool> word_break_before_;  ///< per token: a separator or nothing came before it
  bool pending_break_ = false;
};

/// Decodes all of `emissions` at once.
Decoding decode_greedy(const EmissionView& emissions, const LabelSet& labels);

}  // namespace ab
