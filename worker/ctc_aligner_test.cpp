// Tests for the CTC Viterbi aligner: planted single paths, repeats, infeasible input, brute force
// on tiny inputs, banded search against the exact one, and a long input under the memory cap.
#include "worker/ctc_aligner.h"

#include <malloc.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <doctest/doctest.h>
#include <functional>
#include <limits>
#include <new>
#include <random>

// Counts live heap bytes of the whole test binary, so a test can measure what a call allocates.
namespace {
std::atomic<std::int64_t> g_live_bytes{0};
std::atomic<std::int64_t> g_peak_bytes{0};
void note_alloc(void* p) {
  const auto n = static_cast<std::int64_t>(malloc_usable_size(p));
  const std::int64_t live = g_live_bytes.fetch_add(n) + n;
  std::int64_t peak = g_peak_bytes.load();
  while (live > peak && !g_peak_bytes.compare_exchange_weak(peak, live)) {
  }
}
}  // namespace

void* operator new(std::size_t n) {
  void* p = std::malloc(n ? n : 1);
  if (!p) throw std::bad_alloc();
  note_alloc(p);
  return p;
}
void operator delete(void* p) noexcept {
  if (!p) return;
  g_live_bytes.fetch_sub(static_cast<std::int64_t>(malloc_usable_size(p)));
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept { operator delete(p); }

namespace {

using ab::AlignerConfig;
using ab::EmissionView;

constexpr int kBlank = 0;

/// Emissions where frame t's label `path[t]` has log-prob `hit` and every other label a random
/// value well below it, so the planted path is the only best path.
std::vector<float> plant(const std::vector<int>& path, int num_labels, std::uint32_t seed, float hit = -0.05f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> low(-9.0f, -4.0f);
  std::vector<float> out(path.size() * std::size_t(num_labels));
  for (std::size_t t = 0; t < path.size(); ++t)
    for (int c = 0; c < num_labels; ++c) out[t * std::size_t(num_labels) + std::size_t(c)] = c == path[t] ? hit : low(rng);
  return out;
}

/// Frame labels from a readable string: '_' is blank, 'a'.. are labels 1...
std::vector<int> frames_of(const std::string& s) {
  std::vector<int> out;
  for (char c : s) out.push_back(c == '_' ? kBlank : c - 'a' + 1);
  return out;
}

AlignerConfig config() {
  AlignerConfig c;
  c.blank = kBlank;
  c.source_name = "test.wav";
  return c;
}

}  // namespace

TEST_CASE("a planted path with blanks between and around tokens is recovered exactly") {
  const std::vector<int> path = frames_of("__aaa_b__cc___");
  const auto em = plant(path, 5, 1);
  const auto r = ab::align_ctc(EmissionView{em.data(), std::int64_t(path.size()), 5}, {1, 2, 3}, config());
  REQUIRE(r.ok());
  const auto& tok = r->tokens;
  REQUIRE(tok.size() == 3);
  CHECK(tok[0].token == 1);
  CHECK(tok[0].start_frame == 2);
  CHECK(tok[0].end_frame == 5);
  CHECK(tok[1].start_frame == 6);
  CHECK(tok[1].end_frame == 7);
  CHECK(tok[2].start_frame == 9);
  CHECK(tok[2].end_frame == 11);
  CHECK(r->exact);
  CHECK(tok[0].score == doctest::Approx(-0.05));
  CHECK(r->log_prob == doctest::Approx(-0.05 * double(path.size())).epsilon(1e-4));
}

TEST_CASE("a repeated token needs a blank between its copies, and gets one") {
  // "aa" twice in a row: the planted path must put a blank between the two a's.
  const std::vector<int> path = frames_of("_aa_a_b");
  const auto em = plant(path, 3, 2);
  const auto r = ab::align_ctc(EmissionView{em.data(), std::int64_t(path.size()), 3}, {1, 1, 2}, config());
  REQUIRE(r.ok());
  CHECK(r->tokens[0].start_frame == 1);
  CHECK(r->tokens[0].end_frame == 3);
  CHECK(r->tokens[1].start_frame == 4);
  CHECK(r->tokens[1].end_frame == 5);
  CHECK(r->tokens[2].start_frame == 6);
  CHECK(r->tokens[2].end_frame == 7);
}

TEST_CASE("with no blank available, repeats are forced apart even against the emissions") {
  // Emissions say 'a' on every frame; the only legal path for "a a" in 3 frames is a _ a.
  const std::vector<int> path = frames_of("aaa");
  const auto em = plant(path, 2, 3);
  const auto r = ab::align_ctc(EmissionView{em.data(), 3, 2}, {1, 1}, config());
  REQUIRE(r.ok());
  CHECK(r->tokens[0].start_frame == 0);
  CHECK(r->tokens[0].end_frame == 1);
  CHECK(r->tokens[1].start_frame == 2);
  CHECK(r->tokens[1].end_frame == 3);
}

TEST_CASE("infeasible: fewer frames than tokens plus repeats is a clear error") {
  const std::vector<int> path = frames_of("aa");
  const auto em = plant(path, 2, 4);
  const auto r = ab::align_ctc(EmissionView{em.data(), 2, 2}, {1, 1}, config());
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().find("test.wav") != std::string::npos);
  CHECK(r.error().find("infeasible") != std::string::npos);
  CHECK(r.error().find("at least 3 frames") != std::string::npos);
  CHECK(ab::min_frames_for({1, 1, 2, 2, 2, 3}) == 9);
  // Exactly enough frames is feasible.
  const std::vector<int> tight = frames_of("a_a");
  const auto em2 = plant(tight, 2, 5);
  CHECK(ab::align_ctc(EmissionView{em2.data(), 3, 2}, {1, 1}, config()).ok());
}

