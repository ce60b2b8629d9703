// The runner: executes an expanded experiment stage by stage (prepare experts, score, train
// policies, calibrate, sweep), with content-addressed artifacts, resume and shards.
// Parsing and validation live in experiment.hpp; storage in store.hpp; decoding in decode.hpp.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "harness/experiment.hpp"
#include "harness/store.hpp"

namespace colm {

class DataParallel;
class Progress;
class Registry;

// --shard i/n: this process runs runs i, i+n, i+2n, ... of the expanded list.
struct ShardSpec {
  int64_t index = 0;
  int64_t count = 1;
};
// "i/n" with 0 <= i < n; anything else is a colm::Error saying what is wrong.
ShardSpec parse_shard(const std::string& text);
bool in_shard(size_t run_index, const ShardSpec& shard);

// How the sweep is split across shards: "runs" (shard i/n takes runs i, i+n, ...) or "examples"
// (every shard takes every run, and of each run the examples in its range: examples_range()).
std::string parse_shard_by(const std::string& text);
// Shard i/n's examples of a run with n_examples: [n_examples*i/n, n_examples*(i+1)/n).
std::pair<size_t, size_t> examples_range(size_t n_examples, const ShardSpec& shard);

struct RunnerOptions {
  ShardSpec shard;
  std::string shard_by = "runs";
  // "all" (default): every stage, building what is missing. One stage alone:
  //   "prepare": the lm-trained experts (the shard splits the reference experts);
  //   "train": prepare, then the trained policies (the shard splits the experts and policies to
  //            train, dealt out as one list);
  //   "calibrate": the shard's share of every calibration the experiment needs (each (policy,
  //            strategy) to one shard); trained artifacts are waited for, never built;
  //   "sweep": the shard's runs (or examples) with the calibrations read from their artifacts
  //            (waited for, never made);
  //   "finish": decodes nothing: every run whose examples are all stored (merged shard databases)
  //            gets its metrics from those examples and is marked done.
  std::string stage = "all";
  // Seconds a process waits for an artifact another process builds (or, in a stage alone, for an
  // artifact an earlier stage builds) before failing; COLM_ARTIFACT_WAIT overrides it.
  double wait_s = 3600;
  // Stages "prepare" and "train": the data-parallel group this process trains in (colm run --nproc,
  // srun), or null.
  std::shared_ptr<DataParallel> parallel;
};
// "all", "prepare", "train", "calibrate", "sweep" or "finish"; anything else is a colm::Error listing them.
std::string parse_stage(const std::string& text);

// What a process does with a missing artifact: build it (claiming it first; waiting when another
// process holds the claim) or only wait for it (a stage run alone), up to wait_s seconds.
// parallel: a data-parallel group (distributed.hpp) whose processes build each artifact together:
// rank 0 claims it (or finds it done) and every rank follows; rank 0 alone writes it.
struct ArtifactAccess {
  bool build = true;
  double wait_s = 3600;
  std::shared_ptr<DataParallel> parallel;
};

struct RunSummary {
  int64_t runs_done = 0;             // finished by this call
  int64_t runs_skipped = 0;          // already finished in the database
  int64_t runs_failed = 0;
  int64_t runs_partial = 0;          // sharded by examples: this shard's examples stored, others missing
  int64_t examples_decoded = 0;      // sweep examples decoded by this call (resumed runs: only the missing ones)
  int64_t calibration_points = 0;    // eta points decoded on the calibration split by this call
  int64_t calibration_reused = 0;    // eta points found in the store
};

// Stage "prepare": every expert with [experts.NAME.train] is trained with the `lm` objective into
// <artifacts_dir>/experts/<key>/ (resumable from its training checkpoints; reused when finished by
// any experiment with the same key) and reloaded from there into `loaded`.
// only: a shard of the lm-trained reference experts (the i-th, i+n-th, ... of them) is trained, the
// others are neither trained nor loaded (a "train" stage split across processes); a base or an
// assistant with a [train] table is always prepared (policies are trained on them).
void prepare_experts(const ExperimentSpec& spec, LoadedExperiment& loaded, const Registry& registry,
                     const ShardSpec& only = {}, const ArtifactAccess& access = {});

// Stage "train": every [train.NAME] policy is trained (marginal likelihood / weak supervision, with
// the assistants' scores cached) into <artifacts_dir>/policies/<key>/, or loaded from there when
// finished. Returns, per policy, the directory of its fine-tuned base ("" when the base is shared).
// only: as for prepare_experts, a shard of the trained policies, counted from `first_index` (so that
// experts and policies to train form one list dealt out to the shards).
// wanted: when given, only these policies are trained or loaded (their heads and fine-tuned bases).
std::map<std::string, std::string> train_policies(const ExperimentSpec& spec, LoadedExperiment& loaded,
                                                  const Registry& registry, const ShardSpec& only = {},
                                                  size_t first_index = 0, const ArtifactAccess& access = {},
                                                  const std::set<std::string>* wanted = nullptr);

// The trained policies whose artifacts (head, jointly fine-tuned base) decoding `runs` and making
// `calibrations` need: a shard run as one stage loads only those. (Experts are all opened by
// load_experiment, for their content keys.)
std::set<std::string> needed_policies(const ExperimentSpec& spec, const std::vector<RunSpec>& runs,
                                      const std::vector<std::pair<std::string, std::string>>& calibrations);

// One point of a calibration curve.
struct CalibrationPoint {
  double eta = 0;
  double metric = 0;         // mean of the calibration metric over the split
  double deferral_rate = 0;  // deferred tokens / generated tokens
  std::optional<double> target_rate;  // rate mode: the deferral rate this candidate was placed at
};
// Rate mode: the threshold at which a fraction `rate` of the values exceed it (P(defer) > eta defers):
// midway between the k-th and (k+1)-th largest values, k = round(rate * n); rate 0 gives 1 (never
// defers), and a rate above what the values allow gives just below the smallest value.
double threshold_for_rate(std::vector<double> p_defer, double rate);

// The chosen eta: the best metric (ties: the lower deferral rate, then the larger eta), or with
// target rates, the point whose deferral rate is closest to the target (ties: the better metric).
double choose_eta(const std::vector<CalibrationPoint>& curve);
double eta_for_rate(const std::vector<CalibrationPoint>& curve, double target_rate);

// The calibration of one (policy, strategy): the whole curve on the calibration split and the
// chosen eta (metric mode: one; target-rate mode: one per calibrate.target_rates entry, in order).
struct CalibrationResult {
  std::string key;  // calibration_key()
  std::vector<CalibrationPoint> curve;
  std::vector<double> chosen;
  // Per chosen eta: "lowest" / "highest" when it is the candidate with the lowest / highest deferral
  // rate tried (the optimum may lie beyond), else "".
  std::vector<std::string> edge;
};

// Per-run metrics from the stored examples: the mean of every per-example metric (over the examples
// that have it) and deferral_rate = sum(n_deferred) / sum(n_tokens), each with a percentile
// bootstrap interval at `confidence` over `samples` resamples of the examples (none when samples is
// 0). Deterministic for a seed; every metric draws from its own stream (seed, metric name).
std::vector<MetricRecord> summarize_examples(const std::vector<ExampleRecord>& examples, int64_t samples,
                                             double confidence, uint64_t seed);

// The decoding side of the runner, shared by the calibrate and sweep stages.
class RunContext {
 public:
  // base_dirs: from train_policies (policies whose base was fine-tuned jointly).
  RunContext(const ExperimentSpec& spec, LoadedExperiment& loaded, const Registry& registry,
             std::map<std::string, std::string> base_dirs);
  // The examples of a split, at most max_examples (0: all), in the task's order. Cached.
  const std::vector<Example>& examples(const std::string& split, int64_t max_examples);
  // Decodes examples[idx] of a split: a policy run (kind "policy"), an expert alone ("single") or a
  // [combine.NAME] combination ("combine").
  // Each example's seed is its index in the split, so results do not depend on which examples are
  // decoded together (resume, chunking).
  // progress: the display this decode reports to (examples counted from `done_before`); null: its
  // own display over idx.
  // sink: when set, finished examples are handed to it as they finish (continuous batching: in
  // finishing order, in groups of sweep.batch_size, the last group smaller) and the result is empty;
  // otherwise the records are returned in idx order.
  using RecordSink = std::function<void(std::vector<ExampleRecord>)>;
  std::vector<ExampleRecord> decode(const std::string& kind, const std::string& name, double eta,
                                    const std::string& strategy, int64_t seed, const std::string& split,
                                    const std::vector<Example>& examples, const std::vector<size_t>& idx,
                                    Progress* progress = nullptr, int64_t done_before = 0,
                                    const RecordSink& sink = {});
  // Calibrates (policy, strategy) on spec.calibrate's split, reusing eta points already in the
  // store (artifacts of kind "calibration_point"), and writes the curve to the calibration table.
  // The result is also written as an artifact directory (<artifacts_dir>/calibrations/<key>/, with
  // calibration.json and DONE) that a sweep stage run alone reads.
  CalibrationResult calibrate(ResultsStore& store, int64_t experiment_id, const std::string& policy,
                              const std::string& strategy, RunSummary* summary);
  // A calibration another process made (the artifact above), waited for up to wait_s seconds; its
  // rows are written to this store's calibration table as calibrate() writes them.
  CalibrationResult load_calibration(ResultsStore& store, int64_t experiment_id, const std::string& policy,
                                     const std::string& strategy, double wait_s);
  // Teacher-forced analysis of a policy on examples[idx]: every model reads prompt + gold target once;
  // per example, who would emit each gold token at threshold eta and whether that model's top-1 is the
  // gold token, against the oracle (an assistant right where the base is wrong). Tokens are stored
  // with their source, as a decoded output's are.
  std::vector<ExampleRecord> analyze(const std::string& policy, double eta, int64_t seed,
                                     const std::vector<Example>& examples, const std::vector<size_t>& idx,
                                     Progress* progress = nullptr, int64_t done_before = 0);
  // Replaces policy `name` with a fresh instance whose plugin keys are overridden ("p=0.25").
  void override_policy(const std::string& name, const std::vector<std::string>& overrides);
  // The expert that decodes policy `policy` as base (ExperimentSpec::decoding_base): a loaded expert,
  // or a trained policy's fine-tuned base (loaded once, shared by every policy that names it).
  Expert& base_for(const std::string& policy);
  Expert& base_for_expert(const std::string& expert) { return base_named(expert); }

