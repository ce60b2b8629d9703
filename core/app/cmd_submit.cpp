// `colm submit EXPERIMENT.toml --slurm --shards N [options] [-- sbatch options]`: an experiment as
// Slurm jobs: train once; an array of calibration shards; an array of sweep shards; a merge that
// also finishes runs split by examples. Each job is this binary running one stage (colm run
// --stage ...); what a stage does is the runner's business, the scheduling is Slurm's.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include <boost/program_options.hpp>
#include <spdlog/spdlog.h>

#include "cli.hpp"
#include "colm/error.hpp"
#include "harness/experiment.hpp"
#include "harness/runner.hpp"

namespace fs = std::filesystem;

namespace colm::cli {
namespace {

namespace po = boost::program_options;

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=:,@%+") ==
                        std::string::npos)
    return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Runs a shell command; returns its exit status and stdout (stderr passes through).
int capture(const std::string& command, std::string* out) {
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) throw Error("colm submit: cannot run: " + command);
  char buf[4096];
  std::string text;
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) text.append(buf, n);
  const int status = ::pclose(pipe);
  if (out) *out = text;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

struct Job {
  std::string name;    // train, calibrate, sweep, merge
  std::string script;  // path of its batch script
  std::string array;   // "0-3" or ""
  std::string id;      // filled by sbatch
};

// The state Slurm reports for a job (COMPLETED, FAILED, CANCELLED, ...; for an array, the worst
// of its tasks' states), from `scontrol show job` (kept MinJobAge seconds after the end).
std::string job_state(const std::string& id) {
  std::string out;
  if (capture("scontrol show job " + shell_quote(id) + " 2>/dev/null", &out) != 0) return "UNKNOWN";
  std::string worst;
  for (size_t pos = out.find("JobState="); pos != std::string::npos; pos = out.find("JobState=", pos + 1)) {
    const auto end = out.find_first_of(" \n", pos);
    const auto state = out.substr(pos + 9, end - pos - 9);
    if (worst.empty() || worst == "COMPLETED") worst = state;
  }
  return worst.empty() ? "UNKNOWN" : worst;
}

