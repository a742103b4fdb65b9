// The main command: validates options, computes the budget, opens history, runs the loop.
#include "orchestrator/batch/exit_code.h"
#include "orchestrator/cli/run_command.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "protocol/model_info.h"
#include "protocol/wire_path.h"
#include "history/history_store.h"
#include "history/job_key.h"
#include "memguard/budget.h"
#include "memguard/machine_memory.h"
#include "memguard/size.h"
#include "orchestrator/batch/command_template.h"
#include "orchestrator/batch/corpus.h"
#include "orchestrator/platform/proc_memory_probe.h"
#include "orchestrator/platform/process_runner.h"
#include "orchestrator/cli/progress.h"
#include "orchestrator/cli/report_command.h"
#include "orchestrator/cli/run_report.h"
#include "orchestrator/platform/run_lock.h"
#include "orchestrator/batch/run_loop.h"
#include "orchestrator/platform/signals.h"
#include "orchestrator/cli/slurm_command.h"

namespace fs = std::filesystem;

namespace ab {
namespace {


std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : sep) + p;
  return out;
}

/// An argv as a user could paste it into a shell: words with anything but [A-Za-z0-9_./=:,+@%-]
/// in single quotes (a quote inside as '\''), non-UTF-8 bytes shown as \xHH.
std::string shell_words(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    const std::string shown = display_path(a);
    const bool plain = !shown.empty() && shown.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                                                 "0123456789_./=:,+@%-") == std::string::npos;
    std::string word = plain ? shown : "'";
    if (!plain) {
      for (char c : shown) word += c == '\'' ? std::string("'\\''") : std::string(1, c);
      word += "'";
    }
    out += (out.empty() ? "" : " ") + word;
  }
  return out;
}

int usage_error(const std::string& message) {
  std::fprintf(stderr, "align-batch: %s\n", message.c_str());
  return kExitCannotRun;
}

fs::path self_dir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path() : exe.parent_path();
}

/// The worker binary: $AB_WORKER, beside align-batch, the build tree's worker/, or $PATH.
std::string find_worker() {
  if (const char* env = std::getenv("AB_WORKER"); env && *env) return env;
  const fs::path dir = self_dir();
  for (const fs::path& candidate : {dir / "align-batch-worker", dir.parent_path() / "worker" / "align-batch-worker"}) {
    std::error_code ec;
    if (fs::is_regular_file(candidate, ec)) return candidate.string();
  }
  return resolve_program("align-batch-worker");
}

/// The default model: $AB_MODEL, else the installed example model (`cmake --install`:
/// PREFIX/share/align-batch/en_char_ctc.pt beside PREFIX/bin/align-batch), else the example model
/// of the source tree this was built from.
std::string default_model() {
  if (const char* env = std::getenv("AB_MODEL"); env && *env) return env;
  const fs::path installed = self_dir().parent_path() / "share" / "align-batch" / "en_char_ctc.pt";
  std::error_code ec;
  if (fs::is_regular_file(installed, ec)) return installed.string();
#ifdef AB_DEFAULT_MODEL
  return AB_DEFAULT_MODEL;
#else
  return {};
#endif
}

}  // namespace

std::optional<std::int64_t> parse_duration_ms(const std::string& text) {
  if (text.empty()) return std::nullopt;
  std::size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (...) {
    return std::nullopt;
  }
  const std::string unit = text.substr(used);
  double ms_per_unit = 0;
  if (unit.empty() || unit == "s") ms_per_unit = 1000;
  else if (unit == "ms") ms_per_unit = 1;
  else if (unit == "m" || unit == "min") ms_per_unit = 60000;
  else if (unit == "h") ms_per_unit = 3600000;
  else return std::nullopt;
  if (!std::isfinite(value) || value <= 0 || text.find_first_of("eExX") < used) return std::nullopt;
  const double ms = value * ms_per_unit;
  if (ms < 1 || ms > 1e15) return std::nullopt;
  return static_cast<std::int64_t>(ms);
}

