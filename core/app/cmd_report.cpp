// `colm report DB [--experiment NAME] --out DIR [--format md|html|json]`: renders a results
// database as Markdown and one self-contained HTML page, or prints its runs as JSON. Read-only.
#include <filesystem>
#include <fstream>
#include <iostream>

#include <boost/program_options.hpp>
#include <spdlog/spdlog.h>

#include "cli.hpp"
#include "harness/report.hpp"

namespace colm::cli {
namespace {

namespace po = boost::program_options;
namespace fs = std::filesystem;

// Writes through a temporary file and a rename, so a reader never sees half a report.
void write_file(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error("report: cannot write " + tmp.string());
    out << text;
    out.close();
    if (!out) throw Error("report: cannot write " + tmp.string() + " (disk full?)");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw Error("report: cannot move " + tmp.string() + " to " + path.string() + ": " + ec.message());
}

int report_command(const std::vector<std::string>& args, const GlobalOptions&) {
  std::string db, out_dir, format = "all";
  ReportOptions options;
  po::options_description desc(
      "usage: colm report DB [--experiment NAME] --out DIR [--format md|html|json]\n\n"
      "Reads a results database (never writes it) and renders, per experiment: every run with its\n"
      "metrics and bootstrap intervals and the base it decoded with, the calibration curves (and\n"
      "calibrations that chose the edge of their candidates), curves of the metric against the\n"
      "deferral rate, each policy compared with the best single model and the learned policy with\n"
      "every other run on the same examples (paired bootstrap and McNemar's exact test), where the\n"
      "policy defers (share of digits, most frequent deferred tokens) and example outputs with each\n"
      "token coloured by the model that emitted it.\n\n"
      "  --format md     DIR/report.md (Markdown tables)\n"
      "  --format html   DIR/report.html (one self-contained page with SVG plots, no scripts)\n"
      "  (no --format)   both files\n"
      "  --format json   prints {\"runs\": [...]} to stdout (no --out needed): per run id, experiment,\n"
      "                  kind, policy, plugin, rule, objective, base, strategy, threshold,\n"
      "                  target_rate, calibrated, calibration_edge, curve, split, seed, status,\n"
      "                  metrics {NAME: {value, ci: [lo, hi]}} and, for the learned policy,\n"
      "                  comparisons [{run, policy, base, strategy, threshold, metric, n,\n"
      "                  difference, ci, p, mcnemar_p}] (see experiments/README.md)\n\noptions");
  desc.add_options()("help,h", "this help")                                                        //
      ("experiment,e", po::value(&options.experiment), "only this experiment (default: every one)")  //
      ("out,o", po::value(&out_dir), "directory for report.md / report.html (created when absent)")  //
      ("format,f", po::value(&format), "md, html or json (default: md and html)")                    //
      ("metric", po::value(&options.metric), "metric compared and plotted (default: accuracy, else exact_match)")  //
      ("bootstrap-samples", po::value(&options.bootstrap_samples),
       "paired bootstrap resamples (default: the experiment's [report] bootstrap_samples)")  //
      ("examples", po::value(&options.examples),
       "example outputs per policy (default: the experiment's [report] examples)")  //
      ("db", po::value(&db), "results database");
  po::positional_options_description pos;
  pos.add("db", 1);
  po::variables_map vm;
  if (const auto rc = parse_options("report", args, desc, vm, &pos)) return *rc;
  if (db.empty()) {
    std::cerr << "colm report: no database given (see colm report --help)\n";
    return 2;
  }
  if (format != "all" && format != "md" && format != "html" && format != "json") {
    std::cerr << "colm report: --format must be md, html or json, got '" << format << "'\n";
    return 2;
  }
  if (format != "json" && out_dir.empty()) {
    std::cerr << "colm report: --out DIR is required for the Markdown and HTML reports\n";
    return 2;
  }
  if (vm.count("bootstrap-samples") && options.bootstrap_samples < 0) {
    std::cerr << "colm report: --bootstrap-samples must be >= 0\n";
    return 2;
  }
  if (vm.count("examples") && options.examples < 0) {
    std::cerr << "colm report: --examples must be >= 0\n";
    return 2;
  }

  try {
    const auto store = open_results_for_reading(db);
    options.analysis = format != "json";
    const auto data = load_report(store, options);
    if (format == "json") {
      std::cout << report_json(data);
      return 0;
    }
    std::error_code ec;
    fs::create_directories(out_dir, ec);
    if (ec) throw Error("report: cannot create " + out_dir + ": " + ec.message());
    if (format == "all" || format == "md") {
      const auto path = fs::path(out_dir) / "report.md";
      write_file(path, report_markdown(data));
      std::cout << "wrote " << path.string() << "\n";
    }
    if (format == "all" || format == "html") {
      const auto path = fs::path(out_dir) / "report.html";
      write_file(path, report_html(data));
      std::cout << "wrote " << path.string() << "\n";
    }
    size_t runs = 0;
    for (const auto& x : data.experiments) runs += x.runs.size();
    spdlog::info("[report] {}: {} experiment(s), {} runs", db, data.experiments.size(), runs);
  } catch (const std::exception& e) {
    std::cerr << "colm report: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

const RegisterCommand kRegister("report", "render a results database: colm report DB --out DIR [--format md|html|json]",
                                report_command);

}  // namespace
}  // namespace colm::cli
