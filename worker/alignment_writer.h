// Alignment outputs: Praat TextGrid, JSON and CTM, built from frames and written atomically.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "worker/ctc_aligner.h"
#include "worker/ctc_decoder.h"
#include "common/result.h"
#include "protocol/transcript.h"

namespace ab {

/// Converts frame indices to seconds: frame * samples_per_frame / sample_rate_hz.
struct FrameClock {
  int samples_per_frame = 320;
  int sample_rate_hz = 16000;
  double seconds(std::int64_t frame) const { return double(frame) * samples_per_frame / sample_rate_hz; }
};

/// One timed interval with a label and a score (mean log-probability).
struct TimedItem {
  std::string text;
  double start_s = 0.0;
  double end_s = 0.0;
  double score = 0.0;
};

/// Everything the output files hold for one audio file.
struct TimedAlignment {
  std::string utterance_id;        ///< CTM utterance column; usually the audio file's stem
  std::string task = "align";      ///< "align" or "transcribe"
  double duration_s = 0.0;         ///< the audio's duration (TextGrid xmax)
  std::vector<TimedItem> words;    ///< in time order, non-overlapping
  std::vector<TimedItem> tokens;   ///< in time order, non-overlapping
};

/// Times a forced alignment. Word texts are the transcript's original words; token texts the labels.
TimedAlignment timed_from_alignment(const Alignment& alignment, const Transcript& transcript, const LabelSet& labels,
                                    const FrameClock& clock, double duration_s, const std::string& utterance_id);

/// Times a greedy decoding.
TimedAlignment timed_from_decoding(const Decoding& decoding, const LabelSet& labels, const FrameClock& clock,
                                   double duration_s, const std::string& utterance_id);

/// Praat TextGrid, long text format, tiers "words" and "tokens"; gaps become empty intervals. Pure.
std::string format_textgrid(const TimedAlignment& timed);
/// JSON: {"utterance", "task", "duration_s", "words": [{"text","start_s","end_s","score"}], "tokens": [...]}. Pure.
std::string format_json(const TimedAlignment& timed);
/// CTM, one line per word: `<utt> 1 <start> <dur> <word> <conf>`, conf = exp(score) in [0, 1]. Pure.
std::string format_ctm(const TimedAlignment& timed);

/// Writes out_base + ".TextGrid", ".json", ".ctm", each atomically. Returns the three paths, or
/// the first error (files already written stay complete; none is ever partial).
Result<std::vector<std::string>> write_alignment_outputs(const TimedAlignment& timed, const std::string& out_base);

}  // namespace ab
