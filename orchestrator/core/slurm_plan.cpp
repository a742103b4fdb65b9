// Slurm executor, pure parts: sharding by predicted peak, sbatch arguments, sacct/sinfo parsing.
#include "orchestrator/core/slurm_plan.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

namespace ab {
namespace {

constexpr std::uint64_t kMiB = 1ull << 20;

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (;;) {
    const auto at = s.find(sep);
    out.push_back(s.substr(0, at));
    if (at == std::string_view::npos) return out;
    s.remove_prefix(at + 1);
  }
}

std::optional<std::uint32_t> parse_uint(std::string_view s) {
  if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
  return static_cast<std::uint32_t>(std::strtoul(std::string(s).c_str(), nullptr, 10));
}

/// "5-7,9%2" → 5, 6, 7, 9.
std::vector<std::uint32_t> expand_ranges(std::string_view s) {
  std::vector<std::uint32_t> out;
  s = s.substr(0, s.find('%'));
  for (auto part : split(s, ',')) {
    const auto dash = part.find('-');
    auto lo = parse_uint(part.substr(0, dash));
    auto hi = dash == std::string_view::npos ? lo : parse_uint(part.substr(dash + 1));
    if (!lo || !hi || *hi < *lo || *hi - *lo > 1000000) continue;
    for (std::uint32_t t = *lo; t <= *hi; ++t) out.push_back(t);
  }
  return out;
}

}  // namespace

std::uint64_t task_mem_bytes(std::uint64_t need_bytes, std::size_t files, const SlurmPlanConfig& config) {
  const std::uint64_t at_once = std::max<std::uint64_t>(1, std::min<std::uint64_t>(files, config.concurrency));
  const double hw = config.high_water > 0.1 && config.high_water <= 1.0 ? config.high_water : 1.0;
  const auto mem = static_cast<std::uint64_t>(static_cast<double>(need_bytes * at_once) / hw) + config.worker_idle_bytes +
                   config.task_overhead_bytes;
  return (mem + kMiB - 1) / kMiB * kMiB;
}

std::vector<PlannedArray> plan_arrays(std::vector<ShardFile> files, const SlurmPlanConfig& config) {
  std::stable_sort(files.begin(), files.end(),
                   [](const ShardFile& a, const ShardFile& b) { return a.need_bytes > b.need_bytes; });
  const std::size_t max_per_task = std::max<std::size_t>(1, config.files_per_task);
  std::vector<double> waves_left(files.size() + 1, 0);
  for (std::size_t k = files.size(); k-- > 0;) waves_left[k] = waves_left[k + 1] + files[k].waves;
  std::vector<PlannedArray> arrays;
  std::size_t i = 0;
  while (i < files.size()) {
    const std::size_t per_task =
        waves_left[i] > 0 ? std::clamp<std::size_t>(static_cast<std::size_t>(std::lround(waves_left[i] / 2)), 1, max_per_task)
                          : max_per_task;
    // One class: every file whose need is within class_step of the class's largest.
    const std::uint64_t top = files[i].need_bytes;
    const double floor_bytes = static_cast<double>(top) / std::max(1.0, config.class_step);
    std::size_t end = i;
    while (end < files.size() && static_cast<double>(files[end].need_bytes) >= floor_bytes) ++end;
    // Within the class, a task takes files of one group only (need order kept inside each group).
    std::stable_sort(files.begin() + static_cast<std::ptrdiff_t>(i), files.begin() + static_cast<std::ptrdiff_t>(end),
                     [](const ShardFile& a, const ShardFile& b) { return a.group < b.group; });
    PlannedArray array;
    for (std::size_t g = i; g < end;) {
      std::size_t g_end = g;
      while (g_end < end && files[g_end].group == files[g].group) ++g_end;
      // The group's files dealt round-robin (largest need first) over as few tasks as per_task
      // allows, so its tasks hold about as many files and as much work each.
      const std::size_t n = g_end - g, task_count = (n + per_task - 1) / per_task;
      std::vector<PlannedTask> dealt(task_count);
      for (std::size_t k = 0; k < n; ++k) {
        PlannedTask& task = dealt[k % task_count];
        task.files.push_back(files[g + k].index);
        task.largest_need_bytes = std::max(task.largest_need_bytes, files[g + k].need_bytes);
      }
      for (auto& task : dealt) {
        array.mem_bytes = std::max(array.mem_bytes, task_mem_bytes(task.largest_need_bytes, task.files.size(), config));
        array.tasks.push_back(std::move(task));
      }
      g = g_end;
    }
    arrays.push_back(std::move(array));
    i = end;
  }
  return arrays;
}

std::size_t files_per_task_for(std::size_t file_count) {
  return std::max<std::size_t>(1, (file_count + kTargetTasks - 1) / kTargetTasks);
}

