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

#include <dirent.h>
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

/// libsndfile virtual I/O over an open file: the first kHeadBytes come from one pread, the rest
/// (a far chunk, an Ogg page at the end) from a pread each.
class HeadReader {
 public:
  /// `size_bytes`: the file's size, from the caller's fstat.
  HeadReader(int fd, sf_count_t size_bytes) : fd_(fd), size_bytes_(size_bytes) {
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
  sf_count_t size_bytes_;
  sf_count_t pos_ = 0;
  std::string head_;
};

/// The audio seconds the header of the open file `fd` of `size_bytes` states (read_audio_duration_s).
std::optional<double> duration_of_open_file(int fd, sf_count_t size_bytes) {
  // libsndfile's open alone, the same frames / rate the worker's AudioSource::duration_s()
  // reports. Not AudioSource::open: it also walks every Ogg page or MP3 frame to the end of the
  // file to catch cut files (container_end.h), i.e. reads each compressed file whole before any
  // job starts. Measured on examples/corpus x 100 (2800 files, page cache warm, 2-core box under
  // load), mean per file, sf_open / AudioSource::open at 0307ec4: WAV 0.012 / 0.015 ms, FLAC
  // 0.009 / 0.013, MP3 0.033 / 0.17 (the 600 s MP3: 0.37 ms), Ogg 0.29 / 0.31.
  // Not sf_open_fd: libsndfile 1.2.0 closes a given fd when the open fails, even with SF_FALSE,
  // so our own close would hit a number that may be reused by then (strace showed the EBADF);
  // sf_open_virtual never sees our fd.
  //
  // Through sf_open_virtual over one read of the file's head (HeadReader): libsndfile's own file
  // I/O read a WAV header in ~30 syscalls of 2-12 bytes each (strace), most of a big corpus's
  // scan; libsndfile still does all the parsing.
  SF_INFO info{};
  HeadReader reader(fd, size_bytes);
  SF_VIRTUAL_IO io = HeadReader::io();
  SNDFILE* file = reader.size_bytes() > 0 ? sf_open_virtual(&io, SFM_READ, &info, &reader) : nullptr;
  std::optional<double> duration_s;
  // SF_COUNT_MAX: libsndfile could not find where the audio ends (a cut Ogg stream).
  if (file && info.frames > 0 && info.frames != SF_COUNT_MAX && info.samplerate > 0)
    duration_s = static_cast<double>(info.frames) / info.samplerate;
  if (file) sf_close(file);
  return duration_s;
}

fs::path absolute_normal(const fs::path& p) {
  std::error_code ec;
  fs::path abs = fs::absolute(p, ec);
  if (ec) abs = p;
  return abs.lexically_normal();
}

/// `dir` + '/' + `name`, as std::filesystem::path's operator/ joins a relative name.
std::string join(std::string_view dir, std::string_view name) {
  std::string s;
  s.reserve(dir.size() + 1 + name.size());
  s.append(dir);
  if (!s.empty() && s.back() != '/') s += '/';
  s.append(name);
  return s;
}

/// The lower-case extension of a file name (with the dot), as path::extension() finds it: none
/// for a name that starts with its only dot.
std::string_view extension_of(std::string_view name) {
  const std::size_t dot = name.rfind('.');
  if (dot == std::string_view::npos || dot == 0) return {};
  return name.substr(dot);
}

bool is_audio_name(std::string_view name) {
  const std::string ext = lower(std::string(extension_of(name)));
  const auto& all = audio_extensions();
  return std::find(all.begin(), all.end(), ext) != all.end();
}

std::uint64_t mix(std::uint64_t a, std::uint64_t b) { return (a ^ (b + 0x9e3779b97f4a7c15ull + (a << 6) + (a >> 2))); }

/// An open-addressing set of record indices (12 bytes a slot, at most half full): the scan's
/// duplicate checks cost ~24-48 bytes a file while it runs, where a hash set of strings cost ~100.
class IndexSet {
 public:
  /// The index of an entry with hash `h` for which `same(index)` holds, or none.
  template <class Same>
  std::optional<std::uint32_t> find(std::uint64_t h, const Same& same) const {
    if (slots_.empty()) return std::nullopt;
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = h & mask;; i = (i + 1) & mask) {
      const Slot& s = slots_[i];
      if (s.index == 0) return std::nullopt;
      if (s.hash == static_cast<std::uint32_t>(h >> 32) && same(s.index - 1)) return s.index - 1;
    }
  }
  /// Brings the slot of hash `h` towards the cache: lookups of a big set miss it each time.
  void prefetch(std::uint64_t h) const {
    if (!slots_.empty()) __builtin_prefetch(&slots_[h & (slots_.size() - 1)]);
  }
  void insert(std::uint64_t h, std::uint32_t index) {
    if ((used_ + 1) * 2 > slots_.size()) grow();
    place({static_cast<std::uint32_t>(h >> 32), index + 1}, h);
    ++used_;
  }

