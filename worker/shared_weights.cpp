// SharedWeights: writes a model's tensors once per model key and maps them read-only (see the header).
#include "worker/shared_weights.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <nlohmann/json.hpp>

namespace ab {

namespace {

constexpr char kMagic[8] = {'A', 'B', 'W', 'E', 'I', 'G', 'H', 'T'};
constexpr std::uint32_t kVersion = 1;
/// c10's CPU allocator aligns every tensor to 64 bytes; the shared copy keeps that alignment so
/// kernels see the same alignment as with a private copy.
constexpr std::uint64_t kBlobAlignment = 64;

struct FileHeader {
  char magic[8];
  std::uint32_t version;
  std::uint32_t complete;  ///< set last, once every byte is written
  std::uint64_t index_bytes;
  std::uint64_t data_offset;
  std::uint64_t total_bytes;
};

std::uint64_t align_up(std::uint64_t n, std::uint64_t to) { return (n + to - 1) / to * to; }

/// "0644" for a file's permission bits.
std::string fmt_mode(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

std::string sys_error(const std::filesystem::path& path, const std::string& what) {
  return path.string() + ": " + what + " (" + std::strerror(errno) + ")";
}

// Calls pread or pwrite until all `bytes` moved (EINTR retried); false on an error or end of file.
template <class Byte, class Io>
bool io_all(Io io, int fd, Byte* p, std::size_t bytes, std::uint64_t offset) {
  while (bytes > 0) {
    const ssize_t n = io(fd, p, bytes, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    bytes -= static_cast<std::size_t>(n);
    offset += static_cast<std::uint64_t>(n);
  }
  return true;
}

bool pwrite_all(int fd, const void* data, std::size_t bytes, std::uint64_t offset) {
  return io_all(::pwrite, fd, static_cast<const char*>(data), bytes, offset);
}

bool pread_all(int fd, void* data, std::size_t bytes, std::uint64_t offset) {
  return io_all(::pread, fd, static_cast<char*>(data), bytes, offset);
}

nlohmann::json index_of(const std::vector<WeightBlob>& blobs, std::vector<std::uint64_t>& offsets,
                        std::uint64_t data_offset) {
  nlohmann::json index = nlohmann::json::array();
  std::uint64_t at = data_offset;
  offsets.clear();
  for (const auto& b : blobs) {
    at = align_up(at, kBlobAlignment);
    offsets.push_back(at);
    index.push_back({{"name", b.name}, {"dtype", b.dtype}, {"sizes", b.sizes}, {"offset", at}, {"bytes", b.bytes}});
    at += b.bytes;
  }
  return index;
}

/// Unlocks and closes the descriptor on every path out of open(). The unlock must be explicit:
/// an flock belongs to the open file, which the mapping keeps open after close().
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd < 0) return;
    ::flock(fd, LOCK_UN);
    ::close(fd);
  }
};

}  // namespace

