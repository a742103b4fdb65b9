// Tests for greedy CTC decoding: collapse, blanks between repeats, word timings, windowed pushes.
#include "worker/ctc_decoder.h"

#include <doctest/doctest.h>

namespace {

ab::LabelSet labels() {
  ab::LabelSet set;
  set.labels = {"<blk>", "|", "a", "b", "c"};
  set.blank = 0;
  set.word_separator = "|";
  return set;
}

/// Emissions whose best label per frame spells `s` ('_' blank, '|' separator, letters).
std::vector<float> spell(const std::string& s) {
  std::vector<float> out;
  for (char ch : s) {
    const int best = ch == '_' ? 0 : ch == '|' ? 1 : 2 + (ch - 'a');
    for (int c = 0; c < 5; ++c) out.push_back(c == best ? -0.1f : -3.0f);
  }
  return out;
}

}  // namespace

TEST_CASE("greedy decoding collapses repeats, keeps blank-separated repeats, splits words") {
  const std::string s = "_aa_a|__bbc_|_cc_";
  const auto em = spell(s);
  const auto d = ab::decode_greedy({em.data(), std::int64_t(s.size()), 5}, labels());
  CHECK(d.text() == "aa bc c");
  REQUIRE(d.tokens.size() == 5);
  CHECK(d.tokens[0].start_frame == 1);
  CHECK(d.tokens[0].end_frame == 3);
  CHECK(d.tokens[1].start_frame == 4);
  CHECK(d.tokens[2].start_frame == 8);
  CHECK(d.tokens[2].end_frame == 10);
  CHECK(d.tokens[0].score == doctest::Approx(-0.1));
  REQUIRE(d.words.size() == 3);
  CHECK(d.words[1].text == "bc");
  CHECK(d.words[1].start_frame == 8);
  CHECK(d.words[1].end_frame == 11);
  CHECK(d.words[2].start_frame == 14);
  CHECK(d.words[2].end_frame == 16);
}

TEST_CASE("pushing emissions in windows gives the same result as one push") {
  const std::string s = "__ab|b_bc|||a__c_aa";
  const auto em = spell(s);
  const auto whole = ab::decode_greedy({em.data(), std::int64_t(s.size()), 5}, labels());
  ab::CtcDecoder dec(labels());
  for (std::size_t start = 0; start < s.size(); start += 3) {
    const std::size_t n = std::min<std::size_t>(3, s.size() - start);
    dec.push({em.data() + start * 5, std::int64_t(n), 5});
  }
  const auto pieces = dec.finish();
  CHECK(pieces.text() == whole.text());
  CHECK(pieces.text() == "ab bbc aca");
  REQUIRE(pieces.tokens.size() == whole.tokens.size());
  for (std::size_t i = 0; i < whole.tokens.size(); ++i) {
    CHECK(pieces.tokens[i].start_frame == whole.tokens[i].start_frame);
    CHECK(pieces.tokens[i].end_frame == whole.tokens[i].end_frame);
  }
  // The decoder is reusable after finish().
  dec.push({em.data(), 4, 5});
  CHECK(dec.finish().text() == "ab");
}

TEST_CASE("all blank decodes to nothing") {
  const auto em = spell("_____");
  const auto d = ab::decode_greedy({em.data(), 5, 5}, labels());
  CHECK(d.tokens.empty());
  CHECK(d.words.empty());
  CHECK(d.text() == "");
}
