// The report as one self-contained HTML page: CSS inline, SVG plots (report_svg.cpp), the section
// tables (report_sections.cpp) and example outputs with each token coloured by the model that emitted it.
#include "harness/report_internal.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace colm {

using namespace report_detail;

namespace {

// ---- HTML pieces ----------------------------------------------------------------------------------------

const char* const kSourceColors[] = {"#dbe9f6", "#ffd8a8", "#c7f0c2", "#f3c6e9", "#fff3a0", "#d9d2f5"};

const char* const kCss = R"css(
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #333; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
h3 { margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f1f1f1; }
tbody tr:nth-child(even) { background: #fafafa; }
p.note, p.none { color: #555; font-size: 13px; }
p.edge { color: #8a4b00; font-weight: bold; }
svg.plot { display: block; margin: .8em 0; border: 1px solid #ddd; }
svg.plot text { font-size: 12px; fill: #222; }
svg.plot text.plot-title { font-size: 14px; font-weight: bold; }
svg.plot text.axis-label { font-size: 13px; }
.legend-box { margin: .5em 0; font-size: 13px; }
.legend-box span.swatch { display: inline-block; padding: 1px 8px; margin-right: 8px; border: 1px solid #bbb; }
.example { border: 1px solid #ddd; border-radius: 4px; margin: .8em 0; padding: .5em .8em; }
.example .meta { font-size: 12px; color: #555; }
.example .prompt { white-space: pre-wrap; color: #666; font-family: monospace; font-size: 13px; margin: .3em 0; }
.example .output { white-space: pre-wrap; font-family: monospace; font-size: 14px; margin: .3em 0; }
.example .reference { white-space: pre-wrap; font-family: monospace; font-size: 12px; color: #444; }
.tok { border-radius: 2px; box-shadow: inset -1px 0 0 rgba(0, 0, 0, 0.12); }
.right { color: #1a7f37; font-weight: bold; }
.wrong { color: #b42318; font-weight: bold; }
)css";

std::string source_css(const ReportData& d) {
  size_t n = 1;
  for (const auto& x : d.experiments) n = std::max(n, x.source_names.size());
  std::ostringstream os;
  for (size_t s = 0; s < std::max<size_t>(n, 2); ++s)
    os << ".src" << s << " { background: " << kSourceColors[s % 6] << "; }\n";
  return os.str();
}

std::string html_showcase(const ReportExperiment& x, const ReportShowcase& s) {
  const auto* r = x.find_run(s.run_id);
  std::ostringstream os;
  os << "<h4>" << html_escape(r->run.policy) << " — η " << html_escape(eta_text(*r)) << ", "
     << html_escape(r->run.strategy) << ", " << html_escape(r->run.split) << ", seed " << r->run.seed << "</h4>\n";
  for (const auto& e : s.examples) {
    const auto& ex = e.example;
    os << "<div class=\"example\">\n<div class=\"meta\">#" << ex.index << " · " << html_escape(ex.example_id) << " · "
       << ex.n_tokens << " tokens, " << ex.n_deferred << " deferred";
    if (e.metric)
      os << " · " << html_escape(x.metric) << " "
         << (*e.metric == 1.0   ? "<span class=\"right\">1 ✓</span>"
             : *e.metric == 0.0 ? "<span class=\"wrong\">0 ✗</span>"
                                : html_escape(num(*e.metric)));
    os << "</div>\n<div class=\"prompt\">" << html_escape(truncate_utf8(ex.prompt, 800)) << "</div>\n";
    os << "<div class=\"output\">";
    if (ex.tokens.empty()) {
      os << html_escape(ex.output) << " <span class=\"meta\">(no token trace stored)</span>";
    } else {
      for (const auto& t : ex.tokens) {
        std::string title = source_name(x, size_t(std::max(t.source, 0)));
        if (t.probs.size() > 1 && std::isfinite(t.probs[0])) title += ", P(defer) = " + num(1.0 - t.probs[0]);
        os << "<span class=\"tok src" << std::max(t.source, 0) << "\" title=\"" << html_escape(title) << "\">"
           << html_escape(t.text) << "</span>";
      }
    }
    os << "</div>\n<div class=\"reference\">reference: " << html_escape(ex.reference) << "</div>\n</div>\n";
  }
  return os.str();
}

uint32_t count_source_legend(const ReportExperiment& x) { return uint32_t(std::max<size_t>(x.source_names.size(), 1)); }

}  // namespace

std::string report_html(const ReportData& data) {
  std::ostringstream os;
  os << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
     << "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
     << "<title>colm report</title>\n<style>" << kCss << source_css(data) << "</style>\n</head>\n<body>\n";
  os << "<h1>colm report</h1>\n<p class=\"note\">Database: " << html_escape(data.database) << " — "
     << data.experiments.size() << " experiment(s).</p>\n";
  for (const auto& x : data.experiments) {
    os << "<h2>Experiment " << html_escape(x.record.name) << "</h2>\n<p class=\"note\">"
       << html_escape(experiment_summary(x)) << "</p>\n";
    os << "<h3>Plots</h3>\n";
    const auto splits = plot_splits(x);
    if (splits.empty() && curve_splits(x).empty())
      os << "<p class=\"none\">(no policy runs with a threshold to plot)</p>\n";
    for (const auto& split : splits)
      for (const auto& plot : sweep_plots(x, split)) os << render_svg(plot);
    for (const auto& split : curve_splits(x)) os << render_svg(curve_plot(x, split));
    if (const auto cal = calibration_plot(x)) os << render_svg(*cal);
    os << "<p class=\"note\">Dashed lines: single models (their " << html_escape(x.metric)
       << " on the split); vertical bars: the run's interval; rings: the calibrated η.</p>\n";
    os << "<h3>Runs</h3>\n" << render_html(runs_table(x));
    if (const auto edge = edge_text(x); !edge.empty()) os << "<p class=\"edge\">" << html_escape(edge) << "</p>\n";
    if (const auto curves = curve_table(x); !curves.header.empty())
      os << "<h3>Curves (fixed deferral rates)</h3>\n" << render_html(curves);
    const auto all = all_metrics_table(x);
    if (!all.header.empty()) os << "<h3>All metrics</h3>\n" << render_html(all);
    os << "<h3>Calibration curve</h3>\n";
    const auto cal = calibration_tables(x);
    if (cal.empty()) os << "<p class=\"none\">(no calibration stored)</p>\n";
    for (const auto& [title, table] : cal) os << "<h4>" << html_escape(title) << "</h4>\n" << render_html(table);
    os << "<h3>Compared with the best single model</h3>\n";
    const auto refs = best_reference_text(x);
    os << "<p>" << (refs.empty() ? "(no single-model run to compare with)" : "Reference: " + html_escape(refs) + ".")
       << "</p>\n" << render_html(comparison_table(x)) << "<p class=\"note\">" << html_escape(methods_text(x))
       << "</p>\n";
    os << "<h3>The learned policy against every run</h3>\n";
    if (const auto text = learned_text(x); text.empty())
      os << "<p class=\"none\">(no finished run of a policy trained with objective marginal_likelihood)</p>\n";
    else
      os << "<p class=\"note\">" << html_escape(text) << "</p>\n" << render_html(learned_comparison_table(x));
    os << "<h3>Where it defers</h3>\n<p class=\"note\">" << html_escape(kDeferralNote)
       << "</p>\n" << render_html(deferral_table(x));
    if (has_several_assistants(x))
      os << "<h3>Where each assistant is called</h3>\n<p class=\"note\">" << html_escape(kAssistantNote)
         << "</p>\n" << render_html(assistant_table(x));
    if (!x.analysis.empty())
      os << "<h3>Teacher-forced analysis</h3>\n<p class=\"note\">" << html_escape(kAnalysisNote) << "</p>\n"
         << render_html(analysis_table(x));
    os << "<h3>Example outputs</h3>\n<div class=\"legend-box\">Token colours: ";
    for (uint32_t s = 0; s < count_source_legend(x); ++s)
      os << "<span class=\"swatch src" << s << "\">" << html_escape(source_name(x, s)) << (s == 0 ? " (base)" : " (assistant)")
         << "</span>";
    os << "</div>\n";
    if (x.showcases.empty()) os << "<p class=\"none\">(no example outputs)</p>\n";
    for (const auto& s : x.showcases) os << html_showcase(x, s);
  }
  os << "</body>\n</html>\n";
  return os.str();
}

}  // namespace colm
