// Tests for the Ogg page and MPEG frame walks: spec-built byte strings, and seeded fuzzing of junk and cut/mutated files.
#include "worker/container_end.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <doctest/doctest.h>

namespace {

using ab::ContainerEnd;

ab::ByteReader reader_of(const std::string& bytes) {
  return [&bytes](std::uint64_t offset, unsigned char* buf, std::size_t n) -> std::size_t {
    if (offset >= bytes.size()) return 0;
    const std::size_t take = std::min<std::size_t>(n, bytes.size() - std::size_t(offset));
    std::memcpy(buf, bytes.data() + offset, take);
    return take;
  };
}

ContainerEnd mpeg(const std::string& b) { return ab::check_mpeg_end(reader_of(b), b.size()); }
ContainerEnd ogg(const std::string& b) { return ab::check_ogg_end(reader_of(b), b.size()); }

/// `n` MPEG-1 Layer III frames, 128 kbit/s, 44.1 kHz, no padding: 144000 * 128 / 44100 = 417 bytes.
std::string mp3_frames(int n) {
  std::string frame(417, '\x11');
  frame[0] = '\xFF', frame[1] = '\xFB', frame[2] = '\x90', frame[3] = '\x00';
  std::string out;
  for (int i = 0; i < n; ++i) out += frame;
  return out;
}

void put_le(std::string& s, std::size_t at, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s[at + std::size_t(i)] = char((v >> (8 * i)) & 0xFF);
}

/// One Ogg page of stream 7: flags (2 BOS, 4 EOS), granule position, a body of `body` bytes.
std::string ogg_page(int flags, std::int64_t granule, const std::string& body) {
  REQUIRE(body.size() <= 255 * 255);
  std::string lacing;
  std::size_t left = body.size();
  while (left >= 255) lacing += '\xFF', left -= 255;
  lacing += char(left);
  std::string page = std::string("OggS") + std::string(23, '\0');
  page[5] = char(flags);
  put_le(page, 6, std::uint64_t(granule), 8);
  put_le(page, 14, 7, 4);
  page[26] = char(lacing.size());
  return page + lacing + body;
}

/// A Vorbis identification header at `rate_hz` (only the fields the walk reads).
std::string vorbis_id(std::uint32_t rate_hz) {
  std::string id = std::string("\x01vorbis", 7) + std::string(23, '\0');
  put_le(id, 12, rate_hz, 4);
  return id;
}

}  // namespace

TEST_CASE("MPEG walk: whole frames, ID3 tags before and after, and each way a file can be cut") {
  const std::string frames = mp3_frames(40);
  const double forty_frames_s = 40 * 1152 / 44100.0;

  const ContainerEnd whole = mpeg(frames);
  CHECK_FALSE(whole.cut);
  CHECK(whole.readable_s == doctest::Approx(forty_frames_s));

  std::string id3 = std::string("ID3\x04\x00\x00", 6) + std::string("\x00\x00\x01\x00", 4) + std::string(128, '\0');
  CHECK_FALSE(mpeg(id3 + frames).cut);  // syncsafe size 0x80 = 128 bytes skipped
  CHECK(mpeg(id3 + frames).readable_s == doctest::Approx(forty_frames_s));
  CHECK_FALSE(mpeg(frames + "TAG" + std::string(125, ' ')).cut);  // ID3v1: no verdict, not a cut

  const ContainerEnd mid = mpeg(frames.substr(0, 20 * 417 + 100));
  CHECK(mid.cut);
  CHECK(mid.detail == "the MPEG frame at byte 8340 is 417 bytes long but the file ends 100 bytes into it");
  CHECK(mid.readable_s == doctest::Approx(20 * 1152 / 44100.0));

  const ContainerEnd in_header = mpeg(frames.substr(0, 20 * 417 + 2));
  CHECK(in_header.cut);
  CHECK(in_header.detail.find("2 bytes into the header of the MPEG frame at byte 8340") != std::string::npos);

  const ContainerEnd at_boundary = mpeg(frames.substr(0, 20 * 417));  // the blind spot
  CHECK_FALSE(at_boundary.cut);
  CHECK(at_boundary.readable_s == doctest::Approx(20 * 1152 / 44100.0));

  CHECK_FALSE(mpeg("not an mp3 at all, just text").cut);
  CHECK(mpeg("not an mp3 at all, just text").readable_s == -1);
}

