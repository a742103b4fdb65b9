// Corpus scan: directories, files and list files into CorpusFile records with mirrored outputs.
#include "orchestrator/batch/corpus.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <system_error>
#include <unordered_map>
#include <unordered_set>
#include <tuple>
#include <utility>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sndfile.h>

namespace fs = std::filesystem;

namespace ab {
namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

/// The transcript beside `audio` (`.txt` before `.lab`, lower case before upper), and the `.lab`
/// left unused when both kinds exist. `listed`, when given, holds every .txt/.lab file of the
/// directory scan that found `audio`: looked up there instead of stat'ed (four failed stats per
/// file were a third of a big corpus's scan, perf on 100,000 files).
std::pair<std::optional<fs::path>, std::optional<fs::path>> find_transcript(
    const fs::path& audio, const std::unordered_set<std::string>* listed) {
  auto first_of = [&](std::initializer_list<const char*> exts) -> std::optional<fs::path> {
    for (const char* ext : exts) {
      fs::path t = audio;
      t.replace_extension(ext);
      std::error_code ec;
      if (listed ? listed->count(t.native()) > 0 : fs::is_regular_file(t, ec)) return t;
    }
    return std::nullopt;
  };
  auto txt = first_of({".txt", ".TXT"});
  auto lab = first_of({".lab", ".LAB"});
  if (txt) return {txt, lab};
  return {lab, std::nullopt};
}

/// libsndfile virtual I/O over an open file: the first kHeadBytes come from one pread, the rest
/// (a far chunk, an Ogg page at the end) from a pread each.
class HeadReader {
 public:
  explicit HeadReader(int fd) : fd_(fd) {
    struct stat st {};
    if (::fstat(fd, &st) == 0) size_bytes_ = st.st_size;
    head_.resize(static_cast<std::size_t>(std::min<sf_count_t>(size_bytes_, kHeadBytes)));
    const ssize_t n = head_.empty() ? 0 : ::pread(fd, head_.data(), head_.size(), 0);
    head_.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  }
  sf_count_t size_bytes() const { return size_bytes_; }

  static SF_VIRTUAL_IO io() {
    SF_VIRTUAL_IO v{};
    v.get_filelen = [](void* self) { return static_cast<HeadReader*>(self)->size_bytes_; };
    v.seek = [](sf_count_t offset, int whence, void* self) {
      auto* r = static_cast<HeadReader*>(self);
      const sf_count_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? r->pos_ : r->size_bytes_;
      r->pos_ = std::max<sf_count_t>(0, base + offset);
      return r->pos_;
    };
    v.read = [](void* ptr, sf_count_t count, void* self) { return static_cast<HeadReader*>(self)->read(ptr, count); };
    v.write = [](const void*, sf_count_t, void*) -> sf_count_t { return 0; };
    v.tell = [](void* self) { return static_cast<HeadReader*>(self)->pos_; };
    return v;
  }

 private:
  // 4 KiB: one page; a WAV/FLAC/Ogg/MP3 header and its first frames fit in it.
  static constexpr sf_count_t kHeadBytes = 4096;

  sf_count_t read(void* ptr, sf_count_t count) {
    auto* out = static_cast<char*>(ptr);
    sf_count_t done = 0;
    const auto head_bytes = static_cast<sf_count_t>(head_.size());
    if (pos_ < head_bytes) {
      done = std::min(count, head_bytes - pos_);
      std::memcpy(out, head_.data() + pos_, static_cast<std::size_t>(done));
    }
    while (done < count) {
      const ssize_t n = ::pread(fd_, out + done, static_cast<std::size_t>(count - done), static_cast<off_t>(pos_ + done));
      if (n <= 0) break;
      done += n;
    }
    pos_ += done;
    return done;
  }

  int fd_;
  sf_count_t size_bytes_ = 0;
  sf_count_t pos_ = 0;
  std::string head_;
};

fs::path absolute_normal(const fs::path& p) {
  std::error_code ec;
  fs::path abs = fs::absolute(p, ec);
  if (ec) abs = p;
  return abs.lexically_normal();
}

class Scanner {
 public:
  Scanner(const fs::path& out_dir, Corpus& corpus, const std::function<void(std::size_t)>& on_file)
      : out_dir_(absolute_normal(out_dir)), corpus_(corpus), on_file_(on_file) {
    struct stat st {};
    if (::stat(out_dir_.c_str(), &st) == 0) out_dir_id_ = std::make_pair(st.st_dev, st.st_ino);
  }