 private:
  struct Slot {
    std::uint32_t hash = 0;   ///< the hash's high half (its low bits pick the slot)
    std::uint32_t index = 0;  ///< index + 1; 0: empty
    std::uint32_t low = 0;    ///< the hash's low half, to place it again on growth
  };
  void place(Slot s, std::uint64_t h) {
    s.low = static_cast<std::uint32_t>(h);
    const std::size_t mask = slots_.size() - 1;
    std::size_t i = h & mask;
    while (slots_[i].index != 0) i = (i + 1) & mask;
    slots_[i] = s;
  }
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(old.empty() ? 1024 : old.size() * 2, Slot{});
    for (const Slot& s : old)
      if (s.index != 0) place(s, (static_cast<std::uint64_t>(s.hash) << 32) | s.low);
  }
  std::vector<Slot> slots_;
  std::size_t used_ = 0;
};

}  // namespace

/// Fills a Corpus: walks directories by file descriptor (openat, fstat: no path is looked up
/// again from the root for each file), reads each audio file's header, and stores each file as a
/// CorpusFiles::Record.
class CorpusBuilder {
 public:
  CorpusBuilder(const fs::path& out_dir, Corpus& corpus, const std::function<void(std::size_t)>& on_file)
      : out_dir_(absolute_normal(out_dir)), corpus_(corpus), files_(corpus.files), on_file_(on_file) {
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
      add_single_file(p);
    } else {
      problem(p, "is not an audio file (" + extension_list() + ") nor a directory; to pass a list of files, write @" +
                     p.string());
    }
  }

 private:
  using Transcript = CorpusFiles::Transcript;
  /// Directories entered, by device and inode, so that a symlink loop ends.
  using Visited = std::set<std::pair<dev_t, ino_t>>;
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
    Visited visited;
    std::size_t found = 0;
    walk(root.native(), std::string(), true, found, visited);
    if (found == 0) problem(root, "holds no audio files (" + extension_list() + ")");
  }

  /// A file given by itself (or in a list): its own directory is its root.
  void add_single_file(const fs::path& audio) {
    const std::string name = audio.filename().native();
    const std::uint32_t dir = dir_index(audio.parent_path().native(), std::string());
    auto transcript_of = [&](std::initializer_list<Transcript> kinds) {
      for (Transcript t : kinds) {
        std::error_code ec;
        fs::path p = audio;
        p.replace_extension(CorpusFiles::transcript_extension(t));
        if (fs::is_regular_file(p, ec)) return t;
      }
      return CorpusFiles::kNone;
    };
    const Transcript txt = transcript_of({CorpusFiles::kTxt, CorpusFiles::kTxtUpper});
    const Transcript lab = transcript_of({CorpusFiles::kLab, CorpusFiles::kLabUpper});
    add_record(dir, AT_FDCWD, audio.native(), name, txt != CorpusFiles::kNone ? txt : lab,
               txt != CorpusFiles::kNone ? lab : CorpusFiles::kNone);
  }

  /// What a directory entry is, a symlink followed.
  enum class EntryKind { kDirectory, kFile, kOther, kUnreachable };

  struct DirEntry {
    std::string name;
    bool is_dir;
  };
  /// What the scan keeps of one directory's entries.
  struct Listing {
    std::vector<DirEntry> entries;         ///< audio files and subdirectories, in name order
    std::vector<std::string> transcripts;  ///< .txt and .lab files, by name, sorted
    std::size_t audio_files = 0;           ///< entries that are no directory
  };

  // Recursion by hand: symlinked directories are followed (a corpus assembled from links is
  // common), each directory entered once by device and inode, and the run's own --out is never
  // entered (its outputs are no inputs). Each directory's entries, files and subdirectories
  // together, are visited in name order: the order a sort of whole paths component by component
  // gives.
  void walk(const std::string& dir, const std::string& relative, bool is_root, std::size_t& found, Visited& visited) {
    DIR* d = enter_directory(dir, is_root, visited);
    if (!d) return;
    const int fd = ::dirfd(d);
    Listing listing;
    read_listing(d, fd, dir, listing);
    std::optional<std::uint32_t> dir_id;
    if (listing.audio_files > 0) dir_id = index_directory_of_files(dir, relative, listing.entries);
    for (const auto& e : listing.entries) {
      if (e.is_dir) {
        walk(join(dir, e.name), relative.empty() ? e.name : join(relative, e.name), false, found, visited);
        continue;
      }
      ++found;
      add_listed_file(*dir_id, fd, e.name, listing.transcripts);
    }
    ::closedir(d);
  }

  void problem_unreadable_directory(const std::string& dir) {
    problem(dir, "directory cannot be read (" + std::string(std::strerror(errno)) + "); check its permissions");
  }

  /// `dir` opened for reading its entries, or null: it cannot be read (a problem), is --out, or
  /// was entered before (a problem below a root: a symlink loop).
  DIR* enter_directory(const std::string& dir, bool is_root, Visited& visited) {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      problem_unreadable_directory(dir);
      return nullptr;
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0 || (out_dir_id_ && st.st_dev == out_dir_id_->first && st.st_ino == out_dir_id_->second)) {
      ::close(fd);
      return nullptr;
    }
    if (!visited.insert({st.st_dev, st.st_ino}).second) {
      if (!is_root)
        problem(dir, "is a symlink loop (a directory already scanned); skipped: remove the link or point it elsewhere");
      ::close(fd);
      return nullptr;
    }
    DIR* d = ::fdopendir(fd);
    if (!d) {
      problem_unreadable_directory(dir);
      ::close(fd);
    }
    return d;
  }

  /// Reads the entries of `d` (the directory `dir`, open as `fd`) into `listing`, sorted.
  void read_listing(DIR* d, int fd, const std::string& dir, Listing& listing) {
    for (;;) {
      errno = 0;  // readdir's end and its error look alike but for errno; a failed stat must not leak into it
      const dirent* e = ::readdir(d);
      if (!e) break;
      const std::string_view name(e->d_name);
      if (name == "." || name == "..") continue;
      const EntryKind kind = entry_kind(fd, dir, *e);
      if (kind == EntryKind::kUnreachable) continue;
      add_to_listing(listing, name, kind);
    }
    if (errno != 0) problem(dir, "error while scanning (" + std::string(std::strerror(errno)) + "); some files may be missing");
    std::sort(listing.entries.begin(), listing.entries.end(),
              [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
    std::sort(listing.transcripts.begin(), listing.transcripts.end());
  }

  /// What entry `e` of `dir` (open as `fd`) is: its readdir type, or for a symlink (or an
  /// unknown type) its target's; kUnreachable when that cannot be stat'ed (a problem for a link).
  EntryKind entry_kind(int fd, const std::string& dir, const dirent& e) {
    if (e.d_type != DT_LNK && e.d_type != DT_UNKNOWN)
      return e.d_type == DT_DIR ? EntryKind::kDirectory : e.d_type == DT_REG ? EntryKind::kFile : EntryKind::kOther;
    struct stat target {};
    if (::fstatat(fd, e.d_name, &target, 0) != 0) {
      struct stat link {};
      if (::fstatat(fd, e.d_name, &link, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(link.st_mode))
        problem(join(dir, e.d_name), "is a symlink whose target is missing or unreadable; skipped: fix or remove the link");
      return EntryKind::kUnreachable;
    }
    if (S_ISDIR(target.st_mode)) return EntryKind::kDirectory;
    return S_ISREG(target.st_mode) ? EntryKind::kFile : EntryKind::kOther;
  }

  /// Keeps what the scan uses of one entry: a directory, an audio file, a transcript's name.
  static void add_to_listing(Listing& listing, std::string_view name, EntryKind kind) {
    if (kind == EntryKind::kDirectory) {
      listing.entries.push_back({std::string(name), true});
    } else if (kind == EntryKind::kFile) {
      if (is_audio_name(name)) {
        listing.entries.push_back({std::string(name), false});
        ++listing.audio_files;
      } else {
        const std::string ext = lower(std::string(extension_of(name)));
        if (ext == ".txt" || ext == ".lab") listing.transcripts.emplace_back(name);
      }
    }
  }

  /// The directory table's entry for `dir`, which holds files among `entries`.
  std::uint32_t index_directory_of_files(const std::string& dir, const std::string& relative,
                                         const std::vector<DirEntry>& entries) {
    const std::uint32_t dir_id = dir_index(dir, relative);
    // The duplicate checks' slots, all asked for at once: one by one, each was a cache and TLB
    // miss (two loads in add_record took 12% of a 1,000,000-file scan's CPU, perf annotate).
    for (const auto& e : entries)
      if (!e.is_dir) {
        seen_audio_.prefetch(audio_hash(dir_id, e.name));
        seen_out_.prefetch(out_hash(dir_id, stem_of(e.name)));
      }
    return dir_id;
  }

  /// Adds the audio file `name` of directory `dir` (open as `fd`) with the transcript beside it:
  /// `.txt` before `.lab`, lower case before upper; the `.lab` is left unused when both kinds
  /// exist (looked up among the directory's `transcripts`, not stat'ed).
  void add_listed_file(std::uint32_t dir, int fd, const std::string& name, const std::vector<std::string>& transcripts) {
    Transcript txt = CorpusFiles::kNone, lab = CorpusFiles::kNone;
    if (!transcripts.empty()) {
      const std::string stem = name.substr(0, name.rfind('.'));
      auto first_of = [&](Transcript a, Transcript b) {
        auto has = [&](Transcript t) {
          return std::binary_search(transcripts.begin(), transcripts.end(), stem + CorpusFiles::transcript_extension(t));
        };
        return has(a) ? a : has(b) ? b : CorpusFiles::kNone;
      };
      txt = first_of(CorpusFiles::kTxt, CorpusFiles::kTxtUpper);
      lab = first_of(CorpusFiles::kLab, CorpusFiles::kLabUpper);
    }
    add_record(dir, fd, name, name, txt != CorpusFiles::kNone ? txt : lab,
               txt != CorpusFiles::kNone ? lab : CorpusFiles::kNone);
  }

  /// The directory table's entry for `path` scanned under a root at `relative`.
  std::uint32_t dir_index(const std::string& path, const std::string& relative) {
    std::string key = path;
    key += '\0';
    key += relative;
    auto [it, inserted] = dir_ids_.emplace(std::move(key), static_cast<std::uint32_t>(files_.dirs_.size()));
    if (!inserted) return it->second;
    CorpusFiles::Dir d;
    d.path_offset = append(path);
    d.path_bytes = static_cast<std::uint32_t>(path.size());
    d.relative_offset = append(relative);
    d.relative_bytes = static_cast<std::uint32_t>(relative.size());
    // Outputs mirror the file's place under its root into --out.
    const std::string out = relative.empty() ? out_dir_.native() : (out_dir_ / relative).native();
    auto [oit, new_out] = out_ids_.emplace(out, static_cast<std::uint32_t>(files_.out_dirs_.size()));
    if (new_out) files_.out_dirs_.push_back({append(out), static_cast<std::uint32_t>(out.size())});
    d.out_dir = oit->second;
    files_.dirs_.push_back(d);
    dir_hash_.push_back(std::hash<std::string_view>{}(path));
    return it->second;
  }

  std::uint64_t append(std::string_view s) {
    const std::uint64_t at = files_.arena_.size();
    files_.arena_.append(s);
    return at;
  }

  std::string_view dir_path(std::uint32_t dir) const {
    const auto& d = files_.dirs_[dir];
    return files_.view(d.path_offset, d.path_bytes);
  }
  std::string_view out_path(std::uint32_t dir) const {
    const auto& o = files_.out_dirs_[files_.dirs_[dir].out_dir];
    return files_.view(o.offset, o.bytes);
  }
  std::string_view name_of(const CorpusFiles::Record& r) const { return files_.view(r.name_offset, r.name_bytes); }
  static std::string_view stem_of(std::string_view name) { return name.substr(0, name.rfind('.')); }
  /// The keys of the duplicate checks: a file's audio path, and its outputs' path (out dir and stem).
  std::uint64_t audio_hash(std::uint32_t dir, std::string_view name) const {
    return mix(dir_hash_[dir], std::hash<std::string_view>{}(name));
  }
  std::uint64_t out_hash(std::uint32_t dir, std::string_view stem) const {
    return mix(files_.dirs_[dir].out_dir, std::hash<std::string_view>{}(stem));
  }

  /// Adds `name` in directory `dir` (opened as `dir_fd`, or AT_FDCWD with `open_path` absolute):
  /// a problem instead when it is given twice (silently skipped), cannot be read, or its outputs
  /// would overwrite another file's.
  void add_record(std::uint32_t dir, int dir_fd, const std::string& open_path, std::string_view name,
                  Transcript transcript, Transcript unused) {
    const std::string_view stem = stem_of(name);
    const auto same_audio = [&](std::uint32_t i) {
      const auto& r = files_.records_[i];
      return name_of(r) == name && (r.dir == dir || dir_path(r.dir) == dir_path(dir));
    };
    if (seen_audio_.find(audio_hash(dir, name), same_audio)) return;  // the same file given twice
    CorpusFiles::Record r;
    if (auto read = read_file(dir_fd, open_path, r); !read) {
      problem(join(dir_path(dir), name), read.error());
      return;
    }
    const auto same_out = [&](std::uint32_t i) {
      const auto& o = files_.records_[i];
      return files_.dirs_[o.dir].out_dir == files_.dirs_[dir].out_dir && stem_of(name_of(o)) == stem;
    };
    if (auto other = seen_out_.find(out_hash(dir, stem), same_out)) {
      problem(join(dir_path(dir), name), "its outputs would overwrite those of " + files_[*other].audio.string() + " (" +
                         join(out_path(dir), stem) + ".*); rename one of them or run them with different --out");
      return;
    }
    r.dir = dir;
    r.name_offset = append(name);
    r.name_bytes = static_cast<std::uint16_t>(name.size());
    r.transcript = transcript;
    r.unused_transcript = unused;
    const auto index = static_cast<std::uint32_t>(files_.records_.size());
    files_.records_.push_back(r);
    seen_audio_.insert(audio_hash(dir, name), index);
    seen_out_.insert(out_hash(dir, stem), index);
    if (on_file_) on_file_(files_.size());
  }

  /// Size, mtime and header of the file: one openat, fstat and pread (refresh_corpus_file's
  /// checks, with the file descriptor of its directory).
  static Result<Done> read_file(int dir_fd, const std::string& path, CorpusFiles::Record& r) {
    using R = Result<Done>;
    const int fd = ::openat(dir_fd, path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      return R::failure(errno == EACCES
                            ? "is not readable (" + std::string(std::strerror(errno)) + "); fix its permissions"
                            : "vanished or cannot be read (" + std::string(std::strerror(errno)) + "); check the file");
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      return R::failure("is no longer a regular file; check the corpus");
    }
    r.size_bytes = static_cast<std::uint64_t>(st.st_size);
    r.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
    const auto d = duration_of_open_file(fd, static_cast<sf_count_t>(st.st_size));
    r.audio_duration_s = d ? *d : -1;
    ::close(fd);
    return Done{};
  }

  fs::path out_dir_;
  std::optional<std::pair<dev_t, ino_t>> out_dir_id_;  ///< --out's device and inode, when it exists
  Corpus& corpus_;
  CorpusFiles& files_;
  const std::function<void(std::size_t)>& on_file_;
  std::unordered_map<std::string, std::uint32_t> dir_ids_;  ///< "path\0relative" -> dirs_ index
  std::unordered_map<std::string, std::uint32_t> out_ids_;  ///< output directory -> out_dirs_ index
  std::vector<std::uint64_t> dir_hash_;                     ///< hash of each dirs_ entry's path
  IndexSet seen_audio_;  ///< records by audio path
  IndexSet seen_out_;    ///< records by output path (out dir and stem)
};

const char* CorpusFiles::transcript_extension(Transcript t) {
  switch (t) {
    case kTxt: return ".txt";
    case kTxtUpper: return ".TXT";
    case kLab: return ".lab";
    case kLabUpper: return ".LAB";
    case kNone: break;
  }
  return "";
}

std::string CorpusFiles::audio_path(std::size_t i) const {
  const Record& r = records_.at(i);
  const Dir& d = dirs_[r.dir];
  return join(view(d.path_offset, d.path_bytes), view(r.name_offset, r.name_bytes));
}

std::string CorpusFiles::relative_path(std::size_t i) const {
  const Record& r = records_.at(i);
  const Dir& d = dirs_[r.dir];
  const std::string_view name = view(r.name_offset, r.name_bytes);
  const std::string_view relative = view(d.relative_offset, d.relative_bytes);
  return relative.empty() ? std::string(name) : join(relative, name);
}

CorpusFile CorpusFiles::operator[](std::size_t i) const {
  const Record& r = records_.at(i);
  const Dir& d = dirs_[r.dir];
  const std::string_view name = view(r.name_offset, r.name_bytes);
  const Span& out = out_dirs_[d.out_dir];
  CorpusFile f;
  f.audio = audio_path(i);
  f.relative = relative_path(i);
  const std::string_view stem = name.substr(0, name.rfind('.'));
  f.out_base = join(view(out.offset, out.bytes), stem);
  auto transcript_path = [&](Transcript t) -> std::optional<fs::path> {
    if (t == kNone) return std::nullopt;
    fs::path p = f.audio;
    p.replace_extension(transcript_extension(t));
    return p;
  };
  f.transcript = transcript_path(r.transcript);
  f.unused_transcript = transcript_path(r.unused_transcript);
  f.size_bytes = r.size_bytes;
  f.mtime_ns = r.mtime_ns;
  if (r.audio_duration_s >= 0) f.audio_duration_s = r.audio_duration_s;
  return f;
}

std::size_t CorpusFiles::memory_bytes() const {
  return arena_.capacity() + records_.capacity() * sizeof(Record) + dirs_.capacity() * sizeof(Dir) +
         out_dirs_.capacity() * sizeof(Span);
}

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

Result<Done> refresh_corpus_file(CorpusFile& file) {
  using R = Result<Done>;
  struct stat st {};
  if (::stat(file.audio.c_str(), &st) != 0)
    return R::failure("vanished or cannot be read (" + std::string(std::strerror(errno)) + "); check the file");
  if (!S_ISREG(st.st_mode)) return R::failure("is no longer a regular file; check the corpus");
  if (::access(file.audio.c_str(), R_OK) != 0)
    return R::failure("is not readable (" + std::string(std::strerror(errno)) + "); fix its permissions");
  const auto size_bytes = static_cast<std::uint64_t>(st.st_size);
  const std::int64_t mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  // The header is read again only when the file changed: refresh runs before every job start.
  const bool changed = size_bytes != file.size_bytes || mtime_ns != file.mtime_ns;
  file.size_bytes = size_bytes;
  file.mtime_ns = mtime_ns;
  if (changed) file.audio_duration_s = read_audio_duration_s(file.audio);
  return Done{};
}

std::optional<double> read_audio_duration_s(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  struct stat st {};
  std::optional<double> d;
  if (::fstat(fd, &st) == 0) d = duration_of_open_file(fd, static_cast<sf_count_t>(st.st_size));
  ::close(fd);
  return d;
}

Corpus scan_corpus(const std::vector<std::string>& inputs, const fs::path& out_dir,
                   const std::function<void(std::size_t)>& on_file) {
  Corpus corpus;
  CorpusBuilder builder(out_dir, corpus, on_file);
  for (const auto& input : inputs) builder.add_input(input, fs::path(), 0);
  return corpus;
}

}  // namespace ab
