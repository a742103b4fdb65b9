// Tests for parse_size_bytes, parse_budget_spec and format_bytes.
#include "memguard/size.h"

#include <doctest/doctest.h>

namespace ab {

TEST_CASE("parse_size_bytes accepts binary units and plain bytes") {
  struct Row {
    const char* text;
    std::uint64_t bytes;
  };
  const Row rows[] = {
      {"12G", 12ull << 30},        {"12GiB", 12ull << 30},     {"12GB", 12ull << 30},
      {"12g", 12ull << 30},        {"800M", 800ull << 20},     {"800MiB", 800ull << 20},
      {"1.5T", 3ull << 39},        {"512K", 512ull << 10},     {"512k", 512ull << 10},
      {"1048576", 1048576},        {"1048576B", 1048576},      {" 2G ", 2ull << 30},
      {"0.5K", 512},               {"1.", 1},                  {".5G", 1ull << 29},
      {"16777215T", 16777215ull << 40},  {"18446744073709551615", 18446744073709551615ull},
  };
  for (const auto& r : rows) {
    CAPTURE(r.text);
    auto v = parse_size_bytes(r.text);
    REQUIRE(v.has_value());
    CHECK(*v == r.bytes);
  }
}

TEST_CASE("parse_size_bytes rejects hostile text") {
  const char* bad[] = {"",      " ",       "G",        "12 parsecs", "-1G",    "+5G",   "0",      "0G",
                       "0.0M",  "nan",     "inf",      "1e9",        "12GiBs", "12X",   "1..5G",  "12 G B",
                       "0.1",   "16777216T",  "18446744073709551616", "99999999999999999999999", "12%", "G12"};
  for (const char* t : bad) {
    CAPTURE(t);
    CHECK_FALSE(parse_size_bytes(t).has_value());
  }
}

TEST_CASE("parse_budget_spec: sizes, percentages, and messages showing accepted forms") {
  auto a = parse_budget_spec("75%", "--mem-budget");
  REQUIRE(a.ok());
  CHECK(a->is_percent);
  CHECK(a->percent == doctest::Approx(75.0));
  CHECK(resolve_budget_spec(a.value(), 4ull << 30) == 3ull << 30);

  auto b = parse_budget_spec("12.5%", "--reserve");
  REQUIRE(b.ok());
  CHECK(resolve_budget_spec(b.value(), 8ull << 30) == 1ull << 30);

  auto c = parse_budget_spec("3G", "--mem-budget");
  REQUIRE(c.ok());
  CHECK_FALSE(c->is_percent);
  CHECK(resolve_budget_spec(c.value(), 1) == 3ull << 30);

  auto d = parse_budget_spec("12 parsecs", "--mem-budget");
  CHECK_FALSE(d.ok());
  CHECK(d.error() == "--mem-budget '12 parsecs': not a size; use e.g. 12G, 800M, 1.5T or 75%");

  const char* bad[] = {"0%", "101%", "-5%", "nan%", "%", "75%%", "0", "0G", "1e3%", "100.01%", "", "99999999999T"};
  for (const char* t : bad) {
    CAPTURE(t);
    auto r = parse_budget_spec(t, "--mem-budget");
    CHECK_FALSE(r.ok());
    CHECK(r.error().find("use e.g. 12G, 800M, 1.5T or 75%") != std::string::npos);
    CHECK(r.error().rfind("--mem-budget '", 0) == 0);
  }
  CHECK(parse_budget_spec("101%", "--mem-budget").error().find("at most 100") != std::string::npos);
  CHECK(parse_budget_spec("0G", "--mem-budget").error().find("above zero") != std::string::npos);
  CHECK(parse_budget_spec("100%", "--mem-budget").ok());
}

TEST_CASE("format_bytes prints one decimal in binary units") {
  CHECK(format_bytes(0) == "0 B");
  CHECK(format_bytes(1023) == "1023 B");
  CHECK(format_bytes(1536) == "1.5 KiB");
  CHECK(format_bytes(800ull << 20) == "800.0 MiB");
  CHECK(format_bytes(3ull << 30) == "3.0 GiB");
  CHECK(format_bytes(3ull << 39) == "1.5 TiB");
  CHECK(format_bytes(18446744073709551615ull) == "16.0 EiB");
}

}  // namespace ab
