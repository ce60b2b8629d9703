// `colm run EXPERIMENT.toml [--dry-run] [--set k=v ...] [--shard i/n]`: validates the experiment
// (every key, every plugin, checkpoints, vocabularies) before any work, then runs its stages.
#include <iostream>

#include <boost/program_options.hpp>
#include <spdlog/spdlog.h>

#include "cli.hpp"
#include "harness/experiment.hpp"
#include "plugin/registry.hpp"
#include "harness/runner.hpp"

namespace colm::cli {
namespace {

namespace po = boost::program_options;

int run_command(const std::vector<std::string>& args, const GlobalOptions& global) {
  po::options_description desc(
      "usage: colm run EXPERIMENT.toml [options]\n\n"
      "Validates the experiment (unknown keys, types, plugins, checkpoints, vocabularies) before any\n"
      "work, then runs its stages: prepare experts, score, train policies, calibrate eta on the\n"
      "validation split, sweep on the test split. Finished runs are skipped; an interrupted run\n"
      "resumes example by example.\n\noptions");
  std::vector<std::string> overrides;
  std::string shard = "0/1";
  desc.add_options()("help,h", "this help")(
      "dry-run", "validate and print the expanded runs without executing anything")(
      "set", po::value<std::vector<std::string>>(&overrides)->composing(),
      "override a key, e.g. --set sweep.eta=[0.2,0.4] (repeatable)")(
      "shard", po::value<std::string>(&shard)->default_value("0/1"),
      "run only runs i, i+n, i+2n, ... of the expanded list (i/n, 0-based), e.g. a Slurm array task")(
      "experiment", po::value<std::string>(), "the experiment TOML file");
  po::positional_options_description pos;
  pos.add("experiment", 1);
  po::variables_map vm;
  if (const auto rc = parse_options("run", args, desc, vm, &pos)) return *rc;
  if (!vm.count("experiment")) {
    std::cerr << "colm run: missing EXPERIMENT.toml (see colm run --help)\n";
    return 2;
  }
  ShardSpec sh;
  try {
    sh = parse_shard(shard);
  } catch (const Error& e) {
    std::cerr << "colm run: " << e.what() << "\n";
    return 2;
  }

  const auto path = vm["experiment"].as<std::string>();
  const auto spec = parse_experiment_file(path, overrides);
  Registry registry;
  registry.scan(Registry::default_dirs(global.plugin_dirs, global.argv0));
  LoadOptions lo;
  lo.dry_run = vm.count("dry-run") > 0;
  auto loaded = load_experiment(spec, registry, lo);
  const auto runs = expand_runs(spec, loaded);

  if (lo.dry_run) {
    std::cout << "experiment " << spec.name << " (" << path << "): " << spec.experts.size() << " experts, task "
              << spec.task.plugin << ", " << spec.policies.size() << " policies, " << runs.size() << " runs"
              << (sh.count > 1 ? " (shard " + shard + " shown)" : "") << "\n";
    for (const auto& e : spec.experts)
      std::cout << "  expert " << e.name << " (" << e.role << ", " << e.plugin
                << (e.train ? ", lm-trained " + std::to_string(e.train->steps) + " steps" : "")
                << ") key=" << loaded.expert_keys.at(e.name).substr(0, 12) << "\n";
    for (const auto& p : spec.policies)
      std::cout << "  policy " << p.name << " (" << p.plugin
                << (p.trained ? ", " + p.objective + (p.init != "none" ? " after " + p.init : "") : "")
                << ") key=" << loaded.policy_keys.at(p.name).substr(0, 12) << "\n";
    for (size_t i = 0; i < runs.size(); ++i)
      if (in_shard(i, sh)) std::cout << "run " << i << ": " << describe_run(runs[i]) << "\n";
    return 0;
  }
  RunnerOptions ro;
  ro.shard = sh;
  const auto summary = run_experiment(spec, loaded, runs, registry, ro);
  std::cout << "experiment " << spec.name << ": " << summary.runs_done << " runs done, " << summary.runs_skipped
            << " already finished, " << summary.runs_failed << " failed; " << summary.examples_decoded
            << " examples decoded, " << summary.calibration_points << " calibration points decoded ("
            << summary.calibration_reused << " reused); results in " << spec.database << "\n";
  return summary.runs_failed ? 1 : 0;
}

const RegisterCommand kRegister("run", "validate and run an experiment (TOML); --dry-run lists its runs",
                                run_command);

}  // namespace
}  // namespace colm::cli
