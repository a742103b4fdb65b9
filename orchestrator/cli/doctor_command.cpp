// The doctor command: gathers a MemoryReport and prints it as text or JSON.
#include "orchestrator/batch/exit_code.h"
#include "orchestrator/cli/doctor_command.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <memory>
#include <string>

#include "memguard/memory_report.h"
#include "memguard/size.h"

namespace ab {
namespace {

template <typename T>
nlohmann::json opt(const std::optional<T>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

nlohmann::json psi_json(const Psi& p) {
  nlohmann::json j = {{"some_avg10", p.some_avg10}, {"some_avg60", p.some_avg60}, {"some_avg300", p.some_avg300}};
  if (p.has_full) {
    j["full_avg10"] = p.full_avg10;
    j["full_avg60"] = p.full_avg60;
    j["full_avg300"] = p.full_avg300;
  }
  return j;
}

nlohmann::json to_json(const MemoryReport& r) {
  nlohmann::json j;
  j["cores"] = {{"online", r.cores_online}, {"usable", r.cores_usable}};
  if (r.meminfo) {
    j["memory"] = {{"mem_total_bytes", opt(r.meminfo->mem_total_bytes)},
                   {"mem_available_bytes", opt(r.meminfo->mem_available_bytes)},
                   {"swap_total_bytes", opt(r.meminfo->swap_total_bytes)},
                   {"swap_free_bytes", opt(r.meminfo->swap_free_bytes)}};
  } else {
    j["memory"] = nullptr;
  }
  if (r.cgroup.cgroup) {
    const auto& c = *r.cgroup.cgroup;
    const auto& g = *r.cgroup_reading;
    j["cgroup"] = {{"found", true},
                   {"version", c.version == CgroupVersion::kV1 ? 1 : 2},
                   {"path", c.path},
                   {"dir", c.dir.string()},
                   {"limit_bytes", opt(g.limit_bytes)},
                   {"usage_bytes", opt(g.usage_bytes)},
                   {"inactive_file_bytes", opt(g.inactive_file_bytes)},
                   {"oom_kill_count", opt(g.oom_kill_count)},
                   {"memsw_limit_bytes", opt(g.memsw_limit_bytes)},
                   {"memsw_usage_bytes", opt(g.memsw_usage_bytes)},
                   {"swap_limit_bytes", opt(g.swap_limit_bytes)},
                   {"swap_usage_bytes", opt(g.swap_usage_bytes)}};
  } else {
    j["cgroup"] = {{"found", false}, {"reason", r.cgroup.reason}};
  }
  j["psi"] = r.psi ? psi_json(*r.psi) : nlohmann::json(nullptr);
  if (r.psi) j["psi"]["source"] = r.psi_source;
  nlohmann::json gpus = nlohmann::json::array();
  for (const auto& d : r.gpu.devices)
    gpus.push_back({{"index", d.index}, {"name", d.name}, {"total_bytes", d.total_bytes}, {"used_bytes", d.used_bytes}});
  j["gpu"] = {{"available", r.gpu.available}, {"reason", r.gpu.reason}, {"devices", gpus}};
  if (r.budget.ok()) {
    j["budget"] = {{"effective_bytes", r.budget->effective_bytes}, {"limit_bytes", r.budget->limit_bytes},
                   {"ceiling_bytes", r.budget->ceiling_bytes},     {"ceiling_source", r.budget->ceiling_source},
                   {"reserve_bytes", r.budget->reserve_bytes}};
  } else {
    j["budget"] = {{"error", r.budget.error()}};
  }
  j["warnings"] = r.warnings;
  return j;
}

std::string opt_bytes(const std::optional<std::uint64_t>& v, const char* none = "unknown") {
  return v ? format_bytes(*v) : none;
}

void print_text(const MemoryReport& r, std::FILE* out) {
  fmt::print(out, "align-batch doctor\n");
  fmt::print(out, "  cores          {} online, {} usable by this process\n", r.cores_online, r.cores_usable);
  if (r.meminfo) {
    fmt::print(out, "  memory         MemTotal {}, MemAvailable {}, swap {}\n", opt_bytes(r.meminfo->mem_total_bytes),
               opt_bytes(r.meminfo->mem_available_bytes),
               r.meminfo->swap_total_bytes.value_or(0) ? format_bytes(*r.meminfo->swap_total_bytes) : "none");
  } else {
    fmt::print(out, "  memory         /proc/meminfo unreadable\n");
  }
  if (r.cgroup.cgroup) {
    const auto& c = *r.cgroup.cgroup;
    const auto& g = *r.cgroup_reading;
    fmt::print(out, "  cgroup         v{} {}\n", c.version == CgroupVersion::kV1 ? 1 : 2, c.path);
    fmt::print(out, "                 {}\n", c.dir.string());
    fmt::print(out, "                 limit {}, usage {}, OOM kills {}\n", opt_bytes(g.limit_bytes, "none"),
               opt_bytes(g.usage_bytes), g.oom_kill_count ? std::to_string(*g.oom_kill_count) : "unknown");
    if (c.version == CgroupVersion::kV1)
      fmt::print(out, "                 memory+swap limit {}\n", opt_bytes(g.memsw_limit_bytes, "none"));
    else
      fmt::print(out, "                 swap limit {}\n", opt_bytes(g.swap_limit_bytes, "none"));
  } else {
    fmt::print(out, "  cgroup         none: {}\n", r.cgroup.reason);
  }
  if (r.psi) {
    fmt::print(out, "  pressure       some {:.2f}% full {}% over 10 s ({})\n", r.psi->some_avg10,
               r.psi->has_full ? fmt::format("{:.2f}", r.psi->full_avg10) : std::string("n/a"), r.psi_source);
  } else {
    fmt::print(out, "  pressure       unavailable (no PSI in this kernel)\n");
  }
  if (r.gpu.available) {
    for (const auto& d : r.gpu.devices)
      fmt::print(out, "  GPU {}          {}: {} total, {} used\n", d.index, d.name, format_bytes(d.total_bytes),
                 format_bytes(d.used_bytes));
  } else {
    fmt::print(out, "  GPUs (NVML)    unavailable: {}\n", r.gpu.reason);
  }
  if (r.budget.ok()) {
    if (r.budget->ceiling_source == "--mem-budget") {
      fmt::print(out, "  budget         {} (--mem-budget; the {} limit less the {} reserve would allow {})\n",
                 format_bytes(r.budget->effective_bytes), format_bytes(r.budget->limit_bytes),
                 format_bytes(r.budget->reserve_bytes), format_bytes(r.budget->limit_bytes - r.budget->reserve_bytes));
    } else {
      fmt::print(out, "  budget         {} = {} {} - reserve {}\n", format_bytes(r.budget->effective_bytes),
                 r.budget->ceiling_source, format_bytes(r.budget->limit_bytes), format_bytes(r.budget->reserve_bytes));
    }
  } else {
    fmt::print(out, "  budget         none: {}\n", r.budget.error());
  }
  if (!r.warnings.empty()) {
    fmt::print(out, "warnings:\n");
    for (const auto& w : r.warnings) fmt::print(out, "  - {}\n", w);
  }
}

}  // namespace

int run_doctor(const DoctorFlags& flags, std::FILE* out, std::FILE* err) {
  auto inputs = parse_budget_flags(flags.mem_budget, flags.reserve);
  if (!inputs) {
    fmt::print(err, "align-batch doctor: {}\n", inputs.error());
    return kExitCannotRun;
  }
  MemoryReport report = gather_memory_report(inputs.value(), flags.root);
  if (flags.json) {
    fmt::print(out, "{}\n", to_json(report).dump(2));
  } else {
    print_text(report, out);
  }
  if (!report.budget.ok()) {
    fmt::print(err, "align-batch doctor: {}\n", report.budget.error());
    return kExitCannotRun;
  }
  return kExitOk;
}

void add_doctor_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<DoctorFlags>();
  CLI::App* cmd = app.add_subcommand(
      "doctor", "Show cores, memory, cgroup limit, pressure and GPUs as align-batch sees them, and the memory budget");
  cmd->add_option("--mem-budget", flags->mem_budget,
                  "memory budget for all workers together: 12G, 12GiB, 800M, 1.5T, plain bytes, or 75% of the limit");
  cmd->add_option("--reserve", flags->reserve,
                  "memory kept free below the limit (cgroup or MemTotal); default 5% of it, within 256 MiB..2 GiB");
  cmd->add_flag("--json", flags->json, "print the report as JSON");
  cmd->footer("Exit status: 0 report printed; 2 bad --mem-budget/--reserve, or no budget left after the reserve.\n");
  cmd->callback([flags, &exit_code] { exit_code = run_doctor(*flags, stdout, stderr); });
}

}  // namespace ab
