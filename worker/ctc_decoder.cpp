// CtcDecoder: greedy best-path CTC decoding with timings, streaming over emission windows.
#include "worker/ctc_decoder.h"

#include <utility>

namespace ab {

std::string Decoding::text() const {
  std::string out;
  for (const DecodedWord& w : words) {
    if (!out.empty()) out += ' ';
    out += w.text;
  }
  return out;
}

CtcDecoder::CtcDecoder(LabelSet labels) : labels_(std::move(labels)) {}

void CtcDecoder::close_run() {
  if (run_label_ < 0) return;
  const std::optional<int> separator = labels_.separator_index();
  if (run_label_ == labels_.blank) {
    // Blanks separate repeats but not words.
  } else if (separator && run_label_ == *separator) {
    pending_break_ = true;
  } else {
    DecodedToken token;
    token.label = run_label_;
    token.start_frame = run_start_;
    token.end_frame = frame_;
    token.score = float(run_sum_ / double(frame_ - run_start_));
    tokens_.push_back(token);
    word_break_before_.push_back(pending_break_ || tokens_.size() == 1);
    pending_break_ = false;
  }
  run_label_ = -1;
}

void CtcDecoder::push(const EmissionView& emissions) {
  for (std::int64_t t = 0; t < emissions.frames; ++t) {
    const float* row = emissions.row(t);
    int best = 0;
    for (int c = 1; c < emissions.num_labels; ++c)
      if (row[c] > row[best]) best = c;
    if (best != run_label_) {
      close_run();
      run_label_ = best;
      run_start_ = frame_;
      run_sum_ = 0.0;
    }
    run_sum_ += row[best];
    ++frame_;
  }
}

Decoding CtcDecoder::finish() {
  close_run();
  Decoding out;
  out.tokens = std::move(tokens_);
  for (std::size_t i = 0; i < out.tokens.size(); ++i) {
    if (word_break_before_[i]) {
      DecodedWord w;
      w.first_token = i;
      out.words.push_back(w);
    }
    DecodedWord& w = out.words.back();
    const DecodedToken& tok = out.tokens[i];
    if (w.token_count == 0) w.start_frame = tok.start_frame;
    w.end_frame = tok.end_frame;
    ++w.token_count;
    w.text += labels_.labels.at(std::size_t(tok.label));
    w.score += tok.score;  // summed here, averaged below
  }
  for (DecodedWord& w : out.words) w.score /= float(w.token_count);
  tokens_.clear();
  word_break_before_.clear();
  frame_ = 0;
  run_label_ = -1;
  pending_break_ = false;
  return out;
}

Decoding decode_greedy(const EmissionView& emissions, const LabelSet& labels) {
  CtcDecoder decoder(labels);
  decoder.push(emissions);
  return decoder.finish();
}

}  // namespace ab