TEST_CASE("Ogg walk: end-of-stream on the last page, cut mid-page, cut at a page boundary, junk") {
  std::string pages = ogg_page(2, 0, vorbis_id(16000)) + ogg_page(0, -1, std::string(300, 'c'));
  for (int i = 1; i <= 5; ++i) pages += ogg_page(0, 16000 * i, std::string(1000, 'a'));
  const std::string whole = pages + ogg_page(4, 16000 * 6, std::string(500, 'z'));

  const ContainerEnd intact = ogg(whole);
  CHECK_FALSE(intact.cut);
  CHECK(intact.readable_s == doctest::Approx(6.0));

  const ContainerEnd no_eos = ogg(pages);  // cut exactly after the fifth audio page
  CHECK(no_eos.cut);
  CHECK(no_eos.detail.find("is not marked end-of-stream") != std::string::npos);
  CHECK(no_eos.readable_s == doctest::Approx(5.0));

  const ContainerEnd mid = ogg(pages.substr(0, pages.size() - 400));
  CHECK(mid.cut);
  CHECK(mid.detail.find("is 1031 bytes long but the file ends 631 bytes into it") != std::string::npos);
  CHECK(mid.readable_s == doctest::Approx(4.0));

  // Each audio page: 27 header bytes, 4 lacing values (255 * 3 + 235), 1000 body bytes.
  const ContainerEnd in_header = ogg(pages.substr(0, pages.size() - 1031 + 10));
  CHECK(in_header.cut);
  CHECK(in_header.detail.find("ends 10 bytes into the header of the Ogg page") != std::string::npos);
  CHECK(in_header.readable_s == doctest::Approx(4.0));

  const ContainerEnd junk = ogg(whole + "garbage after the stream");
  CHECK_FALSE(junk.cut);  // not a page: no verdict
}

// Fuzz-style robustness: the walks read untrusted bytes (any file with an .ogg/.mp3 name), so
// whatever the bytes, they must return, ask for a bounded number of reads (each page/frame step
// moves forward), and never call an intact file cut. Fixed seed: the same cases on every run.
namespace {

std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in, "cannot read ", path.string());
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// A reader over `bytes` that counts its calls and throws past `max_calls`: a walk that stops
/// advancing fails the test instead of hanging it.
struct CountingReader {
  const std::string& bytes;
  std::size_t max_calls;
  std::size_t calls = 0;

  ab::ByteReader reader() {
    return [this](std::uint64_t offset, unsigned char* buf, std::size_t n) -> std::size_t {
      if (++calls > max_calls) throw std::runtime_error("walk did not advance: over " + std::to_string(max_calls) + " reads");
      if (offset >= bytes.size()) return 0;
      const std::size_t take = std::min<std::size_t>(n, bytes.size() - std::size_t(offset));
      std::memcpy(buf, bytes.data() + offset, take);
      return take;
    };
  }
};

// Reads each walk may need: Ogg two per page (a page is at least 27 bytes) plus the first page's
// identification header; MPEG one per candidate sync in the 64 KiB search window, then one per
// frame (every frame is at least 24 bytes).
std::size_t ogg_read_bound(std::size_t size) { return 3 * (size / 27 + 2) + 1; }
std::size_t mpeg_read_bound(std::size_t size) { return 2 + 64 * 1024 + size / 24 + 2; }

ContainerEnd ogg_bounded(const std::string& b) {
  CountingReader r{b, ogg_read_bound(b.size())};
  return ab::check_ogg_end(r.reader(), b.size());
}

ContainerEnd mpeg_bounded(const std::string& b) {
  CountingReader r{b, mpeg_read_bound(b.size())};
  return ab::check_mpeg_end(r.reader(), b.size());
}