std::optional<std::uint32_t> parse_workers(const std::string& text) {
  if (text == "auto") return 0u;
  if (text.empty() || text.size() > 6 || text.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  const long n = std::strtol(text.c_str(), nullptr, 10);
  if (n < 1) return std::nullopt;
  return static_cast<std::uint32_t>(n);
}

VramDefault default_vram_budget(const NvmlProbe& probe) {
  VramDefault d;
  if (!probe.available) {
    d.why = "no GPU budget: " + (probe.reason.empty() ? std::string("NVML unavailable") : probe.reason);
    return d;
  }
  if (probe.devices.empty()) {
    d.why = "no GPU budget: NVML reports no device";
    return d;
  }
  std::string parts;
  for (const auto& g : probe.devices) {
    const std::uint64_t reserve = std::max<std::uint64_t>(256ull << 20, g.total_bytes / 20);
    const std::uint64_t in_use = std::min(g.used_bytes, g.total_bytes);
    const std::uint64_t usable = g.total_bytes - in_use > reserve ? g.total_bytes - in_use - reserve : 0;
    d.budget_bytes += usable;
    parts += fmt::format("{}GPU {} {}: {} of {} free, {} usable", parts.empty() ? "" : "; ", g.index, g.name,
                         format_bytes(g.total_bytes - in_use), format_bytes(g.total_bytes), format_bytes(usable));
  }
  d.why = fmt::format("GPU budget {} from NVML (free memory less max(256 MiB, 5%) per device: {})",
                      format_bytes(d.budget_bytes), parts);
  return d;
}

std::string model_job_key(const std::string& model_key, std::uint32_t max_trellis_mib, bool shared_weights) {
  std::string key = model_key;
  if (max_trellis_mib != 0 && max_trellis_mib != kDefaultMaxTrellisMib) key += ":trellis=" + std::to_string(max_trellis_mib);
  if (!shared_weights) key += ":weights=private";
  return key;
}

SplitArgs split_at_dashdash(int argc, const char* const* argv) {
  SplitArgs s;
  for (int i = 0; i < argc; ++i) {
    if (i > 0 && !s.dashdash && std::string(argv[i]) == "--") {
      s.dashdash = true;
      continue;
    }
    (s.dashdash ? s.command : s.cli).push_back(argv[i]);
  }
  return s;
}

std::string closest_name(const std::string& given, const std::vector<std::string>& names) {
  auto distance = [](const std::string& a, const std::string& b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
      std::size_t diagonal = row[0];
      row[0] = i;
      for (std::size_t j = 1; j <= b.size(); ++j) {
        const std::size_t up = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
        diagonal = up;
      }
    }
    return row[b.size()];
  };
  std::string best;
  std::size_t best_distance = 0;
  for (const auto& n : names) {
    const std::size_t d = distance(given, n);
    if (best.empty() || d < best_distance) best = n, best_distance = d;
  }
  if (best.empty() || best_distance > std::max<std::size_t>(2, given.size() / 3)) return {};
  return best;
}

std::string explain_parse_error(const CLI::App& app, const std::exception& error) {
  std::vector<std::string> long_names;
  for (const CLI::Option* opt : app.get_options())
    for (const auto& n : opt->get_lnames()) long_names.push_back(n);
  if (dynamic_cast<const CLI::ConfigError*>(&error)) {
    // CLI11: "INI was not able to parse KEY" (KEY is "section.key" inside a section).
    const std::string text = error.what();
    const std::string marker = "not able to parse ";
    const auto at = text.find(marker);
    if (at == std::string::npos) return {};
    const std::string key = text.substr(at + marker.size());
    // A section opens as "NAME.++": a section that is no subcommand.
    if (key.size() > 3 && key.compare(key.size() - 3, 3, ".++") == 0)
      return "--config: unknown section [" + key.substr(0, key.size() - 3) +
             "] (sections are subcommands: doctor, history, replay; the main command's keys go before any section)";
    const std::string near = closest_name(key, long_names);
    return "--config: unknown key '" + key + "'" + (near.empty() ? std::string() : "; did you mean '" + near + "'?") +
           " (keys are the long options without '--', sections are subcommands; see --help)";
  }
  if (dynamic_cast<const CLI::ExtrasError*>(&error)) {
    for (const auto& arg : app.remaining()) {
      if (arg.size() < 2 || arg[0] != '-') continue;
      const std::string name = arg.substr(arg.find_first_not_of('-'));
      const std::string bare = name.substr(0, name.find('='));
      const std::string near = closest_name(bare, long_names);
      return arg + ": unknown option" + (near.empty() ? std::string() : "; did you mean --" + near + "?") +
             " (see --help)";
    }
  }
  return {};
}