  void add_input(const std::string& input, const fs::path& base, int depth) {
    if (!input.empty() && input[0] == '@') {
      add_list(fs::path(input.substr(1)), base, depth);
      return;
    }
    fs::path p = fs::path(input);
    if (p.is_relative() && !base.empty()) p = base / p;
    p = absolute_normal(p);
    std::error_code ec;
    auto st = fs::status(p, ec);
    if (ec || !fs::exists(st)) {
      problem(p, "does not exist; check the path (directories, audio files or @LIST files are accepted)");
      return;
    }
    if (fs::is_directory(st)) {
      add_directory(p);
    } else if (is_audio_path(p)) {
      add_file(p, p.parent_path());
    } else {
      problem(p, "is not an audio file (" + extension_list() + ") nor a directory; to pass a list of files, write @" +
                     p.string());
    }
  }

 private:
  static std::string extension_list() {
    std::string s;
    for (const auto& e : audio_extensions()) s += (s.empty() ? "" : " ") + e.substr(1);
    return s;
  }

  void problem(const fs::path& p, std::string msg) { corpus_.problems.push_back({p, std::move(msg)}); }

  void add_list(const fs::path& list, const fs::path& base, int depth) {
    fs::path p = list.is_relative() && !base.empty() ? base / list : list;
    p = absolute_normal(p);
    if (depth > 8) {
      problem(p, "list files nest more than 8 deep; flatten the lists");
      return;
    }
    std::ifstream in(p, std::ios::binary);
    if (!in) {
      problem(p, "list file cannot be read; check that it exists and is readable");
      return;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    for (const auto& entry : parse_list_file(ss.str())) add_input(entry, p.parent_path(), depth + 1);
  }

  void add_directory(const fs::path& root) {
    std::vector<fs::path> found;
    std::unordered_set<std::string> transcripts;
    std::set<std::pair<dev_t, ino_t>> visited;  // directories entered, so a symlink loop ends
    walk(root, root, found, transcripts, visited);
    std::sort(found.begin(), found.end());
    if (found.empty()) problem(root, "holds no audio files (" + extension_list() + ")");
    listed_transcripts_ = &transcripts;
    for (const auto& f : found) add_file(f, root);
    listed_transcripts_ = nullptr;
  }

  // Recursion by hand rather than recursive_directory_iterator: symlinked directories are
  // followed (a corpus assembled from links is common), each directory entered once by device
  // and inode, and the run's own --out is never entered (its outputs are no inputs).
  void walk(const fs::path& dir, const fs::path& root, std::vector<fs::path>& found,
            std::unordered_set<std::string>& transcripts, std::set<std::pair<dev_t, ino_t>>& visited) {
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) {
      problem(dir, "directory cannot be read (" + std::string(std::strerror(errno)) + "); check its permissions");
      return;
    }
    if (out_dir_id_ && st.st_dev == out_dir_id_->first && st.st_ino == out_dir_id_->second) return;
    if (!visited.insert({st.st_dev, st.st_ino}).second) {
      if (dir != root)
        problem(dir, "is a symlink loop (a directory already scanned); skipped: remove the link or point it elsewhere");
      return;
    }
    std::error_code ec;
    fs::directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
    if (ec) {
      problem(dir, "directory cannot be read (" + ec.message() + "); check its permissions");
      return;
    }
    std::vector<fs::path> subdirs;
    for (; it != end; it.increment(ec)) {
      if (ec) {
        problem(dir, "error while scanning (" + ec.message() + "); some files may be missing");
        break;
      }
      const fs::path path = it->path().lexically_normal();
      std::error_code fec;
      const bool is_link = it->is_symlink(fec);
      const auto status = fs::status(path, fec);  // follows links
      if (fec || !fs::exists(status)) {
        if (is_link)
          problem(path, "is a symlink whose target is missing or unreadable; skipped: fix or remove the link");
        continue;
      }
      if (fs::is_directory(status)) {
        subdirs.push_back(path);
      } else if (fs::is_regular_file(status)) {
        if (is_audio_path(path)) {
          found.push_back(path);
        } else {
          const std::string ext = lower(path.extension().string());
          if (ext == ".txt" || ext == ".lab") transcripts.insert(path.native());
        }
      }
    }
    for (const auto& sub : subdirs) walk(sub, root, found, transcripts, visited);
  }

  void add_file(const fs::path& audio, const fs::path& root) {
    if (!seen_audio_.insert(audio.string()).second) return;  // the same file given twice
    CorpusFile f;
    f.audio = audio;
    f.relative = audio.lexically_relative(root);
    if (f.relative.empty() || *f.relative.begin() == "..") f.relative = audio.filename();
    std::string error;
    if (!refresh_corpus_file(f, error)) {
      problem(audio, error);
      return;
    }
    std::tie(f.transcript, f.unused_transcript) = find_transcript(audio, listed_transcripts_);
    fs::path rel_noext = f.relative;
    rel_noext.replace_extension();
    f.out_base = out_dir_ / rel_noext;
    auto [it, inserted] = out_owner_.emplace(f.out_base.native(), corpus_.files.size());
    if (!inserted) {
      problem(audio, "its outputs would overwrite those of " + corpus_.files[it->second].audio.string() + " (" + f.out_base.string() +
                         ".*); rename one of them or run them with different --out");
      return;
    }
    corpus_.files.push_back(std::move(f));
    if (on_file_) on_file_(corpus_.files.size());
  }

