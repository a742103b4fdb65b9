#include "history/run_settings.h"

#include <cstdlib>

namespace ab {

namespace {

template <class T>
nlohmann::json optional_json(const std::optional<T>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

// One field of the recorded form, read only when present with the right type.
struct Reader {
  const nlohmann::json& j;
  const nlohmann::json* find(const char* name) const {
    if (!j.is_object()) return nullptr;
    auto it = j.find(name);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  }
  void text(const char* name, std::string& out) const {
    if (const auto* v = find(name); v && v->is_string()) out = v->get<std::string>();
  }
  void flag(const char* name, bool& out) const {
    if (const auto* v = find(name); v && v->is_boolean()) out = v->get<bool>();
  }
  void flag(const char* name, std::optional<bool>& out) const {
    if (const auto* v = find(name); v && v->is_boolean()) out = v->get<bool>();
  }
  template <class T>
  void number(const char* name, std::optional<T>& out) const {
    if (const auto* v = find(name); v && v->is_number()) out = v->get<T>();
  }
  void texts(const char* name, std::vector<std::string>& out) const {
    const auto* v = find(name);
    if (!v || !v->is_array()) return;
    out.clear();
    for (const auto& a : *v)
      if (a.is_string()) out.push_back(a.get<std::string>());
  }
};

}  // namespace

std::string RunSettings::engine_text() const {
  if (!command.empty()) {
    std::string text = "command";
    for (const auto& a : command) text += " " + a;
    return text;
  }
  if (!model.empty()) return "model " + model;
  return {};
}

nlohmann::json to_json(const RunSettings& s) {
  return {{"settings_version", s.version},
          {"executor", s.executor},
          {"engine", s.builtin_engine ? nlohmann::json(*s.builtin_engine ? "builtin" : "command") : nlohmann::json(nullptr)},
          {"model", s.model.empty() ? nlohmann::json(nullptr) : nlohmann::json(s.model)},
          {"command", s.command},
          {"workers", s.workers},
          {"workers_cap", optional_json(s.workers_cap)},
          {"sample_ms", optional_json(s.sample_ms)},
          {"high_water", optional_json(s.high_water)},
          {"margin", optional_json(s.margin)},
          {"retries", optional_json(s.retries)},
          {"mem_budget", s.mem_budget},
          {"reserve", s.reserve},
          {"budget_source", s.budget_source},
          {"limit_bytes", optional_json(s.limit_bytes)},
          {"reserve_bytes", optional_json(s.reserve_bytes)},
          {"cgroup_limit_bytes", optional_json(s.cgroup_limit_bytes)},
          {"vram_budget_bytes", s.vram_budget_bytes},
          {"task", s.task},
          {"timeout", s.timeout},
          {"out", s.out},
          {"force", s.force},
          {"tuned", s.tuned},
          {"shared_weights", optional_json(s.shared_weights)},
          {"max_trellis_mib", optional_json(s.max_trellis_mib)}};
}

RunSettings run_settings_from_json(const nlohmann::json& j, std::uint32_t recorded_cores) {
  RunSettings s;
  const Reader r{j};
  std::optional<int> version;
  r.number("settings_version", version);
  s.version = version.value_or(0);
  r.text("executor", s.executor);
  if (const auto* e = r.find("engine"); e && e->is_string()) s.builtin_engine = e->get<std::string>() == "builtin";
  r.text("model", s.model);
  r.texts("command", s.command);
  // Runs recorded before "engine" was: the built-in engine is the one without a command.
  if (!s.builtin_engine)
    if (const auto* c = r.find("command"); c && c->is_array()) s.builtin_engine = c->empty();
  r.text("workers", s.workers);
  r.number("workers_cap", s.workers_cap);
  if (!s.workers_cap && !s.workers.empty()) {
    // Before workers_cap was recorded: a number was the cap; `auto` was memory alone for a
    // command and one worker per core for the built-in engine.
    char* end = nullptr;
    const unsigned long n = std::strtoul(s.workers.c_str(), &end, 10);
    if (s.workers == "auto")
      s.workers_cap = s.builtin_engine.value_or(false) && recorded_cores ? recorded_cores : 0u;
    else if (end && *end == '\0' && n > 0)
      s.workers_cap = static_cast<std::uint32_t>(n);
  }
  r.number("sample_ms", s.sample_ms);
  r.number("high_water", s.high_water);
  r.number("margin", s.margin);
  r.number("retries", s.retries);
  r.text("mem_budget", s.mem_budget);
  r.text("reserve", s.reserve);
  r.text("budget_source", s.budget_source);
  r.number("limit_bytes", s.limit_bytes);
  r.number("reserve_bytes", s.reserve_bytes);
  r.number("cgroup_limit_bytes", s.cgroup_limit_bytes);
  std::optional<std::uint64_t> vram;
  r.number("vram_budget_bytes", vram);
  s.vram_budget_bytes = vram.value_or(0);
  r.text("task", s.task);
  r.text("timeout", s.timeout);
  r.text("out", s.out);
  r.flag("force", s.force);
  r.texts("tuned", s.tuned);
  r.flag("shared_weights", s.shared_weights);
  if (const auto* w = r.find("shared_weights"); w && w->is_string()) s.shared_weights = w->get<std::string>() == "on";
  r.number("max_trellis_mib", s.max_trellis_mib);
  return s;
}

}  // namespace ab
