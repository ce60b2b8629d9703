// Helpers shared by the report's parts (report_load, report_sections, report_svg, report_markdown,
// report_html, report_json): number and text formatting, one table type, the sections and the plots.
// Internal to core: nothing here is exported or used outside core/src/harness/report_*.cpp.
#pragma once
#include <cstdint>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "harness/report.hpp"

namespace colm::report_detail {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---- text (report_text.cpp) ----
std::string sanitize_utf8(const std::string& s);   // invalid UTF-8 sequences -> U+FFFD
std::string strip_controls(const std::string& s);  // control characters other than \n, \t -> U+FFFD
std::string md_escape(const std::string& text);    // plain text in a Markdown table cell
std::string truncate_utf8(const std::string& text, size_t max_bytes);  // on a character boundary, with "…"
std::string printf_text(const char* format, double v);
std::string num(double v, int decimals = 3);  // "—" when not finite
std::string short_num(double v);              // %.4g
std::string p_value_text(double p);
std::string percent(int64_t part, int64_t whole);
std::string with_ci(double v, double lo, double hi, int decimals = 3);  // "v [lo, hi]"
std::string metric_text(const ReportRun& r, const std::string& name);
double metric_value(const ReportRun& r, const std::string& name);  // NaN when absent
std::string eta_text(const ReportRun& r);   // "0.3 (calibrated to rate 0.1, at the lowest candidate tried)"
std::string base_text(const ReportRun& r);  // what decoded as base, "—" when not recorded
std::string policy_text(const ReportRun& r);

// One table structure, rendered as Markdown or HTML.
struct Table {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::string css_class;
};
std::string render_markdown(const Table& t);
std::string render_html(const Table& t);

// ---- sections shared by Markdown and HTML (report_sections.cpp) ----
std::string source_name(const ReportExperiment& x, size_t source);
Table runs_table(const ReportExperiment& x);
Table all_metrics_table(const ReportExperiment& x);
std::vector<std::pair<std::string, Table>> calibration_tables(const ReportExperiment& x);
Table comparison_table(const ReportExperiment& x);
Table learned_comparison_table(const ReportExperiment& x);
std::string learned_text(const ReportExperiment& x);  // what the learned comparisons are; "" when none
std::string edge_text(const ReportExperiment& x);     // calibrated runs chosen at an edge; "" when none
Table curve_table(const ReportExperiment& x);         // curve runs (empty header when there are none)
Table deferral_table(const ReportExperiment& x);
bool has_several_assistants(const ReportExperiment& x);  // a run decided between two or more assistants
Table assistant_table(const ReportExperiment& x);        // per run and model: tokens and result operations
Table analysis_table(const ReportExperiment& x);
std::string best_reference_text(const ReportExperiment& x);
std::string methods_text(const ReportExperiment& x);
std::string experiment_summary(const ReportExperiment& x);
extern const char* const kDeferralNote;
extern const char* const kAssistantNote;
extern const char* const kAnalysisNote;

// ---- SVG plots (report_svg.cpp) ----
// A plot's x range: [0, 1] and any point outside (eta), or fitted to the data from 0 (rates).
enum class XRange { kUnit, kFitted };
struct PlotPoint {
  double x = 0, y = 0, lo = kNaN, hi = kNaN;
  bool calibrated = false;
  std::string note;  // tooltip
};
struct PlotSeries {
  std::string name;
  std::string color;
  std::vector<PlotPoint> points;
};
struct PlotReference {
  std::string label;
  double y = 0;
};
struct Plot {
  std::string title, x_label, y_label, id;
  std::vector<PlotSeries> series;
  std::vector<PlotReference> references;
  XRange x_range = XRange::kUnit;
};
std::string render_svg(const Plot& plot);
std::set<std::string> plot_splits(const ReportExperiment& x);  // splits with thresholded policy runs
std::vector<Plot> sweep_plots(const ReportExperiment& x, const std::string& split);  // vs eta, vs rate
std::set<std::string> curve_splits(const ReportExperiment& x);  // splits with curve runs
Plot curve_plot(const ReportExperiment& x, const std::string& split);  // metric vs measured deferral rate
std::optional<Plot> calibration_plot(const ReportExperiment& x);

}  // namespace colm::report_detail
