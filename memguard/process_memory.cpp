// Parsers and readers for one process's /proc files.
#include "memguard/process_memory.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>

#include "memguard/text_fields.h"

namespace ab {

std::optional<Statm> parse_statm(std::string_view text, std::uint64_t page_size_bytes) {
  std::uint64_t f[3];
  for (auto& v : f) {
    auto n = take_u64(&text);
    if (!n) return std::nullopt;
    v = *n;
  }
  for (auto v : f)
    if (v > kMaxSaneBytes / page_size_bytes) return std::nullopt;
  return Statm{f[0] * page_size_bytes, f[1] * page_size_bytes, f[2] * page_size_bytes};
}

std::optional<SmapsRollup> parse_smaps_rollup(std::string_view text) {
  SmapsRollup r;
  bool have_rss = false, have_pss = false, bad = false;
  std::uint64_t private_clean = 0, private_dirty = 0;
  for_each_line(text, [&](std::string_view line) {
    auto [key, value] = split_key_value(line);
    std::uint64_t* target = nullptr;
    if (key == "Rss") target = &r.rss_bytes, have_rss = true;
    else if (key == "Pss") target = &r.pss_bytes, have_pss = true;
    else if (key == "Private_Clean") target = &private_clean;
    else if (key == "Private_Dirty") target = &private_dirty;
    else if (key == "Swap") target = &r.swap_bytes;
    else if (key == "Pss_Shmem") target = &r.pss_shmem_bytes;
    if (!target) return;
    auto bytes = parse_kib_value(value);
    if (!bytes) {
      bad = true;
      return;
    }
    *target = *bytes;
  });
  if (bad || !have_rss || !have_pss) return std::nullopt;
  r.uss_bytes = private_clean + private_dirty;
  return r;
}

std::optional<ProcStat> parse_proc_stat(std::string_view text) {
  ProcStat s;
  auto open = text.find(" (");
  auto close = text.rfind(')');
  if (open == std::string_view::npos || close == std::string_view::npos || close < open) return std::nullopt;
  std::string_view head = text.substr(0, open);
  auto pid = take_u64(&head);
  if (!pid || *pid == 0 || *pid > 0x7fffffff) return std::nullopt;
  s.pid = static_cast<pid_t>(*pid);
  std::string_view rest = text.substr(close + 1);
  // After comm: state(3) ppid(4) pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
  // utime stime cutime cstime priority nice num_threads itrealvalue starttime(22).
  auto state = take_token(&rest);
  if (state.size() != 1) return std::nullopt;
  s.state = state[0];
  auto ppid = take_u64(&rest);
  if (!ppid || *ppid > 0x7fffffff) return std::nullopt;
  s.ppid = static_cast<pid_t>(*ppid);
  for (int field = 5; field < 14; ++field)
    if (take_token(&rest).empty()) return std::nullopt;
  auto utime = take_u64(&rest);
  auto stime = take_u64(&rest);
  if (!utime || !stime) return std::nullopt;
  s.cpu_ticks = *utime + *stime;
  for (int field = 16; field < 22; ++field)
    if (take_token(&rest).empty()) return std::nullopt;
  auto start = take_u64(&rest);
  if (!start) return std::nullopt;
  s.start_time_ticks = *start;
  return s;
}

std::optional<std::string> read_small_file(const std::filesystem::path& path, ReadError* error) {
  auto set = [&](ReadError e) {
    if (error) *error = e;
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    set(errno == EACCES || errno == EPERM ? ReadError::kDenied : ReadError::kGone);
    return std::nullopt;
  }
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      // ESRCH: the process exited between open and read.
      int e = errno;
      ::close(fd);
      set(e == EACCES || e == EPERM ? ReadError::kDenied : ReadError::kGone);
      return std::nullopt;
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  set(ReadError::kNone);
  return out;
}

bool pread_whole(int fd, std::string* out, ReadError* error) {
  out->clear();
  char buf[4096];
  off_t offset = 0;
  for (;;) {
    ssize_t n = ::pread(fd, buf, sizeof buf, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      if (error) *error = errno == EACCES || errno == EPERM ? ReadError::kDenied : ReadError::kGone;
      return false;
    }
    if (n == 0) break;
    out->append(buf, static_cast<std::size_t>(n));
    offset += n;
  }
  if (out->empty()) {
    if (error) *error = ReadError::kGone;
    return false;
  }
  if (error) *error = ReadError::kNone;
  return true;
}

namespace {

std::filesystem::path pid_file(const std::filesystem::path& proc_root, pid_t pid, const char* name) {
  return proc_root / std::to_string(pid) / name;
}

template <typename T, typename Parse>
std::optional<T> read_and_parse(const std::filesystem::path& path, ReadError* error, Parse parse) {
  auto text = read_small_file(path, error);
  if (!text) return std::nullopt;
  // An exited process can leave an empty file behind an open descriptor: that is "gone" too.
  if (text->empty()) {
    if (error) *error = ReadError::kGone;
    return std::nullopt;
  }
  auto parsed = parse(*text);
  if (!parsed && error) *error = ReadError::kMalformed;
  return parsed;
}

}  // namespace

std::optional<Statm> read_statm(const std::filesystem::path& proc_root, pid_t pid, ReadError* error) {
  return read_and_parse<Statm>(pid_file(proc_root, pid, "statm"), error,
                               [](std::string_view t) { return parse_statm(t, page_size_bytes()); });
}

std::optional<SmapsRollup> read_smaps_rollup(const std::filesystem::path& proc_root, pid_t pid, ReadError* error) {
  return read_and_parse<SmapsRollup>(pid_file(proc_root, pid, "smaps_rollup"), error,
                                     [](std::string_view t) { return parse_smaps_rollup(t); });
}

std::optional<ProcStat> read_proc_stat(const std::filesystem::path& proc_root, pid_t pid, ReadError* error) {
  return read_and_parse<ProcStat>(pid_file(proc_root, pid, "stat"), error,
                                  [](std::string_view t) { return parse_proc_stat(t); });
}

PolledFile::~PolledFile() {
  if (fd_ >= 0) ::close(fd_);
}

std::optional<std::string_view> PolledFile::read() {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (fd_ < 0) fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) return std::nullopt;
    if (pread_whole(fd_, &buf_)) return std::string_view(buf_);
    ::close(fd_);
    fd_ = -1;
  }
  return std::nullopt;
}

