// The report's SVG plots: the metric against eta and against the deferral rate per split, and the
// calibration curves. Self-contained markup (no scripts); the page around them is report_html.cpp's.
#include "harness/report_internal.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

namespace colm {

namespace report_detail {

// ---- SVG plots -------------------------------------------------------------------------------------------

namespace {

const char* const kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
                                "#17becf", "#8c564b", "#e377c2", "#bcbd22", "#7f7f7f"};
const char* const kReferenceColors[] = {"#222222", "#555555", "#888888", "#aa6600"};
const char* const kReferenceDash[] = {"8 4", "2 3", "12 4 2 4", "4 4"};

std::string coord(double v) { return printf_text("%.1f", v); }

// A legend entry fits the 270 px beside the plot; the whole label stays as its tooltip.
std::string legend_text(const std::string& label) {
  const auto shown = truncate_utf8(label, 40);
  if (shown == label) return html_escape(label);
  return "<title>" + html_escape(label) + "</title>" + html_escape(shown);
}

}  // namespace

std::string render_svg(const Plot& plot) {
  const auto x_range = plot.x_range;
  const double W = 900, H = 380, left = 66, top = 40, right = W - 300, bottom = H - 52;
  // Ranges: x covers [0, 1] (eta lives there) and any point outside, or, fitted, [0, 1.1 x the
  // largest point] (deferral rates often stay within a few percent); y covers every point, interval
  // and reference line. Both are widened to whole ticks.
  double xlo = 0, xhi = x_range == XRange::kUnit ? 1 : 0, ylo = std::numeric_limits<double>::infinity(), yhi = -ylo;
  auto take_y = [&](double v) {
    if (std::isfinite(v)) ylo = std::min(ylo, v), yhi = std::max(yhi, v);
  };
  for (const auto& s : plot.series)
    for (const auto& p : s.points) {
      xlo = std::min(xlo, p.x), xhi = std::max(xhi, p.x);
      take_y(p.y), take_y(p.lo), take_y(p.hi);
    }
  for (const auto& r : plot.references) take_y(r.y);
  if (x_range == XRange::kFitted) {
    const double data_xhi = xhi;
    xhi = xhi > 0 ? xhi * 1.1 : 0.01;
    if (data_xhi <= 1) xhi = std::min(xhi, 1.0);  // a rate never passes 1
  }
  if (!std::isfinite(ylo)) ylo = 0, yhi = 1;
  const double data_lo = ylo, data_hi = yhi;
  if (yhi - ylo < 1e-9) ylo -= 0.05, yhi += 0.05;
  // Rates and accuracies live in [0, 1]: a flat line at 0 should not get negative ticks.
  if (data_lo >= 0) ylo = std::max(ylo, 0.0);
  if (data_hi <= 1) yhi = std::min(yhi, 1.0);
  const auto yt = nice_ticks(ylo, yhi, 6);
  const auto xt = nice_ticks(xlo, xhi, 5);
  ylo = std::min(ylo, yt.front()), yhi = std::max(yhi, yt.back());
  xlo = std::min(xlo, xt.front()), xhi = std::max(xhi, xt.back());
  auto X = [&](double v) { return left + (v - xlo) / (xhi - xlo) * (right - left); };
  auto Y = [&](double v) { return bottom - (v - ylo) / (yhi - ylo) * (bottom - top); };

  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"plot\" id=\"" << html_escape(plot.id) << "\" width=\""
     << W << "\" height=\"" << H << "\" viewBox=\"0 0 " << W << " " << H << "\" role=\"img\" aria-label=\""
     << html_escape(plot.title) << "\">\n";
  os << "<title>" << html_escape(plot.title) << "</title>\n";
  os << "<rect x=\"0\" y=\"0\" width=\"" << W << "\" height=\"" << H << "\" fill=\"#ffffff\"/>\n";
  os << "<text class=\"plot-title\" x=\"" << coord((left + right) / 2) << "\" y=\"22\" text-anchor=\"middle\">"
     << html_escape(plot.title) << "</text>\n";
  // Grid, ticks and tick labels.
  for (double t : yt) {
    const auto y = coord(Y(t));
    os << "<line class=\"grid\" x1=\"" << left << "\" x2=\"" << right << "\" y1=\"" << y << "\" y2=\"" << y
       << "\" stroke=\"#e4e4e4\"/>";
    os << "<line class=\"tick\" x1=\"" << left - 5 << "\" x2=\"" << left << "\" y1=\"" << y << "\" y2=\"" << y
       << "\" stroke=\"#333\"/>";
    os << "<text class=\"tick-label\" x=\"" << left - 8 << "\" y=\"" << y
       << "\" text-anchor=\"end\" dominant-baseline=\"middle\">" << short_num(t) << "</text>\n";
  }
  for (double t : xt) {
    const auto x = coord(X(t));
    os << "<line class=\"grid\" x1=\"" << x << "\" x2=\"" << x << "\" y1=\"" << top << "\" y2=\"" << bottom
       << "\" stroke=\"#e4e4e4\"/>";
    os << "<line class=\"tick\" x1=\"" << x << "\" x2=\"" << x << "\" y1=\"" << bottom << "\" y2=\"" << bottom + 5
       << "\" stroke=\"#333\"/>";
    os << "<text class=\"tick-label\" x=\"" << x << "\" y=\"" << bottom + 18 << "\" text-anchor=\"middle\">"
       << short_num(t) << "</text>\n";
  }
  os << "<line class=\"axis\" x1=\"" << left << "\" x2=\"" << right << "\" y1=\"" << bottom << "\" y2=\"" << bottom
     << "\" stroke=\"#333\"/>\n";
  os << "<line class=\"axis\" x1=\"" << left << "\" x2=\"" << left << "\" y1=\"" << top << "\" y2=\"" << bottom
     << "\" stroke=\"#333\"/>\n";
  os << "<text class=\"axis-label\" x=\"" << coord((left + right) / 2) << "\" y=\"" << H - 12
     << "\" text-anchor=\"middle\">" << html_escape(plot.x_label) << "</text>\n";
  os << "<text class=\"axis-label\" transform=\"translate(16 " << coord((top + bottom) / 2)
     << ") rotate(-90)\" text-anchor=\"middle\">" << html_escape(plot.y_label) << "</text>\n";

  // Single models: horizontal reference lines across the plot.
  for (size_t i = 0; i < plot.references.size(); ++i) {
    const auto& r = plot.references[i];
    const auto y = coord(Y(r.y));
    os << "<line class=\"reference\" data-label=\"" << html_escape(r.label) << "\" x1=\"" << left << "\" x2=\""
       << right << "\" y1=\"" << y << "\" y2=\"" << y << "\" stroke=\"" << kReferenceColors[i % 4]
       << "\" stroke-width=\"1.5\" stroke-dasharray=\"" << kReferenceDash[i % 4] << "\"><title>"
       << html_escape(r.label) << ": " << short_num(r.y) << "</title></line>\n";
  }
  // Policies: intervals, then the line through the points, then the points on top.
  for (const auto& s : plot.series) {
    const auto name = html_escape(s.name);
    for (const auto& p : s.points) {
      if (!std::isfinite(p.lo) || !std::isfinite(p.hi)) continue;
      os << "<line class=\"ci\" data-series=\"" << name << "\" x1=\"" << coord(X(p.x)) << "\" x2=\"" << coord(X(p.x))
         << "\" y1=\"" << coord(Y(p.lo)) << "\" y2=\"" << coord(Y(p.hi)) << "\" stroke=\"" << s.color
         << "\" stroke-opacity=\"0.45\" stroke-width=\"2\"/>\n";
    }
    if (s.points.size() >= 2) {
      os << "<polyline class=\"series\" data-series=\"" << name << "\" fill=\"none\" stroke=\"" << s.color
         << "\" stroke-width=\"2\" points=\"";
      for (size_t i = 0; i < s.points.size(); ++i)
        os << (i ? " " : "") << coord(X(s.points[i].x)) << "," << coord(Y(s.points[i].y));
      os << "\"/>\n";
    }
    for (const auto& p : s.points) {
      if (p.calibrated)
        os << "<circle class=\"calibrated-mark\" data-series=\"" << name << "\" cx=\"" << coord(X(p.x)) << "\" cy=\""
           << coord(Y(p.y)) << "\" r=\"7\" fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"1.5\"/>";
      os << "<circle class=\"point\" data-series=\"" << name << "\" cx=\"" << coord(X(p.x)) << "\" cy=\""
         << coord(Y(p.y)) << "\" r=\"3.5\" fill=\"" << s.color << "\"><title>" << html_escape(p.note)
         << "</title></circle>\n";
    }
  }
  // Legend, right of the plot area.
  os << "<g class=\"legend\">\n";
  double ly = top + 6;
  const double lx = right + 18;
  for (const auto& s : plot.series) {
    os << "<line x1=\"" << lx << "\" x2=\"" << lx + 22 << "\" y1=\"" << coord(ly) << "\" y2=\"" << coord(ly)
       << "\" stroke=\"" << s.color << "\" stroke-width=\"2\"/><circle cx=\"" << lx + 11 << "\" cy=\"" << coord(ly)
       << "\" r=\"3.5\" fill=\"" << s.color << "\"/><text class=\"legend-label\" x=\"" << lx + 30 << "\" y=\""
       << coord(ly) << "\" dominant-baseline=\"middle\">" << legend_text(s.name) << "</text>\n";
    ly += 18;
  }
  for (size_t i = 0; i < plot.references.size(); ++i) {
    os << "<line x1=\"" << lx << "\" x2=\"" << lx + 22 << "\" y1=\"" << coord(ly) << "\" y2=\"" << coord(ly)
       << "\" stroke=\"" << kReferenceColors[i % 4] << "\" stroke-width=\"1.5\" stroke-dasharray=\""
       << kReferenceDash[i % 4] << "\"/><text class=\"legend-label\" x=\"" << lx + 30 << "\" y=\"" << coord(ly)
       << "\" dominant-baseline=\"middle\">" << legend_text(plot.references[i].label) << "</text>\n";
    ly += 18;
  }
  bool any_calibrated = false;
  for (const auto& s : plot.series)
    for (const auto& p : s.points) any_calibrated = any_calibrated || p.calibrated;
  if (any_calibrated) {
    os << "<circle cx=\"" << lx + 11 << "\" cy=\"" << coord(ly) << "\" r=\"7\" fill=\"none\" stroke=\"#333\"/>"
       << "<text class=\"legend-label\" x=\"" << lx + 30 << "\" y=\"" << coord(ly)
       << "\" dominant-baseline=\"middle\">calibrated η</text>\n";
  }
  os << "</g>\n</svg>\n";
  return os.str();
}

// Colours by policy and base (color_key), stable across the plots of one experiment; a calibration
// row, which names no base, takes its policy's first.
std::string color_key(const std::string& policy, const std::string& base) { return policy + "\n" + base; }

std::map<std::string, std::string> policy_colors(const ReportExperiment& x) {
  std::map<std::string, std::string> out;
  size_t next = 0;
  for (const auto& r : x.runs) {
    const auto key = color_key(r.run.policy, r.base);
    if (!r.baseline && !out.count(key)) out[key] = kPalette[next++ % 10];
    if (!r.baseline && !out.count(color_key(r.run.policy, "*"))) out[color_key(r.run.policy, "*")] = out[key];
  }
  for (const auto& c : x.calibration)
    if (!out.count(color_key(c.policy, "*"))) out[color_key(c.policy, "*")] = kPalette[next++ % 10];
  return out;
}

// Series names: the policy, with the strategy when a plot has several and the base when the policy
// decodes with several.
struct SeriesNaming {
  std::set<std::string> strategies;
  std::map<std::string, std::set<std::string>> bases;  // policy -> bases
  void add(const ReportRun& r) {
    strategies.insert(r.run.strategy);
    bases[r.run.policy].insert(r.base);
  }
  std::string name(const std::string& policy, const std::string& strategy, const std::string& base) const {
    std::string out = policy;
    const auto it = bases.find(policy);
    if (it != bases.end() && it->second.size() > 1) out += " [base " + (base.empty() ? "—" : base) + "]";
    if (strategies.size() > 1) out += " (" + strategy + ")";
    return out;
  }
};

std::vector<PlotReference> single_references(const ReportExperiment& x, const std::string& split) {
  std::map<std::string, std::vector<const ReportRun*>> references;  // label -> runs
  for (const auto& r : x.runs)
    if (r.baseline && !r.curve && r.run.split == split && r.run.status == "done" &&
        std::isfinite(metric_value(r, x.metric)))
      references[r.run.policy + " (" + r.baseline_label + ")"].push_back(&r);
  std::vector<PlotReference> out;
  for (const auto& [label, runs] : references) {
    double y = 0;
    for (const auto* r : runs) y += metric_value(*r, x.metric);
    out.push_back({label, y / double(runs.size())});
  }
  return out;
}

// The sweep plots of one split: metric against eta and against the deferral rate.
std::vector<Plot> sweep_plots(const ReportExperiment& x, const std::string& split) {
  const auto colors = policy_colors(x);
  SeriesNaming naming;
  for (const auto& r : x.runs)
    if (!r.baseline && !r.curve && r.run.threshold && r.run.split == split) naming.add(r);  // not combinations
  // (policy, strategy, base) -> eta -> runs at that eta (several seeds are averaged).
  std::map<std::tuple<std::string, std::string, std::string>, std::map<double, std::vector<const ReportRun*>>> groups;
  for (const auto& r : x.runs) {
    if (r.baseline || r.curve || r.run.split != split || !r.run.threshold || r.run.status != "done") continue;
    if (!std::isfinite(metric_value(r, x.metric))) continue;
    groups[{r.run.policy, r.run.strategy, r.base}][*r.run.threshold].push_back(&r);
  }

  Plot by_eta, by_rate;
  by_eta.id = "plot-" + x.record.name + "-" + split + "-eta";
  by_rate.id = "plot-" + x.record.name + "-" + split + "-rate";
  by_eta.title = x.record.name + " (" + split + "): " + x.metric + " against η";
  by_rate.title = x.record.name + " (" + split + "): " + x.metric + " against deferral rate";
  by_eta.x_label = "deferral threshold η";
  by_rate.x_label = "deferral rate (assistant tokens / tokens)";
  by_eta.y_label = by_rate.y_label = x.metric;
  by_rate.x_range = XRange::kFitted;
  for (const auto& [key, by_threshold] : groups) {
    PlotSeries se, sr;
    const auto& [policy, strategy, base] = key;
    se.name = sr.name = naming.name(policy, strategy, base);
    se.color = sr.color = colors.at(color_key(policy, base));
    for (const auto& [eta, runs] : by_threshold) {
      double y = 0, rate = 0;
      bool calibrated = false;
      for (const auto* r : runs) {
        y += metric_value(*r, x.metric);
        rate += metric_value(*r, "deferral_rate");
        calibrated = calibrated || r->calibrated;
      }
      y /= double(runs.size());
      rate /= double(runs.size());
      PlotPoint p;
      p.y = y;
      p.calibrated = calibrated;
      if (runs.size() == 1) {
        const auto& m = runs.front()->metrics.at(x.metric);
        p.lo = m.ci_low.value_or(kNaN), p.hi = m.ci_high.value_or(kNaN);
      }
      p.note = se.name + ": η = " + short_num(eta) + ", " + x.metric + " = " + with_ci(y, p.lo, p.hi) +
               ", deferral rate = " + num(rate) + (runs.size() > 1 ? " (mean of " + std::to_string(runs.size()) + " seeds)" : "") +
               (calibrated ? " (calibrated)" : "");
      p.x = eta;
      se.points.push_back(p);
      if (std::isfinite(rate)) {
        p.x = rate;
        sr.points.push_back(p);
      }
    }
    // Against the deferral rate the line runs left to right (ties: by eta, the order they were added).
    std::stable_sort(sr.points.begin(), sr.points.end(), [](const PlotPoint& a, const PlotPoint& b) { return a.x < b.x; });
    by_eta.series.push_back(se);
    by_rate.series.push_back(sr);
  }
  by_eta.references = by_rate.references = single_references(x, split);
  return {by_eta, by_rate};
}

// The paper's figure: each policy's curve runs (fixed deferral rates on this split), the metric
// against the deferral rate each run measured.
Plot curve_plot(const ReportExperiment& x, const std::string& split) {
  const auto colors = policy_colors(x);
  SeriesNaming naming;
  std::map<std::tuple<std::string, std::string, std::string>, std::vector<const ReportRun*>> groups;
  for (const auto& r : x.runs) {
    if (!r.curve || r.run.split != split || r.run.status != "done") continue;
    if (!std::isfinite(metric_value(r, x.metric)) || !std::isfinite(metric_value(r, "deferral_rate"))) continue;
    naming.add(r);
    groups[{r.run.policy, r.run.strategy, r.base}].push_back(&r);
  }
  Plot plot;
  plot.id = "plot-" + x.record.name + "-" + split + "-curve";
  plot.title = x.record.name + " (" + split + "): " + x.metric + " against deferral rate, at fixed rates";
  plot.x_label = "deferral rate measured (assistant tokens / tokens)";
  plot.y_label = x.metric;
  plot.x_range = XRange::kFitted;
  for (const auto& [key, runs] : groups) {
    const auto& [policy, strategy, base] = key;
    PlotSeries s;
    s.name = naming.name(policy, strategy, base);
    const auto color = colors.find(color_key(policy, base));
    s.color = color != colors.end() ? color->second : kPalette[plot.series.size() % 10];
    for (const auto* r : runs) {
      const auto& m = r->metrics.at(x.metric);
      PlotPoint p;
      p.x = metric_value(*r, "deferral_rate");
      p.y = m.value;
      p.lo = m.ci_low.value_or(kNaN), p.hi = m.ci_high.value_or(kNaN);
      p.note = s.name + ": target rate " + (r->target_rate ? short_num(*r->target_rate) : std::string("—")) +
               ", measured " + num(p.x) + ", η = " +
               (r->run.threshold ? short_num(*r->run.threshold) : std::string("—")) + ", " + x.metric + " = " +
               with_ci(p.y, p.lo, p.hi) + ", seed " + std::to_string(r->run.seed);
      s.points.push_back(p);
    }
    std::stable_sort(s.points.begin(), s.points.end(), [](const PlotPoint& a, const PlotPoint& b) { return a.x < b.x; });
    plot.series.push_back(std::move(s));
  }
  plot.references = single_references(x, split);
  return plot;
}

std::set<std::string> curve_splits(const ReportExperiment& x) {
  std::set<std::string> out;
  for (const auto& r : x.runs)
    if (r.curve) out.insert(r.run.split);
  return out;
}

// The calibration curves on the validation split (one series per policy and strategy).
std::optional<Plot> calibration_plot(const ReportExperiment& x) {
  if (x.calibration.empty()) return std::nullopt;
  const auto colors = policy_colors(x);
  std::set<std::string> strategies;
  std::string metric;
  for (const auto& c : x.calibration) {
    strategies.insert(c.strategy);
    if (c.metric != "deferral_rate" && c.metric != "target_rate" && (metric.empty() || c.metric == x.metric))
      metric = c.metric;
  }
  if (metric.empty()) metric = "deferral_rate";
  Plot plot;
  plot.id = "plot-" + x.record.name + "-calibration";
  plot.x_label = "deferral threshold η";
  plot.y_label = metric;
  std::map<std::tuple<std::string, std::string, std::string>, PlotSeries> series;
  std::set<std::string> splits;
  for (const auto& c : x.calibration) {
    if (c.metric != metric || !std::isfinite(c.value)) continue;
    splits.insert(c.split);
    auto& s = series[{c.policy, c.strategy, c.split}];
    s.name = c.policy + (strategies.size() > 1 ? " (" + c.strategy + ")" : "");
    s.color = colors.at(color_key(c.policy, "*"));
    PlotPoint p;
    p.x = c.threshold;
    p.y = c.value;
    p.calibrated = c.chosen;
    p.note = s.name + " on " + c.split + ": η = " + short_num(c.threshold) + ", " + metric + " = " + num(c.value) +
             (c.chosen ? " (chosen)" : "");
    s.points.push_back(p);
  }
  std::string split_text;
  for (const auto& s : splits) split_text += (split_text.empty() ? "" : ", ") + s;
  plot.title = x.record.name + ": calibration on " + split_text + " (" + metric + " against η)";
  for (auto& [key, s] : series) {
    std::sort(s.points.begin(), s.points.end(), [](const PlotPoint& a, const PlotPoint& b) { return a.x < b.x; });
    plot.series.push_back(std::move(s));
  }
  return plot;
}

std::set<std::string> plot_splits(const ReportExperiment& x) {
  std::set<std::string> out;
  for (const auto& r : x.runs)
    if (!r.baseline && !r.curve && r.run.threshold) out.insert(r.run.split);
  return out;
}

}  // namespace report_detail

}  // namespace colm
