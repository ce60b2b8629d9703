// The runner: executes an expanded experiment stage by stage (prepare experts, score, train
// policies, calibrate, sweep), with content-addressed artifacts, resume and shards.
// Parsing and validation live in experiment.hpp; storage in store.hpp; decoding in decode.hpp.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "experiment.hpp"

namespace colm {

class Registry;

// --shard i/n: this process runs runs i, i+n, i+2n, ... of the expanded list.
struct ShardSpec {
  int64_t index = 0;
  int64_t count = 1;
};
// "i/n" with 0 <= i < n; anything else is a colm::Error saying what is wrong.
ShardSpec parse_shard(const std::string& text);
bool in_shard(size_t run_index, const ShardSpec& shard);

struct RunnerOptions {
  ShardSpec shard;
  int64_t commit_every = 8;  // examples written per transaction (a kill loses at most these)
};

struct RunSummary {
  int64_t runs_done = 0;
  int64_t runs_skipped = 0;  // already finished in the database
  int64_t runs_failed = 0;
};

// Stage "prepare": every expert with [experts.NAME.train] is trained with the `lm` objective into
// <artifacts_dir>/experts/<key>/ (resumable from its training checkpoints; reused when finished by
// any experiment with the same key) and reloaded from there into `loaded`.
void prepare_experts(const ExperimentSpec& spec, LoadedExperiment& loaded, const Registry& registry);

// Stage "train": every [train.NAME] policy is trained (marginal likelihood / weak supervision, with
// the assistants' scores cached) into <artifacts_dir>/policies/<key>/, or loaded from there when
// finished. Returns, per policy, the directory of its fine-tuned base ("" when the base is shared).
std::map<std::string, std::string> train_policies(const ExperimentSpec& spec, LoadedExperiment& loaded,
                                                  const Registry& registry);

// One point of a calibration curve.
struct CalibrationPoint {
  double eta = 0;
  double metric = 0;         // mean of the calibration metric over the split
  double deferral_rate = 0;  // deferred tokens / generated tokens
};
// The chosen eta: the best metric (ties: the lower deferral rate, then the larger eta), or with
// target rates, the point whose deferral rate is closest to the target (ties: the better metric).
double choose_eta(const std::vector<CalibrationPoint>& curve);
double eta_for_rate(const std::vector<CalibrationPoint>& curve, double target_rate);

RunSummary run_experiment(const ExperimentSpec& spec, LoadedExperiment& loaded, const std::vector<RunSpec>& runs,
                          const Registry& registry, const RunnerOptions& options);

}  // namespace colm