int submit_command(const std::vector<std::string>& all_args, const GlobalOptions& global) {
  // Everything after "--" goes to every sbatch call untouched.
  std::vector<std::string> args, sbatch_extra;
  bool extra = false;
  for (const auto& a : all_args) {
    if (!extra && a == "--") extra = true;
    else (extra ? sbatch_extra : args).push_back(a);
  }
  po::options_description desc(
      "usage: colm submit EXPERIMENT.toml --slurm --shards N [options] [-- sbatch options]\n\n"
      "Submits the experiment to Slurm as four jobs, each this binary running one stage of `colm run`:\n"
      "  train      `--stage train` once (lm-trained experts, then the trained policies);\n"
      "  calibrate  an array of N tasks, `--stage calibrate --shard i/N`, after train succeeded;\n"
      "  sweep      an array of N tasks, `--stage sweep --shard i/N`, after every calibrate task succeeded;\n"
      "  merge      `colm merge` of the N+N shard databases into the experiment's database, then\n"
      "             `--stage finish` (metrics of runs split by examples), after every sweep task succeeded.\n"
      "Dependencies are afterok, with --kill-on-invalid-dep=yes: a failed job cancels those after it.\n"
      "Shard databases, batch scripts and job logs go to --dir. Artifacts are shared through the\n"
      "experiment's artifacts_dir, which every node must see at the same path.\n\noptions");
  std::vector<std::string> overrides;
  std::string dir, shard_by = "examples", database;
  int64_t shards = 0;
  double wait_s = 3600;
  desc.add_options()("help,h", "this help")("slurm", "submit to Slurm with sbatch (the only scheduler so far)")(
      "shards", po::value<int64_t>(&shards), "N: calibration and sweep shards (array tasks), N >= 1")(
      "shard-by", po::value<std::string>(&shard_by)->default_value("examples"),
      "how sweep shards split the sweep: examples (every run's examples in N ranges) or runs")(
      "set", po::value<std::vector<std::string>>(&overrides)->composing(),
      "override a key of the experiment in every job, e.g. --set sweep.max_examples=100 (repeatable)")(
      "database", po::value<std::string>(&database),
      "the merged database (default: the experiment's [experiment] database)")(
      "dir", po::value<std::string>(&dir),
      "where shard databases, batch scripts and logs go (default: results/slurm/<experiment>)")(
      "wait", po::value<double>(&wait_s)->default_value(3600),
      "seconds a stage waits for an artifact of an earlier stage (colm run --wait)")(
      "wait-jobs", "block until the merge job has ended; exit 0 only if every job completed")(
      "dry-run", "write the batch scripts and print the sbatch commands without submitting")(
      "experiment", po::value<std::string>(), "the experiment TOML file");
  po::positional_options_description pos;
  pos.add("experiment", 1);
  po::variables_map vm;
  if (const auto rc = parse_options("submit", args, desc, vm, &pos)) return *rc;
  auto usage_error = [](const std::string& what) {
    std::cerr << "colm submit: " << what << " (see colm submit --help)\n";
    return 2;
  };
  if (!vm.count("experiment")) return usage_error("missing EXPERIMENT.toml");
  if (!vm.count("slurm")) return usage_error("say which scheduler: --slurm");
  if (shards < 1) return usage_error("--shards N with N >= 1 is required");
  try {
    parse_shard_by(shard_by);
  } catch (const Error& e) {
    return usage_error(e.what());
  }

  const auto path = fs::absolute(vm["experiment"].as<std::string>()).string();
  // The schema is checked now; plugins and checkpoints are checked by the train job (on its node).
  const auto spec = parse_experiment_file(path, overrides);
  if (dir.empty()) dir = "results/slurm/" + spec.name;
  if (database.empty()) database = spec.database;
  const auto work = fs::current_path();
  const auto out_dir = fs::absolute(dir);
  const auto final_db = fs::absolute(database).string();
  fs::create_directories(out_dir);
  const auto binary = fs::canonical("/proc/self/exe").string();

  // `colm run` with this experiment, its overrides and the global options, in every job.
  std::string colm = shell_quote(binary) + " --log-level " + shell_quote(global.log_level);
  for (const auto& d : global.plugin_dirs) colm += " --plugin-dir " + shell_quote(fs::absolute(d).string());
  std::string run = colm + " run " + shell_quote(path);
  for (const auto& o : overrides) run += " --set " + shell_quote(o);
  run += " --wait " + std::to_string(int64_t(wait_s));
  const auto n = std::to_string(shards);
  auto shard_db = [&](const std::string& stage, const std::string& index) {
    return (out_dir / (stage + "-" + index + ".db")).string();
  };

  std::vector<Job> jobs;
  auto add_job = [&](const std::string& name, const std::string& array, const std::string& body) {
    const auto script = (out_dir / (name + ".sbatch")).string();
    std::ofstream f(script);
    f << "#!/bin/bash\n# " << name << " job of experiment " << spec.name << ", written by colm submit\n"
      << "set -euo pipefail\ncd " << shell_quote(work.string()) << "\n" << body << "\n";
    if (!f) throw Error("colm submit: cannot write " + script);
    jobs.push_back({name, script, array, ""});
  };
  add_job("train", "", run + " --stage train");
  add_job("calibrate", "0-" + std::to_string(shards - 1),
          run + " --stage calibrate --shard \"$SLURM_ARRAY_TASK_ID/" + n + "\" --set \"experiment.database=" +
              (out_dir / "calibrate-").string() + "$SLURM_ARRAY_TASK_ID.db\"");
  add_job("sweep", "0-" + std::to_string(shards - 1),
          run + " --stage sweep --shard-by " + shard_by + " --shard \"$SLURM_ARRAY_TASK_ID/" + n +
              "\" --set \"experiment.database=" + (out_dir / "sweep-").string() + "$SLURM_ARRAY_TASK_ID.db\"");
  std::string inputs;
  for (const char* stage : {"calibrate", "sweep"})
    for (int64_t i = 0; i < shards; ++i) inputs += " " + shell_quote(shard_db(stage, std::to_string(i)));
  add_job("merge", "",
          colm + " merge " + shell_quote(final_db) + inputs + "\n" + run + " --stage finish --set " +
              shell_quote("experiment.database=" + final_db));

  std::string extra_text;
  for (const auto& e : sbatch_extra) extra_text += " " + shell_quote(e);
  std::string previous;
  std::ofstream record(out_dir / "jobs.txt");
  for (auto& job : jobs) {
    const auto log = (out_dir / (job.name + (job.array.empty() ? "-%j.out" : "-%A_%a.out"))).string();
    std::string cmd = "sbatch --parsable --job-name " + shell_quote("colm-" + spec.name + "-" + job.name) +
                      " --output " + shell_quote(log) + " --chdir " + shell_quote(work.string());
    if (!job.array.empty()) cmd += " --array=" + job.array;
    if (!previous.empty()) cmd += " --dependency=afterok:" + previous + " --kill-on-invalid-dep=yes";
    cmd += extra_text + " " + shell_quote(job.script);
    if (vm.count("dry-run")) {
      std::cout << cmd << "\n";
      previous = "<" + job.name + ">";
      continue;
    }
    std::string out;
    const int rc = capture(cmd, &out);
    // --parsable prints "id" or "id;cluster".
    job.id = trim(out.substr(0, out.find(';')));
    if (rc != 0 || job.id.empty() || job.id.find_first_not_of("0123456789") != std::string::npos)
      throw Error("colm submit: sbatch failed for the " + job.name + " job (exit " + std::to_string(rc) + "): " + cmd +
                  (out.empty() ? "" : "\n" + out));
    previous = job.id;
    record << job.name << " " << job.id << " " << job.script << "\n";
    std::cout << "submitted " << job.name << (job.array.empty() ? "" : " (array " + job.array + ")") << ": job "
              << job.id << "\n";
  }
  if (vm.count("dry-run")) return 0;
  std::cout << "experiment " << spec.name << ": shard databases and logs in " << out_dir.string()
            << "; merged results in " << final_db << " when job " << jobs.back().id << " completes\n";
  if (!vm.count("wait-jobs")) return 0;

  // Until no job is queued or running (a failed job cancels the ones after it).
  for (;;) {
    std::string out;
    std::string ids;
    for (const auto& j : jobs) ids += (ids.empty() ? "" : ",") + j.id;
    if (capture("squeue -h -j " + ids + " 2>/dev/null", &out) == 0 && trim(out).empty()) break;
    std::this_thread::sleep_for(std::chrono::seconds(2));
  }
  bool ok = true;
  for (const auto& j : jobs) {
    const auto state = job_state(j.id);
    std::cout << "job " << j.id << " (" << j.name << "): " << state << "\n";
    ok = ok && state == "COMPLETED";
  }
  if (!ok) std::cerr << "colm submit: a job did not complete; logs in " << out_dir.string() << "\n";
  return ok ? 0 : 1;
}

const RegisterCommand kRegister("submit",
                                "submit an experiment to Slurm: train, calibrate and sweep arrays, merge",
                                submit_command);

}  // namespace
}  // namespace colm::cli