TEST_CASE("bad tokens and empty transcripts are errors, not crashes") {
  const auto em = plant(frames_of("_a_"), 3, 6);
  CHECK_FALSE(ab::align_ctc(EmissionView{em.data(), 3, 3}, {}, config()).ok());
  CHECK_FALSE(ab::align_ctc(EmissionView{em.data(), 3, 3}, {0}, config()).ok());  // the blank
  CHECK_FALSE(ab::align_ctc(EmissionView{em.data(), 3, 3}, {7}, config()).ok());  // out of range
}

TEST_CASE("blank-only stretches: long silences before, between and after tokens") {
  std::string s = std::string(500, '_') + "ab" + std::string(1000, '_') + "c" + std::string(700, '_');
  const std::vector<int> path = frames_of(s);
  const auto em = plant(path, 4, 7);
  const auto r = ab::align_ctc(EmissionView{em.data(), std::int64_t(path.size()), 4}, {1, 2, 3}, config());
  REQUIRE(r.ok());
  CHECK(r->tokens[0].start_frame == 500);
  CHECK(r->tokens[1].start_frame == 501);
  CHECK(r->tokens[2].start_frame == 1502);
  CHECK(r->tokens[2].end_frame == 1503);
}

// Every legal CTC path for tiny inputs, scored by brute force: the aligner must find the maximum.
TEST_CASE("random emissions: the aligner's path score equals the brute-force maximum") {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 40; ++trial) {
    const int C = 4;
    const int T = 4 + trial % 5;
    std::vector<int> tokens;
    const int L = 1 + trial % 3;
    for (int k = 0; k < L; ++k) tokens.push_back(1 + int(rng() % 3));
    if (ab::min_frames_for(tokens) > T) continue;
    std::vector<float> em(std::size_t(T * C));
    std::normal_distribution<float> nd(0.0f, 2.0f);
    for (auto& v : em) v = nd(rng);
    // Enumerate all label sequences of length T and keep those that collapse to `tokens`.
    double best = -1e30;
    std::vector<int> best_seq;
    std::vector<int> seq(std::size_t(T), 0);
    std::function<void(int)> rec = [&](int t) {
      if (t == T) {
        std::vector<int> collapsed;
        int prev = -1;
        for (int x : seq) {
          if (x != prev && x != kBlank) collapsed.push_back(x);
          prev = x;
        }
        if (collapsed != tokens) return;
        double score = 0;
        for (int u = 0; u < T; ++u) score += em[std::size_t(u * C + seq[std::size_t(u)])];
        if (score > best) best = score, best_seq = seq;
        return;
      }
      for (int c = 0; c < C; ++c) seq[std::size_t(t)] = c, rec(t + 1);
    };
    rec(0);
    const auto r = ab::align_ctc(EmissionView{em.data(), T, C}, tokens, config());
    REQUIRE(r.ok());
    CHECK(r->log_prob == doctest::Approx(best).epsilon(1e-5));
    // The spans match the brute-force best sequence's token runs.
    std::size_t k = 0;
    for (int t = 0; t < T; ++t) {
      const int x = best_seq[std::size_t(t)];
      if (x != kBlank && (t == 0 || best_seq[std::size_t(t - 1)] != x)) {
        CHECK(r->tokens[k].start_frame == t);
        ++k;
      }
    }
  }
}

