// `colm run EXPERIMENT.toml [--dry-run] [--set k=v ...] [--shard i/n] [--stage S] [--jobs N|auto]`:
// validates the experiment (every key, every plugin, checkpoints, vocabularies) before any work, then
// runs its stages, in this process or in N worker processes that split the cores.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>

#include <boost/program_options.hpp>
#include <spdlog/spdlog.h>

#include "cli.hpp"
#include "harness/experiment.hpp"
#include "plugin/registry.hpp"
#include "harness/runner.hpp"
#include "method/distributed.hpp"
#include "colm/runtime.hpp"

extern char** environ;

namespace colm::cli {
namespace {

namespace po = boost::program_options;
namespace fs = std::filesystem;

// Runs `args` (argv[0] included) with COLM_THREADS=threads and `extra` ("NAME=value") added to the
// environment (replacing those names); returns the pid.
pid_t spawn_worker(const std::vector<std::string>& args, int threads, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> env_text;
  auto replaced = [&](const std::string& e) {
    if (e.rfind("COLM_THREADS=", 0) == 0) return true;
    for (const auto& x : extra)
      if (e.rfind(x.substr(0, x.find('=') + 1), 0) == 0) return true;
    return false;
  };
  for (char** e = environ; *e; ++e)
    if (!replaced(*e)) env_text.emplace_back(*e);
  env_text.push_back("COLM_THREADS=" + std::to_string(threads));
  env_text.insert(env_text.end(), extra.begin(), extra.end());
  std::vector<char*> argv, envp;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : env_text) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), envp.data());
  if (rc != 0) throw Error(std::string("colm run --jobs: cannot start a worker: ") + std::strerror(rc));
  return pid;
}

// Waits for a worker; false (logged) when it failed.
bool wait_worker(pid_t pid, const std::string& what) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
  spdlog::error("[run] worker {} ({}) {}", pid, what,
                WIFEXITED(status) ? "exited with status " + std::to_string(WEXITSTATUS(status))
                                  : "was killed by signal " + std::to_string(WTERMSIG(status)));
  return false;
}

// `--jobs auto`: one worker per usable core while every expert is small enough that intra-op threads
// gain little (measured: the default experiment's 0.9M-parameter models), else one process.
int auto_jobs(const LoadedExperiment& loaded, int threads, size_t runs) {
  int64_t largest = 0;
  for (const auto& [name, info] : loaded.expert_info) largest = std::max(largest, info.num_parameters);
  if (largest > 50'000'000) return 1;
  return std::max(1, std::min<int>(threads, int(std::max<size_t>(1, runs))));
}

// Training, calibration and the sweep, each split across `jobs` worker processes.
// Workers are this binary with the same arguments, a shard of this process's shard and their share
// of the threads; the results store (SQLite, WAL) takes their writes. Returns false when a worker failed.
bool run_in_workers(const std::vector<std::string>& base_args, int jobs, int threads, const ShardSpec& shard,
                    const std::string& shard_by) {
  const int per_worker = std::max(1, threads / jobs);
  spdlog::info("[run] {} worker processes, {} torch thread{} each", jobs, per_worker, per_worker == 1 ? "" : "s");
  bool ok = true;
  for (const char* stage : {"train", "calibrate", "sweep"}) {
    std::vector<pid_t> pids;
    for (int j = 0; j < jobs; ++j) {
      auto args = base_args;
      // Worker j of shard s/n takes runs s + j*n (mod n*jobs): the shards of all processes partition the runs.
      args.insert(args.end(), {"--stage", stage, "--shard-by", shard_by, "--shard",
                               std::to_string(shard.index + j * shard.count) + "/" +
                                   std::to_string(shard.count * jobs)});
      pids.push_back(spawn_worker(args, per_worker));
    }
    for (pid_t pid : pids) {
      int status = 0;
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        ok = false;
        spdlog::error("[run] worker {} ({} stage) {}", pid, stage,
                      WIFEXITED(status) ? "exited with status " + std::to_string(WEXITSTATUS(status))
                                        : "was killed by signal " + std::to_string(WTERMSIG(status)));
      }
    }
    if (!ok) break;
  }
  return ok;
}

