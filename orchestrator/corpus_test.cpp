// Tests of the corpus scan: real directories and files in a temporary tree.
#include "orchestrator/corpus.h"

#include <doctest/doctest.h>

#include "tests/testutil/temp_dir.h"

namespace fs = std::filesystem;
using ab::test::TempDir;

TEST_CASE("parse_list_file skips blanks and comments and trims") {
  auto entries = ab::parse_list_file("a.wav\n\n  # note\n  b c.flac \r\n#x\nlast.wav");
  REQUIRE(entries.size() == 3);
  CHECK(entries[0] == "a.wav");
  CHECK(entries[1] == "b c.flac");
  CHECK(entries[2] == "last.wav");
  CHECK(ab::parse_list_file("").empty());
}

TEST_CASE("is_audio_path knows the audio extensions, case-insensitively") {
  CHECK(ab::is_audio_path("x/a.wav"));
  CHECK(ab::is_audio_path("a.FLAC"));
  CHECK(ab::is_audio_path("a.aif"));
  CHECK(ab::is_audio_path("a.opus"));
  CHECK_FALSE(ab::is_audio_path("a.txt"));
  CHECK_FALSE(ab::is_audio_path("wav"));
}

TEST_CASE("a directory is scanned recursively with transcripts and mirrored outputs") {
  TempDir t;
  t.write("corpus/spk1/a.wav", "RIFF1234");
  t.write("corpus/spk1/a.txt", "hello");
  t.write("corpus/spk2/b.flac", "fLaC");
  t.write("corpus/spk2/b.lab", "world");
  t.write("corpus/spk2/notes.txt", "not audio");
  t.write("corpus/c d.mp3", "ID3xx");
  auto corpus = ab::scan_corpus({(t.path() / "corpus").string()}, t.path() / "out");
  CHECK(corpus.problems.empty());
  REQUIRE(corpus.files.size() == 3);
  CHECK(corpus.files[0].relative == fs::path("c d.mp3"));
  CHECK_FALSE(corpus.files[0].transcript.has_value());
  CHECK(corpus.files[0].out_base == t.path() / "out" / "c d");
  CHECK(corpus.files[1].relative == fs::path("spk1/a.wav"));
  REQUIRE(corpus.files[1].transcript.has_value());
  CHECK(*corpus.files[1].transcript == t.path() / "corpus/spk1/a.txt");
  CHECK(corpus.files[1].out_base == t.path() / "out/spk1/a");
  CHECK(corpus.files[1].size_bytes == 8);
  CHECK(corpus.files[1].mtime_ns > 0);
  CHECK(*corpus.files[2].transcript == t.path() / "corpus/spk2/b.lab");
}

TEST_CASE("list files resolve relative paths from their own directory; duplicates count once") {
  TempDir t;
  t.write("data/x.wav", "1");
  t.write("data/y.wav", "22");
  t.write("lists/l.txt", "# my files\n../data/x.wav\n../data/y.wav\n../data/x.wav\n../data/missing.wav\n");
  auto corpus = ab::scan_corpus({"@" + (t.path() / "lists/l.txt").string(), (t.path() / "data/y.wav").string()},
                                t.path() / "out");
  REQUIRE(corpus.files.size() == 2);
  CHECK(corpus.files[0].audio == t.path() / "data/x.wav");
  CHECK(corpus.files[1].size_bytes == 2);
  REQUIRE(corpus.problems.size() == 1);
  CHECK(corpus.problems[0].path == t.path() / "data/missing.wav");
  CHECK(corpus.problems[0].message.find("does not exist") != std::string::npos);
}

TEST_CASE("missing inputs, non-audio files and colliding outputs are problems, not fatal") {
  TempDir t;
  t.write("a/same.wav", "1");
  t.write("b/same.wav", "2");
  t.write("readme.md", "x");
  auto corpus = ab::scan_corpus({(t.path() / "a/same.wav").string(), (t.path() / "b/same.wav").string(),
                                 (t.path() / "readme.md").string(), (t.path() / "nope").string()},
                                t.path() / "out");
  REQUIRE(corpus.files.size() == 1);
  CHECK(corpus.files[0].audio == t.path() / "a/same.wav");
  REQUIRE(corpus.problems.size() == 3);
  CHECK(corpus.problems[0].message.find("would overwrite") != std::string::npos);
  CHECK(corpus.problems[1].message.find("not an audio file") != std::string::npos);
  CHECK(corpus.problems[2].message.find("does not exist") != std::string::npos);
}

TEST_CASE("refresh_corpus_file notices a file that vanished after the scan") {
  TempDir t;
  auto p = t.write("c/v.wav", "abc");
  auto corpus = ab::scan_corpus({(t.path() / "c").string()}, t.path() / "out");
  REQUIRE(corpus.files.size() == 1);
  fs::remove(p);
  std::string error;
  CHECK_FALSE(ab::refresh_corpus_file(corpus.files[0], error));
  CHECK(error.find("vanished") != std::string::npos);
}