StatmReader::StatmReader(std::filesystem::path proc_root) : proc_root_(std::move(proc_root)) {}

StatmReader::~StatmReader() {
  for (auto& [pid, e] : open_) ::close(e.fd);
}

std::optional<Statm> StatmReader::read(pid_t pid, ReadError* error) {
  ReadError err = ReadError::kNone;
  auto it = open_.find(pid);
  if (it != open_.end()) {
    it->second.used = true;
    if (pread_whole(it->second.fd, &buf_, &err)) {
      auto s = parse_statm(buf_, page_size_bytes());
      if (error) *error = s ? ReadError::kNone : ReadError::kMalformed;
      return s;
    }
    ::close(it->second.fd);  // that process is gone; the pid may already belong to another
    open_.erase(it);
  }
  const auto path = proc_root_ / std::to_string(pid) / "statm";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (error) *error = errno == EACCES || errno == EPERM ? ReadError::kDenied : ReadError::kGone;
    return std::nullopt;
  }
  bool ok = pread_whole(fd, &buf_, &err);
  if (ok && open_.size() < kMaxOpenFiles) {
    open_.emplace(pid, Entry{fd, true});
  } else {
    ::close(fd);
  }
  if (!ok) {
    if (error) *error = err;
    return std::nullopt;
  }
  auto s = parse_statm(buf_, page_size_bytes());
  if (error) *error = s ? ReadError::kNone : ReadError::kMalformed;
  return s;
}

void StatmReader::sweep() {
  for (auto it = open_.begin(); it != open_.end();) {
    if (!it->second.used) {
      ::close(it->second.fd);
      it = open_.erase(it);
    } else {
      it->second.used = false;
      ++it;
    }
  }
}

std::uint64_t page_size_bytes() {
  static const std::uint64_t kPageSize = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  return kPageSize;
}

}  // namespace ab