int run_command(const std::vector<std::string>& args, const GlobalOptions& global) {
  po::options_description desc(
      "usage: colm run EXPERIMENT.toml [options]\n\n"
      "Validates the experiment (unknown keys, types, plugins, checkpoints, vocabularies) before any\n"
      "work, then runs its stages: prepare experts, score, train policies, calibrate eta on the\n"
      "validation split, sweep on the test split. Finished runs are skipped; an interrupted run\n"
      "resumes example by example.\n\noptions");
  std::vector<std::string> overrides;
  std::string shard = "0/1", stage = "all", jobs_text = "1", shard_by = "runs";
  double wait_s = 3600;
  int nproc = 1;
  desc.add_options()("help,h", "this help")(
      "dry-run", "validate and print the expanded runs without executing anything")(
      "set", po::value<std::vector<std::string>>(&overrides)->composing(),
      "override a key, e.g. --set sweep.eta=[0.2,0.4] (repeatable)")(
      "shard", po::value<std::string>(&shard)->default_value("0/1"),
      "run only runs i, i+n, i+2n, ... of the expanded list (i/n, 0-based), e.g. a Slurm array task")(
      "shard-by", po::value<std::string>(&shard_by)->default_value("runs"),
      "runs: the shard takes whole runs; examples: it takes the i-th of n ranges of every run's examples "
      "(finish the runs with --stage finish after merging the shard databases)")(
      "stage", po::value<std::string>(&stage)->default_value("all"),
      "all, or one stage alone: prepare (lm-trained experts), train (prepare, then the policies), calibrate "
      "(the shard's share of the calibrations), sweep (the shard's runs, with calibrations read from their "
      "artifacts), finish (metrics of runs whose examples are all stored, e.g. after colm merge); a stage "
      "alone waits for the artifacts of the earlier ones and never builds them")(
      "nproc", po::value<int>(&nproc)->default_value(1),
      "train (stages prepare and train) in N data-parallel processes (c10d, Gloo) that build each artifact "
      "together, then run the other stages here; under srun -n N with --stage train the tasks form the group")(
      "wait", po::value<double>(&wait_s)->default_value(3600),
      "seconds to wait for an artifact another process is building or an earlier stage must build, before "
      "failing (COLM_ARTIFACT_WAIT overrides it)")(
      "jobs", po::value<std::string>(&jobs_text)->default_value("1"),
      "N or auto: train, calibrate and sweep in N worker processes that split the threads (auto: one per "
      "thread when the models are small); results are the same as with 1")(
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
  int jobs = 0;  // 0: auto
  try {
    sh = parse_shard(shard);
    parse_stage(stage);
    parse_shard_by(shard_by);
    if (!(wait_s >= 0)) throw Error("--wait: expected seconds >= 0");
    if (nproc < 1) throw Error("--nproc: expected a number >= 1");
    if (jobs_text != "auto") {
      size_t used = 0;
      jobs = std::stoi(jobs_text, &used);
      if (used != jobs_text.size() || jobs < 1) throw std::invalid_argument("");
    }
  } catch (const Error& e) {
    std::cerr << "colm run: " << e.what() << "\n";
    return 2;
  } catch (const std::exception&) {
    std::cerr << "colm run: --jobs '" << jobs_text << "': expected a number >= 1 or auto\n";
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
      if (shard_by == "examples" || in_shard(i, sh)) std::cout << "run " << i << ": " << describe_run(runs[i]) << "\n";
    return 0;
  }
  RunnerOptions ro;
  ro.shard = sh;
  ro.stage = stage;
  ro.shard_by = shard_by;
  ro.wait_s = wait_s;
  const int threads = torch_threads();
  const bool training_stage = stage == "prepare" || stage == "train";
  if (training_stage) ro.parallel = DataParallel::from_environment();  // a rank of --nproc, or of srun -n N
  if (nproc > 1 && !ro.parallel && stage != "finish") {
    // Data-parallel training: N ranks of this command run the training stages together; the other
    // stages then run here (or in --jobs workers), reusing what they built.
    std::vector<std::string> args = {global.argv0, "--log-level", global.log_level};
    for (const auto& d : global.plugin_dirs) args.insert(args.end(), {"--plugin-dir", d});
    args.insert(args.end(), {"run", path, "--stage", stage == "prepare" ? "prepare" : "train", "--shard", shard,
                             "--wait", std::to_string(wait_s)});
    for (const auto& o : overrides) args.insert(args.end(), {"--set", o});
    const auto store_file = (fs::absolute(spec.artifacts_dir) / (".dist-store-" + std::to_string(::getpid()))).string();
    fs::create_directories(spec.artifacts_dir);
    std::error_code ec;
    fs::remove(store_file, ec);
    const int per_rank = std::max(1, threads / nproc);
    spdlog::info("[run] training in {} data-parallel processes (c10d, gloo), {} torch thread{} each", nproc, per_rank,
                 per_rank == 1 ? "" : "s");
    std::vector<pid_t> pids;
    for (int rank = 0; rank < nproc; ++rank)
      pids.push_back(spawn_worker(args, per_rank,
                                  {"COLM_RANK=" + std::to_string(rank), "COLM_WORLD_SIZE=" + std::to_string(nproc),
                                   "COLM_DIST_INIT=file://" + store_file}));
    bool ok = true;
    for (pid_t pid : pids) ok = wait_worker(pid, "train") && ok;
    fs::remove(store_file, ec);
    if (!ok) return 1;
    if (training_stage) return 0;
  }
  if (jobs == 0) jobs = auto_jobs(loaded, threads, runs.size());
  if (jobs > 1 && (stage == "all" || stage == "sweep")) {
    // Workers train (each its share of the experts and policies), then calibrate, then sweep; they
    // share the artifacts (each built once: its builder claims it, the others wait for DONE) and the store.
    std::vector<std::string> args = {global.argv0, "--log-level", global.log_level};
    for (const auto& d : global.plugin_dirs) args.insert(args.end(), {"--plugin-dir", d});
    args.insert(args.end(), {"run", path, "--jobs", "1", "--wait", std::to_string(wait_s)});
    for (const auto& o : overrides) args.insert(args.end(), {"--set", o});
    const bool ok = run_in_workers(args, jobs, threads, sh, shard_by);
    auto store = ResultsStore::open(spec.database);
    int64_t done = 0, failed = 0, pending = 0;
    for (size_t i = 0; i < runs.size(); ++i) {
      if (shard_by == "runs" && !in_shard(i, sh)) continue;
      const auto r = store.find_run(runs[i].key);
      if (r && r->status == "done") ++done;
      else if (r && r->status == "failed") ++failed;
      else ++pending;
    }
    std::cout << "experiment " << spec.name << ": " << done << " runs done, " << failed << " failed, " << pending
              << " not finished, by " << jobs << " workers; results in " << spec.database << "\n";
    return ok && failed == 0 && pending == 0 ? 0 : 1;
  }
  const auto summary = run_experiment(spec, loaded, runs, registry, ro);
  std::cout << "experiment " << spec.name << ": " << summary.runs_done << " runs done, " << summary.runs_skipped
            << " already finished, " << summary.runs_failed << " failed"
            << (summary.runs_partial ? ", " + std::to_string(summary.runs_partial) +
                                           (stage == "finish" ? " incomplete (examples missing)"
                                                              : " with this shard's examples stored")
                                     : std::string())
            << "; " << summary.examples_decoded << " examples decoded, " << summary.calibration_points
            << " calibration points decoded (" << summary.calibration_reused << " reused); results in "
            << spec.database << "\n";
  return summary.runs_failed || (stage == "finish" && summary.runs_partial) ? 1 : 0;
}

const RegisterCommand kRegister("run", "validate and run an experiment (TOML); --dry-run lists its runs",
                                run_command);

}  // namespace
}  // namespace colm::cli
