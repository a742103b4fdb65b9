// CtcAligner: Viterbi over CTC states with 2-bit back-pointers kept only for a band of states per
// frame, so memory is O(frames * band + tokens) instead of O(frames * tokens).
#include "worker/ctc_aligner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace ab {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

/// Back-pointer codes, 2 bits each: the predecessor state is s - code.
enum : std::uint8_t { kStay = 0, kAdvance = 1, kSkip = 2 };

std::string mib_text(std::uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", double(bytes) / (1 << 20));
  return buf;
}

/// The CTC state graph of a token sequence (state 2k+1 is token k, even states are blanks) and,
/// per state, the frames at which it can lie on a complete path.
struct StateTables {
  std::vector<int> label;            ///< label id of each state
  std::vector<std::uint8_t> skip;    ///< 1 if the state may be entered from s-2 (token differs from the previous)
  std::vector<std::int32_t> earliest;  ///< first frame at which the state is reachable from the start
  std::vector<std::int32_t> latest;    ///< last frame from which the end is still reachable
  std::uint64_t bytes() const { return label.capacity() * 4 + skip.capacity() + earliest.capacity() * 8; }

  StateTables(const std::vector<int>& tokens, int blank, std::int64_t frames) {
    const std::size_t S = 2 * tokens.size() + 1;
    label.resize(S);
    skip.resize(S);
    earliest.resize(S);
    latest.resize(S);
    for (std::size_t s = 0; s < S; ++s) {
      label[s] = (s & 1) ? tokens[s >> 1] : blank;
      skip[s] = (s & 1) && s >= 3 && tokens[s >> 1] != tokens[(s >> 1) - 1];
    }
    // Both rise with s, so the states valid at frame t form one interval [a_t, b_t].
    earliest[0] = earliest[1] = 0;
    for (std::size_t s = 2; s < S; ++s) earliest[s] = (skip[s] ? earliest[s - 2] : earliest[s - 1]) + 1;
    latest[S - 1] = latest[S - 2] = std::int32_t(frames - 1);
    for (std::size_t s = S - 2; s-- > 0;) latest[s] = (s + 2 < S && skip[s + 2] ? latest[s + 2] : latest[s + 1]) - 1;
  }
};

/// Walks the valid interval [a_t, b_t] frame by frame.
struct ValidStates {
  const StateTables& tab;
  std::int64_t a = 0, b = 0;
  void advance_to(std::int64_t t) {
    const auto S = std::int64_t(tab.label.size());
    while (a < S && tab.latest[std::size_t(a)] < t) ++a;
    while (b + 1 < S && tab.earliest[std::size_t(b + 1)] <= t) ++b;
  }
};

/// Back-pointer bytes and widest row of the exact search.
struct ExactSize {
  std::uint64_t bp_bytes = 0;
  std::int64_t max_width = 0;
};

ExactSize exact_size(const StateTables& tab, std::int64_t T) {
  ExactSize size;
  ValidStates valid{tab};
  for (std::int64_t t = 0; t < T; ++t) {
    valid.advance_to(t);
    const std::int64_t width = valid.b - valid.a + 1;
    if (t > 0) size.bp_bytes += std::uint64_t((width + 3) / 4);
    size.max_width = std::max(size.max_width, width);
  }
  return size;
}

/// Bytes of one pass besides its back-pointers: band bounds per frame and two score rows.
std::uint64_t pass_overhead_bytes(std::int64_t T, std::int64_t width) {
  return std::uint64_t(T) * 2 * sizeof(std::int32_t) + std::uint64_t(width + 4) * 2 * sizeof(float);
}

/// Back-pointer bytes of a banded pass.
std::uint64_t band_bp_bytes(std::int64_t T, std::int64_t band) { return std::uint64_t(T - 1) * std::uint64_t((band + 3) / 4); }

