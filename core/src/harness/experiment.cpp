// The experiment schema and its one validator: reads every core-owned key with type, default and
// help; checks cross-option rules; creates the plugins; derives content keys and expands the runs.
// Stage execution lives in runner.cpp; what plugin-specific keys mean is left to each plugin.
#include "harness/experiment.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <spdlog/spdlog.h>

#include "colm/hash.hpp"
#include "colm/tokenizer.hpp"
#include "plugin/registry.hpp"
#include "model/vocab_check.hpp"

namespace fs = std::filesystem;

namespace colm {
namespace {

const std::vector<std::string> kSections = {"experiment", "experts", "task", "train", "policies", "combine",
                                            "calibrate", "sweep", "analysis", "report"};
const std::vector<std::string> kStrategies = {"defer", "mixture"};
const std::vector<std::string> kZipAxes = {"policies", "eta", "strategies", "seeds"};

std::string join(const std::vector<std::string>& v, const std::string& sep = ", ") {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

void require_one_of(const ConfigView& c, const std::string& key, const std::string& value,
                    const std::vector<std::string>& allowed) {
  if (!contains(allowed, value))
    c.fail(key, "'" + value + "' is not one of: " + join(allowed));
}

void check_unit_interval(const ConfigView& c, const std::string& key, const std::vector<double>& values) {
  for (double v : values)
    if (!(v >= 0.0 && v <= 1.0)) {
      std::ostringstream os;
      os << "value " << v << " is outside [0, 1] (eta and deferral rates are probabilities)";
      c.fail(key, os.str());
    }
}

void check_positive(const ConfigView& c, const std::string& key, double v) {
  if (!(v > 0)) c.fail(key, "must be > 0, got " + std::to_string(v));
}

// A key given explicitly as an empty list is a mistake (an empty grid), not "use the default".
void check_not_empty_if_given(const ConfigView& c, const std::string& key, size_t n) {
  if (c.has(key) && n == 0) c.fail(key, "empty grid: give at least one value");
}

LmTrainSpec parse_lm_train(const ConfigView& t, int64_t default_seed) {
  LmTrainSpec s;
  s.objective = t.get_string("objective", "lm", "training objective of the expert: lm (next-token)");
  require_one_of(t, "objective", s.objective, {"lm"});
  s.data = t.get_string("data", "task",
                        "training text: 'task' (the task's train split, prompt + target) or a path to a "
                        ".txt (one document per line) or .jsonl (field 'text') file");
  s.steps = t.get_int("steps", 1000, "optimiser steps");
  s.lr = t.get_double("lr", 1e-3, "AdamW learning rate");
  s.batch_size = t.get_int("batch_size", 16, "sequences per step");
  s.seq_len = t.get_int("seq_len", 128, "tokens per training sequence");
  s.seed = t.get_int("seed", default_seed, "training seed (data order); default: experiment.seed");
  s.warmup = t.get_int("warmup", 0, "steps of linear learning-rate warm-up (then linear decay to 0)");
  check_positive(t, "steps", double(s.steps));
  if (s.warmup < 0 || s.warmup >= s.steps) t.fail("warmup", "must be in [0, steps)");
  s.export_dir = t.get_string("export", "",
                              "directory the trained checkpoint is also copied to (HF format), e.g. to commit it");
  check_positive(t, "lr", s.lr);
  check_positive(t, "batch_size", double(s.batch_size));
  check_positive(t, "seq_len", double(s.seq_len));
  if (s.data != "task" && !fs::exists(s.data)) t.fail("data", "training data file '" + s.data + "' does not exist");
  t.check_all_read();
  s.canonical = t.canonical();
  if (!s.export_dir.empty()) {
    // Where a copy goes does not change what is trained.
    auto without = nlohmann::json::parse(s.canonical);
    without.erase("export");
    s.canonical = without.dump();
  }
  return s;
}

PolicySpec parse_trained_policy(const std::string& name, const ConfigView& c, int64_t seed) {
  PolicySpec p;
  p.name = name;
  p.section = "train";
  p.trained = true;
  p.config = c;
  p.plugin = c.get_string("plugin", "learned", "policy plugin whose deferral head is trained");
  p.objective = c.require_string("objective", "marginal_likelihood (Co-LLM) or weak_supervision (BCE on pseudo-labels)");
  require_one_of(c, "objective", p.objective, {"marginal_likelihood", "weak_supervision"});
  p.init = c.get_string("init", "none", "head initialisation before the objective: none or weak_supervision");
  require_one_of(c, "init", p.init, {"none", "weak_supervision"});
  p.finetune_base = c.get_bool("finetune_base", true, "train the base model jointly with the head (the paper: true)");
  p.steps = c.get_int("steps", 200, "optimiser steps of the objective");
  p.init_steps = c.get_int("init_steps", p.steps, "steps of the weak-supervision initialisation");
  p.lr = c.get_double("lr", 1e-3, "learning rate (the head, and the base when finetune_base = true)");
  p.batch_size = c.get_int("batch_size", 8, "examples per step");
  p.seed = c.get_int("seed", seed, "training seed; default: experiment.seed");
  p.split = c.get_string("split", "train", "task split the policy is trained on");
  p.max_examples = c.get_int("max_examples", 0, "use at most this many training examples (0: all)");
  const bool weak = p.objective == "weak_supervision" || p.init == "weak_supervision";
  // The paper's settings: pos_weight 8 for the initialisation of Co-LLM's head, 5 for the baseline.
  p.pos_weight = c.get_double("pos_weight", p.objective == "weak_supervision" ? 5.0 : 8.0,
                              "weak supervision: BCE weight of the 'defer' pseudo-labels (0: #negatives / #positives)");
  p.weak_rule = c.get_string("weak_rule", "assistant_right_base_wrong",
                             "weak supervision pseudo-labels: assistant_right_base_wrong or base_wrong");
  require_one_of(c, "weak_rule", p.weak_rule, {"assistant_right_base_wrong", "base_wrong"});
  p.lm_weight = c.get_double("lm_weight", p.objective == "weak_supervision" && p.finetune_base ? 2.0 / 3.0 : 0.0,
                             "objective weak_supervision: share of next-token LM loss next to the BCE (the paper: "
                             "2/3, with finetune_base)");
  p.base = c.get_string("base", "", "base that decodes this policy (default: its own fine-tuned base, or the "
                                    "experiment's base)");
  if (!(p.pos_weight >= 0)) c.fail("pos_weight", "must be >= 0 (0: #negatives / #positives)");
  if (!(p.lm_weight >= 0 && p.lm_weight < 1)) c.fail("lm_weight", "must be in [0, 1)");
  if (!weak && (c.has("pos_weight") || c.has("weak_rule")))
    c.fail(c.has("pos_weight") ? "pos_weight" : "weak_rule",
           "only used by weak supervision (objective or init = weak_supervision)");
  if (c.has("lm_weight") && p.objective != "weak_supervision")
    c.fail("lm_weight", "only used by objective = weak_supervision");
  if (p.lm_weight > 0 && !p.finetune_base)
    c.fail("lm_weight", "an LM loss needs a trainable base: set finetune_base = true or lm_weight = 0");
  if (!p.base.empty())
    c.fail("base", "a trained policy decodes with the base it was trained with; set `base` on [policies.NAME] "
                   "entries (rules) instead");
  {
    nlohmann::json r;
    r["objective"] = p.objective;
    r["init"] = p.init;
    r["finetune_base"] = p.finetune_base;
    r["steps"] = p.steps;
    r["init_steps"] = p.init == "weak_supervision" ? p.init_steps : 0;
    r["lr"] = p.lr;
    r["batch_size"] = p.batch_size;
    r["seed"] = p.seed;
    r["split"] = p.split;
    r["max_examples"] = p.max_examples;
    if (weak) r["pos_weight"] = p.pos_weight, r["weak_rule"] = p.weak_rule;
    if (p.objective == "weak_supervision") r["lm_weight"] = p.lm_weight;
    p.resolved = r.dump();
  }
  check_positive(c, "steps", double(p.steps));
  if (p.init == "weak_supervision") check_positive(c, "init_steps", double(p.init_steps));
  check_positive(c, "lr", p.lr);
  check_positive(c, "batch_size", double(p.batch_size));
  if (p.max_examples < 0) c.fail("max_examples", "must be >= 0");
  if (p.objective == "weak_supervision" && p.init == "weak_supervision")
    c.fail("init", "init = weak_supervision is redundant with objective = weak_supervision");
  return p;
}

}  // namespace

const ExpertSpec& ExperimentSpec::expert(const std::string& n) const {
  for (const auto& e : experts)
    if (e.name == n) return e;
  throw Error("experiment: no expert named '" + n + "'");
}
const PolicySpec& ExperimentSpec::policy(const std::string& n) const {
  for (const auto& p : policies)
    if (p.name == n) return p;
  throw Error("experiment: no policy named '" + n + "'");
}
const CombineSpec& ExperimentSpec::combination(const std::string& n) const {
  for (const auto& c : combinations)
    if (c.name == n) return c;
  throw Error("experiment: no combination named '" + n + "'");
}
std::string ExperimentSpec::decoding_base(const std::string& name) const {
  const auto& p = policy(name);
  if (!p.base.empty()) return p.base;
  if (p.trained && p.finetune_base) return p.name;
  return base().name;
}
const ExpertSpec& ExperimentSpec::base() const {
  for (const auto& e : experts)
    if (e.role == "base") return e;
  throw Error("experiment: no base expert");
}
std::vector<const ExpertSpec*> ExperimentSpec::assistants() const {
  std::vector<const ExpertSpec*> out;
  for (const auto& e : experts)
    if (e.role == "assistant") out.push_back(&e);
  return out;
}
std::vector<const ExpertSpec*> ExperimentSpec::assistants_of(const std::string& name) const {
  std::vector<const ExpertSpec*> out;
  for (const auto& a : policy(name).assistants) out.push_back(&expert(a));
  return out;
}

ExperimentSpec parse_experiment(const ConfigView& root) {
  ExperimentSpec s;
  s.root = root;
  s.file = root.source();

  // Unknown top-level sections first: a misspelt [sweep] would otherwise surface as "missing".
  for (const auto& k : root.keys()) {
    if (contains(kSections, k)) {
      if (!root.is_table(k)) root.fail(k, "must be a table ([" + k + "])");
      continue;
    }
    root.fail(k, "unknown section '" + k + "' (known: " + join(kSections) + ")");
  }
  for (const char* required : {"experiment", "experts", "task", "sweep"})
    if (!root.has(required))
      root.fail("", std::string("missing section [") + required + "] (every experiment needs [experiment], "
                "[experts.NAME], [task] and [sweep])");

  // [experiment]
  const auto ex = root.sub("experiment");
  s.name = ex.require_string("name", "experiment name (results are grouped by it)");
  if (s.name.empty()) ex.fail("name", "must not be empty");
  s.description = ex.get_string("description", "", "free text stored with the experiment");
  s.seed = ex.get_int("seed", 0, "experiment seed: default of every other seed");
  s.database = ex.get_string("database", "results/colm.db", "SQLite results database (created when absent)");
  if (s.database.empty()) ex.fail("database", "must not be empty");
  s.artifacts_dir = ex.get_string("artifacts_dir", "results/artifacts",
                                  "content-addressed artifacts (trained experts, policies, caches)");
  s.device = ex.get_string("device", "cpu", "torch device: cpu or cuda[:N]");
  if (s.device != "cpu" && s.device.rfind("cuda", 0) != 0) ex.fail("device", "must be 'cpu' or 'cuda[:N]'");
  ex.check_all_read();

  // [experts.NAME]
  const auto experts = root.sub("experts");
  int n_base = 0;
  for (const auto& name : experts.keys()) {
    if (!experts.is_table(name)) experts.fail(name, "must be a table [experts." + name + "]");
    const auto c = experts.sub(name);
    ExpertSpec e;
    e.name = name;
    e.config = c;
    e.plugin = c.require_string("plugin", "expert plugin, e.g. transformer");
    e.role = c.require_string("role", "base, assistant, or reference (a single-model baseline no policy consults)");
    require_one_of(c, "role", e.role, {"base", "assistant", "reference"});
    if (e.role == "base") ++n_base;
    if (c.has("checkpoint")) {
      e.checkpoint = c.get_string("checkpoint", "", "checkpoint directory (HF format)");
      if (!fs::is_directory(e.checkpoint))
        c.fail("checkpoint", "checkpoint directory '" + e.checkpoint + "' does not exist");
    }
    if (c.has("train")) e.train = parse_lm_train(c.sub("train"), s.seed);
    s.experts.push_back(std::move(e));
  }
  if (s.experts.empty()) experts.fail("", "no experts: define at least [experts.NAME] with role = \"base\"");
  if (n_base != 1)
    experts.fail("", "exactly one expert must have role = \"base\", found " + std::to_string(n_base));

  // [task]
  const auto task = root.sub("task");
  s.task.plugin = task.require_string("plugin", "task plugin, e.g. arithmetic");
  s.task.config = task;

  // [train.NAME] and [policies.NAME]
  std::set<std::string> policy_names;
  if (root.has("train")) {
    const auto t = root.sub("train");
    for (const auto& name : t.keys()) {
      if (!t.is_table(name)) t.fail(name, "must be a table [train." + name + "]");
      s.policies.push_back(parse_trained_policy(name, t.sub(name), s.seed));
      policy_names.insert(name);
    }
  }
  if (root.has("policies")) {
    const auto t = root.sub("policies");
    for (const auto& name : t.keys()) {
      if (!t.is_table(name)) t.fail(name, "must be a table [policies." + name + "]");
      if (policy_names.count(name))
        t.fail(name, "policy '" + name + "' is defined twice ([train." + name + "] and [policies." + name + "])");
      const auto c = t.sub(name);
      PolicySpec p;
      p.name = name;
      p.section = "policies";
      p.config = c;
      p.plugin = c.require_string("plugin", "policy plugin, e.g. rules");
      p.match_rate = c.get_string("match_rate", "",
                                  "set the plugin's deferral probability `p` to this policy's calibrated deferral rate");
      p.base = c.get_string("base", "", "base that decodes this policy: an expert (role base or reference) or a "
                                        "trained policy with finetune_base (its fine-tuned base); default: the base");
      s.policies.push_back(std::move(p));
      policy_names.insert(name);
    }
  }
  for (auto& p : s.policies) {
    if (s.assistants().empty())
      p.config.fail("", "policy '" + p.name + "' needs at least one expert with role = \"assistant\"");
    // `assistants`: a subset of the assistants (e.g. Co-LLM with one of two assistants), kept in the
    // experiment's order so that a policy's choice j always names the same expert.
    const auto chosen = p.config.get_strings(
        "assistants", {}, "assistants this policy decides between (default: every expert with role = \"assistant\")");
    if (p.config.has("assistants") && chosen.empty()) p.config.fail("assistants", "name at least one assistant");
    std::set<std::string> wanted;
    for (const auto& a : chosen) {
      bool ok = false;
      for (const auto* e : s.assistants()) ok = ok || e->name == a;
      if (!ok) {
        std::vector<std::string> names;
        for (const auto* e : s.assistants()) names.push_back(e->name);
        p.config.fail("assistants", "'" + a + "' is not an expert with role = \"assistant\" (assistants: " +
                                        join(names) + ")");
      }
      if (!wanted.insert(a).second) p.config.fail("assistants", "'" + a + "' is named twice");
    }
    for (const auto* e : s.assistants())
      if (chosen.empty() || wanted.count(e->name)) p.assistants.push_back(e->name);
  }
  for (const auto& p : s.policies) {
    if (p.base.empty()) continue;
    bool is_expert = false;
    for (const auto& e : s.experts)
      if (e.name == p.base) {
        is_expert = true;
        if (e.role == "assistant")
          p.config.fail("base", "'" + p.base + "' is an assistant; a decoding base has role base or reference");
      }
    if (is_expert) continue;
    if (!policy_names.count(p.base))
      p.config.fail("base", "unknown base '" + p.base + "': name an expert (role base or reference) or a trained "
                            "policy with finetune_base = true");
    const auto& q = s.policy(p.base);
    if (!q.trained || !q.finetune_base)
      p.config.fail("base", "policy '" + p.base + "' has no fine-tuned base of its own ([train." + p.base +
                            "] with finetune_base = true)");
  }

  // [combine.NAME]
  if (root.has("combine")) {
    const auto t = root.sub("combine");
    for (const auto& name : t.keys()) {
      if (!t.is_table(name)) t.fail(name, "must be a table [combine." + name + "]");
      if (policy_names.count(name)) t.fail(name, "'" + name + "' is already the name of a policy");
      const auto c = t.sub(name);
      CombineSpec cs;
      cs.name = name;
      cs.config = c;
      cs.strategy = c.require_string("strategy", "contrastive (contrastive decoding) or proxy (proxy tuning)");
      require_one_of(c, "strategy", cs.strategy, {"contrastive", "proxy"});
      const std::vector<std::string> roles = cs.strategy == "contrastive"
                                                 ? std::vector<std::string>{"expert", "amateur"}
                                                 : std::vector<std::string>{"large", "tuned", "untuned"};
      for (const auto& role : roles) {
        const auto m = c.require_string(role, cs.strategy == "contrastive"
                                                  ? "expert name (expert: the strong model; amateur: the weak one)"
                                                  : "expert name (large + (tuned - untuned))");
        bool found = false;
        for (const auto& e : s.experts) found = found || e.name == m;
        if (!found) c.fail(role, "unknown expert '" + m + "'");
        cs.models[role] = m;
      }
      if (cs.strategy == "contrastive") {
        cs.alpha = c.get_double("alpha", 0.1, "plausible set: tokens with p_expert >= alpha * max p_expert");
        cs.beta = c.get_double("beta", 0.5, "score = log p_expert - beta * log p_amateur");
        if (!(cs.alpha >= 0 && cs.alpha <= 1)) c.fail("alpha", "must be in [0, 1]");
        if (!(cs.beta >= 0 && std::isfinite(cs.beta))) c.fail("beta", "must be a finite number >= 0");
      }
      c.check_all_read();
      s.combinations.push_back(std::move(cs));
    }
  }

  // [sweep]
  const auto sw = root.sub("sweep");
  s.sweep.policies = sw.get_string_or_list("policies", {}, "policies to run (names of [train.*] / [policies.*])");
  s.sweep.baselines = sw.get_string_or_list("baselines", {}, "experts run alone (single-model baselines)");
  {
    std::vector<std::string> all;
    for (const auto& c : s.combinations) all.push_back(c.name);
    s.sweep.combinations = sw.get_string_or_list("combinations", all,
                                                 "[combine.NAME] runs: contrastive decoding, proxy tuning (default: all)");
    for (const auto& c : s.sweep.combinations)
      if (!contains(all, c)) sw.fail("combinations", "unknown combination '" + c + "' (define [combine." + c + "])");
  }
  s.sweep.curve = sw.get_bool("curve", false, "calibrated policies also run at every calibration rate (accuracy "
                                              "against deferral rate on the sweep's split)");
  s.sweep.eta = sw.get_double_or_list("eta", {}, "deferral thresholds: defer when 1 - P(base) > eta");
  s.sweep.strategies = sw.get_string_or_list("strategies", {"defer"}, "decoding strategies: defer, mixture");
  s.sweep.seeds = sw.get_ints("seeds", {s.seed}, "run seeds (matter for random policies and sampling)");
  s.sweep.zip = sw.get_strings("zip", {}, "axes iterated together (same length) instead of crossed");
  s.sweep.split = sw.get_string("split", "test", "task split the runs are scored on");
  s.sweep.max_examples = sw.get_int("max_examples", 0, "score at most this many examples per run (0: all)");
  s.sweep.sample = sw.get_bool("sample", false, "sample tokens instead of greedy argmax");
  s.sweep.temperature = sw.get_double("temperature", 1.0, "sampling temperature (sample = true)");
  s.sweep.top_p = sw.get_double("top_p", 1.0, "nucleus sampling mass (sample = true)");
  s.sweep.batch_size = sw.get_int("batch_size", 8, "examples decoded together (does not change results)");
  const bool has_calibrate = root.has("calibrate");
  s.sweep.calibrated = sw.get_bool("calibrated", has_calibrate,
                                   "add a run per policy at its calibrated eta (default: true with [calibrate])");
  s.sweep.calibrated_only = sw.get_bool("calibrated_only", false,
                                        "policies in [calibrate] policies run only at their calibrated eta");
  if (s.sweep.calibrated_only && !s.sweep.calibrated)
    sw.fail("calibrated_only", "needs calibrated runs ([calibrate] and calibrated = true)");
  check_not_empty_if_given(sw, "eta", s.sweep.eta.size());
  check_not_empty_if_given(sw, "policies", s.sweep.policies.size());
  check_not_empty_if_given(sw, "strategies", s.sweep.strategies.size());
  check_not_empty_if_given(sw, "seeds", s.sweep.seeds.size());
  check_unit_interval(sw, "eta", s.sweep.eta);
  for (const auto& st : s.sweep.strategies) require_one_of(sw, "strategies", st, kStrategies);
  for (const auto& p : s.sweep.policies)
    if (!policy_names.count(p))
      sw.fail("policies", "unknown policy '" + p + "' (defined: " +
                              (policy_names.empty() ? std::string("none; add [train.NAME] or [policies.NAME]")
                                                    : join({policy_names.begin(), policy_names.end()})) + ")");
  for (const auto& b : s.sweep.baselines) {
    bool found = false;
    for (const auto& e : s.experts) found = found || e.name == b;
    if (!found) {
      std::vector<std::string> names;
      for (const auto& e : s.experts) names.push_back(e.name);
      sw.fail("baselines", "unknown expert '" + b + "' (experts: " + join(names) + ")");
    }
  }
  if (s.sweep.policies.empty() && s.sweep.baselines.empty() && s.sweep.combinations.empty())
    sw.fail("", "the sweep has no runs: give policies, baselines and/or combinations");
  if (!s.sweep.policies.empty() && s.sweep.eta.empty() && !s.sweep.calibrated)
    sw.fail("eta", "empty grid: give eta values or add [calibrate] (calibrated = true)");
  if (s.sweep.calibrated && !has_calibrate) sw.fail("calibrated", "calibrated = true needs a [calibrate] section");
  if (s.sweep.sample) {
    check_positive(sw, "temperature", s.sweep.temperature);
    if (!(s.sweep.top_p > 0 && s.sweep.top_p <= 1)) sw.fail("top_p", "must be in (0, 1]");
  }
  if (s.sweep.max_examples < 0) sw.fail("max_examples", "must be >= 0");
  check_positive(sw, "batch_size", double(s.sweep.batch_size));
  if (!s.sweep.zip.empty()) {
    if (s.sweep.zip.size() < 2) sw.fail("zip", "zip needs at least two axes");
    size_t len = 0;
    for (const auto& axis : s.sweep.zip) {
      require_one_of(sw, "zip", axis, kZipAxes);
      const size_t n = axis == "policies" ? s.sweep.policies.size()
                       : axis == "eta"    ? s.sweep.eta.size()
                       : axis == "strategies" ? s.sweep.strategies.size()
                                              : s.sweep.seeds.size();
      if (len == 0) len = n;
      if (n != len)
        sw.fail("zip", "zipped axes must have the same length ('" + s.sweep.zip.front() + "' has " +
                           std::to_string(len) + " values, '" + axis + "' has " + std::to_string(n) + ")");
    }
  }
  sw.check_all_read();

  // [calibrate]
  if (has_calibrate) {
    const auto c = root.sub("calibrate");
    CalibrateSpec cal;
    cal.eta = c.get_doubles("eta", {}, "explicit threshold grid (default: candidates by deferral rate, see rates)");
    cal.rates = c.get_doubles("rates", {0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9},
                              "target deferral rates: each candidate threshold is the quantile of the policy's own "
                              "P(defer) on the calibration split that defers at that rate");
    cal.refine = c.get_int("refine", 2, "rate mode: extra decodes per rate to move the measured rate onto the target");
    cal.tolerance = c.get_double("tolerance", 0.005, "rate mode: measured rate close enough to its target");
    if (c.has("eta") && c.has("rates")) c.fail("rates", "give either an eta grid or target rates, not both");
    if (cal.refine < 0) c.fail("refine", "must be >= 0");
    if (!(cal.tolerance >= 0)) c.fail("tolerance", "must be >= 0");
    check_not_empty_if_given(c, "rates", cal.rates.size());
    check_unit_interval(c, "rates", cal.rates);
    {
      auto sorted = cal.rates;
      std::sort(sorted.begin(), sorted.end());
      if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
        c.fail("rates", "a target rate is listed twice");
    }
    cal.target_rates = c.get_doubles("target_rates", {},
                                     "deferral rates to match: per rate, the grid point whose measured rate is closest");
    cal.metric = c.get_string("metric", "", "metric maximised (default: the task's primary metric)");
    cal.split = c.get_string("split", "valid", "split eta is chosen on (never the sweep's split)");
    cal.policies = c.get_strings("policies", s.sweep.policies, "policies calibrated (default: all in the sweep)");
    cal.max_examples = c.get_int("max_examples", 0, "calibrate on at most this many examples (0: all)");
    check_not_empty_if_given(c, "eta", cal.eta.size());
    check_not_empty_if_given(c, "target_rates", cal.target_rates.size());
    if (!cal.eta.empty()) cal.rates.clear();
    {
      auto sorted = cal.eta;
      std::sort(sorted.begin(), sorted.end());
      if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
        c.fail("eta", "the calibration grid lists a value twice");
    }
    check_unit_interval(c, "eta", cal.eta);
    check_unit_interval(c, "target_rates", cal.target_rates);
    if (cal.split == s.sweep.split)
      c.fail("split", "calibration split '" + cal.split + "' is the sweep's split: eta must be chosen on "
                      "other data than it is measured on");
    if (cal.split == "test") c.fail("split", "eta is never chosen on the test split");
    for (const auto& p : cal.policies)
      if (!contains(s.sweep.policies, p)) c.fail("policies", "policy '" + p + "' is not in sweep.policies");
    if (cal.max_examples < 0) c.fail("max_examples", "must be >= 0");
    c.check_all_read();
    s.calibrate = cal;
  }
  if (s.sweep.curve && (!s.calibrate || s.calibrate->rates.empty()))
    sw.fail("curve", "curve runs use the calibration's rates: add [calibrate] without an eta grid");

  // A policy is trained on other data than it is calibrated and measured on.
  for (const auto& p : s.policies) {
    if (!p.trained) continue;
    if (p.split == s.sweep.split)
      p.config.fail("split", "training split '" + p.split + "' is the sweep's split: a policy is measured on data "
                             "it was not trained on");
    if (s.calibrate && p.split == s.calibrate->split)
      p.config.fail("split", "training split '" + p.split + "' is the calibration split: thresholds are chosen on "
                             "data the policy was not trained on");
  }

  // match_rate: the matched policy must be calibrated (its rate comes from the calibration split).
  for (const auto& p : s.policies) {
    if (p.match_rate.empty()) continue;
    if (p.match_rate == p.name) p.config.fail("match_rate", "a policy cannot match its own deferral rate");
    if (!policy_names.count(p.match_rate))
      p.config.fail("match_rate", "unknown policy '" + p.match_rate + "'");
    if (!s.calibrate || !contains(s.calibrate->policies, p.match_rate))
      p.config.fail("match_rate", "policy '" + p.match_rate +
                                      "' is not calibrated: list it in [calibrate] policies (its rate is measured there)");
    if (s.calibrate && !s.calibrate->target_rates.empty())
      p.config.fail("match_rate", "match_rate needs one calibrated eta per policy ([calibrate] target_rates is set)");
    if (s.calibrate && contains(s.calibrate->policies, p.name))
      p.config.fail("match_rate", "policy '" + p.name + "' has its rate matched, so calibrating its eta means "
                                  "nothing: remove it from [calibrate] policies");
  }

  // [analysis]
  if (root.has("analysis")) {
    const auto a = root.sub("analysis");
    AnalysisSpec an;
    an.policies = a.get_string_or_list("policies", {}, "policies analysed teacher-forced on the gold targets");
    an.split = a.get_string("split", s.sweep.split, "split analysed (default: the sweep's)");
    an.max_examples = a.get_int("max_examples", s.sweep.max_examples, "examples analysed at most (0: all)");
    an.eta = a.get_double("eta", 0.5, "threshold of the analysed policies that are not calibrated");
    if (an.policies.empty()) a.fail("policies", "empty list: name at least one policy to analyse");
    for (const auto& p : an.policies)
      if (!policy_names.count(p)) a.fail("policies", "unknown policy '" + p + "'");
    if (an.max_examples < 0) a.fail("max_examples", "must be >= 0");
    if (!(an.eta >= 0 && an.eta <= 1)) a.fail("eta", "must be in [0, 1], got " + std::to_string(an.eta));
    a.check_all_read();
    s.analysis = an;
  }

  // [report]
  const auto r = root.sub("report");
  s.report.bootstrap_samples = r.get_int("bootstrap_samples", 1000, "bootstrap resamples for 95% intervals");
  s.report.confidence = r.get_double("confidence", 0.95, "confidence level of the intervals");
  s.report.examples = r.get_int("examples", 20, "example outputs shown per policy");
  if (s.report.bootstrap_samples < 0) r.fail("bootstrap_samples", "must be >= 0");
  if (!(s.report.confidence > 0 && s.report.confidence < 1)) r.fail("confidence", "must be in (0, 1)");
  if (s.report.examples < 0) r.fail("examples", "must be >= 0");
  r.check_all_read();
  return s;
}

ExperimentSpec parse_experiment_file(const std::string& path, const std::vector<std::string>& overrides) {
  auto root = ConfigView::from_file(path);
  for (const auto& o : overrides) root.apply_override(o);
  return parse_experiment(root);
}

// ---- plugins and keys ----------------------------------------------------------------------------

namespace {

std::string plugin_version(const Registry& reg, PluginKind kind, const std::string& name) {
  for (const auto& p : reg.loaded())
    if (p.kind == kind && p.name == name) return p.version;
  return "";
}

void require_plugin(const Registry& reg, PluginKind kind, const std::string& name, const ConfigView& c) {
  if (reg.has(kind, name)) return;
  const auto names = reg.names(kind);
  c.fail("plugin", std::string("unknown ") + to_string(kind) + " plugin '" + name + "' (available: " +
                       (names.empty() ? std::string("none; see `colm plugins`") : join(names)) + ")");
}

int64_t weight_bytes(const std::string& dir) {
  int64_t total = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const auto ext = entry.path().extension().string();
    if (ext == ".safetensors" || ext == ".bin") total += int64_t(entry.file_size(ec));
  }
  return total;
}

// A cheap identity of a checkpoint that is not loaded: config, tokenizer and the weight files'
// names, sizes and first MiB (safetensors headers hold every tensor's name, shape and offsets).
std::string probe_checkpoint_key(const std::string& dir) {
  Hasher h;
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    const auto name = f.filename().string();
    const auto ext = f.extension().string();
    if (name == "config.json" || name == "tokenizer.json") {
      h.add(name).add(sha1_file(f.string()));
    } else if (ext == ".safetensors" || ext == ".bin") {
      std::ifstream in(f, std::ios::binary);
      std::string head(1 << 20, '\0');
      in.read(head.data(), std::streamsize(head.size()));
      head.resize(size_t(in.gcount()));
      h.add(name).add(int64_t(fs::file_size(f))).add(sha1_hex(head));
    }
  }
  return h.hex();
}

ExpertInfo probe_checkpoint_info(const ExpertSpec& e) {
  ExpertInfo info;
  info.source = e.checkpoint;
  const auto cfg_path = fs::path(e.checkpoint) / "config.json";
  std::ifstream in(cfg_path);
  if (!in) e.config.fail("checkpoint", "checkpoint '" + e.checkpoint + "' has no config.json");
  nlohmann::json cfg;
  try {
    in >> cfg;
  } catch (const std::exception& err) {
    e.config.fail("checkpoint", cfg_path.string() + " is not valid JSON: " + err.what());
  }
  info.family = cfg.value("model_type", "");
  info.vocab_size = cfg.value("vocab_size", int64_t(0));
  info.hidden_size = cfg.contains("hidden_size") ? cfg.value("hidden_size", int64_t(0)) : cfg.value("n_embd", int64_t(0));
  info.max_positions = cfg.contains("max_position_embeddings") ? cfg.value("max_position_embeddings", int64_t(0))
                                                               : cfg.value("n_positions", int64_t(0));
  return info;
}

}  // namespace

