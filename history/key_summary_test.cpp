// summarize_key tests: the walk-forward error is measured, not assumed.
#include "history/key_summary.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>

namespace {

// Jobs following peak = 1 GB + 20 × size, times (1 + noise). `oracle` gets, for the newest 50,
// the error that knowing the law exactly would make: the floor any estimator can reach.
std::vector<ab::JobRow> jobs_from_law(std::size_t n, double noise_sd, std::uint64_t seed,
                                      std::vector<double>* oracle = nullptr) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> size(1e6, 100e6);
  std::normal_distribution<double> noise(0, noise_sd);
  std::vector<ab::JobRow> jobs;
  for (std::size_t i = 0; i < n; ++i) {
    ab::JobRow j;
    j.id = static_cast<std::int64_t>(i + 1);
    j.run_id = static_cast<std::int64_t>(i / 40 + 1);  // 40 jobs per run
    j.finished_at_ms = 1000 + static_cast<std::int64_t>(i);
    j.input_size_bytes = static_cast<std::uint64_t>(size(rng));
    const double e = noise(rng);
    j.peak_pss_bytes = static_cast<std::uint64_t>(
        (1e9 + 20.0 * static_cast<double>(j.input_size_bytes)) * (1 + e));
    if (oracle && i + 50 >= n) oracle->push_back(std::fabs(e) / (1 + e));
    jobs.push_back(j);
  }
  return jobs;
}

}  // namespace

TEST_CASE("walk-forward error on a 3%-noise law: as small as knowing the law, >= 90% covered") {
  std::vector<double> oracle;
  auto jobs = jobs_from_law(200, 0.03, 1, &oracle);
  std::nth_element(oracle.begin(), oracle.begin() + 25, oracle.end());
  const double oracle_median = oracle[25];
  jobs[10].status = ab::JobStatus::kFailed;  // not ok: neither fitted nor evaluated
  jobs[10].peak_pss_bytes = 1;
  const auto s = ab::summarize_key({"ctc:k", 200, 199, 1199}, jobs);
  REQUIRE(s.size_fit);
  CHECK(s.size_fit->ratio == doctest::Approx(20).epsilon(0.05));
  CHECK(s.evaluated_jobs == ab::kDefaultEvaluatedJobs);
  REQUIRE(s.median_abs_error);
  MESSAGE("walk-forward: median |error| " << *s.median_abs_error << " (knowing the law: "
          << oracle_median << "), coverage " << *s.coverage);
  CHECK(*s.median_abs_error < 1.2 * oracle_median);
  CHECK(*s.median_abs_error > 0.8 * oracle_median);  // noise cannot be predicted away
  CHECK(*s.coverage >= 0.9);
}

TEST_CASE("the error grows with the noise: 15% noise measures worse than 3%") {
  const auto tight = ab::summarize_key({"k", 200, 200, 0}, jobs_from_law(200, 0.03, 2));
  const auto loose = ab::summarize_key({"k", 200, 200, 0}, jobs_from_law(200, 0.15, 2));
  CHECK(*loose.median_abs_error > 3 * *tight.median_abs_error);
}

TEST_CASE("a key with one ok job: nothing to evaluate yet; none: no figures") {
  auto one = jobs_from_law(1, 0.03, 3);
  const auto s = ab::summarize_key({"k", 1, 1, 0}, one);
  CHECK(s.evaluated_jobs == 0);
  CHECK_FALSE(s.median_abs_error);
  CHECK(s.median_peak_bytes == one[0].peak_pss_bytes);
  const auto none = ab::summarize_key({"k", 0, 0, 0}, {});
  CHECK(none.median_peak_bytes == 0);
  CHECK_FALSE(none.size_fit);
}