struct PassOutcome {
  bool lost = false;           ///< no finite path inside the band (banded passes only)
  bool near_edge = false;      ///< the path came within a margin of an edge the band (not the graph) imposed
  std::int64_t lost_frame = 0;
  bool no_finite_path = false;  ///< exact pass: every complete path scores -inf or NaN
  std::uint64_t bytes = 0;
};

/// One Viterbi pass: exact (band = the whole valid interval) or banded. On success fills
/// `out.tokens` and `out.log_prob`.
PassOutcome viterbi_pass(const EmissionView& em, const std::vector<int>& tokens, const StateTables& tab, bool exact,
                         std::int64_t band, std::uint64_t exact_bp_bytes, Alignment& out) {
  const std::int64_t T = em.frames;
  const auto S = std::int64_t(tab.label.size());
  PassOutcome outcome;
  std::vector<std::int32_t> lo(static_cast<std::size_t>(T)), hi(static_cast<std::size_t>(T));
  std::vector<std::uint8_t> bp(exact ? exact_bp_bytes : band_bp_bytes(T, band), 0);
  // Score rows hold state x at index x - lo + 2, with -inf two cells in front and beyond the band,
  // so s-1, s-2 and s = ph+2 need no bounds checks (the band never moves backwards).
  std::vector<float> prev_row(static_cast<std::size_t>(band + 4), kNegInf), cur_row(prev_row);
  // Per frame: bit 0 set when the band cut states off below, bit 1 when it cut them off above.
  std::vector<std::uint8_t> cut(exact ? 0 : static_cast<std::size_t>(T), 0);
  outcome.bytes = lo.capacity() * 8 + bp.capacity() + prev_row.capacity() * 2 * sizeof(float) + cut.capacity();

  ValidStates valid{tab};
  std::uint64_t off = 0;
  std::int64_t best_state = 0;
  for (std::int64_t t = 0; t < T; ++t) {
    valid.advance_to(t);
    std::int64_t l = valid.a, h = valid.b;
    if (!exact) {
      // Centre the band on the previous frame's best state, within what the graph allows; when
      // the graph cuts the top off, give the room to the bottom, so a band as wide as the valid
      // interval is the exact search.
      const std::int64_t floor = t > 0 ? std::max(l, std::int64_t(lo[t - 1])) : l;
      const std::int64_t ceiling = t > 0 ? std::min(h, std::int64_t(hi[t - 1]) + 2) : h;
      l = std::max(floor, best_state - band / 2);
      h = std::min(ceiling, l + band - 1);
      if (h - l + 1 < band) l = std::max(floor, h - band + 1);
      if (l > h) {
        outcome.lost = true;
        outcome.lost_frame = t;
        return outcome;
      }
    }
    lo[t] = std::int32_t(l);
    hi[t] = std::int32_t(h);
    if (!exact) cut[std::size_t(t)] = std::uint8_t((l > valid.a ? 1 : 0) | (h < valid.b ? 2 : 0));
    const float* row = em.row(t);
    float* cur = cur_row.data();
    float best_score = kNegInf;
    best_state = l;
    if (t == 0) {
      for (std::int64_t s = l; s <= h; ++s) {
        const float v = row[tab.label[std::size_t(s)]];
        cur[s - l + 2] = v;
        if (v > best_score) best_score = v, best_state = s;
      }
    } else {
      const std::int64_t pl = lo[t - 1];
      const float* prev = prev_row.data();
      std::uint8_t* bits = bp.data() + off;
      std::uint8_t byte = 0;
      for (std::int64_t s = l; s <= h; ++s) {
        const std::int64_t k = s - pl + 2;
        float v = prev[k];
        std::uint8_t code = kStay;
        const float v1 = prev[k - 1];
        if (v1 > v) v = v1, code = kAdvance;
        if (tab.skip[std::size_t(s)]) {
          const float v2 = prev[k - 2];
          if (v2 > v) v = v2, code = kSkip;
        }
        v += row[tab.label[std::size_t(s)]];
        cur[s - l + 2] = v;
        const std::int64_t i = s - l;
        byte = std::uint8_t(byte | (code << ((i & 3) * 2)));
        if ((i & 3) == 3) *bits++ = byte, byte = 0;
        if (v > best_score) best_score = v, best_state = s;
      }
      if (((h - l) & 3) != 3) *bits = byte;
      off += std::uint64_t(((exact ? h - l + 1 : band) + 3) / 4);
    }
    std::swap(prev_row, cur_row);
    std::fill(cur_row.begin(), cur_row.end(), kNegInf);
  }

  // Final state: the last blank or the last token, whichever scores higher (the blank on a tie).
  auto final_score = [&](std::int64_t s) {
    return (s >= lo[T - 1] && s <= hi[T - 1]) ? prev_row[std::size_t(s - lo[T - 1] + 2)] : kNegInf;
  };
  std::int64_t s = S - 1;
  float total = final_score(S - 1);
  if (final_score(S - 2) > total) s = S - 2, total = final_score(S - 2);
  if (!(total > kNegInf)) {  // also catches NaN
    if (exact) {
      outcome.no_finite_path = true;
    } else {
      outcome.lost = true;
      outcome.lost_frame = T - 1;
    }
    return outcome;
  }

  out.tokens.assign(tokens.size(), TokenSpan{});
  std::vector<double> sums(tokens.size(), 0.0);
  for (auto& span : out.tokens) span.end_frame = -1;
  // A path that runs within `margin` states of an edge the band imposed may have been pushed off a
  // better one outside the band: the caller widens the band and searches again.
  const std::int64_t margin = std::max<std::int64_t>(2, band / 8);
  for (std::int64_t t = T - 1; t >= 0; --t) {
    if (!exact) {
      const std::uint8_t c = cut[std::size_t(t)];
      if (((c & 1) && s - lo[t] < margin) || ((c & 2) && hi[t] - s < margin)) outcome.near_edge = true;
    }
    if (s & 1) {
      const std::size_t k = std::size_t(s >> 1);
      TokenSpan& span = out.tokens[k];
      if (span.end_frame < 0) span.end_frame = t + 1, span.token = tokens[k];
      span.start_frame = t;
      sums[k] += em.row(t)[tokens[k]];
    }
    if (t == 0) break;
    // Frame t's back-pointers end where frame t+1's begin: walk the offsets backwards.
    off -= std::uint64_t(((exact ? hi[t] - lo[t] + 1 : band) + 3) / 4);
    const std::int64_t i = s - lo[t];
    s -= (bp[off + std::uint64_t(i >> 2)] >> ((i & 3) * 2)) & 3;
  }
  for (std::size_t k = 0; k < tokens.size(); ++k) {
    TokenSpan& span = out.tokens[k];
    span.score = float(sums[k] / double(span.end_frame - span.start_frame));
  }
  out.log_prob = total;
  outcome.bytes += sums.capacity() * sizeof(double);
  return outcome;
}