  fs::path out_dir_;
  std::optional<std::pair<dev_t, ino_t>> out_dir_id_;  ///< --out's device and inode, when it exists
  Corpus& corpus_;
  const std::function<void(std::size_t)>& on_file_;
  // Hashed, and the owner by its index in corpus_.files: a std::map holding an fs::path (with
  // its list of components) per file cost the scan about 0.3 KiB a file.
  std::unordered_set<std::string> seen_audio_;
  std::unordered_map<std::string, std::size_t> out_owner_;
  const std::unordered_set<std::string>* listed_transcripts_ = nullptr;  ///< during add_directory
};

}  // namespace

const std::vector<std::string>& audio_extensions() {
  static const std::vector<std::string> kExtensions = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif"};
  return kExtensions;
}

bool is_audio_path(const fs::path& path) {
  const std::string ext = lower(path.extension().string());
  const auto& all = audio_extensions();
  return std::find(all.begin(), all.end(), ext) != all.end();
}

std::vector<std::string> parse_list_file(std::string_view text) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    std::size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    out.emplace_back(line);
  }
  return out;
}

bool refresh_corpus_file(CorpusFile& file, std::string& error) {
  struct stat st {};
  if (::stat(file.audio.c_str(), &st) != 0) {
    error = "vanished or cannot be read (" + std::string(std::strerror(errno)) + "); check the file";
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    error = "is no longer a regular file; check the corpus";
    return false;
  }
  if (::access(file.audio.c_str(), R_OK) != 0) {
    error = "is not readable (" + std::string(std::strerror(errno)) + "); fix its permissions";
    return false;
  }
  const auto size_bytes = static_cast<std::uint64_t>(st.st_size);
  const std::int64_t mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  // The header is read again only when the file changed: refresh runs before every job start.
  const bool changed = size_bytes != file.size_bytes || mtime_ns != file.mtime_ns;
  file.size_bytes = size_bytes;
  file.mtime_ns = mtime_ns;
  if (changed) file.audio_duration_s = read_audio_duration_s(file.audio);
  return true;
}

std::optional<double> read_audio_duration_s(const fs::path& path) {
  // libsndfile's open alone, the same frames / rate the worker's AudioSource::duration_s()
  // reports. Not AudioSource::open: it also walks every Ogg page or MP3 frame to the end of the
  // file to catch cut files (container_end.h), i.e. reads each compressed file whole before any
  // job starts. Measured on examples/corpus x 100 (2800 files, page cache warm, 2-core box under
  // load), mean per file, sf_open / AudioSource::open at 0307ec4: WAV 0.012 / 0.015 ms, FLAC
  // 0.009 / 0.013, MP3 0.033 / 0.17 (the 600 s MP3: 0.37 ms), Ogg 0.29 / 0.31.
  // Not open + sf_open_fd: libsndfile 1.2.0 closes a given fd when the open fails, even with
  // SF_FALSE, so our own close would hit a number that may be reused by then (strace showed the
  // EBADF); sf_open_virtual never sees our fd.
  SF_INFO info{};
  //
  // Through sf_open_virtual over one read of the file's head (HeadReader): libsndfile's own file
  // I/O read a WAV header in ~30 syscalls of 2-12 bytes each (strace), most of a big corpus's
  // scan; libsndfile still does all the parsing.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  HeadReader reader(fd);
  SF_VIRTUAL_IO io = HeadReader::io();
  SNDFILE* file = reader.size_bytes() > 0 ? sf_open_virtual(&io, SFM_READ, &info, &reader) : nullptr;
  std::optional<double> duration_s;
  // SF_COUNT_MAX: libsndfile could not find where the audio ends (a cut Ogg stream).
  if (file && info.frames > 0 && info.frames != SF_COUNT_MAX && info.samplerate > 0)
    duration_s = static_cast<double>(info.frames) / info.samplerate;
  if (file) sf_close(file);
  ::close(fd);
  return duration_s;
}

Corpus scan_corpus(const std::vector<std::string>& inputs, const fs::path& out_dir,
                   const std::function<void(std::size_t)>& on_file) {
  Corpus corpus;
  Scanner scanner(out_dir, corpus, on_file);
  for (const auto& input : inputs) scanner.add_input(input, fs::path(), 0);
  return corpus;
}

}  // namespace ab
