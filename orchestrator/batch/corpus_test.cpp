// Tests of the corpus scan: real directories and files in a temporary tree.
#include "orchestrator/batch/corpus.h"

#include <doctest/doctest.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "tests/testutil/audio_gen.h"
#include "tests/testutil/temp_dir.h"

namespace fs = std::filesystem;
using ab::test::TempDir;

namespace {

const ab::test::AudioFormat& audio_format(const std::string& name) {
  static const auto formats = ab::test::audio_formats();
  for (const auto& f : formats)
    if (f.name == name) return f;
  FAIL("no audio format " << name);
  return formats.front();
}

/// Writes `seconds` of a 440 Hz tone to `path` (created with its directory).
void write_tone(const fs::path& path, const std::string& format, int rate_hz, int channels, double seconds) {
  fs::create_directories(path.parent_path());
  REQUIRE(ab::test::write_tones(path.string(), audio_format(format), rate_hz, channels, {{440.0, seconds, 0.5}}) == "");
}

}  // namespace

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
  std::vector<std::size_t> counts;  // what a progress display sees: one call per file found
  auto corpus = ab::scan_corpus({(t.path() / "corpus").string()}, t.path() / "out",
                                [&](std::size_t found) { counts.push_back(found); });
  CHECK(corpus.problems.empty());
  REQUIRE(corpus.files.size() == 3);
  CHECK(counts == std::vector<std::size_t>{1, 2, 3});
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
  // The parts a run builds without the whole file agree with it.
  for (std::size_t i = 0; i < corpus.files.size(); ++i) {
    const ab::CorpusFile f = corpus.files[i];
    CHECK(corpus.files.audio_path(i) == f.audio.string());
    CHECK(corpus.files.relative_path(i) == f.relative.string());
    CHECK(corpus.files.size_bytes(i) == f.size_bytes);
    CHECK(corpus.files.mtime_ns(i) == f.mtime_ns);
    CHECK(corpus.files.audio_duration_s(i) == f.audio_duration_s);
  }
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

TEST_CASE("a dangling symlink is its own problem, not a scan error of its directory") {
  // Alone in its directory, the link is readdir's last entry: the failed stat of its target set
  // errno, which once survived to the end of the listing and read as a readdir error.
  TempDir t;
  t.write("corpus/ok/a.wav", "RIFF1234");
  fs::create_directories(t.path() / "corpus/links");
  fs::create_symlink(t.path() / "nowhere.wav", t.path() / "corpus/links/gone.wav");
  auto corpus = ab::scan_corpus({(t.path() / "corpus").string()}, t.path() / "out");
  CHECK(corpus.files.size() == 1);
  REQUIRE(corpus.problems.size() == 1);
  CHECK(corpus.problems[0].path == t.path() / "corpus/links/gone.wav");
  CHECK(corpus.problems[0].message.find("symlink whose target is missing") != std::string::npos);
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
  ab::CorpusFile f = corpus.files[0];
  auto fresh = ab::refresh_corpus_file(f);
  CHECK_FALSE(fresh.ok());
  CHECK(fresh.error().find("vanished") != std::string::npos);
}

TEST_CASE("the scan reads each file's audio duration from its header; an unreadable one has none but stays a file") {
  TempDir t;
  const fs::path c = t.path() / "c";
  // Different rates and encodings, so bytes per second differ four-fold between them.
  write_tone(c / "a16k.wav", "wav", 16000, 1, 2.5);
  write_tone(c / "b8k.wav", "wav", 8000, 1, 3.25);
  write_tone(c / "c44k-stereo.flac", "flac", 44100, 2, 1.75);
  write_tone(c / "d22k.flac", "flac", 22050, 1, 4.0);
  t.write("c/e-corrupt.wav", "RIFFxxxxWAVEgarbage that holds no fmt chunk");
  t.write("c/f-empty.flac", "");
  auto corpus = ab::scan_corpus({c.string()}, t.path() / "out");
  CHECK(corpus.problems.empty());
  REQUIRE(corpus.files.size() == 6);
  const std::vector<double> expected_s = {2.5, 3.25, 1.75, 4.0};
  for (std::size_t i = 0; i < expected_s.size(); ++i) {
    CAPTURE(corpus.files[i].audio);
    REQUIRE(corpus.files[i].audio_duration_s.has_value());
    CHECK(std::abs(*corpus.files[i].audio_duration_s - expected_s[i]) < 0.001);
  }
  // Same seconds per byte would make these equal; the header says otherwise.
  CHECK(corpus.files[0].size_bytes > corpus.files[1].size_bytes);
  CHECK(*corpus.files[0].audio_duration_s < *corpus.files[1].audio_duration_s);
  CHECK(corpus.files[4].audio.filename() == "e-corrupt.wav");
  CHECK_FALSE(corpus.files[4].audio_duration_s.has_value());
  CHECK(corpus.files[5].audio.filename() == "f-empty.flac");
  CHECK(corpus.files[5].size_bytes == 0);
  CHECK_FALSE(corpus.files[5].audio_duration_s.has_value());
  CHECK(ab::read_audio_duration_s(c / "no-such.wav") == std::nullopt);
}