namespace {

/// A random planted alignment: tokens with 1-3 frames each, blank gaps (forced for repeats), and
/// a few long silences. Returns frame labels; fills `tokens` and each token's start frame.
std::vector<int> random_path(std::size_t n_tokens, int num_labels, std::int64_t frames, std::uint32_t seed,
                             std::vector<int>& tokens, std::vector<std::int64_t>& starts) {
  std::mt19937 rng(seed);
  tokens.clear();
  starts.clear();
  for (std::size_t k = 0; k < n_tokens; ++k) tokens.push_back(1 + int(rng() % std::uint32_t(num_labels - 1)));
  std::vector<int> path;
  for (std::size_t k = 0; k < n_tokens; ++k) {
    int gap = int(rng() % 3);
    if (k > 0 && tokens[k] == tokens[k - 1] && gap == 0) gap = 1;
    if (k == n_tokens / 3) gap += 3000;  // a long silence a third of the way in
    for (int i = 0; i < gap; ++i) path.push_back(kBlank);
    starts.push_back(std::int64_t(path.size()));
    const int len = 1 + int(rng() % 3);
    for (int i = 0; i < len; ++i) path.push_back(tokens[k]);
  }
  REQUIRE(std::int64_t(path.size()) <= frames);
  path.resize(std::size_t(frames), kBlank);
  return path;
}

}  // namespace

TEST_CASE("banded search under a small cap agrees with the exact search") {
  std::vector<int> tokens;
  std::vector<std::int64_t> starts;
  const int C = 12;
  const auto path = random_path(2000, C, 9000, 21, tokens, starts);
  const auto em = plant(path, C, 22, -0.7f);  // weaker peaks: the best path is less obvious
  const EmissionView view{em.data(), std::int64_t(path.size()), C};
  AlignerConfig exact_cfg = config();
  const auto exact = ab::align_ctc(view, tokens, exact_cfg);
  REQUIRE(exact.ok());
  CHECK(exact->exact);
  AlignerConfig banded_cfg = config();
  banded_cfg.max_trellis_bytes = 1 << 20;  // far below the ~9 MiB full search
  banded_cfg.max_exact_bytes = 0;
  const auto banded = ab::align_ctc(view, tokens, banded_cfg);
  INFO((banded.ok() ? std::string() : banded.error()));
  REQUIRE(banded.ok());
  CHECK_FALSE(banded->exact);
  CHECK(banded->band_states < banded->states);
  CHECK(banded->work_bytes <= banded_cfg.max_trellis_bytes);
  CHECK(banded->log_prob == doctest::Approx(exact->log_prob).epsilon(1e-6));
  std::size_t banded_differs = 0, exact_misplaced = 0;
  for (std::size_t k = 0; k < tokens.size(); ++k) {
    if (banded->tokens[k].start_frame != exact->tokens[k].start_frame ||
        banded->tokens[k].end_frame != exact->tokens[k].end_frame)
      ++banded_differs;
    if (exact->tokens[k].start_frame != starts[k]) ++exact_misplaced;
  }
  CHECK(banded_differs == 0);
  CHECK(exact_misplaced == 0);
}

