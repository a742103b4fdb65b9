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

namespace {

/// What run_batch's steps prepare, in order: each step below fills its part.
struct BatchSetup {
  RunOptions o;                      ///< as given, then with history's tuned settings applied
  std::vector<std::string> command;  ///< after '--'; empty: the built-in engine
  bool dashdash = false;
  RunLoopConfig config;
  std::string worker_path;  ///< built-in engine: align-batch-worker
  std::string model_path;   ///< built-in engine: the model, absolute
  fs::path history_path;
  std::unique_ptr<HistoryStore> history;
  TunedApplied tuned;
  std::string tuned_note;  ///< what history's tuned settings did; empty: none stored
  std::string vram_note;   ///< how the GPU budget was reached; empty: no GPU
  std::uint32_t max_workers = 0;      ///< the cap in force; 0: memory alone decides
  std::uint32_t max_trellis_mib = 0;  ///< built-in engine: each worker's; 0 with a command
  std::vector<std::string> worker_argv;
  Progress::Mode mode = Progress::Mode::kPlain;
  Budget budget;
};

/// The flags that are durations, parsed.
struct Durations {
  std::optional<std::int64_t> timeout_ms;
  std::int64_t hang_ms = 0;
};

/// Checks what the options alone can tell, before anything is read or written.
Result<Durations> check_flags(const RunOptions& o) {
  using R = Result<Durations>;
  if (o.corpus.empty())
    return R::failure("no corpus given; usage: align-batch [OPTIONS] CORPUS... [-- COMMAND {in} {out}] (see --help)");
  if (!parse_workers(o.workers))
    return R::failure("--workers '" + o.workers + "': use auto or a whole number >= 1, e.g. --workers 4");
  if (std::string e = check_slurm_options(o); !e.empty()) return R::failure(e);
  Durations d;
  if (!o.timeout.empty()) {
    d.timeout_ms = parse_duration_ms(o.timeout);
    if (!d.timeout_ms) return R::failure("--timeout '" + o.timeout + "': not a duration; use e.g. 90s, 10m or 2h");
  }
  if (auto r = parse_budget_flags(o.mem_budget, o.reserve); !r) return R::failure(r.error());
  const auto hang_ms = parse_duration_ms(o.hang_timeout);
  if (!hang_ms) return R::failure("--hang-timeout '" + o.hang_timeout + "': not a duration; use e.g. 60s or 5m");
  d.hang_ms = *hang_ms;
  return d;
}

/// The external command after '--' as the engine, keyed in history by the command.
Result<Done> use_command(BatchSetup& s) {
  const RunOptions& o = s.o;
  // The built-in engine's options mean nothing to a command after '--': say so, never ignore them.
  std::vector<std::string> builtin_only;
  if (!o.model.empty()) builtin_only.push_back("--model");
  if (o.task != "auto") builtin_only.push_back("--task");
  if (o.max_trellis_mib != 0) builtin_only.push_back("--max-trellis-mib");
  if (o.shared_weights != "on") builtin_only.push_back("--shared-weights");
  if (!builtin_only.empty())
    return Result<Done>::failure(fmt::format(
        "{} {} to the built-in engine's workers, not to a command after '--'; drop {}, or drop the command",
        fmt::join(builtin_only, ", "), builtin_only.size() == 1 ? "applies" : "apply",
        builtin_only.size() == 1 ? "it" : "them"));
  auto tmpl = CommandTemplate::parse(s.command);
  if (!tmpl) return Result<Done>::failure(tmpl.error());
  if (resolve_program(s.command[0]).empty())
    return Result<Done>::failure("command '" + s.command[0] +
                                 "' not found or not executable; check the program after '--' and $PATH");
  s.config.command = std::move(tmpl.value());
  s.config.job_key = job_key_for_command(s.command);
  return Done{};
}

/// The built-in engine: the model (keyed in history by its content and the workers' caps) and
/// the worker binary.
Result<Done> use_builtin_engine(BatchSetup& s) {
  const RunOptions& o = s.o;
  const std::string model = o.model.empty() ? default_model() : o.model;
  std::error_code ec;
  if (model.empty() || !fs::is_regular_file(model, ec))
    return Result<Done>::failure("model '" + model +
                                 "' not found; pass --model MODEL.pt (with MODEL.json beside it), set $AB_MODEL, "
                                 "or give an external command after '--'");
  auto key = job_key_for_model(model);
  if (!key.ok()) return Result<Done>::failure(key.error());
  s.config.job_key = model_job_key(key.value(), o.max_trellis_mib, o.shared_weights == "on");
  s.worker_path = find_worker();
  if (s.worker_path.empty())
    return Result<Done>::failure("align-batch-worker not found beside align-batch or on $PATH; set $AB_WORKER to its path");
  s.model_path = fs::absolute(model).string();
  return Done{};
}

/// An existing history, opened now for its tuned settings; a first run's is created only once
/// every option and the corpus check out (open_new_history), so a usage error writes nothing.
Result<Done> open_existing_history(BatchSetup& s) {
  s.history_path = s.o.history.empty() ? default_history_path(s.config.out_dir) : fs::path(s.o.history);
  std::error_code ec;
  if (s.o.no_history || !fs::exists(s.history_path, ec)) return Done{};
  auto opened = HistoryStore::open(s.history_path, HistoryStore::Create::kNever);
  if (opened) s.history = std::move(opened.value());
  else if (!s.o.dry_run) return Result<Done>::failure(opened.error());
  return Done{};
}

/// Settings `replay --sweep --apply` stored for this key fill in what the command line left unset.
void apply_history_tuning(BatchSetup& s) {
  s.tuned.prediction_scale = s.o.margin;
  if (s.history) {
    auto stored = s.history->tuned_settings(s.config.job_key);
    if (!stored) {
      s.tuned_note = "history: " + stored.error() + " (tuned settings not read)";
    } else if (stored.value().is_object()) {
      const TunedApplied& t = s.tuned = apply_tuned_settings(stored.value(), s.o);
      std::string source = stored.value().value("source", std::string("replay --apply"));
      s.tuned_note = fmt::format("tuned settings for this key from {} ({}): {}", source, s.history->path().string(),
                                 t.applied.empty() ? std::string("none applied") : join(t.applied, ", "));
      if (!t.kept.empty()) s.tuned_note += "; kept as given (command line or --config): " + join(t.kept, ", ");
      if (!t.ignored.empty()) s.tuned_note += "; ignored " + join(t.ignored, ", ");
    }
  }
  s.config.prediction_scale = s.tuned.prediction_scale;
}

/// The GPU budget: --vram-budget, or NVML's free memory less a reserve (default_vram_budget).
Result<std::uint64_t> vram_budget(BatchSetup& s) {
  const std::string& flag = s.o.vram_budget;
  if (flag == "off") {
    s.vram_note = "no GPU budget (--vram-budget off)";
    return std::uint64_t{0};
  }
  if (!flag.empty()) {
    auto v = parse_size_bytes(flag);
    if (!v) return Result<std::uint64_t>::failure("--vram-budget '" + flag + "': not a size; use e.g. 12G, 800M or off");
    return *v;
  }
  const VramDefault d = default_vram_budget(probe_nvml());
  // Said only where there is a GPU; a machine without one simply has no second budget.
  if (d.budget_bytes) s.vram_note = d.why;
  return d.budget_bytes;
}

/// The cap on concurrent jobs and, for the built-in engine, each worker's command line and the
/// largest alignment it may hold.
void plan_workers(BatchSetup& s) {
  const unsigned cores = static_cast<unsigned>(std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN)));
  // The cap on concurrent jobs: N from --workers N; with auto, memory alone decides for external
  // commands (they may wait on I/O or a GPU), but the built-in engine is CPU-bound LibTorch, so it
  // gets at most one worker per core. Measured on examples/corpus (28 files, 2 cores, 22 GiB):
  // memory alone started 28 workers, 11.6 s and 3.9 GiB; one per core, 4.8 s and 0.33 GiB.
  s.max_workers = *parse_workers(s.o.workers);
  if (s.dashdash) return;
  s.max_trellis_mib = s.o.max_trellis_mib ? s.o.max_trellis_mib : kDefaultMaxTrellisMib;
  if (s.max_workers == 0) s.max_workers = cores;
  // Each worker gets max(1, cores / workers) LibTorch threads, so N workers never oversubscribe.
  s.worker_argv = {s.worker_path, "--model", s.model_path, "--threads",
                   std::to_string(std::max(1u, cores / std::min(s.max_workers, cores))), "--max-trellis-mib",
                   std::to_string(s.max_trellis_mib)};
  // The model's sidecar gives an alignment's size before it starts (frames from the header's
  // length, tokens from the transcript); without one the worker reports it at start.
  const ModelInfoParse sidecar = read_model_info(s.model_path);
  if (sidecar.info) {
    AlignmentLimit limit;
    limit.labels = label_set_of(*sidecar.info);
    limit.sample_rate_hz = sidecar.info->sample_rate_hz;
    limit.samples_per_frame = sidecar.info->samples_per_frame;
    limit.cap_bytes = std::uint64_t(s.max_trellis_mib) << 20;
    s.config.alignment_limit = std::move(limit);
  }
}