std::vector<NodeGroup> parse_sinfo_nodes(std::string_view text) {
  std::vector<NodeGroup> out;
  for (auto line : split(text, '\n')) {
    std::vector<std::string_view> f;
    for (auto w : split(trim(line), ' '))
      if (!w.empty()) f.push_back(w);
    if (f.size() < 3) continue;
    auto strip = [](std::string_view w) { return w.back() == '+' ? w.substr(0, w.size() - 1) : w; };
    auto mem = parse_slurm_size_bytes(f[0], 1ull << 20);
    auto cpus = parse_uint(strip(f[1]));
    auto count = parse_uint(strip(f[2]));
    if (mem && *mem && cpus && count) out.push_back({*mem, *cpus, *count});
  }
  return out;
}

std::uint64_t task_slots(const std::vector<NodeGroup>& nodes, std::uint64_t mem_bytes, std::uint32_t cpus) {
  std::uint64_t slots = 0;
  for (const auto& n : nodes)
    slots += std::min<std::uint64_t>(n.mem_bytes / std::max<std::uint64_t>(1, mem_bytes), n.cpus / std::max(1u, cpus)) * n.count;
  return slots;
}

std::size_t files_per_task_for_overhead(double waves, double task_overhead_s, double job_s) {
  if (!(waves > 1) || !(task_overhead_s > 0) || !(job_s > 0)) return 1;
  const double best = std::sqrt(2 * waves * task_overhead_s / job_s);
  return std::max<std::size_t>(1, static_cast<std::size_t>(std::lround(std::min(best, 1e6))));
}

std::vector<std::size_t> pick_cold_wave(const std::vector<std::uint64_t>& sizes_bytes, std::size_t count) {
  std::vector<std::size_t> order(sizes_bytes.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return sizes_bytes[a] < sizes_bytes[b]; });
  if (order.size() <= count) return order;
  std::vector<std::size_t> out;
  for (std::size_t k = 0; k < count; ++k) {
    const std::size_t at = count == 1 ? order.size() - 1 : k * (order.size() - 1) / (count - 1);
    if (out.empty() || out.back() != order[at]) out.push_back(order[at]);
  }
  return out;
}

