// `colm merge OUT.db IN.db...`: joins shard databases (e.g. one per Slurm array task) into one.
// The matching rules (experiments by name, runs by content key, artifacts by hash) are the store's.
#include <iostream>

#include <boost/program_options.hpp>
#include <spdlog/spdlog.h>

#include "cli.hpp"
#include "harness/store.hpp"

namespace colm::cli {
namespace {

namespace po = boost::program_options;

int merge_command(const std::vector<std::string>& args, const GlobalOptions&) {
  po::options_description desc(
      "usage: colm merge OUT.db IN.db [IN.db ...]\n\n"
      "Copies every experiment, run, example, token, metric, calibration and artifact of each IN.db\n"
      "into OUT.db (created when absent), one transaction per input. Runs are matched by content\n"
      "key: a run finished in an input replaces an unfinished one; merging twice adds nothing.\n\noptions");
  std::vector<std::string> paths;
  desc.add_options()("help,h", "this help")("db", po::value<std::vector<std::string>>(&paths), "databases");
  po::positional_options_description pos;
  pos.add("db", -1);
  po::variables_map vm;
  if (const auto rc = parse_options("merge", args, desc, vm, &pos)) return *rc;
  if (paths.size() < 2) {
    std::cerr << "colm merge: need OUT.db and at least one IN.db (see colm merge --help)\n";
    return 2;
  }
  auto out = ResultsStore::open(paths.front());
  for (size_t i = 1; i < paths.size(); ++i) {
    const auto s = out.merge_from(paths[i]);
    spdlog::info("[merge] {} -> {}: {} experiments, {} runs ({} replaced), {} examples, {} tokens, {} metrics, "
                 "{} calibration rows, {} artifacts, {} configs",
                 paths[i], paths.front(), s.experiments, s.runs, s.runs_replaced, s.examples, s.tokens, s.metrics,
                 s.calibration, s.artifacts, s.configs);
    std::cout << "merged " << paths[i] << ": " << s.runs << " runs (" << s.runs_replaced << " replaced), "
              << s.examples << " examples, " << s.metrics << " metrics\n";
  }
  const auto integrity = out.integrity_check();
  if (integrity != "ok") {
    std::cerr << "colm merge: " << paths.front() << " failed its integrity check: " << integrity << "\n";
    return 1;
  }
  return 0;
}

const RegisterCommand kRegister("merge", "merge shard result databases: colm merge OUT.db IN.db...", merge_command);

}  // namespace
}  // namespace colm::cli