TEST_CASE("random emissions: a narrow band widens until its path is the exact one") {
  // Flat random emissions are the hard case for a band: many paths score alike and the best
  // partial path wanders. Start at 16 states; a path running along a band edge forces a rerun.
  std::mt19937 rng(61);
  std::normal_distribution<float> nd(0.0f, 1.5f);
  int widened = 0, ended_narrower = 0;
  for (int trial = 0; trial < 30; ++trial) {
    const int C = 6;
    const std::int64_t T = 600;
    std::vector<int> tokens;
    for (int k = 0; k < 150; ++k) tokens.push_back(1 + int(rng() % 5));
    std::vector<float> em(std::size_t(T * C));
    for (std::size_t t = 0; t < std::size_t(T); ++t) {
      // Proper log-softmax rows.
      float mx = -1e30f;
      for (int c = 0; c < C; ++c) em[t * C + std::size_t(c)] = nd(rng), mx = std::max(mx, em[t * C + std::size_t(c)]);
      double z = 0;
      for (int c = 0; c < C; ++c) z += std::exp(em[t * C + std::size_t(c)] - mx);
      for (int c = 0; c < C; ++c) em[t * C + std::size_t(c)] -= mx + float(std::log(z));
    }
    const EmissionView view{em.data(), T, C};
    const auto exact = ab::align_ctc(view, tokens, config());
    REQUIRE(exact.ok());
    REQUIRE(exact->exact);
    AlignerConfig narrow = config();
    narrow.max_exact_bytes = 0;
    narrow.band_states = 16;
    narrow.min_band_states = 8;
    const auto banded = ab::align_ctc(view, tokens, narrow);
    REQUIRE(banded.ok());
    CHECK(banded->log_prob == doctest::Approx(exact->log_prob).epsilon(1e-6));
    CHECK_FALSE(banded->band_limited);
    if (banded->passes > 1) ++widened;
    if (!banded->exact) ++ended_narrower;
  }
  MESSAGE(widened << " of 30 random cases needed a wider band than 16 states; " << ended_narrower
                  << " found the exact path with a band narrower than the whole trellis");
  CHECK(widened > 0);  // the widening really happened, so the agreement above is not by luck
}

TEST_CASE("emissions with no finite path are an error") {
  std::vector<float> em(3 * 3, -1.0f);
  for (int t = 0; t < 3; ++t) em[std::size_t(t * 3 + 2)] = -std::numeric_limits<float>::infinity();
  const auto r = ab::align_ctc(EmissionView{em.data(), 3, 3}, {1, 2}, config());
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().find("no alignment has a finite score") != std::string::npos);
  std::fill(em.begin(), em.end(), std::nanf(""));
  CHECK_FALSE(ab::align_ctc(EmissionView{em.data(), 3, 3}, {1, 2}, config()).ok());
  AlignerConfig banded = config();  // the banded search says the same, not "raise the cap"
  banded.max_exact_bytes = 0;
  const auto rb = ab::align_ctc(EmissionView{em.data(), 3, 3}, {1, 2}, banded);
  REQUIRE_FALSE(rb.ok());
  CHECK(rb.error().find("no alignment has a finite score") != std::string::npos);
}

TEST_CASE("a cap too small for the frames is a clear error, not an allocation") {
  std::vector<int> tokens;
  std::vector<std::int64_t> starts;
  const auto path = random_path(100, 5, 5000, 31, tokens, starts);
  const auto em = plant(path, 5, 32);
  AlignerConfig cfg = config();
  cfg.max_trellis_bytes = 20 * 1024;
  const std::int64_t before = g_live_bytes.load();
  g_peak_bytes.store(before);
  const auto r = ab::align_ctc(EmissionView{em.data(), std::int64_t(path.size()), 5}, tokens, cfg);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().find("--max-trellis-mib") != std::string::npos);
  CHECK(r.error().find("test.wav") != std::string::npos);
  CHECK(g_peak_bytes.load() - before < 64 * 1024);
}

