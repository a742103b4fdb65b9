// `--executor slurm`: turns the main command's options into the tasks' command line and runs
// SlurmExecutor with the real Slurm tools.
#include "orchestrator/batch/exit_code.h"
#include "orchestrator/cli/slurm_command.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <fmt/format.h>

#include "orchestrator/cli/report_command.h"
#include "orchestrator/cli/run_command.h"
#include "orchestrator/platform/signals.h"
#include "orchestrator/batch/slurm_executor.h"
#include "orchestrator/platform/slurm_commands.h"

namespace fs = std::filesystem;

namespace ab {

std::string check_slurm_options(const RunOptions& o) {
  if (o.executor == "local") {
    if (!o.slurm_partition.empty() || o.slurm_max_tasks || !o.slurm_args.empty())
      return "--slurm-partition, --slurm-max-tasks and --slurm-arg need --executor slurm";
    return {};
  }
  if (o.no_history)
    return "--executor slurm needs history (each task's peaks come back through it, and resume reads it); drop --no-history";
  return {};
}

std::string read_slurm_shard(RunOptions& o) {
  if (o.slurm_task.empty()) return {};
  std::ifstream in(o.slurm_task, std::ios::binary);
  const std::string text(std::istreambuf_iterator<char>(in), {});
  auto shard = parse_shard(text);
  if (!shard)
    return "--slurm-task " + o.slurm_task + ": not a shard file its submitter wrote (unreadable or cut short)";
  if (!o.corpus.empty()) return "--slurm-task takes its corpus from its shard file; give no CORPUS";
  o.out = shard->out_dir;
  o.corpus = std::move(shard->files);
  return {};
}

int run_slurm_batch(const RunOptions& o, const RunLoopConfig& config, const Corpus& corpus, HistoryStore* history,
                    Progress& progress, const std::vector<std::string>& command, bool dashdash,
                    const std::string& model_path, bool tty) {
  SlurmConfig sc;
  std::error_code ec;
  sc.align_batch_path = fs::read_symlink("/proc/self/exe", ec).string();
  // Each task runs at --workers N when given (N cores, N jobs at once), else one job at a time.
  const auto workers = parse_workers(o.workers).value_or(0);
  sc.plan.concurrency = workers ? workers : 1;
  // Every job's predicted peak is its worker's whole process tree (history measures it so), so
  // no idle worker is added: a task never holds more workers than it runs jobs at once.
  sc.plan.worker_idle_bytes = 0;
  sc.plan.high_water = o.high_water;
  // --no-report: the submitter's run is the one to report on, and the tasks' run ids (each 1, in
  // its own history) would share one report name. task_script adds --slurm-task SHARD.
  sc.task_options = {"--no-report", "--workers", std::to_string(sc.plan.concurrency), "--reserve",
                     fmt::format("{}M", sc.plan.task_overhead_bytes >> 20), "--progress", "plain",
                     "--retries", std::to_string(o.retries), "--hang-timeout", o.hang_timeout,
                     "--sample-ms", std::to_string(o.sample_ms), "--high-water", fmt::format("{}", o.high_water)};
  if (!o.timeout.empty()) sc.task_options.insert(sc.task_options.end(), {"--timeout", o.timeout});
  if (!o.vram_budget.empty()) sc.task_options.insert(sc.task_options.end(), {"--vram-budget", o.vram_budget});
  if (dashdash) {
    sc.tail = {"--"};
    sc.tail.insert(sc.tail.end(), command.begin(), command.end());
  } else {
    sc.task_options.insert(sc.task_options.end(),
                           {"--model", model_path, "--task", o.task, "--shared-weights", o.shared_weights});
    if (o.max_trellis_mib) sc.task_options.insert(sc.task_options.end(), {"--max-trellis-mib", std::to_string(o.max_trellis_mib)});
  }
  sc.partition = o.slurm_partition;
  sc.max_tasks = o.slurm_max_tasks;
  sc.sbatch_args = o.slurm_args;
  sc.live_line = tty && !o.dry_run;

  SlurmCommands cluster;
  SignalWatcher signals;
  SlurmExecutor executor(config, sc, cluster, history, progress, &SignalWatcher::interrupts);
  if (std::string error = executor.prepare(); !error.empty()) {
    std::fprintf(stderr, "align-batch: --executor slurm: %s\n", error.c_str());
    return kExitCannotRun;
  }
  if (o.dry_run) {
    executor.dry_run(corpus, stdout);
    return kExitOk;
  }
  RunSummary summary = executor.run(corpus);
  // As a local run does: the page of this run (every task's jobs were merged into it), from history.
  if (!o.no_report) write_end_of_run_report(history, executor.run_id(), config.out_dir, summary, progress);
  progress.summary(summary, stdout);
  return summary.exit_code();
}

}  // namespace ab
