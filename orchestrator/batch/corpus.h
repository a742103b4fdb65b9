// Corpus: turns the command line's CORPUS arguments into the list of audio files to process.
#pragma once

#include <cstdint>
#include <filesystem>
#include <cstddef>
#include <functional>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace ab {

/// One audio file to process, with where its transcript and outputs are.
struct CorpusFile {
  std::filesystem::path audio;                     ///< absolute, lexically normal
  std::optional<std::filesystem::path> transcript; ///< `<stem>.txt` or `<stem>.lab` beside it
  /// Set when both exist: the `.lab` that is not used (the `.txt` wins); the run says so once.
  std::optional<std::filesystem::path> unused_transcript;
  std::filesystem::path relative;                  ///< path under its corpus root (mirrored under --out)
  std::filesystem::path out_base;                  ///< output path without extension
  std::uint64_t size_bytes = 0;
  std::int64_t mtime_ns = 0;                       ///< modification time, ns since the epoch
  /// Seconds of audio as the file's header states them (frames / rate), read at scan time and
  /// again when refresh_corpus_file sees a new size or mtime. None when the header cannot be read
  /// (empty, corrupt, not audio): not a corpus problem; the job itself reports the error.
  std::optional<double> audio_duration_s;
};

/// An input that could not be used; reported in the summary, never fatal on its own.
struct CorpusProblem {
  std::filesystem::path path;
  std::string message;  ///< says what failed and what to do
};

/// The scanned files, held compactly: each file is a 40-byte record (its name's place in one
/// string arena, its directory's index, size, mtime, duration, which transcript is beside it),
/// each directory once in a table (its path, its path under the root, its output directory).
/// A CorpusFile is built on demand. A vector of CorpusFile held five std::filesystem::path per
/// file, each with its own list of components: 1.45 KiB a file (1,000,000 files: 1.4 GiB).
class CorpusFiles {
 public:
  std::size_t size() const { return records_.size(); }
  bool empty() const { return records_.empty(); }
  /// The file at `i` (scan order), built from its record.
  CorpusFile operator[](std::size_t i) const;
  /// Parts of the file at `i` without building the rest: its absolute path, its path under its
  /// root, and the facts the scan read.
  std::string audio_path(std::size_t i) const;
  std::string relative_path(std::size_t i) const;
  std::uint64_t size_bytes(std::size_t i) const { return records_.at(i).size_bytes; }
  std::int64_t mtime_ns(std::size_t i) const { return records_.at(i).mtime_ns; }
  std::optional<double> audio_duration_s(std::size_t i) const {
    const double d = records_.at(i).audio_duration_s;
    return d >= 0 ? std::optional<double>(d) : std::nullopt;
  }
  /// Bytes the records, tables and arena hold (capacity), for benchmarks and tests.
  std::size_t memory_bytes() const;

  class const_iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = CorpusFile;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = CorpusFile;
    const_iterator(const CorpusFiles* files, std::size_t i) : files_(files), i_(i) {}
    CorpusFile operator*() const { return (*files_)[i_]; }
    const_iterator& operator++() {
      ++i_;
      return *this;
    }
    bool operator==(const const_iterator& o) const { return i_ == o.i_; }
    bool operator!=(const const_iterator& o) const { return i_ != o.i_; }

   private:
    const CorpusFiles* files_;
    std::size_t i_;
  };
  const_iterator begin() const { return {this, 0}; }
  const_iterator end() const { return {this, records_.size()}; }

 private:
  friend class CorpusBuilder;
  /// Which transcript is beside a file: its stem plus one of these (kNone: none).
  enum Transcript : std::uint8_t { kNone, kTxt, kTxtUpper, kLab, kLabUpper };
  struct Record {
    std::uint64_t size_bytes = 0;
    std::int64_t mtime_ns = 0;
    double audio_duration_s = -1;  ///< < 0: none
    std::uint64_t name_offset = 0;  ///< in arena_
    std::uint32_t dir = 0;          ///< in dirs_
    std::uint16_t name_bytes = 0;   ///< a file name is at most NAME_MAX (255) bytes
    Transcript transcript = kNone;
    Transcript unused_transcript = kNone;
  };
  struct Dir {
    std::uint64_t path_offset = 0;  ///< absolute, lexically normal
    std::uint32_t path_bytes = 0;
    std::uint64_t relative_offset = 0;  ///< under its corpus root; empty for a root or a file's own directory
    std::uint32_t relative_bytes = 0;
    std::uint32_t out_dir = 0;  ///< in out_dirs_
  };
  struct Span {
    std::uint64_t offset = 0;
    std::uint32_t bytes = 0;
  };
  std::string_view view(std::uint64_t offset, std::size_t bytes) const { return {arena_.data() + offset, bytes}; }
  static const char* transcript_extension(Transcript t);

  std::string arena_;
  std::vector<Record> records_;
  std::vector<Dir> dirs_;
  std::vector<Span> out_dirs_;  ///< output directories (--out mirrored), absolute
};

struct Corpus {
  CorpusFiles files;  ///< in scan order (sorted within each directory), no duplicates
  std::vector<CorpusProblem> problems;
};

/// Audio extensions the corpus scan accepts (lower case, with the dot).
const std::vector<std::string>& audio_extensions();
/// True if `path` ends in an audio extension (case-insensitive).
bool is_audio_path(const std::filesystem::path& path);

/// Pure: the entries of a list file, one path per line; blank lines and lines starting with '#'
/// are skipped, surrounding spaces and a trailing '\r' are trimmed.
std::vector<std::string> parse_list_file(std::string_view text);

/// Scans `inputs`: directories recursively, audio files, and list files (`@FILE`). Paths in a list
/// file are relative to the list file's directory. Outputs mirror each file's path under its root
/// (the directory given, or the file's own directory) into `out_dir`. A missing or unreadable input
/// becomes a problem; two inputs whose outputs would collide make the second one a problem.
/// `on_file`, if given, is called with the number of files found so far after each one (a big
/// corpus takes a while: about 0.015 ms a file on a warm cache, more for Ogg, whose header read
/// is dearer).
Corpus scan_corpus(const std::vector<std::string>& inputs, const std::filesystem::path& out_dir,
                   const std::function<void(std::size_t)>& on_file = {});

/// Stats `file.audio` again: an error saying why if it vanished or cannot be read now. When its
/// size or mtime changed (or it was never read), reads its audio duration again.
Result<Done> refresh_corpus_file(CorpusFile& file);

/// The audio seconds `path`'s header states (libsndfile's frames / rate, as the worker's
/// AudioSource::duration_s() reports them; nothing is decoded): none if libsndfile cannot open it
/// or states no length. Costs 0.01-0.3 ms per file (measured in corpus.cpp).
std::optional<double> read_audio_duration_s(const std::filesystem::path& path);

}  // namespace ab