std::string expert_artifact_key(const ExpertSpec& spec, const std::string& initial_key, const std::string& task_key,
                                const std::string& plugin_version) {
  if (!spec.train) return initial_key;
  Hasher h;
  // v2: the resolved training seed too (it defaults to experiment.seed, which `canonical`, holding
  // only the keys written in the table, leaves out: v1 reused one seed's expert for another seed).
  h.add("expert-lm-v2").add(spec.plugin).add(plugin_version).add(initial_key).add(spec.train->canonical);
  h.add(spec.train->seed);
  h.add(spec.train->data == "task" ? "task:" + task_key : "file:" + sha1_file(spec.train->data));
  return h.hex();
}

std::string policy_artifact_key(const PolicySpec& spec, const std::string& plugin_version, const std::string& base_key,
                                const std::vector<std::string>& assistant_keys, const std::string& task_key) {
  Hasher h;
  h.add("policy-v2").add(spec.plugin).add(plugin_version).add(spec.config.canonical()).add(spec.resolved);
  h.add(base_key);
  for (const auto& a : assistant_keys) h.add(a);
  if (spec.trained) h.add(task_key);  // untrained policies do not depend on the data
  return h.hex();
}

std::string calibration_key(const ExperimentSpec& spec, const std::string& policy, const std::string& strategy,
                            const LoadedExperiment& loaded) {
  const auto& cal = *spec.calibrate;
  nlohmann::json j;
  j["policy_key"] = loaded.policy_keys.at(policy);
  j["base_key"] = decoding_base_key(spec, loaded, policy);
  j["task_key"] = loaded.task_key;
  j["strategy"] = strategy;
  j["eta"] = cal.eta;
  if (!cal.rates.empty()) j["rates"] = cal.rates, j["refine"] = cal.refine, j["tolerance"] = cal.tolerance;
  j["target_rates"] = cal.target_rates;
  j["metric"] = cal.metric;
  j["split"] = cal.split;
  j["max_examples"] = cal.max_examples;
  j["seed"] = spec.sweep.seeds.front();
  j["sample"] = spec.sweep.sample;
  if (spec.sweep.sample) j["temperature"] = spec.sweep.temperature, j["top_p"] = spec.sweep.top_p;
  return sha1_hex("calibration-v2" + j.dump());
}