/// Memory outside the passes: the state tables, the result's spans and 64 KiB for the allocator
/// (as protocol/alignment_size.cpp counts them).
std::uint64_t fixed_bytes_of(std::size_t tokens) {
  return (2 * std::uint64_t(tokens) + 1) * 13 + tokens * sizeof(TokenSpan) + (64u << 10);
}
static_assert(sizeof(TokenSpan) == kAlignmentTokenSpanBytes, "protocol/alignment_size.h counts a TokenSpan's bytes");

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
  if (config.blank < 0 || config.blank >= em.num_labels)
    return R::failure(name + ": blank index " + std::to_string(config.blank) + " is outside the model's labels");
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= em.num_labels || tokens[i] == config.blank)
      return R::failure(name + ": token " + std::to_string(i) + " has label id " + std::to_string(tokens[i]) +
                        ", which is the blank or outside the model's " + std::to_string(em.num_labels) + " labels");
  }
  const std::int64_t T = em.frames;
  const std::int64_t needed = min_frames_for(tokens);
  if (T < needed)
    return R::failure(name + ": infeasible alignment: " + std::to_string(tokens.size()) +
                      " tokens need at least " + std::to_string(needed) +
                      " frames (tokens + repeated neighbours) but the audio has " + std::to_string(T) +
                      "; the transcript is too long for the audio, or the audio is cut short");
  if (T >= std::numeric_limits<std::int32_t>::max() || 2 * std::int64_t(tokens.size()) + 1 >= std::numeric_limits<std::int32_t>::max())
    return R::failure(name + ": too many frames or tokens for one alignment; split the file");

  const std::uint64_t S = 2 * tokens.size() + 1;
  const std::uint64_t fixed_bytes = fixed_bytes_of(tokens.size());
  const std::uint64_t cap = config.max_trellis_bytes;
  const std::uint64_t minimal = alignment_floor_bytes(T, tokens.size(), config.min_band_states);
  auto too_big = [&] { return R::failure(alignment_too_big_message(name, T, tokens.size(), minimal, cap)); };
  if (minimal > cap) return too_big();  // refuse before allocating anything sizeable

  const StateTables tab(tokens, config.blank, T);
  const ExactSize exact = exact_size(tab, T);
  const std::uint64_t exact_total = fixed_bytes + exact.bp_bytes + pass_overhead_bytes(T, exact.max_width) +
                                    tokens.size() * sizeof(double);
  // Widest band the cap allows: bp (T-1)*ceil(band/4) + rows 8*(band+4) + the rest.
  const std::uint64_t band_room = cap - std::min(cap, fixed_bytes + pass_overhead_bytes(T, 0) +
                                                          tokens.size() * sizeof(double) + 2 * std::uint64_t(T));
  const std::int64_t widest = std::min(exact.max_width, std::int64_t(band_room * 4 / (std::uint64_t(T) + 32)));

  Alignment out;
  out.states = std::int64_t(S);
  if (exact.bp_bytes <= config.max_exact_bytes && exact_total <= cap) {
    const PassOutcome pass = viterbi_pass(em, tokens, tab, true, exact.max_width, exact.bp_bytes, out);
    out.passes = 1;
    if (pass.no_finite_path)
      return R::failure(name + ": no alignment has a finite score (the emissions are -inf or NaN on every path)");
    out.exact = true;
    out.band_states = exact.max_width;
    out.work_bytes = tab.bytes() + out.tokens.capacity() * sizeof(TokenSpan) + pass.bytes;
    return out;
  }
  std::int64_t band = std::min(std::max(config.band_states, config.min_band_states), widest);
  if (band < config.min_band_states && band < exact.max_width) return too_big();  // small inputs need no more
  std::uint64_t peak_pass_bytes = 0;
  while (true) {
    const PassOutcome pass = viterbi_pass(em, tokens, tab, false, band, 0, out);
    ++out.passes;
    peak_pass_bytes = std::max(peak_pass_bytes, pass.bytes);
    if (!pass.lost && (!pass.near_edge || band >= widest)) {
      out.band_limited = pass.near_edge;
      break;
    }
    if (pass.lost && band >= exact.max_width)  // the band held every valid state: nothing to widen
      return R::failure(name + ": no alignment has a finite score (the emissions are -inf or NaN on every path)");
    if (band >= widest)
      return R::failure(name + ": the alignment search lost the path at frame " + std::to_string(pass.lost_frame) +
                        " of " + std::to_string(T) + " even with a band of " + std::to_string(band) +
                        " states (the widest " + mib_text(cap) +
                        " allows); raise --max-trellis-mib, or check that the transcript matches the audio");
    band = std::min(band * 4, widest);
  }
  out.exact = band >= exact.max_width;
  out.band_states = band;
  out.work_bytes = tab.bytes() + out.tokens.capacity() * sizeof(TokenSpan) + peak_pass_bytes;
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