/// The budget: min(--mem-budget, min(cgroup limit, MemTotal) - reserve). Fills in `inputs`'
/// machine fields.
Result<Budget> machine_budget(BudgetInputs& inputs) {
  MachineMemory machine;
  MachineReading reading = machine.read();
  inputs.mem_total_bytes = reading.meminfo && reading.meminfo->mem_total_bytes ? *reading.meminfo->mem_total_bytes : 0;
  if (reading.cgroup && !reading.cgroup->unlimited) inputs.cgroup_limit_bytes = reading.cgroup->limit_bytes;
  return effective_budget(inputs);
}

/// The loop's settings from the options, the budgets and the caps.
void configure_loop(BatchSetup& s, const Durations& d, const BudgetInputs& inputs, std::uint64_t vram_budget_bytes) {
  const RunOptions& o = s.o;
  RunLoopConfig& config = s.config;
  config.driver.scheduler.budget_bytes = s.budget.effective_bytes;
  config.driver.scheduler.vram_budget_bytes = vram_budget_bytes;
  config.mem_total_bytes = inputs.mem_total_bytes;
  config.driver.scheduler.reserve_bytes = guard_reserve_bytes(s.budget.reserve_bytes);
  config.driver.scheduler.max_workers = s.max_workers;
  config.driver.scheduler.max_attempts = o.retries + 1;
  config.driver.scheduler.high_water = o.high_water;
  config.task = o.task;
  config.force = o.force;
  config.driver.timeout_ms = d.timeout_ms.value_or(0);
  config.driver.hang_ms = d.hang_ms;
  config.driver.tick_ms = o.sample_ms;
  // Recorded with the run; replay reads the same struct back: the cap, the engine, the tick.
  RunSettings& rs = config.settings;
  rs.builtin_engine = !s.dashdash;
  rs.model = s.model_path;
  rs.command = s.command;
  rs.workers = o.workers;
  rs.workers_cap = s.max_workers;
  rs.sample_ms = o.sample_ms;
  rs.high_water = o.high_water;
  rs.margin = config.prediction_scale;
  rs.retries = o.retries;
  rs.mem_budget = o.mem_budget;
  rs.reserve = o.reserve;
  rs.budget_source = s.budget.ceiling_source;
  // What a percentage --mem-budget referred to, so `replay --mem-budget 75%` of this run
  // resolves exactly as a run given that flag would have.
  rs.limit_bytes = s.budget.limit_bytes;
  rs.reserve_bytes = s.budget.reserve_bytes;
  rs.cgroup_limit_bytes = inputs.cgroup_limit_bytes;
  rs.vram_budget_bytes = vram_budget_bytes;
  rs.task = o.task;
  rs.timeout = o.timeout;
  rs.out = config.out_dir.string();
  rs.force = o.force;
  rs.tuned = s.tuned.applied;
  if (!s.dashdash) rs.shared_weights = o.shared_weights == "on";
  if (s.max_trellis_mib) rs.max_trellis_mib = s.max_trellis_mib;
}

