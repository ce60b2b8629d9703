// The report's statistics: McNemar's exact test against hand-computed tables, bootstrap intervals
// (constants, known quantiles, width, determinism) and the paired bootstrap's difference and p-value.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>

#include "harness/stats.hpp"

using colm::BootstrapOptions;

TEST_CASE("McNemar's exact p-value matches hand-computed binomial tails", "[stats]") {
  // n = 7 discordant pairs, min = 1: 2 * (C(7,0) + C(7,1)) / 2^7 = 2 * 8 / 128.
  CHECK(colm::mcnemar_exact_p(1, 6) == Approx(0.125).epsilon(1e-12));
  CHECK(colm::mcnemar_exact_p(6, 1) == Approx(0.125).epsilon(1e-12));
  // n = 10, min = 2: 2 * (1 + 10 + 45) / 1024.
  CHECK(colm::mcnemar_exact_p(2, 8) == Approx(0.109375).epsilon(1e-12));
  // n = 5, min = 0: 2 / 32.
  CHECK(colm::mcnemar_exact_p(0, 5) == Approx(0.0625).epsilon(1e-12));
  CHECK(colm::mcnemar_exact_p(10, 0) == Approx(2.0 / 1024).epsilon(1e-12));
  // Balanced or no discordant pairs: no evidence of a difference.
  CHECK(colm::mcnemar_exact_p(0, 0) == 1.0);
  CHECK(colm::mcnemar_exact_p(3, 3) == 1.0);
  CHECK(colm::mcnemar_exact_p(500, 500) == 1.0);
  // Large n stays finite (log-space sum) and tiny.
  const double p = colm::mcnemar_exact_p(0, 2000);
  CHECK(p >= 0.0);
  CHECK(p < 1e-300);
  CHECK(colm::mcnemar_exact_p(480, 520) == Approx(0.2174483).margin(1e-6));  // exact, from Python's math.comb
  CHECK_THROWS_AS(colm::mcnemar_exact_p(-1, 2), colm::Error);
}

TEST_CASE("McNemar's table is counted from paired binary outcomes", "[stats]") {
  const std::vector<double> a = {1, 1, 1, 0, 0, 1, 0, 1};
  const std::vector<double> b = {1, 0, 0, 1, 0, 1, 0, 0};
  const auto r = colm::mcnemar_exact(a, b);
  CHECK(r.both == 2);
  CHECK(r.a_only == 3);
  CHECK(r.b_only == 1);
  CHECK(r.neither == 2);
  // n = 4, min = 1: 2 * (1 + 4) / 16.
  CHECK(r.p_value == Approx(0.625).epsilon(1e-12));
  CHECK(colm::is_binary(a));
  CHECK_FALSE(colm::is_binary({0, 0.5, 1}));
  CHECK_THROWS_WITH(colm::mcnemar_exact({0, 0.5}, {1, 0}), Catch::Contains("0 or 1"));
  CHECK_THROWS_WITH(colm::mcnemar_exact({0, 1}, {1}), Catch::Contains("same length"));
}

TEST_CASE("sorted_quantile interpolates linearly (type 7)", "[stats]") {
  const std::vector<double> v = {1, 2, 3, 4, 5};
  CHECK(colm::sorted_quantile(v, 0.0) == 1.0);
  CHECK(colm::sorted_quantile(v, 0.25) == 2.0);
  CHECK(colm::sorted_quantile(v, 0.5) == 3.0);
  CHECK(colm::sorted_quantile(v, 1.0) == 5.0);
  CHECK(colm::sorted_quantile({0, 10}, 0.3) == Approx(3.0));
  CHECK_THROWS_AS(colm::sorted_quantile({}, 0.5), colm::Error);
  CHECK_THROWS_AS(colm::sorted_quantile(v, 1.5), colm::Error);
}

TEST_CASE("uniform_index stays in range and is roughly uniform", "[stats]") {
  std::mt19937_64 rng(7);
  std::vector<int> counts(10, 0);
  for (int i = 0; i < 100000; ++i) {
    const auto k = colm::uniform_index(rng, 10);
    REQUIRE(k < 10);
    ++counts[k];
  }
  for (int c : counts) CHECK(std::abs(c - 10000) < 500);  // about 5 standard deviations
  CHECK(colm::uniform_index(rng, 1) == 0);
}

