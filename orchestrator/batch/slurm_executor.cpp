// SlurmExecutor: plans arrays from history's predictions, submits them, follows sacct, merges each
// ended task's history into the main one, resubmits what ran out of memory, cancels on Ctrl-C.
#include "orchestrator/batch/slurm_executor.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "history/history_store.h"
#include "common/bytes.h"
#include "orchestrator/batch/clock.h"
#include "orchestrator/batch/prediction_policy.h"

namespace fs = std::filesystem;

namespace ab {
namespace {

/// How often a wait between polls looks for tasks' INDEX.ended markers (a stat per running task).
constexpr std::int64_t kMarkerCheckMs = 100;
/// After a marker showed, how soon Slurm is asked again while it has not shown that task ended:
/// the controller marks a task terminal 0.1-0.5 s after its script exits (measured on the test node).
constexpr std::int64_t kLagPollMs = 200;

/// The scheduler's words for a job that cannot fit alone (scheduler.cpp): inside a task, its
/// budget is the task's --mem, so the request was too small, not the file bad.
constexpr const char* kDoesNotFit = "at peak but the budget is";

bool write_text(const fs::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  return static_cast<bool>(f.flush());
}

std::string task_id(const std::string& array_id, std::uint32_t index) { return array_id + "_" + std::to_string(index); }

/// A reason of `kind` about `subject` (a Slurm array or task, or a path) and, where it has one,
/// the memory a request asked for.
Reason slurm_reason(Reason::Kind kind, std::string subject, std::uint64_t mem_bytes = 0) {
  Reason r = Reason::about(kind, std::move(subject));
  r.limit_bytes = mem_bytes;
  return r;
}

}  // namespace

struct SlurmExecutor::File {
  CorpusFile file;
  enum class State { kWaiting, kSubmitted, kDone, kFailed } state = State::kWaiting;
  std::uint64_t need_bytes = 0;  ///< 0: unknown (no history yet)
  std::uint32_t oom_resubmits = 0;
  std::uint32_t lost_resubmits = 0;
  std::uint64_t last_task_mem_bytes = 0;

