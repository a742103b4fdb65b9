// The pid → ppid table and the process-tree walk.
#include "memguard/process_table.h"

#include <dirent.h>

#include <charconv>
#include <deque>
#include <unordered_set>

#include "memguard/process_memory.h"

namespace ab {
namespace {

std::vector<pid_t> walk(pid_t root, const std::unordered_map<pid_t, std::vector<pid_t>>& children) {
  std::vector<pid_t> out{root};
  std::unordered_set<pid_t> seen{root};  // a corrupt table must not loop forever
  for (std::size_t i = 0; i < out.size(); ++i) {
    auto it = children.find(out[i]);
    if (it == children.end()) continue;
    for (pid_t c : it->second)
      if (seen.insert(c).second) out.push_back(c);
  }
  return out;
}

}  // namespace

std::vector<pid_t> tree_members(pid_t root, const std::vector<std::pair<pid_t, pid_t>>& pid_ppid) {
  std::unordered_map<pid_t, std::vector<pid_t>> children;
  bool found = false;
  for (auto [pid, ppid] : pid_ppid) {
    found |= pid == root;
    if (pid != ppid) children[ppid].push_back(pid);
  }
  if (!found) return {};
  return walk(root, children);
}

std::optional<pid_t> read_last_pid(const std::filesystem::path& proc_root) {
  auto text = read_small_file(proc_root / "loadavg");
  if (!text) return std::nullopt;
  std::string_view s = *text;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.remove_suffix(1);
  auto space = s.rfind(' ');
  if (space == std::string_view::npos || s.substr(0, space).find('/') == std::string_view::npos) return std::nullopt;
  s.remove_prefix(space + 1);
  pid_t pid = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), pid);
  if (ec != std::errc() || end != s.data() + s.size() || pid < 0) return std::nullopt;
  return pid;
}

ProcessTable::ProcessTable(std::filesystem::path proc_root) : proc_root_(std::move(proc_root)) {}

void ProcessTable::refresh(bool full) {
  stats_read_ = 0;
  const std::uint64_t now = ++refreshes_;
  DIR* dir = ::opendir(proc_root_.c_str());
  if (!dir) {
    ppid_.clear();
    children_.clear();
    return;
  }
  // Mark and sweep, so the common case (nobody started or exited) rebuilds nothing: measured on
  // this machine with 171 processes, an incremental refresh costs ~100 us, nearly all of it the
  // kernel generating the /proc listing.
  bool changed = false;
  while (dirent* e = ::readdir(dir)) {
    const char* name = e->d_name;
    if (name[0] < '1' || name[0] > '9') continue;
    pid_t pid = 0;
    auto len = std::char_traits<char>::length(name);
    auto [end, ec] = std::from_chars(name, name + len, pid);
    if (ec != std::errc() || end != name + len) continue;
    auto it = ppid_.find(pid);
    if (it != ppid_.end() && !full) {
      it->second.seen = now;
      continue;
    }
    ++stats_read_;
    auto st = read_proc_stat(proc_root_, pid);
    if (!st) continue;  // exited mid-scan: normal
    if (it == ppid_.end()) {
      ppid_.emplace(pid, Entry{st->ppid, now});
      changed = true;
    } else {
      changed |= it->second.ppid != st->ppid;
      it->second = Entry{st->ppid, now};
    }
  }
  ::closedir(dir);
  for (auto it = ppid_.begin(); it != ppid_.end();) {
    if (it->second.seen != now) {
      it = ppid_.erase(it);
      changed = true;
    } else {
      ++it;
    }
  }
  if (!changed) return;
  children_.clear();
  for (const auto& [pid, entry] : ppid_)
    if (pid != entry.ppid) children_[entry.ppid].push_back(pid);
}

std::vector<pid_t> ProcessTable::tree(pid_t root) const {
  if (ppid_.find(root) == ppid_.end()) return {};
  return walk(root, children_);
}

}  // namespace ab
