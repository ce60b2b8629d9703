// The report as Markdown: the section tables of report_sections.cpp under one heading per experiment.
// Plots and example outputs are the HTML page's.
#include "harness/report_internal.hpp"

#include <sstream>

namespace colm {

using namespace report_detail;

std::string report_markdown(const ReportData& data) {
  std::ostringstream os;
  os << "# colm report\n\nDatabase: `" << sanitize_utf8(data.database) << "` — " << data.experiments.size()
     << " experiment(s).\n";
  for (const auto& x : data.experiments) {
    os << "\n## Experiment " << md_escape(x.record.name) << "\n\n" << md_escape(experiment_summary(x)) << "\n\n";
    os << "### Runs\n\n" << render_markdown(runs_table(x)) << "\n";
    if (const auto edge = edge_text(x); !edge.empty()) os << "**" << md_escape(edge) << "**\n\n";
    if (const auto curves = curve_table(x); !curves.header.empty())
      os << "### Curves (fixed deferral rates)\n\n" << render_markdown(curves) << "\n";
    const auto all = all_metrics_table(x);
    if (!all.header.empty()) os << "### All metrics\n\n" << render_markdown(all) << "\n";
    os << "### Calibration curve\n\n";
    const auto cal = calibration_tables(x);
    if (cal.empty()) os << "_(no calibration stored)_\n\n";
    for (const auto& [title, table] : cal) os << "#### " << md_escape(title) << "\n\n" << render_markdown(table) << "\n";
    os << "### Compared with the best single model\n\n";
    const auto refs = best_reference_text(x);
    os << (refs.empty() ? "_(no single-model run with " + md_escape(x.metric) + " to compare with)_"
                        : "Reference: " + md_escape(refs) + ".")
       << "\n\n" << render_markdown(comparison_table(x)) << "\n" << md_escape(methods_text(x)) << "\n\n";
    os << "### The learned policy against every run\n\n";
    if (const auto text = learned_text(x); text.empty())
      os << "_(no finished run of a policy trained with objective marginal\\_likelihood)_\n\n";
    else
      os << md_escape(text) << "\n\n" << render_markdown(learned_comparison_table(x)) << "\n";
    os << "### Where it defers\n\n" << md_escape(kDeferralNote) << "\n\n"
       << render_markdown(deferral_table(x)) << "\n";
    if (has_several_assistants(x))
      os << "### Where each assistant is called\n\n" << md_escape(kAssistantNote) << "\n\n"
         << render_markdown(assistant_table(x)) << "\n";
    if (!x.analysis.empty())
      os << "### Teacher-forced analysis\n\n" << md_escape(kAnalysisNote) << "\n\n"
         << render_markdown(analysis_table(x)) << "\n";
  }
  return os.str();
}

}  // namespace colm