/// One run per output directory and per history (run_lock.h). Taken before the scan when the
/// output's folder exists already, so a second run stops at once; a first run takes it after the
/// scan, since a usage error found there must leave nothing behind.
class RunLocks {
 public:
  /// Takes the locks `s` needs, once (again: nothing); none for a dry run.
  Result<Done> take(const BatchSetup& s) {
    if (s.o.dry_run || !locks_.empty()) return Done{};
    const fs::path& out_dir = s.config.out_dir;
    if (s.o.slurm_task.empty()) {  // a Slurm task shares its submitter's --out (slurm_command.h)
      if (auto r = add(out_dir / ".align-batch" / "lock", "output directory " + display_path(out_dir.string())); !r)
        return r;
    }
    if (!s.o.no_history && s.history_path != default_history_path(out_dir)) {
      fs::path lock_path = s.history_path;
      lock_path += ".lock";
      return add(lock_path, "history " + display_path(s.history_path.string()));
    }
    return Done{};
  }

 private:
  Result<Done> add(const fs::path& path, const std::string& what) {
    auto lock = RunLock::acquire(path, what);
    if (!lock) return Result<Done>::failure(lock.error());
    locks_.push_back(std::move(lock.value()));
    return Done{};
  }
  std::vector<std::unique_ptr<RunLock>> locks_;
};

