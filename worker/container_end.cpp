// ContainerEnd: Ogg page and MPEG frame walks that tell a cut file from an intact one.
#include "worker/container_end.h"

#include <array>
#include <cstring>
#include <optional>
#include <vector>

#include <spdlog/fmt/fmt.h>

namespace ab {

namespace {

std::uint32_t le32(const unsigned char* p) {
  return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24;
}

std::uint64_t le64(const unsigned char* p) { return std::uint64_t(le32(p)) | std::uint64_t(le32(p + 4)) << 32; }

/// One MPEG audio frame header, decoded.
struct MpegFrame {
  int bytes = 0;    // whole frame, header included
  int samples = 0;  // per channel
  int rate_hz = 0;
  unsigned stream_key = 0;  // version, layer and sample-rate bits: constant within one stream
};

/// Decodes the 4-byte header at `h`; nullopt if it is not a frame header whose length is known
/// (free-format frames, bitrate index 0, carry no length).
std::optional<MpegFrame> parse_mpeg_header(const unsigned char* h) {
  if (h[0] != 0xFF || (h[1] & 0xE0) != 0xE0) return std::nullopt;
  const int version_bits = (h[1] >> 3) & 3;  // 0: MPEG 2.5, 1: reserved, 2: MPEG 2, 3: MPEG 1
  const int layer_bits = (h[1] >> 1) & 3;    // 1: Layer III, 2: Layer II, 3: Layer I
  const int bitrate_index = (h[2] >> 4) & 15;
  const int rate_index = (h[2] >> 2) & 3;
  const int padding = (h[2] >> 1) & 1;
  if (version_bits == 1 || layer_bits == 0 || bitrate_index == 0 || bitrate_index == 15 || rate_index == 3)
    return std::nullopt;
  const int layer = 4 - layer_bits;
  const bool v1 = version_bits == 3;
  // kbit/s, ISO 11172-3 and 13818-3 tables.
  static constexpr int kV1[3][15] = {{0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448},
                                     {0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384},
                                     {0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320}};
  static constexpr int kV2[2][15] = {{0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256},
                                     {0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160}};
  static constexpr int kRates[3] = {44100, 48000, 32000};
  const int kbps = v1 ? kV1[layer - 1][bitrate_index] : kV2[layer == 1 ? 0 : 1][bitrate_index];
  const int divisor = version_bits == 3 ? 1 : version_bits == 2 ? 2 : 4;
  MpegFrame f;
  f.rate_hz = kRates[rate_index] / divisor;
  if (layer == 1) {
    f.samples = 384;
    f.bytes = (12000 * kbps / f.rate_hz + padding) * 4;
  } else {
    f.samples = (layer == 3 && !v1) ? 576 : 1152;
    f.bytes = (f.samples / 8) * 1000 * kbps / f.rate_hz + padding;
  }
  f.stream_key = unsigned(h[1] & 0x1E) << 8 | unsigned(h[2] & 0x0C);
  return f;
}

/// Length of an ID3v2 tag at the start of the file (0 if none).
std::uint64_t id3v2_bytes(const ByteReader& read) {
  unsigned char h[10];
  if (read(0, h, 10) < 10 || std::memcmp(h, "ID3", 3) != 0) return 0;
  const std::uint64_t size = std::uint64_t(h[6] & 0x7F) << 21 | std::uint64_t(h[7] & 0x7F) << 14 |
                             std::uint64_t(h[8] & 0x7F) << 7 | std::uint64_t(h[9] & 0x7F);
  return 10 + size + ((h[5] & 0x10) ? 10 : 0);  // footer flag
}

}  // namespace

ContainerEnd check_mpeg_end(const ByteReader& read, std::uint64_t size_bytes) {
  ContainerEnd end;
  // The first frame: a valid header followed by another of the same stream (so that a stray 0xFFE
  // in a tag or junk is not taken for one). Encoders put the first frame within a few bytes of the
  // tag; 64 KiB is generous.
  const std::uint64_t start = id3v2_bytes(read);
  std::vector<unsigned char> head(64 * 1024);
  head.resize(read(start, head.data(), head.size()));
  std::uint64_t pos = 0;
  std::optional<MpegFrame> first;
  for (std::size_t i = 0; i + 4 <= head.size() && !first; ++i) {
    const auto f = parse_mpeg_header(&head[i]);
    if (!f) continue;
    unsigned char next[4];
    const std::uint64_t next_at = start + i + std::uint64_t(f->bytes);
    const std::size_t got = read(next_at, next, 4);
    const auto g = got == 4 ? parse_mpeg_header(next) : std::nullopt;
    if ((g && g->stream_key == f->stream_key) || next_at >= size_bytes) {
      first = f;
      pos = start + i;
    }
  }
  if (!first) return end;

  std::int64_t samples = 0;
  while (pos < size_bytes) {
    unsigned char h[4] = {};
    const std::size_t got = read(pos, h, 4);
    if (got < 4) {
      if (h[0] == 0xFF && (got < 2 || (h[1] & 0xE0) == 0xE0)) {
        end.cut = true;
        end.detail = fmt::format("the file ends {} bytes into the header of the MPEG frame at byte {}", got, pos);
      }
      break;
    }
    const auto f = parse_mpeg_header(h);
    if (!f || f->stream_key != first->stream_key) break;  // an ID3v1/APE tag or junk: no verdict
    if (pos + std::uint64_t(f->bytes) > size_bytes) {
      end.cut = true;
      end.detail = fmt::format("the MPEG frame at byte {} is {} bytes long but the file ends {} bytes into it", pos,
                               f->bytes, size_bytes - pos);
      break;
    }
    pos += std::uint64_t(f->bytes);
    samples += f->samples;
  }
  end.readable_s = double(samples) / first->rate_hz;
  return end;
}

ContainerEnd check_ogg_end(const ByteReader& read, std::uint64_t size_bytes) {
  ContainerEnd end;
  std::uint64_t pos = 0;
  std::uint64_t last_page_at = 0;
  std::uint32_t serial = 0;
  std::int64_t last_granule = -1;
  double rate_hz = 0;
  std::int64_t pre_skip = 0;
  bool eos = false;
  int pages = 0;
  bool verdict = true;  // false once bytes that are not an Ogg page are met
  while (pos < size_bytes) {
    std::array<unsigned char, 27> h{};
    const std::size_t got = read(pos, h.data(), h.size());
    if (got < h.size() || std::memcmp(h.data(), "OggS", 4) != 0) {
      if (got < h.size() && std::memcmp(h.data(), "OggS", std::min<std::size_t>(got, 4)) == 0) {
        end.cut = true;
        end.detail = fmt::format("the file ends {} bytes into the header of the Ogg page at byte {}", got, pos);
      }
      verdict = false;
      break;
    }
    const int segments = h[26];
    std::array<unsigned char, 255> lacing{};
    const std::uint64_t body_at = pos + 27 + std::uint64_t(segments);
    std::uint64_t body_bytes = 0;
    if (read(pos + 27, lacing.data(), std::size_t(segments)) < std::size_t(segments)) {
      body_bytes = ~std::uint64_t(0) >> 1;  // the lacing table itself is cut
    } else {
      for (int i = 0; i < segments; ++i) body_bytes += lacing[std::size_t(i)];
    }
    if (body_at + body_bytes > size_bytes) {
      end.cut = true;
      end.detail = body_bytes > size_bytes
                       ? fmt::format("the file ends inside the header of the Ogg page at byte {}", pos)
                       : fmt::format("the Ogg page at byte {} is {} bytes long but the file ends {} bytes into it", pos,
                                     body_at + body_bytes - pos, size_bytes - pos);
      verdict = false;
      break;
    }
    if (pages == 0) {
      serial = le32(&h[14]);
      unsigned char id[19] = {};
      const std::size_t n = read(body_at, id, std::size_t(std::min<std::uint64_t>(body_bytes, sizeof id)));
      if (n >= 16 && std::memcmp(id, "\x01vorbis", 7) == 0) rate_hz = le32(id + 12);
      if (n >= 12 && std::memcmp(id, "OpusHead", 8) == 0) {
        rate_hz = 48000;  // Opus granule positions always count 48 kHz samples
        pre_skip = std::int64_t(id[10]) | std::int64_t(id[11]) << 8;
      }
    }
    const std::uint64_t granule = le64(&h[6]);
    if (le32(&h[14]) == serial && granule != ~std::uint64_t(0)) last_granule = std::int64_t(granule);
    eos = (h[5] & 0x04) != 0;
    last_page_at = pos;
    ++pages;
    pos = body_at + body_bytes;
  }
  if (verdict && pages > 0 && !eos) {
    end.cut = true;
    end.detail = fmt::format(
        "the last Ogg page (at byte {}) is not marked end-of-stream, so the file stops between two pages",
        last_page_at);
  }
  if (rate_hz > 0 && last_granule >= 0) end.readable_s = double(std::max<std::int64_t>(0, last_granule - pre_skip)) / rate_hz;
  return end;
}

}  // namespace ab
