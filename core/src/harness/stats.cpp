// Bootstrap intervals, the paired bootstrap and McNemar's exact test (see stats.hpp). Resampling
// uses mt19937_64 with an explicit bounded draw, so the same seed gives the same numbers everywhere.
#include "harness/stats.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace colm {

namespace {

void check_options(const BootstrapOptions& o, const char* what) {
  COLM_CHECK(o.samples >= 0, what << ": bootstrap samples must be >= 0, got " << o.samples);
  COLM_CHECK(o.confidence > 0 && o.confidence < 1,
             what << ": confidence must be in (0, 1), got " << o.confidence);
}

void check_finite(const std::vector<double>& x, const char* what, const char* name) {
  for (size_t i = 0; i < x.size(); ++i)
    COLM_CHECK(std::isfinite(x[i]), what << ": " << name << "[" << i << "] is not a finite number (" << x[i] << ")");
}

// Percentile interval of B statistics (sorted in place).
void percentile_interval(std::vector<double>& stats, double confidence, double* lo, double* hi) {
  std::sort(stats.begin(), stats.end());
  const double alpha = 1.0 - confidence;
  *lo = sorted_quantile(stats, alpha / 2);
  *hi = sorted_quantile(stats, 1.0 - alpha / 2);
}

// Mean of y (already shifted by ref) over the resampled indices, shifted back. Shifting by a value
// of the sample keeps a constant sample exact and reduces cancellation.
double shifted_mean(const std::vector<double>& y, const std::vector<size_t>& idx, double ref) {
  double s = 0;
  for (size_t i : idx) s += y[i];
  return ref + s / double(idx.size());
}

void draw(std::mt19937_64& rng, size_t n, std::vector<size_t>& idx) {
  idx.resize(n);
  for (auto& i : idx) i = size_t(uniform_index(rng, n));
}

}  // namespace

