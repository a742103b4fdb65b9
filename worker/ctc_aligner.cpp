// CtcAligner: Viterbi over CTC states with 2-bit back-pointers kept only for a band of states per
// frame, so memory is O(frames * band + tokens) instead of O(frames * tokens).
#include "worker/ctc_aligner.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace ab {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

/// Back-pointer codes, 2 bits each.
enum : std::uint8_t { kStay = 0, kAdvance = 1, kSkip = 2 };

std::string mib_text(std::uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", double(bytes) / (1 << 20));
  return buf;
}

/// The CTC state graph of a token sequence: state 2k+1 is token k, even states are blanks.
struct StateGraph {
  const std::vector<int>& tokens;
  int blank;
  std::int64_t states() const { return 2 * std::int64_t(tokens.size()) + 1; }
  int label(std::int64_t s) const { return (s & 1) ? tokens[std::size_t(s >> 1)] : blank; }
  /// Whether state s may be entered from s-2 (a token different from the previous token).
  bool skip_into(std::int64_t s) const {
    return (s & 1) && s >= 3 && tokens[std::size_t(s >> 1)] != tokens[std::size_t(s >> 1) - 1];
  }
};

}  // namespace

std::int64_t min_frames_for(const std::vector<int>& tokens) {
  std::int64_t n = std::int64_t(tokens.size());
  for (std::size_t i = 1; i < tokens.size(); ++i)
    if (tokens[i] == tokens[i - 1]) ++n;
  return n;
}