TEST_CASE("the bootstrap interval of a constant is exactly [c, c]", "[stats]") {
  const std::vector<double> x(7, 0.1);  // 0.1 * 7 / 7 is not 0.1 in floating point; the shift makes it so
  const auto e = colm::bootstrap_mean(x, BootstrapOptions{500, 0.95, 3});
  CHECK(e.value == 0.1);
  CHECK(e.ci_low == 0.1);
  CHECK(e.ci_high == 0.1);
  CHECK(e.n == 7);
  CHECK(e.has_ci());
}

TEST_CASE("the bootstrap interval of a mean brackets it with the expected width", "[stats]") {
  // Bernoulli(0.3), n = 400: the standard error is sqrt(0.21 / 400) = 0.0229, a 95% interval ~0.09 wide.
  std::mt19937_64 rng(11);
  std::vector<double> x(400);
  for (auto& v : x) v = colm::uniform_index(rng, 10) < 3 ? 1.0 : 0.0;
  double mean = 0;
  for (double v : x) mean += v;
  mean /= double(x.size());
  const auto e = colm::bootstrap_mean(x, BootstrapOptions{2000, 0.95, 5});
  CHECK(e.value == Approx(mean).epsilon(1e-12));
  CHECK(e.ci_low < e.value);
  CHECK(e.ci_high > e.value);
  const double se = std::sqrt(mean * (1 - mean) / double(x.size()));
  CHECK(e.ci_high - e.ci_low == Approx(2 * 1.96 * se).epsilon(0.15));
  // A wider level gives a wider interval from the same resamples.
  const auto wide = colm::bootstrap_mean(x, BootstrapOptions{2000, 0.99, 5});
  CHECK(wide.ci_low <= e.ci_low);
  CHECK(wide.ci_high >= e.ci_high);
}

TEST_CASE("the bootstrap is deterministic for a seed and depends on it", "[stats]") {
  const std::vector<double> x = {0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1, 0.5, 0.25};
  const auto a = colm::bootstrap_mean(x, BootstrapOptions{300, 0.95, 42});
  const auto b = colm::bootstrap_mean(x, BootstrapOptions{300, 0.95, 42});
  CHECK(a.ci_low == b.ci_low);
  CHECK(a.ci_high == b.ci_high);
  bool any_differs = false;
  for (uint64_t seed = 43; seed < 48; ++seed) {
    const auto c = colm::bootstrap_mean(x, BootstrapOptions{300, 0.95, seed});
    any_differs = any_differs || c.ci_low != a.ci_low || c.ci_high != a.ci_high;
  }
  CHECK(any_differs);
  const auto p1 = colm::paired_bootstrap(x, std::vector<double>(x.size(), 0.5), BootstrapOptions{300, 0.95, 9});
  const auto p2 = colm::paired_bootstrap(x, std::vector<double>(x.size(), 0.5), BootstrapOptions{300, 0.95, 9});
  CHECK(p1.ci_low == p2.ci_low);
  CHECK(p1.ci_high == p2.ci_high);
  CHECK(p1.p_value == p2.p_value);
}

TEST_CASE("no resamples gives the estimate without an interval", "[stats]") {
  const auto e = colm::bootstrap_mean({1, 2, 3}, BootstrapOptions{0, 0.95, 0});
  CHECK(e.value == 2.0);
  CHECK_FALSE(e.has_ci());
  const auto d = colm::paired_bootstrap({1, 2}, {0, 0}, BootstrapOptions{0, 0.95, 0});
  CHECK(d.difference == 1.5);
  CHECK(std::isnan(d.p_value));
}

TEST_CASE("bad bootstrap input is a clear error", "[stats]") {
  CHECK_THROWS_WITH(colm::bootstrap_mean({}, {}), Catch::Contains("empty"));
  CHECK_THROWS_WITH(colm::bootstrap_mean({1, NAN}, {}), Catch::Contains("x[1]"));
  CHECK_THROWS_WITH(colm::bootstrap_mean({1}, BootstrapOptions{10, 1.0, 0}), Catch::Contains("confidence"));
  CHECK_THROWS_WITH(colm::bootstrap_mean({1}, BootstrapOptions{-1, 0.9, 0}), Catch::Contains("samples"));
  CHECK_THROWS_WITH(colm::paired_bootstrap({1, 2}, {1}, {}), Catch::Contains("same length"));
  CHECK_THROWS_WITH(colm::paired_bootstrap({}, {}, {}), Catch::Contains("empty"));
}