std::string decoding_base_key(const ExperimentSpec& spec, const LoadedExperiment& loaded, const std::string& policy) {
  const auto base = spec.decoding_base(policy);
  if (loaded.expert_keys.count(base)) return "expert:" + loaded.expert_keys.at(base);
  return "tuned:" + loaded.policy_keys.at(base);  // the trained policy's artifact holds its fine-tuned base
}

namespace {

PluginContext policy_context(const ExperimentSpec& spec, const LoadedExperiment& L, const PolicySpec& p,
                             PluginContext ctx) {
  ctx.instance = p.name;
  ctx.seed = uint64_t(p.trained ? p.seed : spec.seed);
  ctx.work_dir = (fs::path(spec.artifacts_dir) / "policies" / p.name).string();
  ctx.num_assistants = int64_t(p.assistants.size());
  ctx.base_hidden_size = L.expert_info.at(spec.base().name).hidden_size;
  ctx.vocab_size = L.expert_info.at(spec.base().name).vocab_size;
  return ctx;
}

}  // namespace

LoadedExperiment load_experiment(const ExperimentSpec& spec, const Registry& registry, const LoadOptions& options) {
  LoadedExperiment L;
  PluginContext base_ctx;
  base_ctx.seed = uint64_t(spec.seed);
  base_ctx.device = spec.device;

  // Every plugin is looked up before any is created: an unknown name fails before any work.
  require_plugin(registry, PluginKind::task, spec.task.plugin, spec.task.config);
  for (const auto& e : spec.experts) require_plugin(registry, PluginKind::expert, e.plugin, e.config);
  for (const auto& p : spec.policies) require_plugin(registry, PluginKind::policy, p.plugin, p.config);

  // Task: cheap to create; its splits are validated against every split the experiment names.
  {
    auto ctx = base_ctx;
    ctx.instance = "task";
    ctx.work_dir = (fs::path(spec.artifacts_dir) / "task").string();
    L.task = registry.create_task(spec.task.plugin, spec.task.config, ctx);
    spec.task.config.check_all_read();
    const auto version = plugin_version(registry, PluginKind::task, spec.task.plugin);
    L.plugin_versions["task/" + spec.task.plugin] = version;
    const auto splits = L.task->splits();
    auto check_split = [&](const ConfigView& c, const std::string& key, const std::string& split) {
      if (!contains(splits, split))
        c.fail(key, "task '" + spec.task.plugin + "' has no split '" + split + "' (splits: " + join(splits) + ")");
    };
    check_split(spec.root.sub("sweep"), "split", spec.sweep.split);
    if (spec.calibrate) check_split(spec.root.sub("calibrate"), "split", spec.calibrate->split);
    if (spec.analysis) check_split(spec.root.sub("analysis"), "split", spec.analysis->split);
    for (const auto& p : spec.policies)
      if (p.trained) check_split(p.config, "split", p.split);
    for (const auto& e : spec.experts)
      if (e.train && e.train->data == "task" && !contains(splits, "train"))
        e.config.sub("train").fail("data", "task '" + spec.task.plugin + "' has no train split");
    L.task_key = Hasher().add("task-v1").add(spec.task.plugin).add(version).add(L.task->fingerprint()).hex();
  }

  // Experts.
  for (const auto& e : spec.experts) {
    const auto version = plugin_version(registry, PluginKind::expert, e.plugin);
    L.plugin_versions["expert/" + e.plugin] = version;
    std::string initial_key;
    const bool heavy = options.dry_run && !e.checkpoint.empty() &&
                       weight_bytes(e.checkpoint) > options.dry_run_max_checkpoint_bytes;
    if (heavy) {
      spdlog::warn("[experiment] expert '{}': checkpoint {} is larger than the dry-run limit; checked its "
                   "config.json and tokenizer.json without loading it (plugin keys are checked by a real run)",
                   e.name, e.checkpoint);
      L.expert_info[e.name] = probe_checkpoint_info(e);
      e.config.mark_read("");
      initial_key = Hasher().add("expert-v1").add(e.plugin).add(version).add(probe_checkpoint_key(e.checkpoint)).hex();
    } else {
      auto ctx = base_ctx;
      ctx.instance = e.name;
      ctx.work_dir = (fs::path(spec.artifacts_dir) / "experts" / e.name).string();
      auto expert = registry.create_expert(e.plugin, e.config, ctx);
      e.config.check_all_read();
      L.expert_info[e.name] = expert->info();
      initial_key = Hasher().add("expert-v1").add(e.plugin).add(version).add(expert->fingerprint()).hex();
      L.experts[e.name] = std::move(expert);
    }
    L.expert_keys[e.name] = expert_artifact_key(e, initial_key, L.task_key, version);
  }

  // Vocabulary compatibility: every assistant must share the base's token ids, because the chosen
  // token is appended to every model's context. Loaded experts go through vocab_check.hpp's rules
  // (one tokenizer, or one and its extension past the last shared id; special ids; output rows);
  // an expert not loaded in a dry run is compared by its tokenizer.json.
  const auto& base = spec.base();
  for (const auto* a : spec.assistants()) {
    if (L.experts.count(base.name) && L.experts.count(a->name)) {
      try {
        shared_vocabulary({{base.name, L.experts.at(base.name).get()}, {a->name, L.experts.at(a->name).get()}});
      } catch (const ConfigError&) {
        throw;
      } catch (const Error& err) {
        a->config.fail("", "assistant '" + a->name + "' cannot share token ids with the base '" + base.name +
                               "': " + err.what());
      }
      continue;
    }
    auto tokenizer_of = [&](const ExpertSpec& e) -> Tokenizer {
      if (L.experts.count(e.name)) return L.experts.at(e.name)->tokenizer();
      const auto path = fs::path(e.checkpoint) / "tokenizer.json";
      if (!fs::exists(path)) e.config.fail("checkpoint", "checkpoint '" + e.checkpoint + "' has no tokenizer.json");
      return Tokenizer::from_file(path.string());
    };
    const auto base_tok = tokenizer_of(base);
    const auto tok = tokenizer_of(*a);
    if (base_tok.fingerprint() != tok.fingerprint()) {
      const bool base_smaller = base_tok.vocab_size() < tok.vocab_size();
      const auto why = base_tok.vocab_size() == tok.vocab_size()
                           ? std::string("their sizes are equal")
                           : extension_mismatch(base_smaller ? base_tok : tok, base_smaller ? tok : base_tok);
      if (!why.empty())
        a->config.fail("", "vocabulary of assistant '" + a->name + "' (" + tok.kind() + ", " +
                               std::to_string(tok.vocab_size()) + " tokens) differs from the base '" + base.name +
                               "' (" + base_tok.kind() + ", " + std::to_string(base_tok.vocab_size()) +
                               " tokens) and neither extends the other (" + why +
                               "): token-level collaboration needs one shared vocabulary");
    }
    for (const auto& [e, t] : {std::make_pair(&base, &base_tok), std::make_pair(a, &tok)}) {
      const auto& info = L.expert_info.at(e->name);
      if (info.vocab_size && info.vocab_size < t->vocab_size())
        e->config.fail("", "output layer of expert '" + e->name + "' has " + std::to_string(info.vocab_size) +
                               " rows but its tokenizer has " + std::to_string(t->vocab_size()) + " ids");
    }
  }
  // The ids they all share: every collaborating expert is seen over those ids from here on, with one
  // log line saying what that masks. A reference joins when its tokenizer extends the shared one (a
  // reference with its own vocabulary can still decode alone).
  std::vector<std::pair<std::string, const Expert*>> collaborating{{base.name, nullptr}};
  for (const auto* a : spec.assistants()) collaborating.emplace_back(a->name, nullptr);
  bool all_loaded = true;
  for (auto& [name, ptr] : collaborating) {
    all_loaded = all_loaded && L.experts.count(name);
    if (all_loaded) ptr = L.experts.at(name).get();
  }
  if (all_loaded) {
    L.vocab = check_vocab_compatible(collaborating);
    for (const auto& [name, ptr] : collaborating) L.vocab_members.insert(name);
    for (const auto& e : spec.experts) {
      if (e.role != "reference" || !L.experts.count(e.name)) continue;
      try {
        share_vocab(L.experts.at(e.name), L.vocab);
        L.vocab_members.insert(e.name);
      } catch (const Error& err) {
        spdlog::debug("[vocab] reference '{}' keeps its own vocabulary: {}", e.name, err.what());
      }
    }
    for (const auto& name : L.vocab_members) {
      L.experts[name] = share_vocab(L.experts.at(name), L.vocab);
      L.expert_info[name] = L.experts[name]->info();
    }
  }

  // A calibration metric the task does not produce would only show after decoding: check it on the
  // reference targets of the calibration split now.
  if (spec.calibrate && !spec.calibrate->metric.empty()) {
    std::set<std::string> names;
    const auto examples = L.task->examples(spec.calibrate->split);
    for (size_t i = 0; i < examples.size() && i < 20; ++i)
      for (const auto& [name, value] : L.task->score(examples[i], examples[i].target)) names.insert(name);
    if (!names.empty() && !names.count(spec.calibrate->metric))
      spec.root.sub("calibrate").fail("metric", "task '" + spec.task.plugin + "' has no metric '" +
                                                    spec.calibrate->metric + "' (its metrics: " +
                                                    join({names.begin(), names.end()}) + ")");
  }

  // Policies.
  for (const auto& p : spec.policies) {
    std::vector<std::string> assistant_keys;
    for (const auto* a : spec.assistants_of(p.name)) assistant_keys.push_back(L.expert_keys.at(a->name));
    const auto version = plugin_version(registry, PluginKind::policy, p.plugin);
    L.plugin_versions["policy/" + p.plugin] = version;
    auto policy = registry.create_policy(p.plugin, p.config, policy_context(spec, L, p, base_ctx));
    p.config.check_all_read();
    if (p.trained && !policy->trainable())
      p.config.fail("plugin", "policy plugin '" + p.plugin + "' is not trainable; define it under [policies." +
                                  p.name + "] instead of [train." + p.name + "]");
    L.policy_keys[p.name] = policy_artifact_key(p, version, L.expert_keys.at(base.name), assistant_keys, L.task_key);
    L.policies[p.name] = std::move(policy);
  }

  // A policy that needs the gold next token (the oracle) can only be analysed teacher-forced.
  for (const auto& name : spec.sweep.policies)
    if (L.policies.at(name)->needs().gold)
      spec.root.sub("sweep").fail("policies", "policy '" + name + "' needs the gold next token (an oracle): it "
                                              "cannot generate, so it cannot be part of the sweep");

  // Whatever is left unread anywhere is a misspelt or unsupported key.
  spec.root.check_all_read();
  return L;
}