/// The readable length is "unknown" or a finite, non-negative number of seconds.
bool sane_length(const ContainerEnd& e) { return e.readable_s == -1 || (e.readable_s >= 0 && std::isfinite(e.readable_s)); }

std::vector<std::string> corpus_files(const std::string& extension) {
  const auto corpus = std::filesystem::path(__FILE__).parent_path().parent_path() / "examples" / "corpus";
  std::vector<std::filesystem::path> paths;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(corpus))
    if (entry.path().extension() == extension && entry.file_size() < 200 * 1024) paths.push_back(entry.path());
  std::sort(paths.begin(), paths.end());
  std::vector<std::string> out;
  for (const auto& p : paths) out.push_back(slurp(p));
  return out;
}

/// `bytes` with a few random changes: overwritten bytes, a deleted run, an inserted run, a
/// planted sync pattern ("OggS" or an MPEG frame header with random fields).
std::string mutate(std::string bytes, std::mt19937& rng) {
  const int changes = 1 + int(rng() % 8);
  for (int c = 0; c < changes && !bytes.empty(); ++c) {
    const std::size_t at = rng() % bytes.size();
    switch (rng() % 5) {
      case 0: bytes[at] = char(rng() & 0xFF); break;
      case 1: bytes.erase(at, 1 + rng() % 600); break;
      case 2: bytes.insert(at, std::string(1 + rng() % 600, char(rng() & 0xFF))); break;
      case 3: bytes.replace(at, 4, "OggS"); break;
      default: {
        const std::string sync = {'\xFF', char(0xE0 | (rng() & 0x1F)), char(rng() & 0xFF), char(rng() & 0xFF)};
        bytes.replace(at, 4, sync);
      }
    }
  }
  return bytes;
}

/// Random bytes of a random length up to `max_bytes`, seeded with sync patterns and tag headers
/// so that the walks get past their first checks.
std::string random_bytes(std::mt19937& rng, std::size_t max_bytes) {
  std::string b(rng() % (max_bytes + 1), '\0');
  for (auto& c : b) c = char(rng() & 0xFF);
  if (b.empty()) return b;
  const int plants = int(rng() % 16);
  for (int i = 0; i < plants; ++i) {
    const std::size_t at = rng() % b.size();
    switch (rng() % 3) {
      case 0: b.replace(at, 4, "OggS"); break;
      case 1: b.replace(at, 2, std::string{'\xFF', char(0xE0 | (rng() & 0x1F))}); break;
      default: b.replace(at, 3, "ID3"); break;
    }
  }
  if (rng() % 4 == 0) b.replace(0, 4, "OggS");
  if (rng() % 4 == 0) b.replace(0, 3, "ID3");
  return b;
}

}  // namespace

TEST_CASE("fuzz: random bytes and sync-seeded junk never crash or hang either walk") {
  std::mt19937 rng(20261122);
  int cases = 0, ogg_cut = 0, mpeg_cut = 0;
  for (int i = 0; i < 1500; ++i) {
    const std::string b = random_bytes(rng, i % 10 == 0 ? 70000 : 2000);
    ContainerEnd o, m;
    CHECK_NOTHROW(o = ogg_bounded(b));
    CHECK_NOTHROW(m = mpeg_bounded(b));
    CHECK(sane_length(o));
    CHECK(sane_length(m));
    ogg_cut += o.cut;
    mpeg_cut += m.cut;
    ++cases;
  }
  // Junk that starts with "OggS" has a page header that runs past the end or a lacing table of
  // random sizes: some of it reads as a cut page. Nothing more can be said of random bytes.
  MESSAGE(cases << " random byte strings: " << ogg_cut << " read as cut Ogg, " << mpeg_cut << " as cut MPEG");
  CHECK(cases == 1500);
}