/// Scans the corpus. A big corpus takes a while (stat + header per file): a live count on a
/// terminal, and a line saying what it cost when that was noticeable. No audio file: an error.
Result<Corpus> scan(const BatchSetup& s) {
  const std::int64_t scan_start_ms = monotonic_ms();
  std::int64_t scan_shown_ms = scan_start_ms;
  const bool scan_live = s.mode == Progress::Mode::kTty && !s.o.dry_run;
  Corpus corpus = scan_corpus(s.o.corpus, s.config.out_dir, [&](std::size_t found) {
    if (!scan_live || found % 256 != 0) return;
    const std::int64_t now = monotonic_ms();
    if (now - scan_shown_ms < 250) return;
    scan_shown_ms = now;
    std::fprintf(stderr, "\r\033[Kscanning the corpus: %zu audio files so far", found);
  });
  const double scan_s = static_cast<double>(monotonic_ms() - scan_start_ms) / 1000.0;
  if (scan_live && scan_shown_ms != scan_start_ms) std::fprintf(stderr, "\r\033[K");
  if (scan_s >= 1.0 && s.mode != Progress::Mode::kJson)
    std::fprintf(stderr, "align-batch: scanned the corpus in %.1f s: %zu audio files\n", scan_s, corpus.files.size());
  if (corpus.files.empty()) {
    for (const auto& p : corpus.problems)
      std::fprintf(stderr, "align-batch: %s: %s\n", display_path(p.path.string()).c_str(), p.message.c_str());
    return Result<Corpus>::failure("no audio files found in the corpus given; pass directories, audio files or @LIST files");
  }
  return corpus;
}

/// A first run's history, created once every option and the corpus checked out.
Result<Done> open_new_history(BatchSetup& s) {
  if (s.o.no_history || s.history || s.o.dry_run) return Done{};
  auto created = HistoryStore::open(s.history_path, HistoryStore::Create::kIfMissing);
  if (!created) return Result<Done>::failure(created.error());
  s.history = std::move(created.value());
  return Done{};
}

/// Says what the run should know before it starts: printed by a dry run, else progress messages.
void say_notes(const BatchSetup& s, const Corpus& corpus, Progress& progress) {
  std::vector<std::string> notes;
  // Both <stem>.txt and <stem>.lab: the .txt is used. Said once, not once per file.
  std::size_t both = 0;
  std::optional<CorpusFile> example;  // corpus.files builds each file on demand: a copy, not a pointer
  for (const auto& f : corpus.files)
    if (f.unused_transcript && both++ == 0) example = f;
  if (example)
    notes.push_back(fmt::format("{} file{} both a .txt and a .lab transcript; the .txt is used (e.g. {}, not {})", both,
                                both == 1 ? " has" : "s have", display_path(example->transcript->string()),
                                display_path(example->unused_transcript->string())));
  for (const std::string* note : {&s.vram_note, &s.tuned_note})
    if (!note->empty()) notes.push_back(*note);
  for (const auto& note : notes) {
    if (s.o.dry_run) std::printf("%s\n", note.c_str());
    else progress.message(note);
  }
}