std::shared_ptr<DeferralPolicy> create_policy_with(const ExperimentSpec& spec, const LoadedExperiment& loaded,
                                                   const Registry& registry, const std::string& name,
                                                   const std::vector<std::string>& overrides) {
  const auto& p = spec.policy(name);
  auto doc = ConfigView::from_string(spec.root.to_toml(), spec.file.empty() ? "<experiment>" : spec.file);
  for (const auto& o : overrides) doc.apply_override(p.section + "." + name + "." + o);
  PluginContext base_ctx;
  base_ctx.device = spec.device;
  auto view = doc.sub(p.section).sub(name);
  auto policy = registry.create_policy(p.plugin, view, policy_context(spec, loaded, p, base_ctx));
  return policy;
}

// ---- runs ------------------------------------------------------------------------------------------

namespace {

std::string run_key(const nlohmann::json& params) {
  auto identity = params;
  identity.erase("policy");       // names are labels: renaming a policy keeps its runs
  identity.erase("batch_size");   // decoding is batch-size invariant
  identity.erase("assistants");   // the assistants' names (their keys are in assistant_keys)
  return sha1_hex("run-v1" + identity.dump());
}

nlohmann::json common_params(const ExperimentSpec& spec, const LoadedExperiment& L) {
  nlohmann::json j;
  j["task_key"] = L.task_key;
  j["split"] = spec.sweep.split;
  j["max_examples"] = spec.sweep.max_examples;
  j["sample"] = spec.sweep.sample;
  if (spec.sweep.sample) j["temperature"] = spec.sweep.temperature, j["top_p"] = spec.sweep.top_p;
  j["batch_size"] = spec.sweep.batch_size;
  j["plugin_versions"] = L.plugin_versions;
  return j;
}

}  // namespace