  /// Failed, for `reason` less a leading "PATH: " (the file's own path: the summary names it).
  void fail(std::string reason, RunSummary& summary) {
    state = State::kFailed;
    const std::string path = file.audio.string();
    const std::string prefix = path + ": ";
    if (reason.compare(0, prefix.size(), prefix) == 0) reason.erase(0, prefix.size());
    summary.failed.push_back({path, reason});
  }
};

struct SlurmExecutor::Task {
  std::size_t array = 0;
  std::uint32_t index = 0;
  std::string job_id;  ///< "123_4"
  fs::path dir;        ///< its array's directory: INDEX.list, .out, .sqlite, .log
  std::uint64_t mem_bytes = 0;
  std::vector<std::size_t> files;
  std::int64_t terminal_seen_ms = -1;
  bool ended = false;           ///< its State was terminal: its files are decided
  bool sacct_recorded = false;  ///< its sacct figures are recorded (record_sacct)
  bool running = false;         ///< the last poll saw it running
  bool marker_seen = false;     ///< its script left INDEX.ended (its align-batch exited)
  SacctRow row;                 ///< sacct's newest rows for it: the task's own and its .batch step
  std::optional<SacctRow> batch;
};

struct SlurmExecutor::Array {
  std::string id;
  std::uint64_t mem_bytes = 0;
  fs::path dir;
  bool cold = false;
  std::vector<std::size_t> tasks;  ///< into the run's task table
};

/// What settles an ended task's files: sacct's word on it, and whether the run is cancelling.
struct SlurmExecutor::TaskEnd {
  std::string state;  ///< sacct's State; "UNKNOWN": sacct had no row for it
  TaskFate fate = TaskFate::kRunning;
  int exit_code = -1;          ///< -1: sacct had no row for it
  std::uint64_t max_rss = 0;   ///< its .batch step's MaxRSS; 0: not shown yet
  bool stopping = false;       ///< Ctrl-C: a cancelled task's files are left for the next run
};

/// A file's attempts in its task's own history (none: not seen).
struct SlurmExecutor::LastAttempt {
  bool ok = false;    ///< one of them was ok
  bool seen = false;  ///< there was one
  JobStatus status = JobStatus::kOk;  ///< the last one's
  std::string error;                  ///< the last one's
  std::uint64_t peak_bytes = 0;       ///< the highest of their peaks (PSS or RSS)
};

SlurmExecutor::SlurmExecutor(RunLoopConfig loop, SlurmConfig config, SlurmCluster& cluster, HistoryStore* history,
                             ProgressSink& progress, std::function<int()> interrupts)
    : loop_(std::move(loop)),
      config_(std::move(config)),
      cluster_(cluster),
      history_(history),
      progress_(progress),
      interrupts_(std::move(interrupts)) {}

std::string SlurmExecutor::prepare() {
  auto nodes = cluster_.nodes(config_.partition);
  if (!nodes) return nodes.error();
  nodes_ = nodes.value();
  for (const auto& n : nodes_) node_mem_bytes_ = std::max(node_mem_bytes_, n.mem_bytes);
  return {};
}

std::vector<SlurmExecutor::File> SlurmExecutor::plan_files(const Corpus& corpus, RunSummary& summary) {
  PlanOnlyRunner runner;
  NoMemoryProbe probe;
  RunLoop loop(loop_, runner, probe, history_, progress_, nullptr);
  std::vector<FailedFile> errors;
  std::vector<File> files;
  for (const auto& p : loop.plan(corpus, errors)) {
    if (p.skip) {
      ++summary.skipped;
      continue;
    }
    File f;
    f.file = corpus.files[p.file];
    f.need_bytes = p.predicted_peak_bytes.value_or(0);
    files.push_back(std::move(f));
  }
  for (auto& e : errors) summary.failed.push_back(e);
  learn_job_seconds();
  return files;
}

void SlurmExecutor::learn_job_seconds() {
  auto rows = history_->jobs_for_key(loop_.job_key);
  if (!rows) return;
  double sum_s = 0;
  std::size_t n = 0;
  for (const auto& r : rows.value())
    if (r.status == JobStatus::kOk && r.wall_s > 0) {
      sum_s += r.wall_s;
      ++n;
    }
  if (n) job_s_ = sum_s / static_cast<double>(n);
}

std::size_t SlurmExecutor::files_per_task(std::vector<ShardFile>& known, const SlurmPlanConfig& plan) const {
  if (config_.files_per_task) return config_.files_per_task;
  // How many rounds of jobs (a task runs `concurrency` at once) each slot of the cluster would run
  // one after another if every task ran one round: each file's share, and their sum.
  const std::uint32_t at_once = std::max(1u, plan.concurrency);
  double waves = 0;
  for (auto& f : known) {
    const auto mem = std::min(task_mem_bytes(f.need_bytes, at_once, plan), node_mem_bytes_);
    if (const auto slots = task_slots(nodes_, mem, at_once)) f.waves = 1.0 / static_cast<double>(slots * at_once);
    waves += f.waves;
  }
  const std::size_t rounds = files_per_task_for_overhead(waves, config_.task_overhead_s, job_s_);
  return std::max(files_per_task_for(known.size()), rounds == 1 ? 1 : rounds * at_once);
}

std::vector<PlannedArray> SlurmExecutor::plan_waiting(std::vector<File>& files, bool cold,
                                                      std::vector<std::size_t>& unplanned) {
  SlurmPlanConfig plan = config_.plan;
  std::vector<ShardFile> known;
  std::vector<std::size_t> unknown;
  std::map<fs::path, std::size_t> groups;
  for (std::size_t i = 0; i < files.size(); ++i) {
    if (files[i].state != File::State::kWaiting) continue;
    if (files[i].need_bytes == 0) {
      unknown.push_back(i);
      continue;
    }
    const auto g = groups.emplace(files[i].file.out_base.parent_path(), groups.size()).first->second;
    known.push_back({i, files[i].need_bytes, g});
  }
  plan.files_per_task = files_per_task(known, plan);
  // The largest request a node can grant: needs above it are capped there (and fail if they
  // still do not fit: finish_task says so).
  std::vector<PlannedArray> arrays = plan_arrays(known, plan);
  for (auto& a : arrays) a.mem_bytes = std::min(a.mem_bytes, node_mem_bytes_);
  unplanned.clear();
  if (unknown.empty()) return arrays;
  if (!cold) {
    unplanned = unknown;
    return arrays;
  }
  // No history: a small first wave of generous requests; the rest waits for its peaks.
  std::vector<std::uint64_t> sizes;
  for (auto i : unknown) sizes.push_back(files[i].file.size_bytes);
  std::vector<bool> picked(unknown.size(), false);
  PlannedArray wave;
  wave.mem_bytes = std::max<std::uint64_t>(node_mem_bytes_ / 2, std::min<std::uint64_t>(node_mem_bytes_, 256ull << 20));
  for (auto at : pick_cold_wave(sizes, config_.cold_wave_files)) {
    picked[at] = true;
    PlannedTask t;
    t.files = {unknown[at]};
    wave.tasks.push_back(t);
  }
  for (std::size_t k = 0; k < unknown.size(); ++k)
    if (!picked[k]) unplanned.push_back(unknown[k]);
  arrays.push_back(std::move(wave));
  return arrays;
}

SbatchArray SlurmExecutor::sbatch_array(const PlannedArray& planned, const fs::path& dir) const {
  SbatchArray sb;
  sb.mem_bytes = planned.mem_bytes;
  sb.task_count = planned.tasks.size();
  sb.max_running = config_.max_tasks;
  sb.cpus_per_task = config_.plan.concurrency;
  sb.partition = config_.partition;
  sb.extra_args = config_.sbatch_args;
  sb.log_pattern = (dir / "%a.log").string();
  sb.script_path = (dir / "task.sh").string();
  return sb;
}

Result<Done> SlurmExecutor::submit(const PlannedArray& planned, std::vector<File>& files, std::vector<Array>& arrays,
                                   std::vector<Task>& tasks) {
  Array a;
  a.mem_bytes = planned.mem_bytes;
  a.dir = run_dir_ / fmt::format("array-{}", arrays.size());
  std::error_code ec;
  fs::create_directories(a.dir, ec);
  if (ec) {
    Reason r = slurm_reason(Reason::Kind::kSlurmCannotCreateDir, a.dir.string());
    r.last_error = ec.message();
    return Result<Done>::failure(progress_.describe(r));
  }
  for (std::size_t t = 0; t < planned.tasks.size(); ++t) {
    Shard shard;
    for (auto i : planned.tasks[t].files) {
      shard.files.push_back(files[i].file.audio.string());
      shard.out_dir = files[i].file.out_base.parent_path().string();  // one for the task (plan_arrays' groups)
    }
    if (!write_text(a.dir / fmt::format("{}.shard", t), shard_text(shard)))
      return Result<Done>::failure(
          progress_.describe(slurm_reason(Reason::Kind::kSlurmCannotWriteShards, a.dir.string())));
  }
  const fs::path script = a.dir / "task.sh";  // as sbatch_array() names it
  std::vector<std::string> argv = {config_.align_batch_path};
  argv.insert(argv.end(), config_.task_options.begin(), config_.task_options.end());
  if (!write_text(script, task_script(argv, a.dir.string(), config_.tail)))
    return Result<Done>::failure(progress_.describe(slurm_reason(Reason::Kind::kSlurmCannotWriteScript, script.string())));
  ::chmod(script.c_str(), 0755);
  auto id = cluster_.submit(sbatch_array(planned, a.dir));
  if (!id) return Result<Done>::failure(id.error());
  a.id = id.value();
  ++stats_.arrays;
  Reason submitted = slurm_reason(Reason::Kind::kSlurmSubmitted, a.id, planned.mem_bytes);
  submitted.count = static_cast<std::uint32_t>(planned.tasks.size());
  progress_.message(progress_.describe(submitted));
  for (std::uint32_t t = 0; t < planned.tasks.size(); ++t) {
    Task task;
    task.array = arrays.size();
    task.index = t;
    task.job_id = task_id(a.id, t);
    task.dir = a.dir;
    task.mem_bytes = planned.mem_bytes;
    task.files = planned.tasks[t].files;
    for (auto i : task.files) {
      files[i].state = File::State::kSubmitted;
      files[i].last_task_mem_bytes = planned.mem_bytes;
    }
    a.tasks.push_back(tasks.size());
    tasks.push_back(std::move(task));
  }
  stats_.tasks += static_cast<std::uint32_t>(planned.tasks.size());
  arrays.push_back(std::move(a));
  return Done{};
}

void SlurmExecutor::finish_task(Task& task, const SacctRow* row, const SacctRow* batch, std::vector<File>& files,
                                RunSummary& summary, bool stopping) {
  task.ended = true;
  if (row) task.row = *row;
  else task.row.state = "UNKNOWN";
  if (batch) task.batch = *batch;
  TaskEnd end;
  end.state = task.row.state;
  end.fate = task_fate(end.state);
  end.exit_code = row ? row->exit_code : -1;
  end.max_rss = batch && batch->max_rss_bytes ? *batch->max_rss_bytes : 0;
  end.stopping = stopping;
  if (end.fate == TaskFate::kOutOfMemory) ++stats_.out_of_memory_tasks;
  const auto last = merge_task_history(task, files, summary);
  for (auto f : task.files) {
    const auto it = last.find(f);
    settle_file(task, end, it == last.end() ? LastAttempt{} : it->second, files[f], summary);
  }
}

std::map<std::size_t, SlurmExecutor::LastAttempt> SlurmExecutor::merge_task_history(const Task& task,
                                                                                     const std::vector<File>& files,
                                                                                     RunSummary& summary) {
  // The task's own history: every attempt it recorded goes into the main history, under this run.
  std::map<std::size_t, LastAttempt> last;
  const fs::path db = task.dir / fmt::format("{}.sqlite", task.index);
  std::error_code ec;
  if (!fs::exists(db, ec)) return last;
  std::map<std::string, std::size_t> by_path;
  for (auto f : task.files) by_path[files[f].file.audio.string()] = f;
  auto opened = HistoryStore::open(db, HistoryStore::Create::kNever);
  auto rows = opened ? opened.value()->jobs_for_key(loop_.job_key, 1u << 30)
                     : StoreResult<std::vector<JobRow>>::failure(opened.error());
  if (!rows) {
    progress_.message(fmt::format("task {}: its history cannot be read: {}", task.job_id, rows.error()));
    return last;
  }
  for (auto it = rows.value().rbegin(); it != rows.value().rend(); ++it) {  // oldest first
    auto f = by_path.find(it->input_path);
    if (f == by_path.end()) continue;
    merge_job_row(*opened.value(), *it);
    LastAttempt& l = last[f->second];
    l.seen = true;
    l.status = it->status;
    l.error = it->error;
    l.peak_bytes = std::max(l.peak_bytes, std::max(it->peak_pss_bytes, it->peak_rss_bytes));
    if (it->status == JobStatus::kOk) l.ok = true;
    summary.peak_pss_bytes = std::max(summary.peak_pss_bytes, it->peak_pss_bytes);
  }
  return last;
}

void SlurmExecutor::merge_job_row(HistoryStore& task_history, const JobRow& row) {
  JobRecord rec = row;
  rec.run_id = run_id_;
  // The outputs an ok job wrote (resume checks them) come back with the newest ok row only.
  if (row.status == JobStatus::kOk)
    if (auto newest = task_history.last_ok_job(row.input_path, loop_.job_key); newest && newest.value() &&
                                                                                newest.value()->id == row.id)
      rec.outputs = newest.value()->outputs;
  auto timeline = task_history.timeline(row.id);
  if (auto r = history_->record_job(rec, timeline ? timeline.value() : std::vector<TimelinePoint>{}); !r)
    progress_.message("history: " + r.error());
}

void SlurmExecutor::settle_file(const Task& task, const TaskEnd& end, const LastAttempt& l, File& file,
                                RunSummary& summary) {
  if (l.ok) {
    file.state = File::State::kDone;
    ++summary.done;
    return;
  }
  // Inside a task the budget is its --mem: a job the task's guard stopped (kKilled), the kernel
  // killed (kDied), or its scheduler found too big means the request was too small.
  const bool bad_file = l.seen && l.status == JobStatus::kFailed && l.error.find(kDoesNotFit) == std::string::npos;
  const bool memory = end.fate == TaskFate::kOutOfMemory || (end.fate == TaskFate::kFailed && l.seen && !bad_file);
  const std::string& id = task.job_id;
  if (bad_file && end.fate != TaskFate::kCancelled) {
    file.fail(l.error, summary);
  } else if (memory && end.fate != TaskFate::kCancelled) {
    resubmit_for_memory(task, end, l, file, summary);
  } else if (end.fate == TaskFate::kLost && file.lost_resubmits < config_.max_oom_resubmits) {
    ++file.lost_resubmits;
    ++summary.retried;
    file.state = File::State::kWaiting;
  } else if (end.fate == TaskFate::kCancelled) {
    if (end.stopping) file.state = File::State::kWaiting;  // interrupted: the next run does it
    else
      file.fail(fmt::format("its Slurm task {} was cancelled, not by align-batch (scancel?); run again to redo it", id),
                summary);
  } else if (end.fate == TaskFate::kTimeout) {
    file.fail(progress_.describe(slurm_reason(Reason::Kind::kSlurmTimeLimit, id)), summary);
  } else {
    const fs::path log = task.dir / fmt::format("{}.log", task.index);
    file.fail(fmt::format("its Slurm task {} ended {} (exit {}) without finishing it{}{}; see {}", id, end.state,
                          end.exit_code, l.seen ? ": " : "", l.error, log.string()),
              summary);
  }
}

void SlurmExecutor::resubmit_for_memory(const Task& task, const TaskEnd& end, const LastAttempt& l, File& file,
                                        RunSummary& summary) {
  if (file.oom_resubmits >= config_.max_oom_resubmits) {
    Reason r = slurm_reason(Reason::Kind::kSlurmOutOfMemoryTooOften, task.job_id, task.mem_bytes);
    r.count = file.oom_resubmits + 1;
    file.fail(progress_.describe(r), summary);
    return;
  }
  if (task.mem_bytes >= node_mem_bytes_) {
    file.fail(progress_.describe(slurm_reason(Reason::Kind::kSlurmOverLargestNode, task.job_id, node_mem_bytes_)),
              summary);
    return;
  }
  const std::uint64_t was = file.need_bytes ? file.need_bytes : task.mem_bytes;
  file.need_bytes = std::max<std::uint64_t>(static_cast<std::uint64_t>(static_cast<double>(was) * config_.oom_raise),
                                            task.files.size() == 1 ? std::max(l.peak_bytes, end.max_rss) : l.peak_bytes);
  ++file.oom_resubmits;
  ++stats_.resubmitted_files;
  ++summary.retried;
  file.state = File::State::kWaiting;
}

void SlurmExecutor::record_sacct(Task& task) {
  task.sacct_recorded = true;
  const SacctRow& row = task.row;
  const std::string& state = row.state;
  const std::uint64_t max_rss = task.batch && task.batch->max_rss_bytes ? *task.batch->max_rss_bytes : 0;
  if (!max_rss) ++stats_.tasks_without_max_rss;
  stats_.requested_mib_s += static_cast<double>(task.mem_bytes >> 20) * row.elapsed_s;
  stats_.used_mib_s += static_cast<double>(max_rss >> 20) * row.elapsed_s;
  // sacct's view of the task, recorded beside the task's own readings (docs/slurm.md: which to trust).
  SlurmTaskRecord rec;
  rec.run_id = run_id_;
  rec.task_id = task.job_id;
  rec.job_key = loop_.job_key;
  rec.state = state;
  rec.exit_code = row.exit_code;
  rec.exit_signal = row.exit_signal;
  rec.req_mem_bytes = task.mem_bytes;
  if (max_rss) rec.max_rss_bytes = max_rss;
  rec.elapsed_s = row.elapsed_s;
  rec.files = static_cast<std::uint32_t>(task.files.size());
  if (auto r = history_->record_slurm_task(rec); !r) progress_.message("history: " + r.error());
  nlohmann::json line = {{"job_id", task.job_id}, {"state", state}, {"exit_code", row.exit_code},
                         {"req_mem_bytes", task.mem_bytes},
                         {"max_rss_bytes", max_rss ? nlohmann::json(max_rss) : nlohmann::json(nullptr)},
                         {"elapsed_s", row.elapsed_s}, {"files", task.files.size()}};
  std::ofstream(run_dir_ / "tasks.jsonl", std::ios::app) << line.dump() << "\n";
}

void SlurmExecutor::dry_run(const Corpus& corpus, std::FILE* out) {
  RunSummary summary;
  auto files = plan_files(corpus, summary);
  std::vector<std::size_t> later;
  const bool cold = std::none_of(files.begin(), files.end(), [](const File& f) { return f.need_bytes; });
  auto arrays = plan_waiting(files, cold, later);
  std::size_t n = 0;
  for (const auto& a : arrays) {
    std::string cmd;
    for (const auto& w : sbatch_argv(sbatch_array(a, loop_.out_dir / ".align-batch" / "slurm" / "run-N" / fmt::format("array-{}", n)))) cmd += (cmd.empty() ? "" : " ") + shell_quote(w);
    std::fprintf(out, "%s\n", cmd.c_str());
    for (std::size_t t = 0; t < a.tasks.size(); ++t) {
      std::fprintf(out, "  task %zu: --mem=%s", t, format_bytes(a.mem_bytes).c_str());
      for (auto i : a.tasks[t].files) std::fprintf(out, " %s", files[i].file.audio.c_str());
      std::fprintf(out, "\n");
    }
    ++n;
  }
  for (auto i : later) std::fprintf(out, "later\t%s\t(submitted once the first wave's peaks are known)\n", files[i].file.audio.c_str());
  for (const auto& e : summary.failed) std::fprintf(out, "error\t%s\t%s\n", e.path.c_str(), e.reason.c_str());
  for (const auto& e : corpus.problems) std::fprintf(out, "error\t%s\t%s\n", e.path.c_str(), e.message.c_str());
  std::fprintf(out, "slurm plan: %zu arrays, %zu files to run, %zu later, %zu skipped (done); largest node %s\n", arrays.size(),
               files.size() - later.size(), later.size(), summary.skipped, format_bytes(node_mem_bytes_).c_str());
}

/// One run's state, shared by its steps.
struct SlurmExecutor::Run {
  std::int64_t t0_ms = 0;
  RunSummary summary;
  std::vector<File> files;
  std::vector<Array> arrays;
  std::vector<Task> tasks;
  bool stopping = false;  ///< Ctrl-C: cancelled; waiting for the tasks to end
  bool fatal = false;     ///< sbatch refused: nothing more is submitted
  std::int64_t stop_ms = 0;
  std::string last_line, query_error;
  std::size_t pending = 0, running = 0;  ///< tasks, as the last poll saw them