/// How workers are started; the log folder is made here, except for a dry run.
Result<ProcessRunnerConfig> runner_config_for(const BatchSetup& s) {
  ProcessRunnerConfig runner_config;
  runner_config.log_dir = s.config.out_dir / ".align-batch" / "logs";
  runner_config.worker_argv = s.worker_argv;
  // LibTorch's OpenMP threads sleep between parallel regions instead of spinning: libgomp's
  // default spin made a 2-thread worker on 2 busy cores 4-5x slower (200 files of 0.1 s: 38.5 s
  // vs 8.0 s passive, a 194 s file 5.3-8.8 s vs 0.9-1.8 s a job; bench/engine_overhead.sh).
  // libgomp reads it once as it loads, so it must be in the worker's environment from exec.
  if (!s.dashdash) runner_config.worker_env = {"OMP_WAIT_POLICY=PASSIVE"};
  runner_config.status_blocks = !s.dashdash;
  std::error_code ec;
  if (!s.o.dry_run) {
    fs::create_directories(runner_config.log_dir, ec);
    if (ec)
      return Result<ProcessRunnerConfig>::failure("cannot create " + runner_config.log_dir.string() + ": " +
                                                  ec.message() + "; check --out");
  }
  return runner_config;
}

/// One tab-separated row of the dry run's plan (docs/orchestrator.md).
std::string plan_row(const BatchSetup& s, const PlannedFile& p, const CorpusFile& f) {
  const std::string audio =
      f.audio_duration_s ? fmt::format("audio {:.2f} s", *f.audio_duration_s) : std::string("audio unknown");
  std::string row = fmt::format(
      "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}", p.skip ? "skip" : "run", display_path(f.audio.string()),
      format_bytes(f.size_bytes), audio,
      p.predicted_peak_bytes ? "peak ~" + format_bytes(*p.predicted_peak_bytes) : std::string("peak unknown (no history)"),
      p.task + (p.transcribed_for_want ? " (no transcript)" : ""),
      f.transcript ? display_path(f.transcript->string()) : std::string("-"), p.skip ? "done" : p.reason);
  if (s.dashdash && s.config.command) {
    // {out} shown at its final place; when the job runs it points into the staging directory.
    row += "\t" + shell_words(s.config.command->expand({f.audio, f.out_base, f.audio.stem().string(), f.audio.parent_path()}));
  }
  return row;
}

/// --dry-run: one header row, one row per file, the errors, then one line of totals.
int print_plan(BatchSetup& s, const Corpus& corpus, Progress& progress) {
  NoMemoryProbe probe;
  std::vector<FailedFile> errors;
  // plan() needs no runner or probe; a RunLoop is built only to share its logic.
  PlanOnlyRunner null_runner;
  RunLoop loop(s.config, null_runner, probe, s.history.get(), progress, nullptr);
  auto plan = loop.plan(corpus, errors);
  std::size_t to_run = 0, above_budget = 0;
  std::uint64_t largest = 0;
  const Budget& budget = s.budget;
  std::printf("action\tfile\tsize\taudio\tpeak\ttask\ttranscript\twhy%s\n", s.dashdash ? "\tcommand" : "");
  for (const auto& p : plan) {
    std::printf("%s\n", plan_row(s, p, corpus.files[p.file]).c_str());
    if (p.skip) continue;
    ++to_run;
    largest = std::max(largest, p.predicted_peak_bytes.value_or(0));
    if (p.predicted_peak_bytes.value_or(0) > budget.effective_bytes) ++above_budget;
  }
  for (const auto& e : errors) std::printf("error\t%s\t%s\n", display_path(e.path).c_str(), e.reason.c_str());
  for (const auto& e : corpus.problems)
    std::printf("error\t%s\t%s\n", display_path(e.path.string()).c_str(), e.message.c_str());
  std::printf("plan: %zu to run, %zu skipped (done), %zu with errors; budget %s (%s, reserve %s); workers %s", to_run,
              plan.size() - to_run, errors.size() + corpus.problems.size(), format_bytes(budget.effective_bytes).c_str(),
              budget.ceiling_source.c_str(), format_bytes(budget.reserve_bytes).c_str(), s.o.workers.c_str());
  if (s.max_workers > 0) std::printf(" (at most %u at once)", static_cast<unsigned>(s.max_workers));
  if (above_budget > 0)
    std::printf("; %zu file%s predicted above the budget (largest ~%s): %s would fail unstarted", above_budget,
                above_budget == 1 ? "" : "s", format_bytes(largest).c_str(), above_budget == 1 ? "it" : "they");
  else if (largest > 0)
    std::printf("; at least %llu at once by the largest prediction",
                static_cast<unsigned long long>(budget.effective_bytes / largest));
  std::printf("\n");
  return kExitOk;
}