std::vector<RunSpec> expand_runs(const ExperimentSpec& spec, const LoadedExperiment& L) {
  const auto& sw = spec.sweep;
  std::vector<RunSpec> runs;
  std::set<std::string> seen;

  auto add = [&](RunSpec r) {
    r.key = run_key(r.params);
    if (!seen.insert(r.key).second) {
      spdlog::warn("[experiment] duplicate run dropped: {}", describe_run(r));
      return;
    }
    runs.push_back(std::move(r));
  };
  // What every run of a policy depends on: the policy, the experts, and its eta or calibration.
  auto policy_params = [&](const std::string& kind, const std::string& policy, std::optional<double> eta,
                           const std::string& calibration_strategy) {
    auto j = common_params(spec, L);
    j["kind"] = kind;
    j["policy"] = policy;
    j["policy_key"] = L.policy_keys.at(policy);
    j["base_key"] = L.expert_keys.at(spec.base().name);
    j["base"] = spec.decoding_base(policy);
    j["decoding_base_key"] = decoding_base_key(spec, L, policy);
    std::vector<std::string> assistant_keys, assistant_names;
    for (const auto* a : spec.assistants_of(policy)) {
      assistant_keys.push_back(L.expert_keys.at(a->name));
      assistant_names.push_back(a->name);
    }
    j["assistant_keys"] = assistant_keys;
    j["assistants"] = assistant_names;  // source j of the token traces is assistants[j-1]
    const auto& ps = spec.policy(policy);
    j["plugin"] = ps.plugin;
    if (ps.trained) j["objective"] = ps.objective;
    else if (ps.config.has("rule")) j["rule"] = ps.config.get_string("rule", "", "the rules plugin's rule (recorded with each run)");
    if (eta) j["eta"] = *eta;
    else j["calibration_key"] = calibration_key(spec, policy, calibration_strategy, L);
    return j;
  };
  auto policy_run = [&](const std::string& policy, std::optional<double> eta, const std::string& strategy,
                        int64_t seed, std::optional<double> target_rate = std::nullopt, bool curve = false) {
    RunSpec r;
    r.kind = "policy";
    r.policy = policy;
    r.eta = eta;
    r.calibrated = !eta.has_value();
    r.target_rate = target_rate;
    r.curve = curve;
    r.strategy = strategy;
    r.split = sw.split;
    r.seed = seed;
    auto j = policy_params("policy", policy, eta, strategy);
    const auto& match = spec.policy(policy).match_rate;
    if (!match.empty()) {
      j["match_rate"] = match;
      j["match_calibration_key"] = calibration_key(spec, match, strategy, L);
    }
    if (target_rate) j["target_rate"] = *target_rate;
    if (curve) j["curve"] = true;
    j["calibrated"] = r.calibrated;
    j["strategy"] = strategy;
    j["seed"] = seed;
    r.params = std::move(j);
    add(std::move(r));
  };

  // The grid: each axis is a list of indices; zipped axes share one index.
  if (!sw.policies.empty() && !sw.eta.empty()) {
    auto zipped = [&](const std::string& axis) { return contains(sw.zip, axis); };
    const size_t zip_len = sw.zip.empty() ? 1
                           : sw.zip.front() == "policies" ? sw.policies.size()
                           : sw.zip.front() == "eta"      ? sw.eta.size()
                           : sw.zip.front() == "strategies" ? sw.strategies.size()
                                                            : sw.seeds.size();
    auto range = [&](const std::string& axis, size_t n, size_t z) -> std::vector<size_t> {
      if (zipped(axis)) return {z};
      std::vector<size_t> out(n);
      for (size_t i = 0; i < n; ++i) out[i] = i;
      return out;
    };
    for (size_t z = 0; z < zip_len; ++z)
      for (size_t pi : range("policies", sw.policies.size(), z))
        for (size_t ei : range("eta", sw.eta.size(), z))
          for (size_t si : range("strategies", sw.strategies.size(), z))
            for (size_t di : range("seeds", sw.seeds.size(), z))
              if (!(sw.calibrated_only && spec.calibrate && contains(spec.calibrate->policies, sw.policies[pi])))
                policy_run(sw.policies[pi], sw.eta[ei], sw.strategies[si], sw.seeds[di]);
  }
  if (sw.calibrated && spec.calibrate) {
    // Target-rate calibration gives one eta per rate, hence one run per rate.
    std::vector<std::optional<double>> rates;
    for (double r : spec.calibrate->target_rates) rates.emplace_back(r);
    if (rates.empty()) rates.emplace_back(std::nullopt);
    for (const auto& p : spec.calibrate->policies)
      for (const auto& rate : rates)
        for (const auto& st : sw.strategies)
          for (int64_t seed : sw.seeds) policy_run(p, std::nullopt, st, seed, rate);
  }
  if (sw.curve && spec.calibrate) {
    // The accuracy-against-deferral-rate curve: every calibrated policy at each calibration rate's
    // threshold (chosen on the calibration split, measured on the sweep's).
    for (const auto& p : spec.calibrate->policies)
      for (double rate : spec.calibrate->rates)
        for (int64_t seed : sw.seeds) policy_run(p, std::nullopt, "defer", seed, rate, true);
  }

  if (spec.analysis) {
    // Teacher-forced analysis: one run per policy, at its calibrated eta when it has one.
    for (const auto& p : spec.analysis->policies) {
      const bool calibrated = spec.calibrate && contains(spec.calibrate->policies, p) &&
                              spec.calibrate->target_rates.empty();
      RunSpec r;
      r.kind = "teacher_forced";
      r.policy = p;
      if (!calibrated) r.eta = spec.analysis->eta;
      r.calibrated = calibrated;
      r.strategy = "teacher_forced";
      r.split = spec.analysis->split;
      r.seed = sw.seeds.front();
      auto j = policy_params("teacher_forced", p, r.eta, sw.strategies.front());
      j["split"] = r.split;
      j["max_examples"] = spec.analysis->max_examples;
      j["seed"] = r.seed;
      r.params = std::move(j);
      add(std::move(r));
    }
  }

  for (const auto& name : sw.combinations) {
    const auto& c = spec.combination(name);
    RunSpec r;
    r.kind = "combine";
    r.policy = name;
    r.strategy = c.strategy;
    r.split = sw.split;
    for (int64_t seed : (sw.sample ? sw.seeds : std::vector<int64_t>{sw.seeds.front()})) {
      r.seed = seed;
      auto j = common_params(spec, L);
      j["kind"] = "combine";
      j["policy"] = name;
      j["strategy"] = c.strategy;
      nlohmann::json models, keys;
      for (const auto& [role, expert] : c.models) models[role] = expert, keys[role] = L.expert_keys.at(expert);
      j["models"] = models;
      j["model_keys"] = keys;
      if (c.strategy == "contrastive") j["alpha"] = c.alpha, j["beta"] = c.beta;
      j["base"] = c.strategy == "contrastive" ? c.models.at("expert") : c.models.at("large");
      j["seed"] = seed;
      r.params = j;
      add(r);
    }
  }

  for (const auto& b : sw.baselines) {
    RunSpec r;
    r.kind = "single";
    r.policy = b;
    r.strategy = "single";
    r.split = sw.split;
    // Greedy single-model decoding does not depend on the seed: one run. Sampling runs every seed.
    for (int64_t seed : (sw.sample ? sw.seeds : std::vector<int64_t>{sw.seeds.front()})) {
      r.seed = seed;
      auto j = common_params(spec, L);
      j["kind"] = "single";
      j["policy"] = b;
      j["expert_key"] = L.expert_keys.at(b);
      j["base"] = b;
      j["seed"] = seed;
      r.params = j;
      add(r);
    }
  }
  return runs;
}

std::string describe_run(const RunSpec& r) {
  std::ostringstream os;
  os << (r.kind == "single"           ? "single="
         : r.kind == "teacher_forced" ? "teacher_forced="
         : r.kind == "combine"        ? "combine="
                                      : "policy=")
     << r.policy << " eta=";
  if (r.kind == "single" || r.kind == "combine") os << "-";
  else if (r.eta) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4g", *r.eta);
    os << buf;
  } else {
    os << "calibrated";
    if (r.target_rate) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.4g", *r.target_rate);
      os << (r.curve ? "@curve-rate=" : "@rate=") << buf;
    }
  }
  os << " strategy=" << r.strategy << " split=" << r.split << " seed=" << r.seed << " key=" << r.key.substr(0, 12);
  return os.str();
}

std::shared_ptr<Expert> as_loaded(const LoadedExperiment& loaded, const std::string& name,
                                  std::shared_ptr<Expert> expert) {
  if (!loaded.vocab_members.count(name)) return expert;
  return share_vocab(std::move(expert), loaded.vocab);
}

}  // namespace colm
