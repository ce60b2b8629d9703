// The experiment schema: TOML -> a validated ExperimentSpec (every key known, defaults resolved,
// cross-option rules checked in one place), plugin loading and checks, and run expansion with keys.
// Executing the stages (prepare, score, train, calibrate, sweep) is left to runner.hpp.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "colm/config.hpp"
#include "colm/plugin.hpp"
#include "model/vocab_check.hpp"

namespace colm {

class Registry;

// [experts.NAME.train]: language-model training of an expert before it is used.
struct LmTrainSpec {
  std::string objective;   // "lm"
  std::string data;        // "task" (the task's train split: prompt + target) or a text/jsonl file
  int64_t steps = 0;
  double lr = 0;
  int64_t batch_size = 0;
  int64_t seq_len = 0;
  int64_t seed = 0;
  int64_t warmup = 0;      // linear warm-up steps
  std::string export_dir;  // also copy the trained checkpoint here ("" = no)
  std::string canonical;   // canonical form of the table (for artifact keys)
};

// [experts.NAME]
struct ExpertSpec {
  std::string name;
  std::string plugin;
  std::string role;        // "base" or "assistant"
  std::string checkpoint;  // the plugin's `checkpoint` key when present ("" for a fresh architecture)
  std::optional<LmTrainSpec> train;
  ConfigView config;       // the whole [experts.NAME] table; the plugin reads its own keys from it
};

// [task]
struct TaskSpec {
  std::string plugin;
  ConfigView config;
};

// A deferral policy: [train.NAME] (trained by core's trainer) or [policies.NAME] (used as given).
struct PolicySpec {
  std::string name;
  std::string section;     // "train" or "policies"
  std::string plugin;
  bool trained = false;
  // Training (section "train" only).
  std::string objective;   // "marginal_likelihood" or "weak_supervision"
  std::string init;        // "none" or "weak_supervision"
  bool finetune_base = true;  // the paper fine-tunes the base jointly (both objectives)
  // Weak supervision (the objective, or the head initialisation of marginal_likelihood).
  double pos_weight = 0;   // BCE weight of the "defer" labels; 0 = #negatives / #positives
  std::string weak_rule;   // pseudo-label rule (objectives.hpp WeakRule)
  double lm_weight = 0;    // objective weak_supervision with finetune_base: share of LM loss next to the BCE
  int64_t steps = 0;
  int64_t init_steps = 0;
  double lr = 0;
  int64_t batch_size = 0;
  int64_t seed = 0;
  std::string split;       // training split
  int64_t max_examples = 0;
  // [policies.NAME] match_rate: the plugin's `p` is set, per run, to this other policy's deferral rate
  // at its calibrated eta on the calibration split (e.g. random deferral at Co-LLM's rate).
  std::string match_rate;
  // Which base decodes this policy: "" = its own (a trained policy's jointly fine-tuned base, else the
  // experiment's base expert); an expert name (the base or a reference expert such as base_lm); or the
  // name of a trained policy with finetune_base, whose fine-tuned base then decodes (like for like).
  std::string base;
  // The assistants this policy decides between, in the experiment's order of [experts.*] (the
  // `assistants` key; default: every expert with role = "assistant"). Deferral choice j is assistants[j-1].
  std::vector<std::string> assistants;
  ConfigView config;
  // Every resolved core-owned training key (defaults included): part of the artifact's content key.
  std::string resolved;
};

// [combine.NAME]: a decode-time combination of experts' logits, no deferral policy.
struct CombineSpec {
  std::string name;
  std::string strategy;    // "contrastive" or "proxy"
  // contrastive: expert, amateur; proxy: large, tuned, untuned (expert names).
  std::map<std::string, std::string> models;
  double alpha = 0.1;      // contrastive: plausibility cut-off relative to the expert's top probability
  double beta = 0.5;       // contrastive: weight of the amateur's log-probability
  ConfigView config;
};

// [calibrate]
struct CalibrateSpec {
  // Candidates: by deferral rate (default) or an explicit eta grid. By rate, each target rate r gets
  // the threshold at the (1 - r) quantile of the policy's own P(defer) over the calibration split's
  // decoding, refined until the measured rate is within `tolerance` (at most `refine` more decodes).
  std::vector<double> rates;         // target deferral rates (rate mode); empty when eta is given
  int64_t refine = 2;
  double tolerance = 0.005;
  std::vector<double> eta;           // explicit grid of thresholds (eta mode); empty in rate mode
  std::vector<double> target_rates;  // optional: deferral rates to match instead of the best metric
  std::string metric;                // "" = the task's primary metric
  std::string split;
  std::vector<std::string> policies; // policies calibrated (default: every policy in the sweep)
  int64_t max_examples = 0;
};

// [sweep]
struct SweepSpec {
  std::vector<std::string> policies;
  std::vector<double> eta;
  std::vector<std::string> strategies;  // "defer", "mixture"
  std::vector<int64_t> seeds;
  std::vector<std::string> zip;         // axes iterated together instead of crossed
  std::vector<std::string> baselines;   // expert names run alone
  std::vector<std::string> combinations;  // [combine.NAME] runs (contrastive decoding, proxy tuning)
  bool curve = false;                   // calibrated policies also run at every calibration rate
  bool calibrated = false;              // add one run per policy at its calibrated eta
  bool calibrated_only = false;         // calibrated policies skip the eta grid (only their calibrated run)
  std::string split;
  int64_t max_examples = 0;
  bool sample = false;
  double temperature = 1.0;
  double top_p = 1.0;
  int64_t batch_size = 8;
};

// [analysis]: teacher-forced analysis of policies on the gold targets (the oracle included).
struct AnalysisSpec {
  std::vector<std::string> policies;  // analysed policies (any defined, oracles included)
  std::string split;                  // default: the sweep's split
  int64_t max_examples = 0;           // default: the sweep's max_examples
  double eta = 0.5;                   // threshold of policies that are not calibrated
};

// [report]
struct ReportSpec {
  int64_t bootstrap_samples = 1000;
  double confidence = 0.95;
  int64_t examples = 20;
};

struct ExperimentSpec {
  std::string file;
  std::string name;
  std::string description;
  int64_t seed = 0;
  std::string database;
  std::string artifacts_dir;
  std::string device;
  std::vector<ExpertSpec> experts;  // document order
  TaskSpec task;
  std::vector<PolicySpec> policies; // [train.*] then [policies.*]
  std::vector<CombineSpec> combinations;  // [combine.*]
  std::optional<CalibrateSpec> calibrate;
  SweepSpec sweep;
  std::optional<AnalysisSpec> analysis;
  ReportSpec report;
  ConfigView root;