void add_run_options(CLI::App& app, RunOptions& o) {
  app.set_config("--config", "", "read options from a TOML/INI file (CLI11 format: `mem-budget = \"8G\"`)");
  // An unknown key is a usage error naming it, never silently ignored (`workerz = 3`).
  app.allow_config_extras(CLI::config_extras_mode::error);
  app.add_option("corpus", o.corpus,
                 "audio files, directories (searched recursively) or @LIST files (one path per line)");
  // -j as GNU parallel, make and MFA (-j/--num_jobs) users type it.
  app.add_option("-j,--workers", o.workers, "auto (memory decides; the built-in engine runs at most one worker per core) or N: an upper bound, still subject to the budget")
      ->capture_default_str();
  app.add_option("--mem-budget", o.mem_budget,
                 "memory for all workers together: 12G, 800M, 1.5T or 75% (of the cgroup limit or MemTotal)");
  app.add_option("--reserve", o.reserve, "memory kept free below the hard limit (default: 5%, 256M..2G)");
  app.add_option("--vram-budget", o.vram_budget,
                 "GPU memory for all workers together (12G, 800M, or off); default: the free memory NVML reports, less a reserve; none without a GPU");
  app.add_option("--out", o.out, "output directory; outputs mirror the corpus tree")->capture_default_str();
  app.add_option("--history", o.history, "history database (default OUT/.align-batch/history.sqlite)");
  app.add_flag("--no-history", o.no_history, "neither read nor write history (no resume, no predictions)");
  app.add_option("--model", o.model,
                 "TorchScript model for the built-in engine (default: $AB_MODEL, else examples/models/en_char_ctc.pt)");
  app.add_option("--task", o.task, "built-in engine: align, transcribe, or auto (align where a transcript exists)")
      ->check(CLI::IsMember({"align", "transcribe", "auto"}))
      ->capture_default_str();
  app.add_option("--max-trellis-mib", o.max_trellis_mib,
                 "built-in engine: cap on each worker's alignment search memory, MiB (default " +
                     std::to_string(kDefaultMaxTrellisMib) +
                     "); raise it for files the summary says were aligned within a limited search band")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--shared-weights", o.shared_weights,
                 "built-in engine: on (all workers map one read-only copy of the model's weights under /dev/shm, "
                 "counted once) or off (each worker loads its own)")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  app.add_option("--retries", o.retries, "times a job that crashed is retried")->capture_default_str();
  app.add_option("--timeout", o.timeout, "per job, e.g. 90s, 10m, 2h; a job running longer fails");
  app.add_option("--hang-timeout", o.hang_timeout,
                 "built-in engine: a worker whose heartbeat stops this long during a job is killed and the job retried")
      ->capture_default_str();
  app.add_flag("--force", o.force, "redo files history says are done");
  app.add_flag("--no-report", o.no_report, "do not write the run's HTML report (OUT/.align-batch/report-RUN.html) at its end");
  app.add_flag("--dry-run", o.dry_run, "print the plan (files, predicted peaks, the budget) and exit");
  app.add_option("--progress", o.progress, "auto (live line on a terminal), plain, or json (events on stdout)")
      ->check(CLI::IsMember({"auto", "plain", "json"}))
      ->capture_default_str();
  app.add_option("--sample-ms", o.sample_ms, "memory sampling interval")->check(CLI::Range(5, 5000))->capture_default_str();
  app.add_option("--high-water", o.high_water, "stop the youngest job when measured memory exceeds this share of the budget")
      ->check(CLI::Range(0.1, 1.0))
      ->capture_default_str();
  app.add_option("--margin", o.margin, "multiply history's predicted peaks by this (replay --sweep tunes it)")
      ->check(CLI::Range(0.5, 4.0))
      ->capture_default_str();
  app.add_option("--executor", o.executor, "local (this machine) or slurm (job arrays, each task's --mem from history; docs/slurm.md)")
      ->check(CLI::IsMember({"local", "slurm"}))
      ->capture_default_str();
  app.add_option("--slurm-partition", o.slurm_partition, "--executor slurm: the partition to submit to");
  app.add_option("--slurm-max-tasks", o.slurm_max_tasks, "--executor slurm: tasks of one array running at once (sbatch --array=...%N)")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--slurm-arg", o.slurm_args, "--executor slurm: passed to sbatch unchanged (repeat it), e.g. --slurm-arg=--account=A")
      ->allow_extra_args(false);
  app.add_option("--slurm-task", o.slurm_task, "")->group("");  // internal: set by --executor slurm on its tasks
}

void note_explicit_options(const CLI::App& app, RunOptions& o) {
  for (const char* name : {"--workers", "--mem-budget", "--high-water", "--margin"})
    if (app.count(name) > 0) o.explicit_options.insert(name);
}