uint64_t uniform_index(std::mt19937_64& rng, uint64_t n) {
  COLM_CHECK(n > 0, "uniform_index: empty range");
  // Lemire's multiply-shift with rejection of the biased low products.
  unsigned __int128 m = static_cast<unsigned __int128>(rng()) * n;
  uint64_t low = static_cast<uint64_t>(m);
  if (low < n) {
    const uint64_t threshold = (0 - n) % n;
    while (low < threshold) {
      m = static_cast<unsigned __int128>(rng()) * n;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

double sorted_quantile(const std::vector<double>& sorted, double q) {
  COLM_CHECK(!sorted.empty(), "sorted_quantile: no values");
  COLM_CHECK(q >= 0 && q <= 1, "sorted_quantile: q must be in [0, 1], got " << q);
  const double h = double(sorted.size() - 1) * q;
  const auto i = size_t(std::floor(h));
  if (i + 1 >= sorted.size()) return sorted.back();
  const double lo = sorted[i], hi = sorted[i + 1];
  // lo == hi returns lo exactly (no rounding from the interpolation).
  return lo == hi ? lo : lo + (h - double(i)) * (hi - lo);
}

Estimate bootstrap_mean(const std::vector<double>& x, const BootstrapOptions& options) {
  check_options(options, "bootstrap_mean");
  COLM_CHECK(!x.empty(), "bootstrap_mean: the sample is empty (no values to average)");
  check_finite(x, "bootstrap_mean", "x");
  const double ref = x.front();
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] - ref;
  std::vector<size_t> all(x.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;

  Estimate e;
  e.n = int64_t(x.size());
  e.value = shifted_mean(y, all, ref);
  if (options.samples == 0) return e;
  std::mt19937_64 rng(options.seed);
  std::vector<double> stats(size_t(options.samples));
  std::vector<size_t> idx;
  for (auto& s : stats) {
    draw(rng, x.size(), idx);
    s = shifted_mean(y, idx, ref);
  }
  percentile_interval(stats, options.confidence, &e.ci_low, &e.ci_high);
  return e;
}

Estimate bootstrap_statistic(size_t n, const Statistic& statistic, const BootstrapOptions& options) {
  check_options(options, "bootstrap_statistic");
  COLM_CHECK(n > 0, "bootstrap_statistic: no items to resample");
  COLM_CHECK(bool(statistic), "bootstrap_statistic: no statistic given");
  std::vector<size_t> all(n);
  for (size_t i = 0; i < n; ++i) all[i] = i;
  Estimate e;
  e.n = int64_t(n);
  e.value = statistic(all);
  if (options.samples == 0) return e;
  std::mt19937_64 rng(options.seed);
  std::vector<double> stats(size_t(options.samples));
  std::vector<size_t> idx;
  for (auto& s : stats) {
    draw(rng, n, idx);
    s = statistic(idx);
    COLM_CHECK(std::isfinite(s), "bootstrap_statistic: the statistic of a resample is not finite (" << s << ")");
  }
  percentile_interval(stats, options.confidence, &e.ci_low, &e.ci_high);
  return e;
}

PairedDifference paired_bootstrap(const std::vector<double>& a, const std::vector<double>& b,
                                  const BootstrapOptions& options) {
  check_options(options, "paired_bootstrap");
  COLM_CHECK(a.size() == b.size(), "paired_bootstrap: the two samples must be paired (same length), got "
                                       << a.size() << " and " << b.size() << " values");
  COLM_CHECK(!a.empty(), "paired_bootstrap: the samples are empty");
  check_finite(a, "paired_bootstrap", "a");
  check_finite(b, "paired_bootstrap", "b");
  // d: [n] per-example differences; the difference of means is the mean of differences.
  std::vector<double> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  const double ref = d.front();
  std::vector<double> y(d.size());
  for (size_t i = 0; i < d.size(); ++i) y[i] = d[i] - ref;
  std::vector<size_t> all(d.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;

  PairedDifference r;
  r.n = int64_t(d.size());
  r.difference = shifted_mean(y, all, ref);
  if (options.samples == 0) return r;
  std::mt19937_64 rng(options.seed);
  std::vector<double> stats(size_t(options.samples));
  std::vector<size_t> idx;
  int64_t extreme = 0;
  // Differences within this tolerance of the observed one count as ties (rounding of the sums).
  const double tol = 1e-12 * (1.0 + std::abs(r.difference));
  for (auto& s : stats) {
    draw(rng, d.size(), idx);
    s = shifted_mean(y, idx, ref);
    if (std::abs(s - r.difference) >= std::abs(r.difference) - tol) ++extreme;
  }
  r.p_value = double(1 + extreme) / double(1 + options.samples);
  percentile_interval(stats, options.confidence, &r.ci_low, &r.ci_high);
  return r;
}

double mcnemar_exact_p(int64_t a_only, int64_t b_only) {
  COLM_CHECK(a_only >= 0 && b_only >= 0,
             "mcnemar_exact_p: counts must be >= 0, got " << a_only << " and " << b_only);
  const int64_t n = a_only + b_only;
  if (n == 0) return 1.0;
  const int64_t k = std::min(a_only, b_only);
  // P(X <= k), X ~ Binomial(n, 1/2), summed in log space: C(n, i) / 2^n overflows for large n.
  const double log_half_n = double(n) * std::log(0.5);
  double tail = 0;
  for (int64_t i = 0; i <= k; ++i) {
    const double log_c = std::lgamma(double(n) + 1) - std::lgamma(double(i) + 1) - std::lgamma(double(n - i) + 1);
    tail += std::exp(log_c + log_half_n);
  }
  return std::min(1.0, 2.0 * tail);
}

bool is_binary(const std::vector<double>& x) {
  return std::all_of(x.begin(), x.end(), [](double v) { return v == 0.0 || v == 1.0; });
}

McNemarResult mcnemar_exact(const std::vector<double>& a, const std::vector<double>& b) {
  COLM_CHECK(a.size() == b.size(), "mcnemar_exact: the outcomes must be paired (same length), got "
                                       << a.size() << " and " << b.size());
  McNemarResult r;
  for (size_t i = 0; i < a.size(); ++i) {
    COLM_CHECK((a[i] == 0.0 || a[i] == 1.0) && (b[i] == 0.0 || b[i] == 1.0),
               "mcnemar_exact: outcomes must be 0 or 1, got " << a[i] << " and " << b[i] << " at index " << i);
    if (a[i] == 1.0 && b[i] == 1.0) ++r.both;
    else if (a[i] == 1.0) ++r.a_only;
    else if (b[i] == 1.0) ++r.b_only;
    else ++r.neither;
  }
  r.p_value = mcnemar_exact_p(r.a_only, r.b_only);
  return r;
}

}  // namespace colm
