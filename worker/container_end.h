// ContainerEnd: whether an Ogg or MPEG audio file ends where its own framing says it should (cut files).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace ab {

/// Reads up to `n` bytes at `offset` into `buf`; returns how many were read (fewer only at the end).
using ByteReader = std::function<std::size_t(std::uint64_t offset, unsigned char* buf, std::size_t n)>;

/// What the framing of a compressed file says about its end.
struct ContainerEnd {
  /// The framing shows the file was cut short (a page or frame runs past the end, or an Ogg
  /// stream's last page is not marked end-of-stream).
  bool cut = false;
  /// What shows it, for the user, e.g. "the Ogg page at byte 193172 runs 4310 bytes past the end".
  std::string detail;
  /// Seconds of audio in the complete pages/frames, from the container (-1: unknown).
  double readable_s = -1;
};

/// Walks the Ogg pages of a file of `size_bytes`. An intact Ogg stream ends exactly after a page
/// marked end-of-stream; libsndfile reads a cut stream up to its last whole page without error
/// and, when cut at a page boundary, even reports the shorter length as the file's length.
/// Stops without a verdict (cut == false) at bytes that are not an Ogg page.
ContainerEnd check_ogg_end(const ByteReader& read, std::uint64_t size_bytes);

/// Walks the MPEG audio frames (Layer I/II/III, MPEG 1/2/2.5) of a file of `size_bytes`, after any
/// ID3v2 tag. A file cut mid-stream ends inside its last frame; libsndfile (mpg123) drops that
/// frame silently, and without a Xing/Info header its length is an estimate from the file size,
/// so a file cut to half reports half the length. Stops without a verdict at the first bytes that
/// are not a frame of the same stream (an ID3v1/APE tag, junk) or at a free-format frame.
/// A file cut exactly at a frame boundary cannot be told from a shorter file this way.
ContainerEnd check_mpeg_end(const ByteReader& read, std::uint64_t size_bytes);

}  // namespace ab