TEST_CASE("compressed files' durations: Ogg Vorbis and MP3 (where this libsndfile can write them)") {
  TempDir t;
  int checked = 0;
  for (const auto& [format, rate_hz, seconds] : {std::tuple<std::string, int, double>{"ogg-vorbis", 22050, 2.0},
                                                  {"ogg-opus", 48000, 1.5}, {"mp3", 16000, 3.0}}) {
    CAPTURE(format);
    if (!ab::test::can_write(audio_format(format), rate_hz, 1)) {
      MESSAGE("this libsndfile cannot write " << format << "; not checked");
      continue;
    }
    const fs::path p = t.path() / ("c/x-" + format + audio_format(format).extension);
    write_tone(p, format, rate_hz, 1, seconds);
    const auto d = ab::read_audio_duration_s(p);
    REQUIRE(d.has_value());
    // Exact with Debian 12's libsndfile 1.2.0 for all three; an Opus or MP3 stream may state its
    // length in whole frames (Opus 20 ms; MP3 1152 samples = 72 ms at 16 kHz) elsewhere, so those
    // two get a frame's tolerance.
    const double tolerance_s = format == "ogg-vorbis" ? 0.001 : 0.08;
    CHECK(std::abs(*d - seconds) < tolerance_s);
    ++checked;
  }
  CHECK(checked >= 1);  // Ogg Vorbis is always there (libsndfile 1.0.28+)
}

TEST_CASE("refresh_corpus_file reads the duration again when the file changed") {
  TempDir t;
  const fs::path p = t.path() / "c/x.wav";
  write_tone(p, "wav", 16000, 1, 1.0);
  auto corpus = ab::scan_corpus({(t.path() / "c").string()}, t.path() / "out");
  REQUIRE(corpus.files.size() == 1);
  ab::CorpusFile f = corpus.files[0];
  REQUIRE(f.audio_duration_s.has_value());
  CHECK(std::abs(*f.audio_duration_s - 1.0) < 0.001);
  REQUIRE(ab::refresh_corpus_file(f).ok());
  CHECK(std::abs(*f.audio_duration_s - 1.0) < 0.001);
  // Rewritten with 3 s at 8 kHz (a new size): the next refresh sees the new header.
  write_tone(p, "wav", 8000, 1, 3.0);
  REQUIRE(ab::refresh_corpus_file(f).ok());
  REQUIRE(f.audio_duration_s.has_value());
  CHECK(std::abs(*f.audio_duration_s - 3.0) < 0.001);
  // Overwritten with garbage: no duration any more (the job will report the bad header).
  t.write("c/x.wav", std::string(100, 'z'));
  REQUIRE(ab::refresh_corpus_file(f).ok());
  CHECK_FALSE(f.audio_duration_s.has_value());
}

TEST_CASE("scan order is whole paths sorted component by component; a directory and a file given again count once") {
  TempDir t;
  t.write("c/a.wav", "1");
  t.write("c/a/z.wav", "22");  // the directory "a" sorts before the file "a.wav"
  t.write("c/a-b.wav", "333");  // '-' sorts before '.', and both after the directory "a"
  t.write("c/B/x.WAV", "4");
  t.write("c/B/x.TXT", "upper");
  t.write("c/B/x.lab", "lab");
  auto corpus = ab::scan_corpus({(t.path() / "c").string(), (t.path() / "c/a").string(), (t.path() / "c/a.wav").string()},
                                t.path() / "out");
  std::vector<std::string> order;
  for (const auto& f : corpus.files) order.push_back(f.relative.string());
  CHECK(order == std::vector<std::string>{"B/x.WAV", "a/z.wav", "a-b.wav", "a.wav"});
  CHECK(corpus.problems.empty());
  const ab::CorpusFile x = corpus.files[0];
  CHECK(x.audio == t.path() / "c/B/x.WAV");
  REQUIRE(x.transcript.has_value());
  CHECK(*x.transcript == t.path() / "c/B/x.TXT");
  REQUIRE(x.unused_transcript.has_value());
  CHECK(*x.unused_transcript == t.path() / "c/B/x.lab");
  CHECK(x.out_base == t.path() / "out/B/x");
  CHECK(corpus.files[1].out_base == t.path() / "out/a/z");
  CHECK(corpus.files[2].size_bytes == 3);
}

TEST_CASE("the scanned corpus holds a file in well under 500 bytes") {
  TempDir t;
  constexpr int kFiles = 2000;
  for (int i = 0; i < kFiles; ++i) t.write("c/spk" + std::to_string(i / 500) + "/utterance_" + std::to_string(i) + ".wav", "x");
  auto corpus = ab::scan_corpus({(t.path() / "c").string()}, t.path() / "out");
  REQUIRE(corpus.files.size() == kFiles);
  // Per file: its 40-byte record and its name (~20 bytes), with the vectors' spare capacity.
  CHECK(corpus.files.memory_bytes() / kFiles < 150);
  CHECK(corpus.files[kFiles - 1].audio == t.path() / "c/spk3/utterance_1999.wav");
}
