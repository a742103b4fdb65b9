#include "history/run_settings.h"

#include <doctest/doctest.h>

TEST_CASE("run settings: what a run records reads back as the same struct") {
  ab::RunSettings s;
  s.builtin_engine = true;
  s.model = "/m/en.pt";
  s.workers = "auto";
  s.workers_cap = 2;
  s.sample_ms = 80;
  s.high_water = 0.85;
  s.margin = 1.15;
  s.retries = 1;
  s.mem_budget = "75%";
  s.budget_source = "cgroup";
  s.limit_bytes = 1000;
  s.reserve_bytes = 10;
  s.cgroup_limit_bytes = 1000;
  s.task = "align";
  s.tuned = {"--workers 2"};
  s.shared_weights = true;
  s.max_trellis_mib = 64;
  const ab::RunSettings back = ab::run_settings_from_json(nlohmann::json::parse(to_json(s).dump()), 8);
  CHECK(back.version == ab::RunSettings::kVersion);
  CHECK(to_json(back) == to_json(s));
  CHECK(back.workers_cap == 2u);  // recorded, not re-derived from the 8 cores
  CHECK(back.engine_text() == "model /m/en.pt");
  ab::RunSettings c;
  c.builtin_engine = false;
  c.command = {"mytool", "{in}"};
  CHECK(ab::run_settings_from_json(to_json(c), 2).engine_text() == "command mytool {in}");
  CHECK_FALSE(ab::run_settings_from_json(to_json(c), 2).cgroup_limit_bytes.has_value());
}

TEST_CASE("run settings: runs recorded before the settings were typed read back with what they have") {
  // No workers_cap or engine: the built-in engine is the one without a command, and its `auto`
  // meant one worker per recorded core.
  ab::RunSettings r = ab::run_settings_from_json({{"workers", "auto"}, {"command", nlohmann::json::array()}}, 2);
  CHECK(r.version == 0);
  CHECK(r.builtin_engine == true);
  CHECK(r.workers_cap == 2u);
  CHECK_FALSE(r.sample_ms.has_value());
  CHECK_FALSE(r.high_water.has_value());
  // An external command with auto: memory alone.
  r = ab::run_settings_from_json({{"workers", "auto"}, {"command", {"mytool", "{in}"}}}, 2);
  CHECK(r.builtin_engine == false);
  CHECK(r.workers_cap == 0u);
  r = ab::run_settings_from_json({{"workers", "6"}, {"engine", "command"}}, 2);
  CHECK(r.workers_cap == 6u);
  // Recorded as strings then; wrong types and garbage are left unset, never thrown.
  r = ab::run_settings_from_json({{"shared_weights", "off"}, {"margin", "x"}, {"retries", nullptr}}, 2);
  CHECK(r.shared_weights == false);
  CHECK_FALSE(r.margin.has_value());
  CHECK_FALSE(r.retries.has_value());
  CHECK_FALSE(ab::run_settings_from_json(nlohmann::json("not an object"), 2).workers_cap.has_value());
}
