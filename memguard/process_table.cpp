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

ProcessTable::ProcessTable(std::filesystem::path proc_root) : proc_root_(std::move(proc_root)) {}

void ProcessTable::refresh(bool full) {
  stats_read_ = 0;
  DIR* dir = ::opendir(proc_root_.c_str());
  if (!dir) {
    ppid_.clear();
    children_.clear();
    return;
  }
  std::unordered_map<pid_t, pid_t> next;
  next.reserve(ppid_.size() + 16);
  while (dirent* e = ::readdir(dir)) {
    const char* name = e->d_name;
    if (name[0] < '1' || name[0] > '9') continue;
    pid_t pid = 0;
    auto len = std::char_traits<char>::length(name);
    auto [end, ec] = std::from_chars(name, name + len, pid);
    if (ec != std::errc() || end != name + len) continue;
    if (!full) {
      auto it = ppid_.find(pid);
      if (it != ppid_.end()) {
        next.emplace(pid, it->second);
        continue;
      }
    }
    ++stats_read_;
    if (auto st = read_proc_stat(proc_root_, pid)) next.emplace(pid, st->ppid);
  }
  ::closedir(dir);
  ppid_ = std::move(next);
  children_.clear();
  for (auto [pid, ppid] : ppid_)
    if (pid != ppid) children_[ppid].push_back(pid);
}

std::vector<pid_t> ProcessTable::tree(pid_t root) const {
  if (ppid_.find(root) == ppid_.end()) return {};
  return walk(root, children_);
}

}  // namespace ab
