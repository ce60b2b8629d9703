// Statistics for the report: percentile bootstrap intervals, the paired bootstrap of a difference
// and McNemar's exact test. Pure functions of their inputs and a seed; nothing here reads the store.
#pragma once
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "colm/error.hpp"

namespace colm {

struct BootstrapOptions {
  int64_t samples = 1000;   // resamples B; 0 gives the point estimate without an interval
  double confidence = 0.95; // interval level, in (0, 1)
  uint64_t seed = 0;        // same data, options and seed -> the same interval
};

// A point estimate with its percentile interval (NaN bounds when samples == 0).
struct Estimate {
  double value = std::numeric_limits<double>::quiet_NaN();
  double ci_low = std::numeric_limits<double>::quiet_NaN();
  double ci_high = std::numeric_limits<double>::quiet_NaN();
  int64_t n = 0;
  bool has_ci() const { return ci_low == ci_low && ci_high == ci_high; }
};

// Mean of x with a percentile bootstrap interval over B resamples of x (with replacement).
// The mean is computed relative to x[0], so a constant sample gives exactly [c, c].
// Empty x, a NaN/inf value, samples < 0 or confidence outside (0, 1) -> colm::Error.
COLM_VISIBLE Estimate bootstrap_mean(const std::vector<double>& x, const BootstrapOptions& options);

// Any statistic of n items: statistic(indices) is evaluated on all items (the estimate) and on
// B resamples of the indices (the interval). For ratios such as deferred tokens / tokens.
using Statistic = std::function<double(const std::vector<size_t>& indices)>;
COLM_VISIBLE Estimate bootstrap_statistic(size_t n, const Statistic& statistic, const BootstrapOptions& options);

// mean(a) - mean(b) for paired observations (a[i] and b[i] measured on the same example):
// examples are resampled together. p_value is two-sided, from the bootstrap distribution shifted to
// the null (difference 0): (1 + #{|d* - d| >= |d|}) / (B + 1), so it is never 0 and equals 1 when
// a == b. Interval and p are NaN when samples == 0. Different lengths or empty input -> colm::Error.
struct PairedDifference {
  double difference = std::numeric_limits<double>::quiet_NaN();
  double ci_low = std::numeric_limits<double>::quiet_NaN();
  double ci_high = std::numeric_limits<double>::quiet_NaN();
  double p_value = std::numeric_limits<double>::quiet_NaN();
  int64_t n = 0;
};
COLM_VISIBLE PairedDifference paired_bootstrap(const std::vector<double>& a, const std::vector<double>& b,
                                               const BootstrapOptions& options);

// McNemar's exact test for paired binary outcomes: only the discordant pairs count. With
// b = #(a right, b wrong) and c = #(a wrong, b right), p = min(1, 2 * P(X <= min(b, c))) for
// X ~ Binomial(b + c, 1/2); p = 1 when there is no discordant pair.
struct McNemarResult {
  int64_t both = 0;     // a = 1, b = 1
  int64_t a_only = 0;   // a = 1, b = 0
  int64_t b_only = 0;   // a = 0, b = 1
  int64_t neither = 0;  // a = 0, b = 0
  double p_value = 1.0;
};
COLM_VISIBLE double mcnemar_exact_p(int64_t a_only, int64_t b_only);
// a and b hold 0 or 1 per example (anything else, or different lengths -> colm::Error).
COLM_VISIBLE McNemarResult mcnemar_exact(const std::vector<double>& a, const std::vector<double>& b);
// True when every value is exactly 0 or 1 (McNemar applies).
COLM_VISIBLE bool is_binary(const std::vector<double>& x);

// Linear-interpolation quantile (R's type 7) of sorted values, q in [0, 1].
COLM_VISIBLE double sorted_quantile(const std::vector<double>& sorted, double q);
// Uniform integer in [0, n) from a 64-bit engine, without modulo bias and without relying on the
// standard library's distributions (whose output differs between implementations).
COLM_VISIBLE uint64_t uniform_index(std::mt19937_64& rng, uint64_t n);

}  // namespace colm