TunedApplied apply_tuned_settings(const nlohmann::json& tuned, RunOptions& o) {
  TunedApplied t;
  t.prediction_scale = o.margin;
  if (!tuned.is_object()) return t;
  auto user_set = [&](const char* option) {
    if (!o.explicit_options.count(option)) return false;
    t.kept.push_back(option);
    return true;
  };
  if (auto it = tuned.find("workers"); it != tuned.end() && !user_set("--workers")) {
    if (it->is_string() && parse_workers(it->get<std::string>())) {
      o.workers = it->get<std::string>();
      t.applied.push_back("--workers " + o.workers);
    } else {
      t.ignored.push_back("workers " + it->dump() + " (not auto or a whole number)");
    }
  }
  if (auto it = tuned.find("high_water"); it != tuned.end() && !user_set("--high-water")) {
    if (it->is_number() && it->get<double>() >= 0.1 && it->get<double>() <= 1.0) {
      o.high_water = it->get<double>();
      t.applied.push_back(fmt::format("--high-water {:.2f}", o.high_water));
    } else {
      t.ignored.push_back("high_water " + it->dump() + " (outside 0.1..1)");
    }
  }
  if (auto it = tuned.find("prediction_scale"); it != tuned.end() && !user_set("--margin")) {
    if (it->is_number() && it->get<double>() >= 0.5 && it->get<double>() <= 4.0) {
      o.margin = t.prediction_scale = it->get<double>();
      t.applied.push_back(fmt::format("--margin {:.2f}", o.margin));
    } else {
      t.ignored.push_back("prediction_scale " + it->dump() + " (outside 0.5..4)");
    }
  }
  if (auto it = tuned.find("budget_bytes"); it != tuned.end() && !user_set("--mem-budget")) {
    if (it->is_number_unsigned() && it->get<std::uint64_t>() > 0) {
      o.mem_budget = std::to_string(it->get<std::uint64_t>());
      t.applied.push_back("--mem-budget " + format_bytes(it->get<std::uint64_t>()));
    } else {
      t.ignored.push_back("budget_bytes " + it->dump() + " (not a positive size)");
    }
  }
  return t;
}