  std::int64_t now_ms() const { return monotonic_ms() - t0_ms; }
  bool any_waiting() const {
    return std::any_of(files.begin(), files.end(), [](const File& f) { return f.state == File::State::kWaiting; });
  }
  bool any_unknown_waiting() const {
    return std::any_of(files.begin(), files.end(), [](const File& f) { return f.state == File::State::kWaiting && !f.need_bytes; });
  }
  std::size_t count_files(File::State s) const {
    return static_cast<std::size_t>(std::count_if(files.begin(), files.end(), [&](const File& f) { return f.state == s; }));
  }
  std::size_t ended_tasks() const {
    return static_cast<std::size_t>(std::count_if(tasks.begin(), tasks.end(), [](const Task& t) { return t.ended; }));
  }
};

RunSummary SlurmExecutor::run(const Corpus& corpus) {
  Run run;
  if (!begin(corpus, run)) return run.summary;
  for (;;) {
    const int interrupts = interrupts_ ? interrupts_() : 0;
    if (interrupts >= 1 && !run.stopping) cancel_all(run);
    if (!run.stopping && !run.fatal) submit_waiting(run);
    const bool ended_now = poll(run);
    show_status(run);
    const bool waiting = run.any_waiting();
    if (run.ended_tasks() == run.tasks.size() && (run.stopping || run.fatal || !waiting)) break;
    // A task ended on this pass and files wait (resubmissions, or the rest after a first wave):
    // submit them at once, not a poll interval later.
    if (ended_now && waiting && !run.stopping && !run.fatal) continue;
    if (run.stopping && run.now_ms() - run.stop_ms > config_.cancel_wait_ms) {
      progress_.message("cancelled tasks have not ended after the wait; their files are done next run if they finished");
      break;
    }
    wait_for_next_poll(run, interrupts);
  }
  finish(run);
  return run.summary;
}

bool SlurmExecutor::begin(const Corpus& corpus, Run& run) {
  run.t0_ms = monotonic_ms();
  run.summary.total = corpus.files.size() + corpus.problems.size();
  run.summary.budget_bytes = node_mem_bytes_;
  for (const auto& p : corpus.problems) run.summary.failed.push_back({p.path.string(), p.message});
  RunInfo info;
  char host[256] = {0};
  ::gethostname(host, sizeof host - 1);
  info.host = host;
  info.budget_bytes = node_mem_bytes_;
  info.settings = loop_.settings;
  info.settings.executor = "slurm";
  auto r = history_->begin_run(info);
  if (!r) {
    run.summary.failed.push_back({history_->path().string(), r.error()});
    return false;
  }
  run_id_ = r.value();
  run_dir_ = loop_.out_dir / ".align-batch" / "slurm" / fmt::format("run-{}", run_id_);
  run.files = plan_files(corpus, run.summary);
  return true;
}

void SlurmExecutor::refresh_predictions(Run& run) {
  auto rows = history_->jobs_for_key(loop_.job_key);
  if (!rows) return;
  const PredictionPolicy policy(std::move(rows.value()), loop_.prediction_scale);
  for (auto& f : run.files)
    if (f.state == File::State::kWaiting && f.need_bytes == 0)
      if (auto predicted = policy.predict(f.file.size_bytes, f.file.audio_duration_s)) f.need_bytes = *predicted;
  learn_job_seconds();
}

void SlurmExecutor::submit_waiting(Run& run) {
  const bool cold_running =
      std::any_of(run.tasks.begin(), run.tasks.end(), [&](const Task& t) { return !t.ended && run.arrays[t.array].cold; });
  bool cold = false;
  if (!cold_running && run.any_unknown_waiting()) {
    refresh_predictions(run);
    cold = run.any_unknown_waiting();
  }
  std::vector<std::size_t> later;
  auto planned = plan_waiting(run.files, cold, later);
  for (std::size_t k = 0; k < planned.size(); ++k) {
    if (auto submitted = submit(planned[k], run.files, run.arrays, run.tasks); !submitted) {
      const std::string& error = submitted.error();
      progress_.message("cannot submit to Slurm: " + error);
      for (auto& f : run.files)
        if (f.state == File::State::kWaiting) {
          f.state = File::State::kFailed;
          run.summary.failed.push_back({f.file.audio.string(), "not submitted: " + error});
        }
      run.fatal = true;
      return;
    }
    run.arrays.back().cold = cold && k + 1 == planned.size();
  }
}

void SlurmExecutor::cancel_all(Run& run) {
  run.stopping = true;
  run.stop_ms = run.now_ms();
  run.summary.interrupted = true;
  std::vector<std::string> ids;
  for (const auto& a : run.arrays)
    if (std::any_of(a.tasks.begin(), a.tasks.end(), [&](std::size_t t) { return !run.tasks[t].ended; })) ids.push_back(a.id);
  progress_.message(fmt::format("interrupted: cancelling {} array{} (scancel {})", ids.size(), ids.size() == 1 ? "" : "s",
                                fmt::join(ids, " ")));
  if (auto r = cluster_.cancel(ids); !r) progress_.message("scancel: " + r.error());
}

bool SlurmExecutor::poll(Run& run) {
  // Where every unfinished task stands, and the sacct figures of ended ones not yet recorded.
  std::vector<std::string> ids;
  for (const auto& a : run.arrays)
    if (std::any_of(a.tasks.begin(), a.tasks.end(), [&](std::size_t t) { return !run.tasks[t].sacct_recorded; }))
      ids.push_back(a.id);
  run.pending = run.running = 0;
  if (ids.empty()) return false;
  auto rows = cluster_.query(ids);
  if (!rows) {
    if (run.query_error != rows.error()) progress_.message("sacct: " + rows.error() + " (asking again)");
    run.query_error = rows.error();
    return false;
  }
  run.query_error.clear();
  std::map<std::string, const SacctRow*> own, steps;
  for (const auto& r : rows.value()) {
    if (r.task && r.step.empty()) own[task_id(r.array_job_id, *r.task)] = &r;
    if (r.task && r.step == "batch") steps[task_id(r.array_job_id, *r.task)] = &r;
  }
  bool ended_now = false;
  const std::int64_t now_ms = run.now_ms();
  for (auto& t : run.tasks) {
    if (t.sacct_recorded) continue;
    auto it = own.find(t.job_id);
    auto step = steps.find(t.job_id);
    const SacctRow* batch = step == steps.end() ? nullptr : step->second;
    t.running = false;
    if (!t.ended) {
      if (it == own.end() || task_fate(it->second->state) == TaskFate::kRunning) {
        // Still inside a pending range (or not yet known), or not ended.
        const bool is_running = it != own.end() && it->second->state != "PENDING";
        (is_running ? run.running : run.pending)++;
        t.running = is_running;
        continue;
      }
      // Terminal: the task's align-batch has exited, so its history is complete. Its files are
      // decided now (and resubmitted, if need be, on this same pass); sacct's MaxRSS, ~3 s
      // behind, is collected below when it shows and holds nothing up.
      t.terminal_seen_ms = now_ms;
      finish_task(t, it->second, batch, run.files, run.summary, run.stopping);
      ended_now = true;
    } else {
      if (it != own.end()) t.row = *it->second;
      if (batch) t.batch = *batch;
    }
    const bool max_rss_final = t.batch && t.batch->max_rss_bytes && task_fate(t.batch->state) != TaskFate::kRunning;
    if (max_rss_final || now_ms - t.terminal_seen_ms >= config_.settle_ms) record_sacct(t);
  }
  return ended_now;
}

void SlurmExecutor::show_status(Run& run) {
  std::uint64_t requested = 0;
  for (const auto& t : run.tasks)
    if (!t.ended) requested += t.mem_bytes;
  const std::string line = fmt::format(
      "slurm: tasks {} pending, {} running, {} ended; files {}/{} done, {} failed; memory requested now {}; "
      "ended tasks used {:.0f}% of what they requested",
      run.pending, run.running, run.ended_tasks(), run.count_files(File::State::kDone), run.files.size(),
      run.count_files(File::State::kFailed), format_bytes(requested),
      stats_.requested_mib_s > 0 ? 100.0 * stats_.used_mib_s / stats_.requested_mib_s : 0.0);
  if (config_.live_line) {
    std::fprintf(stderr, "\r\033[K%s", line.c_str());
    std::fflush(stderr);
  } else if (line != run.last_line) {
    progress_.message(line);
  }
  run.last_line = line;
}

void SlurmExecutor::wait_for_next_poll(Run& run, int interrupts) {
  // A running task's script leaves I.ended when its align-batch exits: poll Slurm then, not up to
  // poll_ms later; while Slurm has not yet shown an ended task terminal, ask again soon.
  auto lagging = [&] {
    return std::any_of(run.tasks.begin(), run.tasks.end(), [](const Task& t) { return t.marker_seen && !t.ended; });
  };
  const std::int64_t until = monotonic_ms() + (lagging() ? kLagPollMs : config_.poll_ms);
  std::int64_t next_check_ms = 0;
  while (monotonic_ms() < until && (interrupts_ ? interrupts_() : 0) == interrupts) {
    if (monotonic_ms() >= next_check_ms) {
      next_check_ms = monotonic_ms() + kMarkerCheckMs;
      bool appeared = false;
      std::error_code ec;
      for (auto& t : run.tasks)
        if (t.running && !t.marker_seen && fs::exists(t.dir / fmt::format("{}.ended", t.index), ec))
          appeared = t.marker_seen = true;
      if (appeared) return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void SlurmExecutor::finish(Run& run) {
  if (config_.live_line) std::fprintf(stderr, "\r\033[K");
  // Every file is decided: tasks whose MaxRSS sacct has not shown yet are recorded without it
  // rather than holding the run ~3 s past its last task (MaxRSS is not what predictions use).
  for (auto& t : run.tasks)
    if (t.ended && !t.sacct_recorded) record_sacct(t);
  progress_.message(fmt::format("slurm: {} arrays, {} tasks, {} out of memory ({} files resubmitted); requested {:.0f} MiB x s, "
                                "sacct MaxRSS {:.0f} MiB x s{}",
                                stats_.arrays, stats_.tasks, stats_.out_of_memory_tasks, stats_.resubmitted_files,
                                stats_.requested_mib_s, stats_.used_mib_s,
                                stats_.tasks_without_max_rss
                                    ? fmt::format(" ({} tasks' MaxRSS not yet in sacct, counted as 0)", stats_.tasks_without_max_rss)
                                    : std::string()));
  run.summary.oom_deaths = stats_.out_of_memory_tasks;
  run.summary.wall_s = static_cast<double>(monotonic_ms() - run.t0_ms) / 1000.0;
  if (auto r = history_->end_run(run_id_, run.summary.exit_code()); !r) progress_.message("history: " + r.error());
}

}  // namespace ab