  const ExpertSpec& expert(const std::string& name) const;
  const PolicySpec& policy(const std::string& name) const;
  const ExpertSpec& base() const;
  const CombineSpec& combination(const std::string& name) const;
  // What decodes policy `name` as base: an expert name, or a trained policy whose tuned base it is.
  std::string decoding_base(const std::string& policy) const;
  std::vector<const ExpertSpec*> assistants() const;
  // The assistants policy `name` decides between (PolicySpec::assistants), in that order.
  std::vector<const ExpertSpec*> assistants_of(const std::string& policy) const;
};

// Reads and validates every core-owned key (types, required keys, unknown sections and keys of core
// tables, cross-option rules). Plugin-owned keys are checked when the plugins are created.
// Throws ConfigError "file:line:col: key: problem".
ExperimentSpec parse_experiment(const ConfigView& root);
// from_file + --set overrides + parse_experiment.
ExperimentSpec parse_experiment_file(const std::string& path, const std::vector<std::string>& overrides = {});

// Plugin objects of an experiment and the content keys derived from them.
struct LoadedExperiment {
  std::shared_ptr<Task> task;
  std::string task_key;
  std::map<std::string, std::shared_ptr<Expert>> experts;  // absent when not instantiated (dry run of a big checkpoint)
  std::map<std::string, std::string> expert_keys;          // key of each expert as used (after lm training)
  std::map<std::string, ExpertInfo> expert_info;
  std::map<std::string, std::shared_ptr<DeferralPolicy>> policies;
  std::map<std::string, std::string> policy_keys;          // key of each policy artifact (trained or not)
  std::map<std::string, std::string> plugin_versions;      // "kind/name" -> version
  // The ids the base and its assistants share (vocab_check.hpp); size 0 when not all were loaded.
  // vocab_members are the experts seen over those ids (share_vocab): base, assistants, and the
  // references whose tokenizer extends the shared one.
  SharedVocab vocab;
  std::set<std::string> vocab_members;
};

// `expert`, an instance (or reload) of the experiment's expert `name`, as the experiment uses it:
// over the shared ids when `name` is one of loaded.vocab_members, else unchanged.
std::shared_ptr<Expert> as_loaded(const LoadedExperiment& loaded, const std::string& name,
                                  std::shared_ptr<Expert> expert);

struct LoadOptions {
  // Experts whose weight files exceed this many bytes are not instantiated in a dry run: their
  // checkpoint directory, config.json and tokenizer.json are checked instead (their plugin-specific
  // keys are then checked only by a real run).
  int64_t dry_run_max_checkpoint_bytes = int64_t(2) << 30;
  bool dry_run = false;
};

// Creates the task, experts and policies through the registry (unknown plugin -> ConfigError naming
// it, where it is and the available ones), checks checkpoint directories, the vocabularies and that
// every key was read. Nothing is trained or decoded.
LoadedExperiment load_experiment(const ExperimentSpec& spec, const Registry& registry, const LoadOptions& options);

// A fresh instance of policy `name` with plugin keys overridden ("key=value", TOML values), created
// with the same context as load_experiment gives it (e.g. a random policy at a measured rate).
std::shared_ptr<DeferralPolicy> create_policy_with(const ExperimentSpec& spec, const LoadedExperiment& loaded,
                                                   const Registry& registry, const std::string& name,
                                                   const std::vector<std::string>& overrides);

// Content key of an lm-trained expert, of a trained policy and of a calibration (used by the runner too).
std::string expert_artifact_key(const ExpertSpec& spec, const std::string& initial_key, const std::string& task_key,
                                const std::string& plugin_version);
std::string policy_artifact_key(const PolicySpec& spec, const std::string& plugin_version, const std::string& base_key,
                                const std::vector<std::string>& assistant_keys, const std::string& task_key);
std::string calibration_key(const ExperimentSpec& spec, const std::string& policy, const std::string& strategy,
                            const LoadedExperiment& loaded);
// Content key of what decodes a policy as base: an expert's key, or the trained policy's artifact key
// whose fine-tuned base it is.
std::string decoding_base_key(const ExperimentSpec& spec, const LoadedExperiment& loaded, const std::string& policy);

// One run of the sweep.
struct RunSpec {
  std::string kind;        // "policy", "single", "teacher_forced" (the [analysis] of a policy) or "combine"
  std::string policy;      // policy name, or the expert name of a single-model run
  std::optional<double> eta;  // absent: the calibrated eta (or not applicable for single runs)
  bool calibrated = false;
  std::optional<double> target_rate;  // calibrated runs with [calibrate] target_rates, and curve runs: the rate
  bool curve = false;      // a run at one of the calibration's rates (the accuracy-vs-deferral curve)
  std::string strategy;    // "defer", "mixture"; "single" for single-model runs
  std::string split;
  int64_t seed = 0;
  std::string key;         // content hash: params + plugin versions + input artifact keys
  nlohmann::json params;   // resolved parameters (what the key hashes, readable)
};

// The runs of the sweep, in a stable order (policies, then eta, strategy, seed; zipped axes together;
// then calibrated runs; then single-model baselines). Duplicate keys are dropped.
std::vector<RunSpec> expand_runs(const ExperimentSpec& spec, const LoadedExperiment& loaded);

// "policy=colm eta=0.3 strategy=defer split=test seed=0 key=1a2b3c4d5e6f" (calibrated runs:
// "eta=calibrated", or "eta=calibrated@rate=0.2" with target rates)
std::string describe_run(const RunSpec& run);

}  // namespace colm