TEST_CASE("the paired difference of identical vectors is 0 with p = 1", "[stats]") {
  const std::vector<double> a = {1, 0, 1, 1, 0, 0, 1, 0, 1, 1};
  const auto d = colm::paired_bootstrap(a, a, BootstrapOptions{1000, 0.95, 1});
  CHECK(d.difference == 0.0);
  CHECK(d.ci_low == 0.0);
  CHECK(d.ci_high == 0.0);
  CHECK(d.p_value == 1.0);
  CHECK(d.n == 10);
}

TEST_CASE("the paired bootstrap finds a consistent difference and not a null one", "[stats]") {
  // A constant shift of 0.25: every resample has the same difference, so p = 1 / (B + 1).
  std::vector<double> b = {0.1, 0.7, 0.3, 0.9, 0.2, 0.4};
  std::vector<double> a = b;
  for (auto& v : a) v += 0.25;
  const auto shift = colm::paired_bootstrap(a, b, BootstrapOptions{999, 0.95, 2});
  CHECK(shift.difference == Approx(0.25).epsilon(1e-12));
  CHECK(shift.ci_low == Approx(0.25).epsilon(1e-9));
  CHECK(shift.ci_high == Approx(0.25).epsilon(1e-9));
  CHECK(shift.p_value == Approx(1.0 / 1000).epsilon(1e-12));

  // Paired binary outcomes: a right on 30 more of 200 examples than b, with 10 the other way.
  std::vector<double> x, y;
  for (int i = 0; i < 200; ++i) {
    const int kind = i % 20;  // 3/20 a only, 1/20 b only, the rest agree
    x.push_back(kind < 3 ? 1 : kind == 3 ? 0 : (i % 2));
    y.push_back(kind < 3 ? 0 : kind == 3 ? 1 : (i % 2));
  }
  const auto d = colm::paired_bootstrap(x, y, BootstrapOptions{2000, 0.95, 3});
  CHECK(d.difference == Approx(0.1).epsilon(1e-12));
  CHECK(d.ci_low > 0.0);
  CHECK(d.ci_high < 0.2);
  CHECK(d.p_value < 0.01);
  // McNemar on the same table (30 vs 10) agrees: p = 2 P(X <= 10), X ~ Bin(40, 1/2) = 0.00222.
  const auto m = colm::mcnemar_exact(x, y);
  CHECK(m.a_only == 30);
  CHECK(m.b_only == 10);
  CHECK(m.p_value == Approx(0.0022214338).margin(1e-9));

  // Random pairs with no true difference: the interval covers 0 and p is not small.
  std::mt19937_64 rng(99);
  std::vector<double> u(300), v(300);
  for (size_t i = 0; i < u.size(); ++i) {
    u[i] = double(colm::uniform_index(rng, 2));
    v[i] = double(colm::uniform_index(rng, 2));
  }
  // Make the means equal exactly by swapping outcomes until the sums match.
  double su = 0, sv = 0;
  for (size_t i = 0; i < u.size(); ++i) su += u[i], sv += v[i];
  for (size_t i = 0; i < u.size() && su != sv; ++i) {
    if (su > sv && u[i] == 1 && v[i] == 0) u[i] = 0, su -= 1;
    else if (sv > su && v[i] == 1 && u[i] == 0) v[i] = 0, sv -= 1;
  }
  REQUIRE(su == sv);
  const auto null = colm::paired_bootstrap(u, v, BootstrapOptions{1000, 0.95, 4});
  CHECK(null.difference == Approx(0.0).margin(1e-12));
  CHECK(null.ci_low < 0.0);
  CHECK(null.ci_high > 0.0);
  CHECK(null.p_value > 0.9);
}

TEST_CASE("bootstrap_statistic resamples any statistic, e.g. a ratio of sums", "[stats]") {
  // Deferred / generated tokens per example: every example has ratio 1/4, so every resample too.
  const std::vector<double> deferred = {1, 2, 3, 5};
  const std::vector<double> tokens = {4, 8, 12, 20};
  const auto ratio = [&](const std::vector<size_t>& idx) {
    double d = 0, t = 0;
    for (size_t i : idx) d += deferred[i], t += tokens[i];
    return d / t;
  };
  const auto e = colm::bootstrap_statistic(4, ratio, BootstrapOptions{200, 0.95, 1});
  CHECK(e.value == 0.25);
  CHECK(e.ci_low == Approx(0.25));
  CHECK(e.ci_high == Approx(0.25));
  CHECK_THROWS_AS(colm::bootstrap_statistic(0, ratio, {}), colm::Error);
}
