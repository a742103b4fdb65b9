// Tests for the Ogg page and MPEG frame walks on byte strings built to the specs.
#include "worker/container_end.h"

#include <cstring>
#include <string>

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