/// Runs the batch on this machine, writes its report and prints the summary.
int run_local(BatchSetup& s, const Corpus& corpus, Progress& progress, ProcessRunnerConfig runner_config) {
  SignalWatcher signals;
  if (!s.dashdash && s.o.shared_weights == "on") {
    auto shared = create_shared_weights_file(::getpid());
    if (shared) runner_config.shared_weights = shared.value();
    else progress.message("warning: " + shared.error() + "; every worker keeps its own copy of the weights");
  }
  std::error_code size_ec;
  const std::uintmax_t model_bytes = s.dashdash ? 0 : fs::file_size(s.model_path, size_ec);
  ProcMemoryProbe probe("/proc", runner_config.shared_weights, size_ec ? 0 : model_bytes);
  ProcessRunner runner(runner_config);
  progress.message(fmt::format("{} files; {}; budget {} ({}); workers {}{}; history {}", corpus.files.size(),
                               s.config.settings.engine_text(), format_bytes(s.budget.effective_bytes),
                               s.budget.ceiling_source, s.o.workers,
                               s.max_workers ? fmt::format(" (at most {} at once)", s.max_workers) : std::string(),
                               s.history ? s.history->path().string() : std::string("off")));
  RunLoop loop(s.config, runner, probe, s.history.get(), progress, &SignalWatcher::interrupts);
  RunSummary summary = loop.run(corpus);
  summary.max_trellis_mib = s.max_trellis_mib;
  summary.out_dir = s.config.out_dir.string();
  // The report reads the run back from history once the loop is over, never while it runs.
  if (!s.o.no_report) write_end_of_run_report(s.history.get(), loop.run_id(), s.config.out_dir, summary, progress);
  progress.summary(summary, stdout);
  return summary.exit_code();
}

}  // namespace

int run_batch(const RunOptions& given, const std::vector<std::string>& command, bool dashdash) {
  BatchSetup s;
  s.o = given;
  s.command = command;
  s.dashdash = dashdash;
  if (std::string e = read_slurm_shard(s.o); !e.empty()) return usage_error(e);
  auto durations = check_flags(s.o);
  if (!durations) return usage_error(durations.error());
  if (auto r = dashdash ? use_command(s) : use_builtin_engine(s); !r) return usage_error(r.error());
  s.config.out_dir = fs::absolute(s.o.out).lexically_normal();
  if (auto r = open_existing_history(s); !r) return usage_error(r.error());
  apply_history_tuning(s);
  auto inputs = parse_budget_flags(s.o.mem_budget, s.o.reserve);  // tuned settings may have set them
  if (!inputs) return usage_error(inputs.error());
  auto vram_budget_bytes = vram_budget(s);
  if (!vram_budget_bytes) return usage_error(vram_budget_bytes.error());
  plan_workers(s);
  if (!Progress::parse_mode(s.o.progress, stderr, s.mode)) return usage_error("--progress: use auto, plain or json");
  auto budget = machine_budget(inputs.value());
  if (!budget) return usage_error(budget.error());
  s.budget = budget.value();
  configure_loop(s, durations.value(), inputs.value(), vram_budget_bytes.value());

  RunLocks locks;
  if (std::error_code ec; fs::is_directory(s.config.out_dir / ".align-batch", ec))
    if (auto r = locks.take(s); !r) return usage_error(r.error());
  auto corpus = scan(s);
  if (!corpus) return usage_error(corpus.error());
  if (auto r = locks.take(s); !r) return usage_error(r.error());
  if (auto r = open_new_history(s); !r) return usage_error(r.error());

  Progress progress(s.mode, stderr, stdout);
  say_notes(s, corpus.value(), progress);
  auto runner_config = runner_config_for(s);
  if (!runner_config) return usage_error(runner_config.error());
  if (s.o.executor == "slurm")
    return run_slurm_batch(s.o, s.config, corpus.value(), s.history.get(), progress, command, dashdash, s.model_path,
                           s.mode == Progress::Mode::kTty);
  if (s.o.dry_run) return print_plan(s, corpus.value(), progress);
  return run_local(s, corpus.value(), progress, std::move(runner_config.value()));
}

}  // namespace ab
