// Tests for the effective budget arithmetic and the default reserve.
#include "memguard/budget.h"

#include <doctest/doctest.h>

namespace ab {
namespace {
constexpr std::uint64_t kGiB = 1ull << 30, kMiB = 1ull << 20;
BudgetSpec bytes(std::uint64_t b) { return BudgetSpec{b, 0, false}; }
BudgetSpec percent(double p) { return BudgetSpec{0, p, true}; }
}  // namespace

TEST_CASE("default reserve: 5% of the limit within [256 MiB, 2 GiB], at most half the limit") {
  CHECK(default_reserve_bytes(24 * kGiB) == 24 * kGiB / 20);  // 1.2 GiB
  CHECK(default_reserve_bytes(3 * kGiB) == 256 * kMiB);
  CHECK(default_reserve_bytes(256 * kGiB) == 2 * kGiB);
  CHECK(default_reserve_bytes(300 * kMiB) == 150 * kMiB);
}

TEST_CASE("effective budget: the least of flag, cgroup and MemTotal, with the reserve below the limit") {
  // No flag, no cgroup: MemTotal minus the default reserve.
  auto a = effective_budget({std::nullopt, std::nullopt, std::nullopt, 24 * kGiB});
  REQUIRE(a.ok());
  CHECK(a->limit_bytes == 24 * kGiB);
  CHECK(a->ceiling_source == "MemTotal");
  CHECK(a->effective_bytes == 24 * kGiB - 24 * kGiB / 20);

  // A 3 GiB cgroup on a 24 GiB machine binds.
  auto b = effective_budget({std::nullopt, std::nullopt, 3 * kGiB, 24 * kGiB});
  CHECK(b->ceiling_source == "cgroup limit");
  CHECK(b->limit_bytes == 3 * kGiB);
  CHECK(b->effective_bytes == 3 * kGiB - 256 * kMiB);

  // A cgroup above MemTotal does not.
  auto c = effective_budget({std::nullopt, std::nullopt, 64 * kGiB, 24 * kGiB});
  CHECK(c->ceiling_source == "MemTotal");
  CHECK(c->limit_bytes == 24 * kGiB);

  // A flag below limit - reserve is taken as is.
  auto d = effective_budget({bytes(1 * kGiB), std::nullopt, std::nullopt, 24 * kGiB});
  REQUIRE(d.ok());
  CHECK(d->ceiling_source == "--mem-budget");
  CHECK(d->effective_bytes == 1 * kGiB);

  // A flag above the cgroup limit is clipped to limit - reserve.
  auto e = effective_budget({bytes(12 * kGiB), bytes(512 * kMiB), 3 * kGiB, 24 * kGiB});
  CHECK(e->ceiling_source == "cgroup limit");
  CHECK(e->effective_bytes == 3 * kGiB - 512 * kMiB);

  // 75% is of min(cgroup, MemTotal); an explicit reserve as a percentage too.
  auto f = effective_budget({percent(75), percent(10), 4 * kGiB, 24 * kGiB});
  CHECK(f->effective_bytes == 3 * kGiB);
  CHECK(f->reserve_bytes == 4 * kGiB / 10);
  auto g = effective_budget({percent(100), percent(10), 4 * kGiB, 24 * kGiB});
  CHECK(g->effective_bytes == 4 * kGiB - 4 * kGiB / 10);
}

TEST_CASE("effective budget: a reserve that leaves nothing is an error naming both figures") {
  auto a = effective_budget({std::nullopt, bytes(4 * kGiB), 4 * kGiB, 24 * kGiB});
  CHECK_FALSE(a.ok());
  CHECK(a.error() == "--reserve 4.0 GiB leaves nothing of the 4.0 GiB cgroup limit; lower --reserve");
  auto b = effective_budget({std::nullopt, percent(100), std::nullopt, 8 * kGiB});
  CHECK_FALSE(b.ok());
}

TEST_CASE("effective budget: less than any worker needs is an error; a size without a unit is bytes") {
  auto a = effective_budget({bytes(800), std::nullopt, std::nullopt, 24 * kGiB});  // "--mem-budget 800"
  CHECK_FALSE(a.ok());
  CHECK(a.error() == "--mem-budget 800 B is less than the 16.0 MiB any worker needs; a size takes a unit, e.g. 800M or 12G");
  CHECK(effective_budget({bytes(kMinBudgetBytes), std::nullopt, std::nullopt, 24 * kGiB}).ok());
  // A 24 MiB cgroup keeps half as its reserve: 12 MiB is left.
  auto c = effective_budget({std::nullopt, std::nullopt, 24 * kMiB, 24 * kGiB});
  CHECK_FALSE(c.ok());
  CHECK(c.error() == "the 24.0 MiB cgroup limit less the 12.0 MiB reserve leaves 12.0 MiB, less than the 16.0 MiB any "
                   "worker needs; lower --reserve");
}


TEST_CASE("parse_budget_flags: both flags, either, none; the error names the flag") {
  auto both = parse_budget_flags("8G", "10%");
  REQUIRE(both.ok());
  REQUIRE(both->mem_budget);
  CHECK(both->mem_budget->bytes == 8 * kGiB);
  REQUIRE(both->reserve);
  CHECK(both->reserve->is_percent);
  auto none = parse_budget_flags("", "");
  REQUIRE(none.ok());
  CHECK_FALSE(none->mem_budget);
  CHECK_FALSE(none->reserve);
  auto bad = parse_budget_flags("1G", "lots");
  CHECK_FALSE(bad.ok());
  CHECK(bad.error().find("--reserve 'lots'") != std::string::npos);
}

}  // namespace ab
