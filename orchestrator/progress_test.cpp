// Tests of Progress's output: which job ends get a line of their own in each mode.
#include "orchestrator/progress.h"

#include <doctest/doctest.h>

#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/testutil/read_all.h"

using namespace ab;

TEST_CASE("on a terminal a done file gets no line of its own, unless it was band-limited") {
  std::FILE* log = std::tmpfile();
  REQUIRE(log != nullptr);
  Progress progress(Progress::Mode::kTty, log, log);
  ProgressState state;
  state.total = 2;
  progress.job_ended("a.wav", "done", "", 1 << 20, 1.5, state);
  progress.job_ended("b.wav", "done", "aligned within a limited search band (may be off): raise --max-trellis-mib",
                     2 << 20, 2.5, state, true);
  const std::string text = test::read_all_and_close(log);
  CHECK(text.find("a.wav") == std::string::npos);
  CHECK(text.find("done   b.wav (peak 2.0 MiB, 2.5 s): aligned within a limited search band") != std::string::npos);
}

TEST_CASE("every JSON end event says band_limited, true only where the worker said so") {
  std::FILE* events = std::tmpfile();
  REQUIRE(events != nullptr);
  Progress progress(Progress::Mode::kJson, stderr, events);
  ProgressState state;
  progress.job_ended("a.wav", "failed", "bad", 0, 0, state);
  progress.job_ended("b.wav", "done", "", 0, 0, state, true);
  const std::string text = test::read_all_and_close(events);
  const auto nl = text.find('\n');
  REQUIRE(nl != std::string::npos);
  const auto first = nlohmann::json::parse(text.substr(0, nl));
  const auto second = nlohmann::json::parse(text.substr(nl + 1));
  CHECK(first["band_limited"] == false);
  CHECK(second["band_limited"] == true);
  CHECK(second["status"] == "done");
}