TEST_CASE("fuzz: truncations and mutations of the examples/corpus Ogg files") {
  const auto files = corpus_files(".ogg");
  REQUIRE(files.size() >= 3);
  std::mt19937 rng(7);
  int truncations = 0, mutations = 0;
  for (const auto& whole : files) {
    const ContainerEnd intact = ogg_bounded(whole);
    REQUIRE_FALSE(intact.cut);
    REQUIRE(intact.readable_s > 0);
    for (int i = 0; i < 150; ++i) {
      // Every prefix of a single-stream file whose only end-of-stream flag is on its last page is
      // cut: mid-header, mid-lacing, mid-body, or at a page boundary before the end-of-stream page.
      const std::size_t length = 1 + rng() % (whole.size() - 1);
      const std::string prefix = whole.substr(0, length);
      ContainerEnd e;
      REQUIRE_NOTHROW(e = ogg_bounded(prefix));
      CHECK_MESSAGE(e.cut, "an Ogg file cut to ", length, " of ", whole.size(), " bytes was not reported cut");
      CHECK(sane_length(e));
      CHECK(e.readable_s <= intact.readable_s);
      ++truncations;
    }
    // Random lengths seldom land on a page boundary, where only the missing end-of-stream flag
    // shows the cut: every page start (each "OggS"), and a few bytes into each header, too.
    for (std::size_t at = whole.find("OggS", 1); at != std::string::npos; at = whole.find("OggS", at + 1)) {
      for (const std::size_t into : {0, 1, 4, 26, 27, 28}) {
        if (at + into >= whole.size()) continue;
        ContainerEnd e;
        REQUIRE_NOTHROW(e = ogg_bounded(whole.substr(0, at + into)));
        CHECK_MESSAGE(e.cut, "an Ogg file cut ", into, " bytes after the page start at byte ", at, " was not reported cut");
        ++truncations;
      }
    }
    for (int i = 0; i < 150; ++i) {
      const std::string changed = mutate(whole, rng);
      ContainerEnd e;
      CHECK_NOTHROW(e = ogg_bounded(changed));
      CHECK(sane_length(e));
      CHECK_NOTHROW(mpeg_bounded(changed));
      ++mutations;
    }
  }
  MESSAGE(files.size() << " Ogg files: " << truncations << " truncations, " << mutations << " mutations");
}

TEST_CASE("fuzz: truncations and mutations of the examples/corpus MP3 files") {
  const auto files = corpus_files(".mp3");
  REQUIRE(files.size() >= 2);
  std::mt19937 rng(11);
  int truncations = 0, mutations = 0, boundaries = 0;
  for (const auto& whole : files) {
    const ContainerEnd intact = mpeg_bounded(whole);
    REQUIRE_FALSE(intact.cut);
    REQUIRE(intact.readable_s > 0);
    for (int i = 0; i < 150; ++i) {
      // Past the first frames (where the start search may pick another sync) a prefix that is not
      // reported cut ends exactly at a frame boundary, so one byte less ends inside that frame:
      // two adjacent prefixes are never both uncut.
      const std::size_t length = 2048 + rng() % (whole.size() - 2048);
      ContainerEnd e, shorter;
      REQUIRE_NOTHROW(e = mpeg_bounded(whole.substr(0, length)));
      REQUIRE_NOTHROW(shorter = mpeg_bounded(whole.substr(0, length - 1)));
      CHECK(sane_length(e));
      CHECK(e.readable_s <= intact.readable_s);
      CHECK(shorter.readable_s <= e.readable_s);
      CHECK_MESSAGE((e.cut || shorter.cut), "MP3 prefixes of ", length - 1, " and ", length, " bytes both read as uncut");
      boundaries += !e.cut;
      truncations += 2;
    }
    for (int i = 0; i < 150; ++i) {
      const std::string changed = mutate(whole, rng);
      ContainerEnd e;
      CHECK_NOTHROW(e = mpeg_bounded(changed));
      CHECK(sane_length(e));
      CHECK_NOTHROW(ogg_bounded(changed));
      ++mutations;
    }
  }
  MESSAGE(files.size() << " MP3 files: " << truncations << " truncations (" << boundaries
                       << " at a frame boundary), " << mutations << " mutations");
}
