// Locating and reading the memory cgroup; parsers are pure, readers only do I/O.
#include "memguard/cgroup.h"

#include <algorithm>

#include "memguard/process_memory.h"
#include "memguard/text_fields.h"

namespace ab {
namespace {

namespace fs = std::filesystem;

// v1 writes PAGE_COUNTER_MAX * PAGE_SIZE (2^63 - 4096 with 4 KiB pages, other values with bigger
// pages); no real limit comes near 2^62 bytes.
constexpr std::uint64_t kV1UnlimitedSentinelBytes = 1ull << 62;

bool has_comma_token(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    auto comma = list.find(',');
    if (list.substr(0, comma) == token) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape_mount_field(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      auto o = s.substr(i + 1, 3);
      if (std::all_of(o.begin(), o.end(), [](char c) { return c >= '0' && c <= '7'; })) {
        out.push_back(static_cast<char>((o[0] - '0') * 64 + (o[1] - '0') * 8 + (o[2] - '0')));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

// The cgroup's directory: mount point plus the path below the mount's root.
std::optional<fs::path> cgroup_dir(const fs::path& root, const CgroupMount& mount, std::string_view path) {
  std::string_view mroot = mount.root;
  if (mroot != "/") {
    if (path.substr(0, mroot.size()) != mroot) return std::nullopt;
    path.remove_prefix(mroot.size());
  }
  fs::path dir = root / fs::path(mount.mount_point).relative_path();
  while (!path.empty() && path.front() == '/') path.remove_prefix(1);
  if (!path.empty()) dir /= fs::path(std::string(path));
  return dir;
}

std::optional<std::uint64_t> read_u64_file(const fs::path& p) {
  auto text = read_small_file(p);
  if (!text) return std::nullopt;
  std::string_view s = *text;
  auto v = take_u64(&s);
  if (!v || !take_token(&s).empty()) return std::nullopt;
  return v;
}

std::optional<LimitBytes> read_limit_file(const fs::path& p) {
  auto text = read_small_file(p);
  if (!text) return std::nullopt;
  return parse_limit_bytes(*text);
}

std::optional<std::uint64_t> read_keyed_file(const fs::path& p, std::string_view key) {
  auto text = read_small_file(p);
  if (!text) return std::nullopt;
  return parse_keyed_u64(*text, key);
}

std::optional<std::uint64_t> bounded(const std::optional<LimitBytes>& l) {
  if (!l || l->unlimited) return std::nullopt;
  return l->bytes;
}

}  // namespace

std::optional<CgroupMembership> parse_proc_cgroup(std::string_view text) {
  CgroupMembership m;
  bool any = false;
  for_each_line(text, [&](std::string_view line) {
    auto c1 = line.find(':');
    if (c1 == std::string_view::npos) return;
    auto c2 = line.find(':', c1 + 1);
    if (c2 == std::string_view::npos) return;
    auto id = line.substr(0, c1), controllers = line.substr(c1 + 1, c2 - c1 - 1), path = line.substr(c2 + 1);
    if (!parse_u64(id) || path.empty() || path.front() != '/') return;
    any = true;
    if (id == "0" && controllers.empty()) m.v2_path = std::string(path);
    else if (has_comma_token(controllers, "memory")) m.v1_memory_path = std::string(path);
  });
  if (!any) return std::nullopt;
  return m;
}

CgroupMounts parse_mountinfo(std::string_view text) {
  CgroupMounts mounts;
  for_each_line(text, [&](std::string_view line) {
    // id parent major:minor root mount_point options [optional fields...] - fstype source super_options
    auto dash = line.find(" - ");
    if (dash == std::string_view::npos) return;
    std::string_view head = line.substr(0, dash), tail = line.substr(dash + 3);
    take_token(&head);
    take_token(&head);
    take_token(&head);
    auto root = take_token(&head), mount_point = take_token(&head);
    auto fstype = take_token(&tail);
    take_token(&tail);
    auto super_options = take_token(&tail);
    if (root.empty() || mount_point.empty()) return;
    CgroupMount m{unescape_mount_field(mount_point), unescape_mount_field(root)};
    if (fstype == "cgroup2" && !mounts.v2) mounts.v2 = m;
    else if (fstype == "cgroup" && has_comma_token(super_options, "memory") && !mounts.v1_memory) mounts.v1_memory = m;
  });
  return mounts;
}

std::optional<LimitBytes> parse_limit_bytes(std::string_view text) {
  std::string_view s = text;
  auto tok = take_token(&s);
  if (!take_token(&s).empty()) return std::nullopt;
  if (tok == "max") return LimitBytes{true, 0};
  auto v = parse_u64(tok);
  if (!v) return std::nullopt;
  if (*v >= kV1UnlimitedSentinelBytes) return LimitBytes{true, 0};
  return LimitBytes{false, *v};
}

std::optional<std::uint64_t> parse_keyed_u64(std::string_view text, std::string_view key) {
  std::optional<std::uint64_t> found;
  for_each_line(text, [&](std::string_view line) {
    if (found) return;
    auto k = take_token(&line);
    if (k != key) return;
    auto v = take_u64(&line);
    if (v && take_token(&line).empty()) found = v;
  });
  return found;
}

CgroupLookup find_memory_cgroup(const fs::path& root, const std::string& pid) {
  CgroupLookup out;
  fs::path proc = root / "proc" / pid;
  auto cgroup_text = read_small_file(proc / "cgroup");
  if (!cgroup_text) {
    out.reason = "cannot read " + (proc / "cgroup").string() + ": no cgroup information";
    return out;
  }
  auto membership = parse_proc_cgroup(*cgroup_text);
  if (!membership) {
    out.reason = (proc / "cgroup").string() + " has no cgroup lines";
    return out;
  }
  auto mountinfo_text = read_small_file(proc / "mountinfo");
  CgroupMounts mounts = mountinfo_text ? parse_mountinfo(*mountinfo_text) : CgroupMounts{};

  if (membership->v1_memory_path && mounts.v1_memory) {
    if (auto dir = cgroup_dir(root, *mounts.v1_memory, *membership->v1_memory_path)) {
      out.cgroup = MemoryCgroup{CgroupVersion::kV1, *membership->v1_memory_path, *dir,
                                root / fs::path(mounts.v1_memory->mount_point).relative_path()};
      return out;
    }
  }
  if (membership->v2_path && mounts.v2) {
    fs::path mount_dir = root / fs::path(mounts.v2->mount_point).relative_path();
    auto controllers = read_small_file(mount_dir / "cgroup.controllers");
    bool has_memory = false;
    if (controllers) {
      std::string_view s = *controllers;
      for (auto t = take_token(&s); !t.empty(); t = take_token(&s)) has_memory |= t == "memory";
    }
    if (!has_memory) {
      out.reason = "the cgroup v2 hierarchy at " + mounts.v2->mount_point + " has no memory controller";
      if (!membership->v1_memory_path) out.reason += ", and no v1 memory hierarchy is mounted";
      return out;
    }
    if (auto dir = cgroup_dir(root, *mounts.v2, *membership->v2_path)) {
      out.cgroup = MemoryCgroup{CgroupVersion::kV2, *membership->v2_path, *dir, mount_dir};
      return out;
    }
  }
  out.reason = mounts.v1_memory || mounts.v2 ? "this process's cgroup is not visible under the mounted hierarchies"
                                            : "no memory cgroup hierarchy is mounted";
  return out;
}

void read_cgroup_usage(const MemoryCgroup& cg, CgroupReading* r) {
  if (cg.version == CgroupVersion::kV2) {
    r->usage_bytes = read_u64_file(cg.dir / "memory.current");
    r->oom_kill_count = read_keyed_file(cg.dir / "memory.events", "oom_kill");
    r->inactive_file_bytes = read_keyed_file(cg.dir / "memory.stat", "inactive_file");
  } else {
    r->usage_bytes = read_u64_file(cg.dir / "memory.usage_in_bytes");
    r->oom_kill_count = read_keyed_file(cg.dir / "memory.oom_control", "oom_kill");
    r->inactive_file_bytes = read_keyed_file(cg.dir / "memory.stat", "total_inactive_file");
  }
}

std::optional<std::uint64_t> cgroup_available_bytes(const CgroupReading& r) {
  if (!r.limit_bytes || !r.usage_bytes) return std::nullopt;
  std::uint64_t inactive = r.inactive_file_bytes.value_or(0);
  std::uint64_t used = *r.usage_bytes > inactive ? *r.usage_bytes - inactive : 0;
  return *r.limit_bytes > used ? *r.limit_bytes - used : 0;
}

CgroupReading read_cgroup(const MemoryCgroup& cg) {
  CgroupReading r;
  read_cgroup_usage(cg, &r);
  auto tighten = [&](std::optional<LimitBytes> l) {
    if (!l || l->unlimited) return;
    r.unlimited = false;
    r.limit_bytes = r.limit_bytes ? std::min(*r.limit_bytes, l->bytes) : l->bytes;
  };
  if (cg.version == CgroupVersion::kV2) {
    // A parent's memory.max binds its children; the root cgroup has no memory.max at all.
    fs::path dir = cg.dir;
    for (;;) {
      tighten(read_limit_file(dir / "memory.max"));
      if (dir == cg.mount_dir || !dir.has_parent_path() || dir.parent_path() == dir) break;
      auto rel = dir.lexically_relative(cg.mount_dir);
      if (rel.empty() || *rel.begin() == "..") break;
      dir = dir.parent_path();
    }
    r.swap_limit_bytes = bounded(read_limit_file(cg.dir / "memory.swap.max"));
    r.swap_usage_bytes = read_u64_file(cg.dir / "memory.swap.current");
    r.pressure = read_psi(cg.dir / "memory.pressure");
  } else {
    tighten(read_limit_file(cg.dir / "memory.limit_in_bytes"));
    // With use_hierarchy (always on since Linux 5.x) memory.stat carries the binding ancestor limit.
    if (auto stat = read_small_file(cg.dir / "memory.stat")) {
      if (auto h = parse_keyed_u64(*stat, "hierarchical_memory_limit"))
        tighten(parse_limit_bytes(std::to_string(*h)));
    }
    r.memsw_limit_bytes = bounded(read_limit_file(cg.dir / "memory.memsw.limit_in_bytes"));
    r.memsw_usage_bytes = read_u64_file(cg.dir / "memory.memsw.usage_in_bytes");
  }
  return r;
}

}  // namespace ab
