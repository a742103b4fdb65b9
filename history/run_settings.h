// RunSettings: the settings a run had in force, as history records them with the run and as
// replay, `history runs` and the report read them back: one typed struct, one JSON form.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ab {

struct RunSettings {
  /// The JSON form's version, recorded as "settings_version". Version 0 is a run recorded before
  /// settings were typed (the same keys, untyped; some missing): it reads back with what it has.
  static constexpr int kVersion = 1;
  int version = kVersion;

  std::string executor = "local";        ///< "local" or "slurm"
  std::optional<bool> builtin_engine;    ///< the built-in engine, or an external command; none: unknown
  std::string model;                     ///< the built-in engine's model file; empty for a command
  std::vector<std::string> command;      ///< the external command template; empty for the engine
  std::string workers;                   ///< `--workers` as given: "auto" or a number
  std::optional<std::uint32_t> workers_cap;  ///< the cap in force; 0: memory alone decides
  std::optional<std::int64_t> sample_ms;     ///< the memory sampling interval
  std::optional<double> high_water;          ///< fraction of the budget jobs start under
  std::optional<double> margin;              ///< prediction scale in force (`--margin`)
  std::optional<std::uint32_t> retries;
  std::string mem_budget;                ///< `--mem-budget` as given; empty: none
  std::string reserve;                   ///< `--reserve` as given
  std::string budget_source;             ///< what set the budget's ceiling (cgroup, MemTotal, flag)
  std::optional<std::uint64_t> limit_bytes;         ///< the ceiling before the reserve
  std::optional<std::uint64_t> reserve_bytes;       ///< the reserve taken off it
  std::optional<std::uint64_t> cgroup_limit_bytes;  ///< none: no cgroup limit
  std::uint64_t vram_budget_bytes = 0;
  std::string task;                      ///< auto, align or transcribe
  std::string timeout;                   ///< `--timeout` as given
  std::string out;                       ///< the output directory
  bool force = false;
  std::vector<std::string> tuned;        ///< tuned settings applied from history (`replay --apply`)
  std::optional<bool> shared_weights;
  std::optional<std::uint32_t> max_trellis_mib;

  /// "command ARGS..." or "model PATH"; empty when neither was recorded.
  std::string engine_text() const;
};

/// The JSON form history stores (every field, absent optionals as null, plus "settings_version").
nlohmann::json to_json(const RunSettings& s);
/// Reads any recorded form: a field of the wrong type or missing is left unset. Version-0 runs
/// without "workers_cap": `--workers auto` with the built-in engine meant one worker per core, so
/// `recorded_cores` supplies the cap.
RunSettings run_settings_from_json(const nlohmann::json& j, std::uint32_t recorded_cores);

}  // namespace ab
