// Transcript: reading a UTF-8 transcript and turning it into the model's token ids and word spans.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace ab {

/// The model's output labels (from the sidecar JSON). Labels are single characters, lower case.
struct LabelSet {
  std::vector<std::string> labels;  ///< label text by index (UTF-8)
  int blank = 0;                    ///< index of the CTC blank
  std::optional<int> star;          ///< index of a token standing for any character the model cannot emit
  std::string word_separator = "|";  ///< label text marking word boundaries; may be absent from labels
  /// Index of the word separator label, if it is one of the labels.
  std::optional<int> separator_index() const;
};

/// One word of the original transcript and the tokens that spell it.
struct TranscriptWord {
  std::string text;             ///< the word as written in the file (original case and punctuation)
  std::size_t first_token = 0;  ///< index into Transcript::tokens
  std::size_t token_count = 0;  ///< at least 1
};

/// A transcript as the aligner needs it.
struct Transcript {
  /// Token ids. When the word separator is a label it sits between words (never at either end).
  std::vector<int> tokens;
  std::vector<TranscriptWord> words;
};

/// Byte offset of the first invalid UTF-8 sequence in `text` (overlongs, surrogates and
/// code points above U+10FFFF are invalid), or nullopt when it is all valid.
std::optional<std::size_t> find_invalid_utf8(std::string_view text);

/// Normalises `text` to `labels`: lower case (or upper case when only that is a label), punctuation dropped, whitespace (and the separator
/// itself) splits words; a character the model cannot emit becomes the star token (runs of them
/// collapse to one star) or, without a star, an error naming every such character.
/// `source_name` is the file name used in error messages. Pure: no I/O.
Result<Transcript> normalize_transcript(std::string_view text, const LabelSet& labels, const std::string& source_name);

/// Reads `path` (must be valid UTF-8; a leading BOM is skipped) and normalises it.
/// Errors name the file: unreadable, not UTF-8 (with the byte offset), no alignable words,
/// characters outside the model.
Result<Transcript> read_transcript(const std::string& path, const LabelSet& labels);

}  // namespace ab
