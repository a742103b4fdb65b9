// Corpus: turns the command line's CORPUS arguments into the list of audio files to process.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

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

struct Corpus {
  std::vector<CorpusFile> files;  ///< in scan order (sorted within each directory), no duplicates
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
/// corpus takes a while: about 0.05 ms a file, more for Ogg, whose header read is dearer).
Corpus scan_corpus(const std::vector<std::string>& inputs, const std::filesystem::path& out_dir,
                   const std::function<void(std::size_t)>& on_file = {});

/// Stats `file.audio` again: false (and `error` says why) if it vanished or cannot be read now.
/// When its size or mtime changed (or it was never read), reads its audio duration again.
bool refresh_corpus_file(CorpusFile& file, std::string& error);

/// The audio seconds `path`'s header states (libsndfile's frames / rate, as the worker's
/// AudioSource::duration_s() reports them; nothing is decoded): none if libsndfile cannot open it
/// or states no length. Costs 0.01-0.3 ms per file (measured in corpus.cpp).
std::optional<double> read_audio_duration_s(const std::filesystem::path& path);

}  // namespace ab