int run_batch(const RunOptions& given, const std::vector<std::string>& command, bool dashdash) {
  RunOptions o = given;
  if (std::string e = read_slurm_shard(o); !e.empty()) return usage_error(e);
  if (o.corpus.empty())
    return usage_error("no corpus given; usage: align-batch [OPTIONS] CORPUS... [-- COMMAND {in} {out}] (see --help)");
  if (!parse_workers(o.workers))
    return usage_error("--workers '" + o.workers + "': use auto or a whole number >= 1, e.g. --workers 4");
  if (std::string e = check_slurm_options(o); !e.empty()) return usage_error(e);
  std::optional<std::int64_t> timeout_ms;
  if (!o.timeout.empty()) {
    timeout_ms = parse_duration_ms(o.timeout);
    if (!timeout_ms) return usage_error("--timeout '" + o.timeout + "': not a duration; use e.g. 90s, 10m or 2h");
  }
  if (auto r = parse_budget_flags(o.mem_budget, o.reserve); !r) return usage_error(r.error());
  const auto hang_ms = parse_duration_ms(o.hang_timeout);
  if (!hang_ms) return usage_error("--hang-timeout '" + o.hang_timeout + "': not a duration; use e.g. 60s or 5m");

  // The engine and the job key history files its measurements under.
  RunLoopConfig config;
  std::string worker_path, model_path;
  if (dashdash) {
    // The built-in engine's options mean nothing to a command after '--': say so, never ignore them.
    std::vector<std::string> builtin_only;
    if (!o.model.empty()) builtin_only.push_back("--model");
    if (o.task != "auto") builtin_only.push_back("--task");
    if (o.max_trellis_mib != 0) builtin_only.push_back("--max-trellis-mib");
    if (o.shared_weights != "on") builtin_only.push_back("--shared-weights");
    if (!builtin_only.empty())
      return usage_error(fmt::format("{} {} to the built-in engine's workers, not to a command after '--'; drop {}, or drop the command",
                                     fmt::join(builtin_only, ", "), builtin_only.size() == 1 ? "applies" : "apply",
                                     builtin_only.size() == 1 ? "it" : "them"));
    std::string error;
    auto tmpl = CommandTemplate::parse(command, error);
    if (!tmpl) return usage_error(error);
    if (resolve_program(command[0]).empty())
      return usage_error("command '" + command[0] + "' not found or not executable; check the program after '--' and $PATH");
    config.command = *tmpl;
    config.job_key = job_key_for_command(command);
  } else {
    const std::string model = o.model.empty() ? default_model() : o.model;
    std::error_code ec;
    if (model.empty() || !fs::is_regular_file(model, ec))
      return usage_error("model '" + model + "' not found; pass --model MODEL.pt (with MODEL.json beside it), set $AB_MODEL, "
                         "or give an external command after '--'");
    auto key = job_key_for_model(model);
    if (!key.ok()) return usage_error(key.error());
    config.job_key = model_job_key(key.value(), o.max_trellis_mib, o.shared_weights == "on");
    worker_path = find_worker();
    if (worker_path.empty())
      return usage_error("align-batch-worker not found beside align-batch or on $PATH; set $AB_WORKER to its path");
    model_path = fs::absolute(model).string();
  }
  config.out_dir = fs::absolute(o.out).lexically_normal();

  // An existing history is opened now, for its tuned settings; a first run's is created only once
  // every option and the corpus check out, so a usage error writes nothing.
  const fs::path history_path = o.history.empty() ? default_history_path(config.out_dir) : fs::path(o.history);
  std::unique_ptr<HistoryStore> history;
  std::error_code history_ec;
  if (!o.no_history && fs::exists(history_path, history_ec)) {
    auto opened = HistoryStore::open(history_path, HistoryStore::Create::kNever);
    if (!opened) {
      if (!o.dry_run) return usage_error(opened.error());
    } else {
      history = std::move(opened.value());
    }
  }

  // Settings `replay --sweep --apply` stored for this key fill in what the command line left unset.
  std::string tuned_note;
  TunedApplied tuned;
  tuned.prediction_scale = o.margin;
  if (history) {
    auto stored = history->tuned_settings(config.job_key);
    if (!stored) {
      tuned_note = "history: " + stored.error() + " (tuned settings not read)";
    } else if (stored.value().is_object()) {
      tuned = apply_tuned_settings(stored.value(), o);
      std::string source = stored.value().value("source", std::string("replay --apply"));
      tuned_note = fmt::format("tuned settings for this key from {} ({}): {}", source, history->path().string(),
                               tuned.applied.empty() ? std::string("none applied") : join(tuned.applied, ", "));
      if (!tuned.kept.empty()) tuned_note += "; kept as given (command line or --config): " + join(tuned.kept, ", ");
      if (!tuned.ignored.empty()) tuned_note += "; ignored " + join(tuned.ignored, ", ");
    }
  }
  config.prediction_scale = tuned.prediction_scale;

  auto workers = parse_workers(o.workers);
  auto parsed_budget = parse_budget_flags(o.mem_budget, o.reserve);  // tuned settings may have set them
  if (!parsed_budget) return usage_error(parsed_budget.error());
  BudgetInputs inputs = parsed_budget.value();
  std::uint64_t vram_budget_bytes = 0;
  std::string vram_note;
  if (o.vram_budget == "off") {
    vram_note = "no GPU budget (--vram-budget off)";
  } else if (!o.vram_budget.empty()) {
    auto v = parse_size_bytes(o.vram_budget);
    if (!v) return usage_error("--vram-budget '" + o.vram_budget + "': not a size; use e.g. 12G, 800M or off");
    vram_budget_bytes = *v;
  } else {
    const VramDefault d = default_vram_budget(probe_nvml());
    vram_budget_bytes = d.budget_bytes;
    // Said only where there is a GPU; a machine without one simply has no second budget.
    if (d.budget_bytes) vram_note = d.why;
  }
  std::vector<std::string> worker_argv;
  const unsigned cores = static_cast<unsigned>(std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN)));
  // The cap on concurrent jobs: N from --workers N; with auto, memory alone decides for external
  // commands (they may wait on I/O or a GPU), but the built-in engine is CPU-bound LibTorch, so it
  // gets at most one worker per core. Measured on examples/corpus (28 files, 2 cores, 22 GiB):
  // memory alone started 28 workers, 11.6 s and 3.9 GiB; one per core, 4.8 s and 0.33 GiB.
  std::uint32_t max_workers = *workers;
  const std::uint32_t max_trellis_mib = dashdash ? 0 : o.max_trellis_mib ? o.max_trellis_mib : kDefaultMaxTrellisMib;
  if (!dashdash) {
    if (max_workers == 0) max_workers = cores;
    // Each worker gets max(1, cores / workers) LibTorch threads, so N workers never oversubscribe.
    worker_argv = {worker_path, "--model", model_path, "--threads",
                   std::to_string(std::max(1u, cores / std::min(max_workers, cores))), "--max-trellis-mib",
                   std::to_string(max_trellis_mib)};
    // The model's sidecar gives an alignment's size before it starts (frames from the header's
    // length, tokens from the transcript); without one the worker reports it at start.
    const ModelInfoParse sidecar = read_model_info(model_path);
    if (sidecar.info) {
      AlignmentLimit limit;
      limit.labels = label_set_of(*sidecar.info);
      limit.sample_rate_hz = sidecar.info->sample_rate_hz;
      limit.samples_per_frame = sidecar.info->samples_per_frame;
      limit.cap_bytes = std::uint64_t(max_trellis_mib) << 20;
      config.alignment_limit = std::move(limit);
    }
  }
  Progress::Mode mode;
  if (!Progress::parse_mode(o.progress, stderr, mode)) return usage_error("--progress: use auto, plain or json");

  // The budget: min(--mem-budget, min(cgroup limit, MemTotal) - reserve).
  MachineMemory machine;
  MachineReading reading = machine.read();
  inputs.mem_total_bytes = reading.meminfo && reading.meminfo->mem_total_bytes ? *reading.meminfo->mem_total_bytes : 0;
  if (reading.cgroup && !reading.cgroup->unlimited) inputs.cgroup_limit_bytes = reading.cgroup->limit_bytes;
  Budget budget = effective_budget(inputs);
  if (!budget.ok()) return usage_error(budget.error);

  config.scheduler.budget_bytes = budget.effective_bytes;
  config.scheduler.vram_budget_bytes = vram_budget_bytes;
  config.mem_total_bytes = inputs.mem_total_bytes;
  config.scheduler.reserve_bytes = std::min<std::uint64_t>(budget.reserve_bytes, 256ull << 20);
  config.scheduler.max_workers = max_workers;
  config.scheduler.max_attempts = o.retries + 1;
  config.scheduler.high_water = o.high_water;
  config.task = o.task;
  config.force = o.force;
  config.timeout_ms = timeout_ms.value_or(0);
  config.hang_ms = *hang_ms;
  config.tick_ms = o.sample_ms;
  // Recorded with the run; replay reads the same struct back: the cap, the engine, the tick.
  RunSettings& rs = config.settings;
  rs.builtin_engine = !dashdash;
  rs.model = model_path;
  rs.command = command;
  rs.workers = o.workers;
  rs.workers_cap = max_workers;
  rs.sample_ms = o.sample_ms;
  rs.high_water = o.high_water;
  rs.margin = config.prediction_scale;
  rs.retries = o.retries;
  rs.mem_budget = o.mem_budget;
  rs.reserve = o.reserve;
  rs.budget_source = budget.ceiling_source;
  // What a percentage --mem-budget referred to, so `replay --mem-budget 75%` of this run
  // resolves exactly as a run given that flag would have.
  rs.limit_bytes = budget.limit_bytes;
  rs.reserve_bytes = budget.reserve_bytes;
  rs.cgroup_limit_bytes = inputs.cgroup_limit_bytes;
  rs.vram_budget_bytes = vram_budget_bytes;
  rs.task = o.task;
  rs.timeout = o.timeout;
  rs.out = config.out_dir.string();
  rs.force = o.force;
  rs.tuned = tuned.applied;
  if (!dashdash) rs.shared_weights = o.shared_weights == "on";
  if (max_trellis_mib) rs.max_trellis_mib = max_trellis_mib;

  // One run per output directory and per history (run_lock.h). Taken before the scan when the
  // output's folder exists already, so a second run stops at once; a first run takes it after the
  // scan, since a usage error found there must leave nothing behind.
  std::vector<std::unique_ptr<RunLock>> locks;
  auto take_locks = [&]() -> std::string {
    if (o.dry_run || !locks.empty()) return {};
    if (o.slurm_task.empty()) {  // a Slurm task shares its submitter's --out (slurm_command.h)
      auto out_lock = RunLock::acquire(config.out_dir / ".align-batch" / "lock",
                                       "output directory " + display_path(config.out_dir.string()));
      if (!out_lock) return out_lock.error();
      locks.push_back(std::move(out_lock.value()));
    }
    if (!o.no_history && history_path != default_history_path(config.out_dir)) {
      fs::path lock_path = history_path;
      lock_path += ".lock";
      auto history_lock = RunLock::acquire(lock_path, "history " + display_path(history_path.string()));
      if (!history_lock) return history_lock.error();
      locks.push_back(std::move(history_lock.value()));
    }
    return {};
  };
  if (std::error_code lock_ec; fs::is_directory(config.out_dir / ".align-batch", lock_ec))
    if (auto error = take_locks(); !error.empty()) return usage_error(error);

  // A big corpus takes a while to scan (stat + header per file): a live count on a terminal, and
  // a line saying what it cost when that was noticeable.
  const std::int64_t scan_start_ms = monotonic_ms();
  std::int64_t scan_shown_ms = scan_start_ms;
  const bool scan_live = mode == Progress::Mode::kTty && !o.dry_run;
  Corpus corpus = scan_corpus(o.corpus, config.out_dir, [&](std::size_t found) {
    if (!scan_live || found % 256 != 0) return;
    const std::int64_t now = monotonic_ms();
    if (now - scan_shown_ms < 250) return;
    scan_shown_ms = now;
    std::fprintf(stderr, "\r\033[Kscanning the corpus: %zu audio files so far", found);
  });
  const double scan_s = static_cast<double>(monotonic_ms() - scan_start_ms) / 1000.0;
  if (scan_live && scan_shown_ms != scan_start_ms) std::fprintf(stderr, "\r\033[K");
  if (scan_s >= 1.0 && mode != Progress::Mode::kJson)
    std::fprintf(stderr, "align-batch: scanned the corpus in %.1f s: %zu audio files\n", scan_s, corpus.files.size());
  if (corpus.files.empty()) {
    for (const auto& p : corpus.problems) std::fprintf(stderr, "align-batch: %s: %s\n", display_path(p.path.string()).c_str(), p.message.c_str());
    return usage_error("no audio files found in the corpus given; pass directories, audio files or @LIST files");
  }

  if (auto error = take_locks(); !error.empty()) return usage_error(error);
  if (!o.no_history && !history && !o.dry_run) {
    auto created = HistoryStore::open(history_path, HistoryStore::Create::kIfMissing);
    if (!created) return usage_error(created.error());
    history = std::move(created.value());
  }

  Progress progress(mode, stderr, stdout);
  {
    // Both <stem>.txt and <stem>.lab: the .txt is used. Said once, not once per file.
    std::size_t both = 0;
    std::optional<CorpusFile> example;  // corpus.files builds each file on demand: a copy, not a pointer
    for (const auto& f : corpus.files)
      if (f.unused_transcript && both++ == 0) example = f;
    if (example) {
      const std::string note = fmt::format(
          "{} file{} both a .txt and a .lab transcript; the .txt is used (e.g. {}, not {})", both,
          both == 1 ? " has" : "s have", display_path(example->transcript->string()),
          display_path(example->unused_transcript->string()));
      if (o.dry_run) std::printf("%s\n", note.c_str());
      else progress.message(note);
    }
  }
  if (!vram_note.empty()) {
    if (o.dry_run) std::printf("%s\n", vram_note.c_str());
    else progress.message(vram_note);
  }
  if (!tuned_note.empty()) {
    if (o.dry_run) std::printf("%s\n", tuned_note.c_str());
    else progress.message(tuned_note);
  }
  ProcessRunnerConfig runner_config;
  runner_config.log_dir = config.out_dir / ".align-batch" / "logs";
  runner_config.worker_argv = worker_argv;
  // LibTorch's OpenMP threads sleep between parallel regions instead of spinning: libgomp's
  // default spin made a 2-thread worker on 2 busy cores 4-5x slower (200 files of 0.1 s: 38.5 s
  // vs 8.0 s passive, a 194 s file 5.3-8.8 s vs 0.9-1.8 s a job; bench/engine_overhead.sh).
  // libgomp reads it once as it loads, so it must be in the worker's environment from exec.
  if (!dashdash) runner_config.worker_env = {"OMP_WAIT_POLICY=PASSIVE"};
  runner_config.status_blocks = !dashdash;
  std::error_code ec;
  if (!o.dry_run) {
    fs::create_directories(runner_config.log_dir, ec);
    if (ec) return usage_error("cannot create " + runner_config.log_dir.string() + ": " + ec.message() + "; check --out");
  }

  if (o.executor == "slurm")
    return run_slurm_batch(o, config, corpus, history.get(), progress, command, dashdash, model_path, mode == Progress::Mode::kTty);

  if (o.dry_run) {
    NoMemoryProbe probe;
    std::vector<FailedFile> errors;
    // plan() needs no runner or probe; a RunLoop is built only to share its logic.
    PlanOnlyRunner null_runner;
    RunLoop loop(config, null_runner, probe, history.get(), progress, nullptr);
    auto plan = loop.plan(corpus, errors);
    std::size_t to_run = 0, above_budget = 0;
    std::uint64_t largest = 0;
    // One header row, then one tab-separated row per file (docs/orchestrator.md).
    std::printf("action\tfile\tsize\taudio\tpeak\ttask\ttranscript\twhy%s\n", dashdash ? "\tcommand" : "");
    for (const auto& p : plan) {
      const CorpusFile f = corpus.files[p.file];
      const std::string audio = f.audio_duration_s ? fmt::format("audio {:.2f} s", *f.audio_duration_s)
                                                         : std::string("audio unknown");
      std::string row = fmt::format(
          "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}", p.skip ? "skip" : "run", display_path(f.audio.string()),
          format_bytes(f.size_bytes), audio,
          p.predicted_peak_bytes ? "peak ~" + format_bytes(*p.predicted_peak_bytes) : std::string("peak unknown (no history)"),
          p.task + (p.transcribed_for_want ? " (no transcript)" : ""),
          f.transcript ? display_path(f.transcript->string()) : std::string("-"), p.skip ? "done" : p.reason);
      if (dashdash && config.command) {
        // {out} shown at its final place; when the job runs it points into the staging directory.
        row += "\t" + shell_words(config.command->expand({f.audio, f.out_base, f.audio.stem().string(), f.audio.parent_path()}));
      }
      std::printf("%s\n", row.c_str());
      if (!p.skip) {
        ++to_run;
        largest = std::max(largest, p.predicted_peak_bytes.value_or(0));
        if (p.predicted_peak_bytes.value_or(0) > budget.effective_bytes) ++above_budget;
      }
    }
    for (const auto& e : errors) std::printf("error\t%s\t%s\n", display_path(e.path).c_str(), e.reason.c_str());
    for (const auto& e : corpus.problems)
      std::printf("error\t%s\t%s\n", display_path(e.path.string()).c_str(), e.message.c_str());
    std::printf("plan: %zu to run, %zu skipped (done), %zu with errors; budget %s (%s, reserve %s); workers %s",
                to_run, plan.size() - to_run, errors.size() + corpus.problems.size(),
                format_bytes(budget.effective_bytes).c_str(), budget.ceiling_source.c_str(),
                format_bytes(budget.reserve_bytes).c_str(), o.workers.c_str());
    if (max_workers > 0) std::printf(" (at most %u at once)", static_cast<unsigned>(max_workers));
    if (above_budget > 0)
      std::printf("; %zu file%s predicted above the budget (largest ~%s): %s would fail unstarted", above_budget,
                  above_budget == 1 ? "" : "s", format_bytes(largest).c_str(), above_budget == 1 ? "it" : "they");
    else if (largest > 0)
      std::printf("; at least %llu at once by the largest prediction",
                  static_cast<unsigned long long>(budget.effective_bytes / largest));
    std::printf("\n");
    return kExitOk;
  }

  SignalWatcher signals;
  if (!dashdash && o.shared_weights == "on") {
    auto shared = create_shared_weights_file(::getpid());
    if (shared) runner_config.shared_weights = shared.value();
    else progress.message("warning: " + shared.error() + "; every worker keeps its own copy of the weights");
  }
  std::error_code size_ec;
  const std::uintmax_t model_bytes = dashdash ? 0 : fs::file_size(model_path, size_ec);
  ProcMemoryProbe probe("/proc", runner_config.shared_weights, size_ec ? 0 : model_bytes);
  ProcessRunner runner(runner_config);
  progress.message(fmt::format("{} files; {}; budget {} ({}); workers {}{}; history {}", corpus.files.size(),
                               config.settings.engine_text(),
                               format_bytes(budget.effective_bytes), budget.ceiling_source, o.workers,
                               max_workers ? fmt::format(" (at most {} at once)", max_workers) : std::string(),
                               history ? history->path().string() : std::string("off")));
  RunLoop loop(config, runner, probe, history.get(), progress, &SignalWatcher::interrupts);
  RunSummary summary = loop.run(corpus);
  summary.max_trellis_mib = max_trellis_mib;
  summary.out_dir = config.out_dir.string();
  // The report reads the run back from history once the loop is over, never while it runs.
  if (!o.no_report) write_end_of_run_report(history.get(), loop.run_id(), config.out_dir, summary, progress);
  progress.summary(summary, stdout);
  return summary.exit_code();
}

}  // namespace ab
