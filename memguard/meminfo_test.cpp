// Table tests for the /proc/meminfo and PSI parsers.
#include "memguard/meminfo.h"
#include "memguard/psi.h"

#include <doctest/doctest.h>

#include "tests/testutil/temp_dir.h"

namespace ab {

// The first lines of `cat /proc/meminfo` on this machine (24 GiB, no swap), captured.
constexpr const char* kMeminfo = R"(MemTotal:       24684092 kB
MemFree:        24229276 kB
MemAvailable:   24242996 kB
Buffers:            3512 kB
Cached:            83348 kB
SwapCached:            0 kB
Active:            41720 kB
Inactive:          41564 kB
SwapTotal:             0 kB
SwapFree:              0 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
DirectMap1G:    25165824 kB
)";

TEST_CASE("parse_meminfo on real text") {
  auto m = parse_meminfo(kMeminfo);
  REQUIRE(m);
  CHECK(*m->mem_total_bytes == 24684092ull * 1024);
  CHECK(*m->mem_free_bytes == 24229276ull * 1024);
  CHECK(*m->mem_available_bytes == 24242996ull * 1024);
  CHECK(*m->swap_total_bytes == 0);
  CHECK(*m->swap_free_bytes == 0);
}

TEST_CASE("parse_meminfo with hostile text") {
  // Linux before 3.14: no MemAvailable. The field is empty, the rest still reads.
  auto old = parse_meminfo("MemTotal: 1000 kB\nMemFree: 500 kB\n");
  REQUIRE(old);
  CHECK_FALSE(old->mem_available_bytes);
  CHECK(*old->mem_free_bytes == 500 * 1024);
  // A malformed field is dropped, not guessed.
  auto bad_avail = parse_meminfo("MemTotal: 1000 kB\nMemAvailable: 12x kB\n");
  REQUIRE(bad_avail);
  CHECK_FALSE(bad_avail->mem_available_bytes);
  // Without a sane MemTotal nothing is trusted.
  const char* bad[] = {"", "MemFree: 1 kB\n", "MemTotal: kB\n", "MemTotal: 0 kB\n", "MemTotal: -5 kB\n",
                       "MemTotal: 99999999999999999999 kB\n", "MemTotal: 1000 MB\n", "MemTotal: 1000"};
  for (const char* t : bad) {
    CAPTURE(t);
    CHECK_FALSE(parse_meminfo(t).has_value());
  }
  CHECK(read_meminfo("/proc")->mem_total_bytes.value_or(0) > 0);
}

TEST_CASE("parse_psi on real text and variants") {
  // Captured: `cat /proc/pressure/memory` on this machine (idle).
  auto idle = parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n");
  REQUIRE(idle);
  CHECK(idle->has_full);
  CHECK(idle->some_avg10 == 0);

  auto busy = parse_psi("some avg10=12.50 avg60=3.20 avg300=0.81 total=123456789\nfull avg10=7.25 avg60=1.00 avg300=0.20 total=98765\n");
  REQUIRE(busy);
  CHECK(busy->some_avg10 == doctest::Approx(12.5));
  CHECK(busy->some_avg300 == doctest::Approx(0.81));
  CHECK(busy->full_avg10 == doctest::Approx(7.25));
  CHECK(busy->some_total_us == 123456789);
  CHECK(busy->full_total_us == 98765);

  // Kernels before 5.13 (and CPU PSI) may have no "full" line.
  auto some_only = parse_psi("some avg10=1.00 avg60=2.00 avg300=3.00 total=4");
  REQUIRE(some_only);
  CHECK_FALSE(some_only->has_full);
  CHECK(some_only->some_avg60 == doctest::Approx(2.0));

  const char* bad[] = {"", "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
                       "some avg10=0.00 avg60=0.00 total=0\n",              // missing avg300
                       "some avg10=abc avg60=0.00 avg300=0.00 total=0\n",
                       "some avg10=150.00 avg60=0.00 avg300=0.00 total=0\n",  // above 100%
                       "some avg10=-1.00 avg60=0.00 avg300=0.00 total=0\n",
                       "some avg10=0.00 avg60=0.00 avg300=0.00 total=-3\n",
                       "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60",  // truncated
                       "some avg10 0.00 avg60=0.00 avg300=0.00 total=0\n"};
  for (const char* t : bad) {
    CAPTURE(t);
    CHECK_FALSE(parse_psi(t).has_value());
  }
  test::TempDir dir;
  CHECK_FALSE(read_psi(dir.path() / "pressure/memory"));  // kernel without PSI: absent, not an error
}

}  // namespace ab
