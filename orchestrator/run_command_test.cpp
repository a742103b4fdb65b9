// Tests of the main command's pure parsers: durations, --workers, and the split at "--".
#include "orchestrator/run_command.h"

#include <doctest/doctest.h>

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
