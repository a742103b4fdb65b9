// Tests of the main command's pure parsers: durations, --workers, and the split at "--".
#include "orchestrator/cli/run_command.h"

#include <doctest/doctest.h>

#include "worker/worker_loop.h"  // header only: the worker's config defaults

TEST_CASE("parse_duration_ms accepts seconds, minutes, hours and milliseconds") {
  CHECK(ab::parse_duration_ms("90") == 90000);
  CHECK(ab::parse_duration_ms("90s") == 90000);
  CHECK(ab::parse_duration_ms("1.5m") == 90000);
  CHECK(ab::parse_duration_ms("2h") == 7200000);
  CHECK(ab::parse_duration_ms("500ms") == 500);
  CHECK(ab::parse_duration_ms("10min") == 600000);
  for (const char* bad : {"", "soon", "0", "-5s", "5 s", "5d", "1e3", "0x10", "nan", "inf", "0.0001ms"}) {
    CAPTURE(bad);
    CHECK_FALSE(ab::parse_duration_ms(bad).has_value());
  }
}

TEST_CASE("parse_workers: auto is 0 (memory decides), N >= 1 is a bound") {
  CHECK(ab::parse_workers("auto") == 0u);
  CHECK(ab::parse_workers("1") == 1u);
  CHECK(ab::parse_workers("64") == 64u);
  for (const char* bad : {"0", "-1", "", "two", "4.5", "1234567", " 4"}) {
    CAPTURE(bad);
    CHECK_FALSE(ab::parse_workers(bad).has_value());
  }
}

TEST_CASE("split_at_dashdash: options before the first --, the command after, later -- kept") {
  const char* argv[] = {"align-batch", "--workers", "2", "corpus", "--", "tool", "--", "-x", "{in}"};
  auto s = ab::split_at_dashdash(9, argv);
  CHECK(s.dashdash);
  CHECK(s.cli == std::vector<std::string>{"align-batch", "--workers", "2", "corpus"});
  CHECK(s.command == std::vector<std::string>{"tool", "--", "-x", "{in}"});
  const char* plain[] = {"align-batch", "corpus"};
  auto p = ab::split_at_dashdash(2, plain);
  CHECK_FALSE(p.dashdash);
  CHECK(p.command.empty());
}

TEST_CASE("default_vram_budget: free memory less max(256 MiB, 5%) per device, summed; none without a GPU") {
  constexpr std::uint64_t kMiB = 1ull << 20;
  ab::NvmlProbe none;
  none.reason = "libnvidia-ml.so.1 not found (no NVIDIA driver)";
  auto d = ab::default_vram_budget(none);
  CHECK(d.budget_bytes == 0);
  CHECK(d.why.find("no NVIDIA driver") != std::string::npos);

  ab::NvmlProbe empty;
  empty.available = true;
  CHECK(ab::default_vram_budget(empty).budget_bytes == 0);

  ab::NvmlProbe two;
  two.available = true;
  // 24 GiB with 1 GiB in use: reserve 5% = 1228.8 MiB; 4 GiB idle: reserve the 256 MiB floor
  // (5% would be 204.8 MiB).
  two.devices.push_back({0, "A10", 24576 * kMiB, 1024 * kMiB});
  two.devices.push_back({1, "T400", 4096 * kMiB, 0});
  d = ab::default_vram_budget(two);
  const std::uint64_t first = 24576 * kMiB - 1024 * kMiB - 24576 * kMiB / 20;
  const std::uint64_t second = 4096 * kMiB - 256 * kMiB;
  CHECK(d.budget_bytes == first + second);
  CHECK(d.why.find("GPU 0 A10") != std::string::npos);
  CHECK(d.why.find("GPU 1 T400") != std::string::npos);

  // A device nearly full (or reporting more used than total) adds nothing, never wraps around.
  ab::NvmlProbe full;
  full.available = true;
  full.devices.push_back({0, "busy", 8192 * kMiB, 8000 * kMiB});
  full.devices.push_back({1, "odd", 1024 * kMiB, 2048 * kMiB});
  CHECK(ab::default_vram_budget(full).budget_bytes == 0);
}

TEST_CASE("model_job_key: a --max-trellis-mib other than the default is a key of its own") {
  const std::string key = "ctc:0123abcd";
  CHECK(ab::model_job_key(key, 0) == key);  // not given
  CHECK(ab::model_job_key(key, ab::kDefaultMaxTrellisMib) == key);
  // The parent's default is the worker's own (a header-only read of its config, no worker linked),
  // so a key without ":trellis=" means the same cap on either side.
  CHECK(ab::WorkerConfig{}.max_trellis_bytes == std::uint64_t{ab::kDefaultMaxTrellisMib} << 20);
  CHECK(ab::model_job_key(key, 512) == "ctc:0123abcd:trellis=512");
  CHECK(ab::model_job_key(key, 1) == "ctc:0123abcd:trellis=1");
  CHECK(ab::model_job_key(key, 1) != ab::model_job_key(key, 2));
  // Private weights: each worker's peak holds the whole model, a shared worker's does not.
  CHECK(ab::model_job_key(key, 0, /*shared_weights=*/false) == "ctc:0123abcd:weights=private");
  CHECK(ab::model_job_key(key, 512, false) == "ctc:0123abcd:trellis=512:weights=private");
  CHECK(ab::model_job_key(key, 0, true) == key);
}

TEST_CASE("closest_name: a likely typo's option, nothing for a stranger") {
  const std::vector<std::string> names = {"workers", "mem-budget", "reserve", "max-trellis-mib", "model"};
  CHECK(ab::closest_name("workerz", names) == "workers");
  CHECK(ab::closest_name("mem-budgt", names) == "mem-budget");
  CHECK(ab::closest_name("max-trelis-mb", names) == "max-trellis-mib");
  CHECK(ab::closest_name("modle", names) == "model");
  CHECK(ab::closest_name("colour", names).empty());
  CHECK(ab::closest_name("x", {}).empty());
}