TEST_CASE("200k frames x 40 labels with 40k tokens stays under a 64 MiB cap and finds the planted path") {
  std::vector<int> tokens;
  std::vector<std::int64_t> starts;
  const int C = 40;
  const std::int64_t T = 200000;
  const auto path = random_path(40000, C, T, 41, tokens, starts);
  const auto em = plant(path, C, 42);
  // Default band, and a band as wide as the cap allows: both stay under the measured cap.
  for (const std::int64_t band : {std::int64_t(512), std::int64_t(1) << 30}) {
    CAPTURE(band);
    AlignerConfig cfg = config();
    cfg.max_trellis_bytes = 64ull << 20;
    cfg.band_states = band;
    const std::int64_t before = g_live_bytes.load();
    g_peak_bytes.store(before);
    const auto r = ab::align_ctc(EmissionView{em.data(), T, C}, tokens, cfg);
    const std::int64_t peak_extra = g_peak_bytes.load() - before;
    REQUIRE(r.ok());
    MESSAGE("band " << r->band_states << " of " << r->states << " states, " << r->passes << " pass(es), aligner work "
                    << r->work_bytes << " bytes, measured heap peak " << peak_extra << " bytes (full 2-bit trellis: "
                    << (std::uint64_t(T) * std::uint64_t(r->states) / 4) << " bytes)");
    CHECK_FALSE(r->exact);
    CHECK(r->work_bytes <= cfg.max_trellis_bytes);
    // Measured: everything align_ctc allocated, its result (40k spans) included, stays under the cap.
    CHECK(peak_extra <= std::int64_t(cfg.max_trellis_bytes));
    std::size_t wrong = 0;
    for (std::size_t k = 0; k < tokens.size(); ++k)
      if (r->tokens[k].start_frame != starts[k]) ++wrong;
    CHECK(wrong == 0);
  }
}

TEST_CASE("memory grows linearly with the frames at a fixed band") {
  // Same token density, twice the frames and tokens: the work bytes double (within 5%).
  std::uint64_t work[2];
  for (int i = 0; i < 2; ++i) {
    std::vector<int> tokens;
    std::vector<std::int64_t> starts;
    const std::int64_t T = 40000 * (i + 1);
    const auto path = random_path(std::size_t(6000 * (i + 1)), 30, T, 71, tokens, starts);
    const auto em = plant(path, 30, 72);
    AlignerConfig cfg = config();
    cfg.max_exact_bytes = 0;
    const auto r = ab::align_ctc(EmissionView{em.data(), T, 30}, tokens, cfg);
    REQUIRE(r.ok());
    CHECK(r->band_states == cfg.band_states);
    work[i] = r->work_bytes;
  }
  MESSAGE("work bytes: " << work[0] << " for 40k frames, " << work[1] << " for 80k frames");
  CHECK(double(work[1]) / double(work[0]) == doctest::Approx(2.0).epsilon(0.05));
}

TEST_CASE("word spans run from a word's first token to its last") {
  const std::vector<int> path = frames_of("_ab__c_d_");
  const auto em = plant(path, 5, 51);
  const auto r = ab::align_ctc(EmissionView{em.data(), std::int64_t(path.size()), 5}, {1, 2, 3, 4}, config());
  REQUIRE(r.ok());
  const std::vector<ab::TranscriptWord> words = {{"AB", 0, 2}, {"c-d", 2, 2}};
  const auto spans = ab::word_spans(*r, words);
  REQUIRE(spans.size() == 2);
  CHECK(spans[0].start_frame == 1);
  CHECK(spans[0].end_frame == 3);
  CHECK(spans[1].start_frame == 5);
  CHECK(spans[1].end_frame == 8);
  CHECK(spans[1].score == doctest::Approx(-0.05));
}