std::string shell_quote(std::string_view word) {
  if (!word.empty() && word.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=:,+@%") ==
                           std::string_view::npos)
    return std::string(word);
  std::string out = "'";
  for (char c : word) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::vector<std::string> sbatch_argv(const SbatchArray& a) {
  std::vector<std::string> argv = {"sbatch", "--parsable", "--job-name=" + a.name,
                                   "--array=0-" + std::to_string(a.task_count ? a.task_count - 1 : 0) +
                                       (a.max_running ? "%" + std::to_string(a.max_running) : std::string()),
                                   "--mem=" + std::to_string((a.mem_bytes + kMiB - 1) / kMiB) + "M",
                                   "--cpus-per-task=" + std::to_string(a.cpus_per_task), "--output=" + a.log_pattern};
  if (!a.partition.empty()) argv.push_back("--partition=" + a.partition);
  argv.insert(argv.end(), a.extra_args.begin(), a.extra_args.end());
  argv.push_back(a.script_path);
  return argv;
}

std::string task_script(const std::vector<std::string>& task_argv, const std::string& shard_dir,
                        const std::vector<std::string>& tail_argv) {
  std::string s = "#!/bin/sh\n# One align-batch array task: its shard's files, its own history (merged by the submitter).\n";
  for (const auto& w : task_argv) s += shell_quote(w) + " ";
  const std::string dir = shell_quote(shard_dir);
  s += "--history " + dir + "/\"$SLURM_ARRAY_TASK_ID\".sqlite --slurm-task " + dir + "/\"$SLURM_ARRAY_TASK_ID\".shard";
  for (const auto& w : tail_argv) s += " " + shell_quote(w);
  // The marker tells the submitter at once that this task's align-batch has exited (it still
  // takes the task's State from Slurm).
  return s + "\nrc=$?\n: >" + dir + "/\"$SLURM_ARRAY_TASK_ID\".ended\nexit $rc\n";
}

std::string shard_text(const Shard& shard) {
  std::string s = shard.out_dir;
  s += '\0';
  for (const auto& f : shard.files) {
    s += f;
    s += '\0';
  }
  return s;
}

std::optional<Shard> parse_shard(std::string_view text) {
  if (text.empty() || text.back() != '\0') return std::nullopt;
  text.remove_suffix(1);
  auto entries = split(text, '\0');
  if (entries.front().empty()) return std::nullopt;
  Shard shard;
  shard.out_dir = std::string(entries.front());
  for (std::size_t i = 1; i < entries.size(); ++i) shard.files.emplace_back(entries[i]);
  return shard;
}

std::optional<std::uint64_t> parse_slurm_size_bytes(std::string_view text, std::uint64_t default_unit_bytes) {
  text = trim(text);
  while (!text.empty() && (text.back() == '+' || text.back() == 'n' || text.back() == 'c')) text.remove_suffix(1);
  if (text.empty()) return std::nullopt;
  std::uint64_t unit = default_unit_bytes;
  switch (text.back()) {
    case 'K': unit = 1ull << 10; break;
    case 'M': unit = 1ull << 20; break;
    case 'G': unit = 1ull << 30; break;
    case 'T': unit = 1ull << 40; break;
    default: break;
  }
  if (text.back() >= 'A') text.remove_suffix(1);
  if (text.empty() || text.find_first_not_of("0123456789.") != std::string_view::npos) return std::nullopt;
  const double v = std::strtod(std::string(text).c_str(), nullptr);
  if (!std::isfinite(v) || v < 0 || v > 1e15) return std::nullopt;
  return static_cast<std::uint64_t>(std::llround(v * static_cast<double>(unit)));
}

std::vector<SacctRow> parse_sacct(std::string_view text) {
  std::vector<SacctRow> rows;
  for (auto line : split(text, '\n')) {
    line = trim(line);
    if (line.empty()) continue;
    auto f = split(line, '|');
    if (f.size() < 6) continue;
    SacctRow r;
    std::string_view id = f[0];
    if (auto dot = id.find('.'); dot != std::string_view::npos) {
      r.step = std::string(id.substr(dot + 1));
      id = id.substr(0, dot);
    }
    if (auto us = id.find('_'); us != std::string_view::npos) {
      std::string_view t = id.substr(us + 1);
      id = id.substr(0, us);
      if (!t.empty() && t.front() == '[') {
        t.remove_prefix(1);
        if (!t.empty() && t.back() == ']') t.remove_suffix(1);
        r.pending_tasks = expand_ranges(t);
      } else {
        r.task = parse_uint(t);
        if (!r.task) continue;
      }
    }
    if (!parse_uint(id)) continue;
    r.array_job_id = std::string(id);
    std::string_view state = trim(f[1]);
    r.state = std::string(state.substr(0, state.find(' ')));
    auto ec = split(f[2], ':');
    r.exit_code = ec.size() > 0 && parse_uint(ec[0]) ? static_cast<int>(*parse_uint(ec[0])) : 0;
    r.exit_signal = ec.size() > 1 && parse_uint(ec[1]) ? static_cast<int>(*parse_uint(ec[1])) : 0;
    r.req_mem_bytes = parse_slurm_size_bytes(f[3], 1ull << 20);
    r.max_rss_bytes = parse_slurm_size_bytes(f[4], 1ull << 10);
    r.elapsed_s = parse_uint(trim(f[5])).value_or(0);
    rows.push_back(std::move(r));
  }
  return rows;
}

std::vector<SacctRow> parse_squeue(std::string_view text) {
  std::vector<SacctRow> rows;
  for (auto line : split(text, '\n')) {
    auto f = split(trim(line), '|');
    if (f.size() < 3) continue;
    const auto us = f[0].find('_');
    if (us == std::string_view::npos) continue;
    SacctRow r;
    r.task = parse_uint(f[0].substr(us + 1));
    if (!r.task || !parse_uint(f[0].substr(0, us))) continue;
    r.array_job_id = std::string(f[0].substr(0, us));
    r.state = std::string(trim(f[1]));
    const auto raw = parse_uint(trim(f[2])).value_or(0);
    r.exit_code = static_cast<int>((raw >> 8) & 0xff);
    r.exit_signal = static_cast<int>(raw & 0x7f);
    rows.push_back(std::move(r));
  }
  return rows;
}

std::vector<SacctRow> merge_controller_states(std::vector<SacctRow> sacct, const std::vector<SacctRow>& controller) {
  auto ended = [](const SacctRow& r) { return task_fate(r.state) != TaskFate::kRunning; };
  for (const auto& c : controller) {
    auto it = std::find_if(sacct.begin(), sacct.end(), [&](const SacctRow& r) {
      return r.step.empty() && r.task == c.task && r.array_job_id == c.array_job_id;
    });
    if (it == sacct.end()) {
      sacct.push_back(c);
    } else if (ended(c) || !ended(*it)) {
      it->state = c.state;
      it->exit_code = c.exit_code;
      it->exit_signal = c.exit_signal;
    }
  }
  return sacct;
}

TaskFate task_fate(std::string_view state) {
  if (state == "COMPLETED") return TaskFate::kCompleted;
  if (state == "FAILED") return TaskFate::kFailed;
  if (state == "OUT_OF_MEMORY") return TaskFate::kOutOfMemory;
  if (state == "NODE_FAIL" || state == "BOOT_FAIL" || state == "PREEMPTED") return TaskFate::kLost;
  if (state == "CANCELLED") return TaskFate::kCancelled;
  if (state == "TIMEOUT" || state == "DEADLINE") return TaskFate::kTimeout;
  return TaskFate::kRunning;
}

const char* to_string(TaskFate fate) {
  switch (fate) {
    case TaskFate::kRunning: return "running";
    case TaskFate::kCompleted: return "completed";
    case TaskFate::kFailed: return "failed";
    case TaskFate::kOutOfMemory: return "out of memory";
    case TaskFate::kLost: return "lost";
    case TaskFate::kCancelled: return "cancelled";
    case TaskFate::kTimeout: return "timed out";
  }
  return "?";
}

}  // namespace ab