Result<std::unique_ptr<SharedWeights>> SharedWeights::open(const std::filesystem::path& path,
                                                           const std::vector<WeightBlob>& blobs) {
  using R = Result<std::unique_ptr<SharedWeights>>;
  Fd f;
  // The file lives in a directory every user may write (/dev/shm): never follow a link there (one
  // to a file of ours would be truncated and overwritten), and never use a file someone else owns
  // or may write (they could change the weights under our mapping after the check below).
  f.fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (f.fd < 0 && errno == ELOOP)
    return R::failure(path.string() + ": is a symbolic link, not a shared weights file; not used (another user's?)");
  if (f.fd < 0) return R::failure(sys_error(path, "cannot open the shared weights file"));
  {
    struct stat own {};
    if (::fstat(f.fd, &own) != 0) return R::failure(sys_error(path, "cannot stat the shared weights file"));
    if (!S_ISREG(own.st_mode) || own.st_uid != ::geteuid() || (own.st_mode & 022) != 0)
      return R::failure(path.string() + ": the shared weights file belongs to uid " + std::to_string(own.st_uid) +
                        " or others may write it (mode " + fmt_mode(own.st_mode) +
                        "); not used: this worker keeps its own copy");
  }
  while (::flock(f.fd, LOCK_EX) != 0) {
    if (errno != EINTR) return R::failure(sys_error(path, "cannot lock the shared weights file"));
  }

  std::unique_ptr<SharedWeights> w(new SharedWeights());
  std::uint64_t data_bytes = 0;
  for (const auto& b : blobs) data_bytes += b.bytes;
  w->data_bytes_ = data_bytes;

  std::vector<std::uint64_t> offsets;
  FileHeader h{};
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) return R::failure(sys_error(path, "cannot stat the shared weights file"));
  const bool have_header = static_cast<std::uint64_t>(st.st_size) >= sizeof h && pread_all(f.fd, &h, sizeof h, 0);
  if (have_header && h.complete == 1 && std::memcmp(h.magic, kMagic, sizeof kMagic) == 0) {
    if (h.version != kVersion || h.total_bytes != static_cast<std::uint64_t>(st.st_size) || h.index_bytes > (1u << 30))
      return R::failure(path.string() + ": the shared weights file is damaged (its header does not match its size); "
                        "remove it, or run without shared weights");
    std::string text(h.index_bytes, '\0');
    if (!pread_all(f.fd, text.data(), text.size(), sizeof h))
      return R::failure(sys_error(path, "cannot read the shared weights index"));
    const nlohmann::json expected = index_of(blobs, offsets, h.data_offset);
    const nlohmann::json found = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (found != expected)
      return R::failure(path.string() + ": the shared weights file holds other tensors than this model's (" +
                        std::to_string(found.is_array() ? found.size() : 0) + " in the file, " +
                        std::to_string(blobs.size()) + " in the model); remove it, or run without shared weights");
    w->offsets_ = offsets;
    w->mapped_bytes_ = h.total_bytes;
  } else {
    // First of this key (or the last writer died half-way): write the whole file, flag last.
    std::uint64_t data_offset = 4096;
    std::string text = index_of(blobs, offsets, data_offset).dump();
    while (sizeof h + text.size() > data_offset) {
      data_offset += 4096;
      text = index_of(blobs, offsets, data_offset).dump();
    }
    const std::uint64_t total = offsets.empty() ? data_offset : offsets.back() + blobs.back().bytes;
    std::memcpy(h.magic, kMagic, sizeof kMagic);
    h.version = kVersion;
    h.complete = 0;
    h.index_bytes = text.size();
    h.data_offset = data_offset;
    h.total_bytes = total;
    auto fail_write = [&](const std::string& what) {
      const std::string msg = sys_error(path, what);
      if (::ftruncate(f.fd, 0) != 0) { /* the next worker rewrites it anyway: the flag is clear */ }
      return R::failure(msg);
    };
    if (::ftruncate(f.fd, 0) != 0 || ::ftruncate(f.fd, static_cast<off_t>(total)) != 0)
      return fail_write("cannot size the shared weights file");
    if (!pwrite_all(f.fd, &h, sizeof h, 0) || !pwrite_all(f.fd, text.data(), text.size(), sizeof h))
      return fail_write("cannot write the shared weights index");
    for (std::size_t i = 0; i < blobs.size(); ++i)
      if (!pwrite_all(f.fd, blobs[i].data, blobs[i].bytes, offsets[i]))
        return fail_write("cannot write the shared weights (is its file system full?)");
    h.complete = 1;
    if (!pwrite_all(f.fd, &h, sizeof h, 0)) return fail_write("cannot finish the shared weights file");
    w->offsets_ = offsets;
    w->mapped_bytes_ = total;
    w->created_ = true;
  }

  // MAP_POPULATE: every page is mapped in every worker, so PSS splits the file evenly among them.
  void* base = ::mmap(nullptr, w->mapped_bytes_, PROT_READ, MAP_SHARED | MAP_POPULATE, f.fd, 0);
  if (base == MAP_FAILED) return R::failure(sys_error(path, "cannot map the shared weights file"));
  w->base_ = base;
  for (std::size_t i = 0; i < blobs.size(); ++i) {
    if (blobs[i].bytes && std::memcmp(w->data(i), blobs[i].data, blobs[i].bytes) != 0)
      return R::failure(path.string() + ": the shared weights file differs from this model's tensor " +
                        blobs[i].name + "; remove it, or run without shared weights");
  }
  return R(std::move(w));
}

SharedWeights::~SharedWeights() {
  if (base_) ::munmap(base_, mapped_bytes_);
}

}  // namespace ab
