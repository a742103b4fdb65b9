// Tests for transcript reading and normalisation: case, punctuation, separators, star, UTF-8.
#include "protocol/transcript.h"

#include <doctest/doctest.h>

#include "tests/testutil/temp_dir.h"

namespace {

/// blank, separator, a..z, apostrophe: the usual wav2vec2 English character set (lower case).
ab::LabelSet english(bool with_star) {
  ab::LabelSet set;
  set.labels = {"<blk>", "|"};
  for (char c = 'a'; c <= 'z'; ++c) set.labels.push_back(std::string(1, c));
  set.labels.push_back("'");
  set.labels.push_back("é");
  if (with_star) {
    set.labels.push_back("*");
    set.star = int(set.labels.size()) - 1;
  }
  set.blank = 0;
  set.word_separator = "|";
  return set;
}

int id(char c) { return 2 + (c - 'a'); }

}  // namespace

TEST_CASE("case is folded, punctuation dropped, words separated by the separator token") {
  const auto r = ab::normalize_transcript("  Hello, World!\n\tIt's  ok. ", english(false), "t.txt");
  REQUIRE(r.ok());
  const std::vector<int> expect = {id('h'), id('e'), id('l'), id('l'), id('o'), 1, id('w'), id('o'), id('r'),
                                   id('l'), id('d'), 1, id('i'), id('t'), 28, id('s'), 1, id('o'), id('k')};
  CHECK(r->tokens == expect);
  REQUIRE(r->words.size() == 4);
  CHECK(r->words[0].text == "Hello,");
  CHECK(r->words[0].first_token == 0);
  CHECK(r->words[0].token_count == 5);
  CHECK(r->words[1].text == "World!");
  CHECK(r->words[1].first_token == 6);
  CHECK(r->words[2].text == "It's");  // the apostrophe is a label, so it is kept
  CHECK(r->words[2].token_count == 4);
  CHECK(r->words[3].first_token == 17);
}

TEST_CASE("non-ASCII letters are lower-cased through Unicode, pure punctuation words vanish") {
  const auto r = ab::normalize_transcript("CAFÉ — «café»", english(false), "t.txt");
  REQUIRE(r.ok());
  REQUIRE(r->words.size() == 2);
  const int e_acute = 29;
  CHECK(r->tokens == std::vector<int>{id('c'), id('a'), id('f'), e_acute, 1, id('c'), id('a'), id('f'), e_acute});
  CHECK(r->words[1].text == "«café»");
}

TEST_CASE("without a separator label, words are just consecutive token runs") {
  ab::LabelSet set = english(false);
  set.word_separator = "";
  const auto r = ab::normalize_transcript("ab cd", set, "t.txt");
  REQUIRE(r.ok());
  CHECK(r->tokens == std::vector<int>{id('a'), id('b'), id('c'), id('d')});
  CHECK(r->words[1].first_token == 2);
}

TEST_CASE("characters the model cannot emit: star when it has one, else an error naming them") {
  const auto starred = ab::normalize_transcript("route 66 ok", english(true), "t.txt");
  REQUIRE(starred.ok());
  const int star = 30;
  REQUIRE(starred->words.size() == 3);
  CHECK(starred->words[1].token_count == 1);  // "66" collapses to one star
  CHECK(starred->tokens[std::size_t(starred->words[1].first_token)] == star);
  const auto mixed = ab::normalize_transcript("x2y", english(true), "t.txt");
  REQUIRE(mixed.ok());
  CHECK(mixed->tokens == std::vector<int>{id('x'), star, id('y')});

  const auto err = ab::normalize_transcript("route 66 ß", english(false), "corpus/a.txt");
  REQUIRE_FALSE(err.ok());
  CHECK(err.error().find("corpus/a.txt") != std::string::npos);
  CHECK(err.error().find("'6'") != std::string::npos);
  CHECK(err.error().find("'ß'") != std::string::npos);
}

TEST_CASE("UTF-8 validation reports the byte offset of the first bad byte") {
  CHECK_FALSE(ab::find_invalid_utf8("plain ascii").has_value());
  CHECK_FALSE(ab::find_invalid_utf8("caf\xC3\xA9 \xF0\x9F\x98\x80").has_value());
  CHECK(ab::find_invalid_utf8("caf\xE9 latin-1") == 3u);
  CHECK(ab::find_invalid_utf8("ab\xC0\xAF") == 2u);          // overlong '/'
  CHECK(ab::find_invalid_utf8("ab\xED\xA0\x80") == 2u);      // surrogate
  CHECK(ab::find_invalid_utf8("abc\xE2\x82") == 3u);         // cut short
  CHECK(ab::find_invalid_utf8("\xF4\x90\x80\x80") == 0u);    // above U+10FFFF
}

TEST_CASE("read_transcript: files, BOM, non-UTF-8, missing, empty") {
  ab::test::TempDir dir("ab-transcript");
  const auto ok = ab::read_transcript(dir.write("a.txt", "\xEF\xBB\xBFHi there\n").string(), english(false));
  REQUIRE(ok.ok());
  CHECK(ok->words.size() == 2);
  CHECK(ok->tokens.front() == id('h'));

  const std::string latin1 = dir.write("latin1.txt", "caf\xE9\n").string();
  const auto bad = ab::read_transcript(latin1, english(false));
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().find("latin1.txt") != std::string::npos);
  CHECK(bad.error().find("not valid UTF-8 at byte offset 3") != std::string::npos);

  const auto missing = ab::read_transcript((dir.path() / "nope.txt").string(), english(false));
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().find("nope.txt") != std::string::npos);

  const auto empty = ab::read_transcript(dir.write("empty.txt", " ... \n").string(), english(false));
  REQUIRE_FALSE(empty.ok());
  CHECK(empty.error().find("no words") != std::string::npos);
}

TEST_CASE("a model with upper-case labels gets upper-case tokens") {
  ab::LabelSet set;
  set.labels = {"-", "|", "E", "H", "L", "O", "'"};
  set.blank = 0;
  const auto r = ab::normalize_transcript("hello HOLE", set, "t.txt");
  REQUIRE(r.ok());
  CHECK(r->tokens == std::vector<int>{3, 2, 4, 4, 5, 1, 3, 5, 4, 2});
}