Result<Alignment> align_ctc(const EmissionView& em, const std::vector<int>& tokens, const AlignerConfig& config) {
  using R = Result<Alignment>;
  const std::string& name = config.source_name;
  if (tokens.empty()) return R::failure(name + ": nothing to align (the transcript has no tokens)");
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= em.num_labels || tokens[i] == config.blank)
      return R::failure(name + ": token " + std::to_string(i) + " has label id " + std::to_string(tokens[i]) +
                        ", which is the blank or outside the model's " + std::to_string(em.num_labels) + " labels");
  }
  if (config.blank < 0 || config.blank >= em.num_labels)
    return R::failure(name + ": blank index " + std::to_string(config.blank) + " is outside the model's labels");
  const std::int64_t T = em.frames;
  const std::int64_t needed = min_frames_for(tokens);
  if (T < needed)
    return R::failure(name + ": infeasible alignment: " + std::to_string(tokens.size()) +
                      " tokens need at least " + std::to_string(needed) +
                      " frames (tokens + repeated neighbours) but the audio has " + std::to_string(T) +
                      "; the transcript is too long for the audio, or the audio is cut short");

  const StateGraph g{tokens, config.blank};
  const std::int64_t S = g.states();

  // Earliest frame each state can be reached (e) and latest frame from which the end is still
  // reachable (l); both rise with s, so the states valid at frame t form one interval [a_t, b_t].
  std::vector<std::int64_t> earliest(static_cast<std::size_t>(S)), latest(static_cast<std::size_t>(S));
  earliest[0] = 0;
  earliest[1] = 0;
  for (std::int64_t s = 2; s < S; ++s) earliest[s] = (g.skip_into(s) ? earliest[s - 2] : earliest[s - 1]) + 1;
  latest[S - 1] = T - 1;
  latest[S - 2] = T - 1;
  for (std::int64_t s = S - 3; s >= 0; --s) latest[s] = (g.skip_into(s + 2) ? latest[s + 2] : latest[s + 1]) - 1;

  // Exact search: back-pointers for every valid (frame, state), rows rounded up to whole bytes.
  std::uint64_t exact_bp_bytes = 0;
  std::int64_t max_valid_width = 0;
  {
    std::int64_t a = 0, b = 0;
    for (std::int64_t t = 0; t < T; ++t) {
      while (a < S && latest[a] < t) ++a;
      while (b + 1 < S && earliest[b + 1] <= t) ++b;
      const std::int64_t width = b - a + 1;
      exact_bp_bytes += std::uint64_t((width + 3) / 4);
      max_valid_width = std::max(max_valid_width, width);
    }
  }
  // Everything but the back-pointers and score rows: state bounds, band bounds per frame, the
  // result's spans and score sums, and 64 KiB for the allocator's rounding.
  const std::uint64_t fixed_bytes = std::uint64_t(S) * (2 * sizeof(std::int64_t) + sizeof(int) + 1) +
                                    std::uint64_t(T) * 2 * sizeof(std::int64_t) +
                                    tokens.size() * (sizeof(TokenSpan) + sizeof(double)) + (64u << 10);
  auto rows_bytes = [](std::int64_t width) { return std::uint64_t(width + 4) * 2 * sizeof(float); };

  std::int64_t band = max_valid_width;
  bool exact = true;
  if (fixed_bytes + exact_bp_bytes + rows_bytes(max_valid_width) > config.max_trellis_bytes) {
    exact = false;
    const std::uint64_t per_frame_state_bytes_x4 = std::uint64_t(T);  // band/4 bytes per frame
    const std::uint64_t room = config.max_trellis_bytes > fixed_bytes + T + 64 ? config.max_trellis_bytes - fixed_bytes - T - 64 : 0;
    band = std::int64_t(room * 4 / (per_frame_state_bytes_x4 + 32));
    band = std::min(band, max_valid_width);
    if (band < config.min_band_states) {
      const std::uint64_t need = fixed_bytes + std::uint64_t(T) * (std::uint64_t(config.min_band_states + 3) / 4 + 1) +
                                 rows_bytes(config.min_band_states);
      return R::failure(name + ": aligning " + std::to_string(T) + " frames with " + std::to_string(tokens.size()) +
                        " tokens needs at least " + mib_text(need) + " but the cap (--max-trellis-mib) is " +
                        mib_text(config.max_trellis_bytes) + "; raise the cap or split the file");
    }
  }

  std::vector<std::int64_t> lo(static_cast<std::size_t>(T)), hi(static_cast<std::size_t>(T));
  std::uint64_t bp_bytes = 0;
  if (exact) {
    bp_bytes = exact_bp_bytes;
  } else {
    bp_bytes = std::uint64_t(T) * std::uint64_t((band + 3) / 4);
  }
  std::vector<std::uint8_t> bp(bp_bytes, 0);
  // Score rows with two -inf cells in front, so s-1 and s-2 need no bounds checks.
  // Score rows: two -inf cells in front and two behind the band, so s-1, s-2 and s = ph+2 read -inf.
  std::vector<float> prev_row(static_cast<std::size_t>(band + 4), kNegInf), cur_row(prev_row);
  // Per-state label and whether the state may be entered from s-2, read in the inner loop.
  std::vector<int> label(static_cast<std::size_t>(S));
  std::vector<std::uint8_t> skip(static_cast<std::size_t>(S));
  for (std::int64_t x = 0; x < S; ++x) label[std::size_t(x)] = g.label(x), skip[std::size_t(x)] = g.skip_into(x);

  std::uint64_t off = 0;  // byte offset of the current frame's back-pointers
  std::int64_t a = 0, b = 0;
  std::int64_t best_state = 0;
  for (std::int64_t t = 0; t < T; ++t) {
    while (a < S && latest[a] < t) ++a;
    while (b + 1 < S && earliest[b + 1] <= t) ++b;
    std::int64_t l = a, h = b;
    if (!exact && t > 0) {
      l = std::max({a, lo[t - 1], best_state - band / 2});
      h = std::min({b, hi[t - 1] + 2, l + band - 1});
    } else if (!exact) {
      h = std::min(b, l + band - 1);
    }
    if (l > h)
      return R::failure(name + ": the alignment search lost the path at frame " + std::to_string(t) + " of " +
                        std::to_string(T) + " (band of " + std::to_string(band) +
                        " states); raise --max-trellis-mib so more of the search fits");
    lo[t] = l;
    hi[t] = h;
    const float* row = em.row(t);
    float best_score = kNegInf;
    best_state = l;
    if (t == 0) {
      for (std::int64_t s = l; s <= h; ++s) {
        const float v = row[label[std::size_t(s)]];
        cur_row[std::size_t(s - l + 2)] = v;
        if (v > best_score) best_score = v, best_state = s;
      }
    } else {
      // prev_row holds state x at index x - pl + 2. Every index outside [2, ph - pl + 2] is -inf
      // (two cells in front, and the row is reset after each frame), so no bounds checks are needed:
      // s - 2 >= pl - 2 because the band never moves backwards, and s <= ph + 2 < row size.
      const std::int64_t pl = lo[t - 1];
      const float* prev = prev_row.data();
      float* cur = cur_row.data();
      std::uint8_t* bits = bp.data() + off;
      std::uint8_t byte = 0;
      for (std::int64_t s = l; s <= h; ++s) {
        const std::int64_t k = s - pl + 2;
        float v = prev[k];
        std::uint8_t code = kStay;
        const float v1 = prev[k - 1];
        if (v1 > v) v = v1, code = kAdvance;
        if (skip[std::size_t(s)]) {
          const float v2 = prev[k - 2];
          if (v2 > v) v = v2, code = kSkip;
        }
        v += row[label[std::size_t(s)]];
        cur[s - l + 2] = v;
        const std::int64_t i = s - l;
        byte = std::uint8_t(byte | (code << ((i & 3) * 2)));
        if ((i & 3) == 3) *bits++ = byte, byte = 0;
        if (v > best_score) best_score = v, best_state = s;
      }
      if (((h - l) & 3) != 3) *bits = byte;
      off += exact ? std::uint64_t((b - a + 1 + 3) / 4) : std::uint64_t((band + 3) / 4);
    }
    std::swap(prev_row, cur_row);
    std::fill(cur_row.begin(), cur_row.end(), kNegInf);
  }
  // Frame 0 stored no back-pointers; `off` now is the end of frame T-1's.

  // Final state: the last blank or the last token, whichever scores higher (blank on a tie).
  auto final_score = [&](std::int64_t s) {
    return (s >= lo[T - 1] && s <= hi[T - 1]) ? prev_row[std::size_t(s - lo[T - 1] + 2)] : kNegInf;
  };
  std::int64_t s = S - 1;
  float total = final_score(S - 1);
  if (final_score(S - 2) > total) s = S - 2, total = final_score(S - 2);
  if (!(total > kNegInf)) {
    if (!exact)
      return R::failure(name + ": the alignment search did not reach the end of the transcript (band of " +
                        std::to_string(band) + " states); raise --max-trellis-mib");
    return R::failure(name + ": no alignment has nonzero probability (emissions are -inf or NaN on every path)");
  }

  Alignment out;
  out.tokens.resize(tokens.size());
  out.log_prob = total;
  out.band_states = band;
  out.states = S;
  out.exact = exact;
  out.work_bytes = earliest.capacity() * sizeof(std::int64_t) * 2 + lo.capacity() * sizeof(std::int64_t) * 2 +
                   bp.capacity() + prev_row.capacity() * sizeof(float) * 2 + label.capacity() * sizeof(int) +
                   skip.capacity() +
                   out.tokens.capacity() * sizeof(TokenSpan) + tokens.size() * sizeof(double);
  std::vector<double> sums(tokens.size(), 0.0);
  for (auto& span : out.tokens) span.end_frame = -1;
  // Frame t's back-pointers start at off_t; walk offsets backwards from the end.
  std::uint64_t frame_off = off;
  for (std::int64_t t = T - 1; t >= 0; --t) {
    if (s & 1) {
      const std::size_t k = std::size_t(s >> 1);
      TokenSpan& span = out.tokens[k];
      if (span.end_frame < 0) span.end_frame = t + 1, span.token = tokens[k];
      span.start_frame = t;
      sums[k] += em.row(t)[tokens[k]];
    }
    if (t == 0) break;
    const std::int64_t width = exact ? hi[t] - lo[t] + 1 : band;
    frame_off -= std::uint64_t((width + 3) / 4);
    const std::int64_t i = s - lo[t];
    const std::uint8_t code = (bp[frame_off + std::uint64_t(i >> 2)] >> ((i & 3) * 2)) & 3;
    s -= code;
  }
  for (std::size_t k = 0; k < tokens.size(); ++k) {
    TokenSpan& span = out.tokens[k];
    span.score = float(sums[k] / double(span.end_frame - span.start_frame));
  }
  return out;
}

std::vector<WordSpan> word_spans(const Alignment& alignment, const std::vector<TranscriptWord>& words) {
  std::vector<WordSpan> out;
  out.reserve(words.size());
  for (const TranscriptWord& w : words) {
    WordSpan span;
    const TokenSpan& first = alignment.tokens.at(w.first_token);
    const TokenSpan& last = alignment.tokens.at(w.first_token + w.token_count - 1);
    span.start_frame = first.start_frame;
    span.end_frame = last.end_frame;
    double sum = 0.0;
    for (std::size_t k = 0; k < w.token_count; ++k) sum += alignment.tokens[w.first_token + k].score;
    span.score = float(sum / double(w.token_count));
    out.push_back(span);
  }
  return out;
}

}  // namespace ab