 private:
  Expert& base_named(const std::string& name);
  // One decoded candidate of a calibration (an artifact of its own, reused when stored). `rates`:
  // target deferral rates whose threshold_for_rate over this decoding's P(defer) values is returned
  // in *thresholds (stored with the point, so a resumed calibration refines the same way).
  CalibrationPoint calibration_point(ResultsStore& store, const std::string& policy, const std::string& strategy,
                                     const std::string& point_key, double eta, const std::vector<double>& rates,
                                     std::vector<double>* thresholds, RunSummary* summary);

  const ExperimentSpec& spec_;
  LoadedExperiment& loaded_;
  const Registry& registry_;
  std::map<std::string, std::string> base_dirs_;
  std::map<std::string, std::shared_ptr<Expert>> tuned_bases_;
  std::map<std::pair<std::string, int64_t>, std::vector<Example>> examples_;
};

// Stage "calibrate" for the runs of this shard that need it and are not finished (each (policy,
// strategy) once). Only the calibration split is read. Returns the results by (policy, strategy).
// Every (policy, strategy) calibration the unfinished runs need, in a stable order.
std::vector<std::pair<std::string, std::string>> needed_calibrations(const ExperimentSpec& spec,
                                                                     const std::vector<RunSpec>& runs,
                                                                     const ResultsStore& store);
std::map<std::pair<std::string, std::string>, CalibrationResult> calibrate_stage(
    const ExperimentSpec& spec, RunContext& context, ResultsStore& store, int64_t experiment_id,
    const std::vector<RunSpec>& runs, const RunnerOptions& options, RunSummary* summary);

// The git revision of the repository holding `path` (`git rev-parse HEAD`), or "unknown".
std::string git_revision(const std::string& path);

// All stages. Opens spec.database (created when absent), records the experiment, then prepare,
// train, calibrate and sweep; finished runs are skipped, unfinished ones resumed.
RunSummary run_experiment(const ExperimentSpec& spec, LoadedExperiment& loaded, const std::vector<RunSpec>& runs,
                          const Registry& registry, const RunnerOptions& options);

}  // namespace colm
