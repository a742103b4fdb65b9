// The sampler: per-tree RSS every tick, PSS/USS/swap/VRAM every few ticks, the machine every tick.
#include "memguard/proc_sampler.h"

#include <unistd.h>

#include <time.h>

#include <algorithm>
#include <unordered_map>

#include "memguard/nvml.h"
#include "memguard/process_memory.h"

namespace ab {
namespace {

using VramByPid = std::unordered_map<pid_t, std::uint64_t>;

// Sums the tree members' memory. Members that exited since the table was read are skipped.
TreeMemory sum_tree(const std::vector<pid_t>& pids, const std::filesystem::path& proc_root, bool with_smaps,
                    const VramByPid* vram, StatmReader* statm_reader = nullptr) {
  TreeMemory t;
  t.pss_measured = with_smaps;
  for (pid_t pid : pids) {
    auto statm = statm_reader ? statm_reader->read(pid) : read_statm(proc_root, pid);
    if (!statm) continue;  // gone: normal for a tree
    ++t.processes;
    t.rss_bytes += statm->resident_bytes;
    if (vram) {
      if (auto it = vram->find(pid); it != vram->end()) t.vram_bytes += it->second;
    }
    if (!with_smaps) continue;
    ReadError err = ReadError::kNone;
    if (auto rollup = read_smaps_rollup(proc_root, pid, &err)) {
      t.pss_bytes += rollup->pss_bytes;
      t.uss_bytes += rollup->uss_bytes;
      t.smaps_rss_bytes += rollup->rss_bytes;
      t.swap_bytes += rollup->swap_bytes;
      t.pss_shmem_bytes += rollup->pss_shmem_bytes;
    } else {
      // Denied (another user namespace) or exited between the two reads: count its RSS whole,
      // which over- rather than under-states what it holds.
      t.pss_bytes += statm->resident_bytes;
      t.uss_bytes += statm->resident_bytes;
      t.smaps_rss_bytes += statm->resident_bytes;
      t.pss_measured = false;
    }
  }
  if (t.processes == 0) t.pss_measured = false;
  return t;
}

VramByPid vram_by_pid(Nvml* nvml) {
  VramByPid out;
  if (!nvml) return out;
  for (const auto& p : nvml->processes()) out[p.pid] += p.used_bytes;
  return out;
}

std::int64_t thread_cpu_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::uint64_t plus_delta(std::uint64_t base, std::uint64_t now, std::uint64_t then) {
  if (now >= then) return base + (now - then);
  std::uint64_t drop = then - now;
  return base > drop ? base - drop : 0;
}

}  // namespace

TreeMemory read_tree_memory(pid_t root_pid, const std::filesystem::path& proc_root, ProcessTable* table) {
  ProcessTable local(proc_root);
  if (!table) table = &local;
  table->refresh(/*full=*/true);
  return sum_tree(table->tree(root_pid), proc_root, /*with_smaps=*/true, nullptr);
}

ProcSampler::ProcSampler(SamplerConfig config)
    : config_(std::move(config)),
      proc_root_(config_.root / "proc"),
      machine_(config_.root),
      table_(proc_root_),
      statm_reader_(proc_root_) {
  config_.smaps_every_ticks = std::max<std::uint32_t>(1, config_.smaps_every_ticks);
  config_.full_scan_every_ticks = std::max<std::uint32_t>(1, config_.full_scan_every_ticks);
  config_.scan_every_ticks = std::max<std::uint32_t>(1, config_.scan_every_ticks);
  smaps_credit_ns_ = config_.smaps_credit_cap_ns;
  config_.interval_ms = std::max<std::int64_t>(1, config_.interval_ms);
  if (config_.read_vram) {
    nvml_ = Nvml::open(&nvml_reason_);
  } else {
    nvml_reason_ = "VRAM reading is turned off";
  }
}

ProcSampler::~ProcSampler() = default;

void ProcSampler::watch(std::uint64_t key, pid_t root_pid) {
  Watch w;
  w.root_pid = root_pid;
  if (auto it = recent_.find(root_pid); it != recent_.end()) {
    if (tick_count_ <= it->second.second + config_.smaps_every_ticks) w = it->second.first;  // its smaps state and reading
    recent_.erase(it);
  }
  w.reading.key = key;
  w.reading.root_pid = root_pid;
  watches_[key] = w;
  reset_peaks(key);  // a kept reading's peaks were its last job's
}

void ProcSampler::unwatch(std::uint64_t key) {
  auto it = watches_.find(key);
  if (it == watches_.end()) return;
  if (it->second.have_smaps) recent_[it->second.root_pid] = {it->second, tick_count_};
  watches_.erase(it);
}

void ProcSampler::reset_peaks(std::uint64_t key) {
  auto it = watches_.find(key);
  if (it == watches_.end()) return;
  auto& r = it->second.reading;
  r.peak_rss_bytes = r.rss_bytes;
  r.peak_pss_bytes = r.pss_bytes;
  r.peak_uss_bytes = r.uss_bytes;
  r.peak_vram_bytes = r.vram_bytes;
}


TreeMemory ProcSampler::read_tree_now(pid_t root_pid) const {
  ProcessTable table(proc_root_);
  table.refresh(/*full=*/true);
  VramByPid vram = vram_by_pid(nvml_.get());
  return sum_tree(table.tree(root_pid), proc_root_, /*with_smaps=*/true, nvml_ ? &vram : nullptr);
}

void ProcSampler::tick() {
  const std::uint64_t n = tick_count_++;
  for (auto it = recent_.begin(); it != recent_.end();)  // too old to stand for the tree now
    it = n > it->second.second + config_.smaps_every_ticks ? recent_.erase(it) : std::next(it);
  const bool full_scan = n % config_.full_scan_every_ticks == 0;

  struct Job {
    std::uint64_t key;
    pid_t root_pid;
    bool first;                 // never read with smaps yet
    bool smaps_due;             // smaps_every_ticks have passed since the last read
    std::uint64_t smaps_tick;   // for oldest-first
    bool with_smaps;
    TreeMemory memory;
  };
  std::vector<Job> jobs;
  jobs.reserve(watches_.size());
  for (const auto& [key, w] : watches_)
    jobs.push_back({key, w.root_pid, !w.have_smaps, n >= w.smaps_tick + config_.smaps_every_ticks, w.smaps_tick, false,
                    TreeMemory{}});
  MachineReading machine = snapshot_.machine;

  // The smaps ration accrues with wall time.
  const auto started = std::chrono::steady_clock::now();
  if (config_.smaps_cpu_share > 0 && last_tick_at_ != std::chrono::steady_clock::time_point{}) {
    auto wall_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(started - last_tick_at_).count();
    smaps_credit_ns_ = std::min<std::int64_t>(
        config_.smaps_credit_cap_ns, smaps_credit_ns_ + static_cast<std::int64_t>(config_.smaps_cpu_share * static_cast<double>(wall_ns)));
  }
  last_tick_at_ = started;

  // The I/O. Oldest smaps first.
  const bool new_watch = std::any_of(jobs.begin(), jobs.end(), [](const Job& j) { return j.first; });
  if (!jobs.empty() && (full_scan || new_watch || n % config_.scan_every_ticks == 0)) {
    auto last_pid = read_last_pid(proc_root_);
    if (full_scan || new_watch || !last_pid || last_pid != last_pid_) {
      table_.refresh(full_scan);
      last_pid_ = last_pid;
    }
  }
  std::vector<Job*> order;
  for (auto& j : jobs) order.push_back(&j);
  std::stable_sort(order.begin(), order.end(), [](const Job* a, const Job* b) { return a->smaps_tick < b->smaps_tick; });
  VramByPid vram;
  bool vram_read = false;
  for (Job* j : order) {
    j->with_smaps = j->first || (j->smaps_due && (config_.smaps_cpu_share <= 0 || smaps_credit_ns_ > 0));
    if (j->with_smaps && nvml_ && !vram_read) {
      vram = vram_by_pid(nvml_.get());
      vram_read = true;
    }
    const std::int64_t cpu0 = j->with_smaps ? thread_cpu_ns() : 0;
    j->memory = sum_tree(table_.tree(j->root_pid), proc_root_, j->with_smaps, j->with_smaps && nvml_ ? &vram : nullptr,
                         &statm_reader_);
    if (j->with_smaps && config_.smaps_cpu_share > 0) smaps_credit_ns_ -= thread_cpu_ns() - cpu0;
  }
  statm_reader_.sweep();
  machine_.read(&machine, full_scan);
  const auto now = std::chrono::steady_clock::now();

  for (const auto& j : jobs) {
    auto it = watches_.find(j.key);
    if (it == watches_.end()) continue;
    Watch& w = it->second;
    WatchReading& r = w.reading;
    const TreeMemory& m = j.memory;
    r.processes = m.processes;
    r.rss_bytes = m.rss_bytes;
    r.sampled_at = now;
    if (j.with_smaps) {
      r.pss_bytes = m.pss_bytes;
      r.uss_bytes = m.uss_bytes;
      r.swap_bytes = m.swap_bytes;
      r.pss_shmem_bytes = m.pss_shmem_bytes;
      r.vram_bytes = m.vram_bytes;
      r.pss_measured = m.pss_measured;
      w.smaps_tick = n;
      if (m.processes > 0) {
        w.have_smaps = true;
        // The rollup's own RSS, not statm's: a tree growing between the two reads would
        // otherwise have that growth counted twice in every estimate until the next rollup.
        w.rss_at_smaps_bytes = m.smaps_rss_bytes;
        w.pss_at_smaps_bytes = m.pss_bytes;
        w.uss_at_smaps_bytes = m.uss_bytes;
      }
    } else {
      // Between smaps reads a tree's PSS moves with its RSS: new private pages count fully.
      r.pss_bytes = m.processes ? plus_delta(w.pss_at_smaps_bytes, m.rss_bytes, w.rss_at_smaps_bytes) : 0;
      r.uss_bytes = m.processes ? plus_delta(w.uss_at_smaps_bytes, m.rss_bytes, w.rss_at_smaps_bytes) : 0;
      r.pss_measured = false;
      if (!m.processes) r.swap_bytes = r.vram_bytes = r.pss_shmem_bytes = 0;
    }
    r.peak_rss_bytes = std::max(r.peak_rss_bytes, r.rss_bytes);
    r.peak_pss_bytes = std::max(r.peak_pss_bytes, r.pss_bytes);
    r.peak_uss_bytes = std::max(r.peak_uss_bytes, r.uss_bytes);
    r.peak_vram_bytes = std::max(r.peak_vram_bytes, r.vram_bytes);
  }
  snapshot_.tick = n + 1;
  snapshot_.sampled_at = now;
  snapshot_.machine = std::move(machine);
  snapshot_.watches.clear();
  for (const auto& [key, w] : watches_) snapshot_.watches.push_back(w.reading);
}

}  // namespace ab
