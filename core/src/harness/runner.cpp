// The runner: stages, artifacts, resume and shards for one validated experiment.
// Training goes through train.hpp, decoding through decode.hpp; storage is the ResultsStore (store.hpp).
#include "harness/runner.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>
#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>

#include "colm/api.hpp"
#include "colm/hash.hpp"
#include "base/progress.hpp"
#include "harness/artifacts.hpp"
#include "harness/reloadable_expert.hpp"
#include "harness/stats.hpp"
#include "method/decode.hpp"
#include "method/distributed.hpp"
#include "plugin/registry.hpp"
#include "method/train.hpp"

namespace fs = std::filesystem;

namespace colm {

ShardSpec parse_shard(const std::string& text) {
  const auto slash = text.find('/');
  ShardSpec s;
  try {
    if (slash == std::string::npos) throw std::invalid_argument("no '/'");
    size_t a = 0, b = 0;
    s.index = std::stoll(text.substr(0, slash), &a);
    s.count = std::stoll(text.substr(slash + 1), &b);
    if (a != slash || b != text.size() - slash - 1) throw std::invalid_argument("trailing characters");
  } catch (const std::exception&) {
    throw Error("--shard '" + text + "': expected i/n with integers, e.g. 0/4");
  }
  if (s.count < 1 || s.index < 0 || s.index >= s.count) throw Error("--shard '" + text + "': need 0 <= i < n");
  return s;
}

std::string parse_stage(const std::string& text) {
  for (const char* s : {"all", "prepare", "train", "calibrate", "sweep", "finish"})
    if (text == s) return text;
  throw Error("--stage '" + text + "': expected all, prepare, train, calibrate, sweep or finish");
}

std::string parse_shard_by(const std::string& text) {
  if (text == "runs" || text == "examples") return text;
  throw Error("--shard-by '" + text + "': expected runs or examples");
}

std::pair<size_t, size_t> examples_range(size_t n_examples, const ShardSpec& shard) {
  const auto n = size_t(shard.count), i = size_t(shard.index);
  return {n_examples * i / n, n_examples * (i + 1) / n};
}

bool in_shard(size_t run_index, const ShardSpec& shard) {
  return int64_t(run_index % size_t(shard.count)) == shard.index;
}

namespace {

std::string toml_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// A view holding only `checkpoint = DIR`: how a finished artifact is loaded back.
// The expert `e` reloaded from a checkpoint the runner wrote (an lm-trained expert, a jointly
// fine-tuned base): the same plugin keys that say how to hold the weights (`dtype`) as `e`'s own
// table, so a reload computes at the precision the experiment asked for (the device comes with the
// plugin context); keys that say what to build (a fresh architecture) do not apply to a checkpoint.
ConfigView checkpoint_view(const ExpertSpec& e, const std::string& dir) {
  std::string toml = "checkpoint = " + toml_string(dir) + "\n";
  for (const char* key : {"dtype"})
    if (e.config.has(key)) toml += std::string(key) + " = " + toml_string(e.config.get_string(key, "", "")) + "\n";
  return ConfigView::from_string(toml, "<artifact " + e.name + ">");
}

PluginContext expert_context(const ExperimentSpec& spec, const std::string& name) {
  PluginContext ctx;
  ctx.instance = name;
  ctx.seed = uint64_t(spec.seed);
  ctx.device = spec.device;
  ctx.work_dir = (fs::path(spec.artifacts_dir) / "experts" / name).string();
  return ctx;
}

void copy_dir_atomic(const fs::path& from, const fs::path& to) {
  // A name of this process's own: two processes exporting at once do not write into one another.
  const auto tmp = to.string() + ".tmp." + std::to_string(::getpid());
  std::error_code ec;
  if (to.has_parent_path()) fs::create_directories(to.parent_path());
  fs::remove_all(tmp, ec);
  fs::copy(from, tmp, fs::copy_options::recursive);
  fs::remove_all(to, ec);
  fs::rename(tmp, to);
}

// A fresh instance of an expert as the experiment prepared it (its lm-trained weights when it has
// a [train] table): trainers that modify the base get their own copy.
std::shared_ptr<Expert> fresh_expert(const ExperimentSpec& spec, const LoadedExperiment& loaded,
                                     const Registry& registry, const std::string& name) {
  const auto& e = spec.expert(name);
  if (e.train) {
    const auto dir = fs::path(spec.artifacts_dir) / "experts" / loaded.expert_keys.at(name) / "model";
    return as_loaded(loaded, name,
                     registry.create_expert(e.plugin, checkpoint_view(e, dir.string()), expert_context(spec, name)));
  }
  return as_loaded(loaded, name, registry.create_expert(e.plugin, e.config, expert_context(spec, name)));
}

std::vector<std::pair<std::string, std::string>> task_pairs(Task& task, const std::string& split, int64_t max_examples) {
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const auto& ex : task.examples(split)) {
    if (max_examples > 0 && int64_t(pairs.size()) >= max_examples) break;
    pairs.emplace_back(ex.prompt, ex.target);
  }
  return pairs;
}

}  // namespace

namespace {

// Whether this process builds the artifact at `dir` (holding `claim` when it is the builder). In a
// data-parallel group rank 0 claims it, or waits until it is done, and every rank follows its answer.
bool decide_build(const fs::path& dir, const std::string& what, const ArtifactAccess& access,
                  std::optional<ArtifactClaim>& claim) {
  if (!access.parallel || access.parallel->rank() == 0) {
    if (access.build) claim = claim_or_wait(dir, what, access.wait_s);
    else wait_for_artifact(dir, what, access.wait_s, "Run `colm run EXPERIMENT.toml --stage train` first.");
  }
  if (!access.parallel) return claim.has_value();
  return access.parallel->all_reduce_sum(claim ? 1.0 : 0.0) > 0.5;
}

}  // namespace

void prepare_experts(const ExperimentSpec& spec, LoadedExperiment& loaded, const Registry& registry,
                     const ShardSpec& only, const ArtifactAccess& access) {
  size_t n_trained = 0;
  for (const auto& e : spec.experts) {
    if (!e.train) continue;
    // Base and assistants are prepared by every shard (built once: the others wait): policies train on them.
    if (e.role == "reference" && !in_shard(n_trained++, only)) continue;
    const auto key = loaded.expert_keys.at(e.name);
    const auto dir = fs::path(spec.artifacts_dir) / "experts" / key;
    const auto what = "lm-trained expert '" + e.name + "'";
    std::optional<ArtifactClaim> claim;
    const bool built = decide_build(dir, what, access, claim);
    const bool leader = !access.parallel || access.parallel->rank() == 0;
    if (built) {
      COLM_CHECK(loaded.experts.count(e.name), "[runner] expert '" << e.name << "' was not instantiated");
      auto& expert = *loaded.experts.at(e.name);
      const auto& t = *e.train;
      const auto data = t.data == "task"
                            ? make_pair_data(task_pairs(*loaded.task, "train", 0), expert.tokenizer(), t.seq_len)
                            : make_text_data({t.data}, expert.tokenizer(), t.seq_len);
      TrainConfig c;
      c.steps = t.steps;
      c.batch_size = t.batch_size;
      c.lr = t.lr;
      c.seed = uint64_t(t.seed);
      c.max_len = t.seq_len;
      c.warmup = t.warmup;
      c.checkpoint_every = std::max<int64_t>(1, t.steps / 10);
      c.checkpoint_dir = (dir / "checkpoints").string();
      c.label = "lm:" + e.name;
      fs::create_directories(dir);
      spdlog::info("[runner] prepare: training expert '{}' with lm for {} steps on {} sequences ({})", e.name,
                   t.steps, data.size(), dir.string());
      c.parallel = access.parallel;
      LmObjective objective(expert);
      const auto r = train(objective, data, nullptr, c);
      if (leader) {
        copy_dir_atomic(fs::path(r.checkpoint) / "artifacts" / "model", dir / "model");
        mark_artifact_done(dir);
      }
    } else {
      spdlog::info("[runner] prepare: expert '{}' reused from {}", e.name, dir.string());
    }
    if (access.parallel) access.parallel->barrier();  // every rank reloads what rank 0 wrote
    // Exported by the process that built it (or when the export is missing).
    if (leader && !e.train->export_dir.empty() && (built || !fs::exists(e.train->export_dir))) {
      copy_dir_atomic(dir / "model", e.train->export_dir);
      spdlog::info("[runner] prepare: expert '{}' exported to {}", e.name, e.train->export_dir);
    }
    loaded.experts[e.name] = as_loaded(
        loaded, e.name,
        registry.create_expert(e.plugin, checkpoint_view(e, (dir / "model").string()), expert_context(spec, e.name)));
  }
}

namespace {

// The assistants as experts that joint training can release once their scores are cached (their
// weights then cost nothing until decoding loads them again). A reload is the expert as prepared,
// seen over the shared ids, and must have the same fingerprint.
void make_assistants_releasable(const ExperimentSpec& spec, LoadedExperiment& loaded, const Registry& registry) {
  LoadedExperiment recipe;  // what a reload needs, without holding any model
  recipe.expert_keys = loaded.expert_keys;
  recipe.vocab = loaded.vocab;
  recipe.vocab_members = loaded.vocab_members;
  for (const auto* a : spec.assistants()) {
    const auto it = loaded.experts.find(a->name);
    if (it == loaded.experts.end() || std::dynamic_pointer_cast<ReloadableExpert>(it->second)) continue;
    const std::string name = a->name;
    it->second = std::make_shared<ReloadableExpert>(
        name, it->second, [&spec, &registry, recipe, name] { return fresh_expert(spec, recipe, registry, name); });
  }
}

}  // namespace

std::map<std::string, std::string> train_policies(const ExperimentSpec& spec, LoadedExperiment& loaded,
                                                  const Registry& registry, const ShardSpec& only,
                                                  size_t first_index, const ArtifactAccess& access,
                                                  const std::set<std::string>* wanted) {
  size_t n_trained = first_index;
  std::map<std::string, std::string> base_dirs;
  make_assistants_releasable(spec, loaded, registry);
  for (const auto& p : spec.policies) {
    if (!p.trained) continue;
    if (!in_shard(n_trained++, only)) continue;
    if (wanted && !wanted->count(p.name)) continue;
    std::vector<Expert*> assistants;
    for (const auto* a : spec.assistants_of(p.name)) assistants.push_back(loaded.experts.at(a->name).get());
    const auto dir = fs::path(spec.artifacts_dir) / "policies" / loaded.policy_keys.at(p.name);
    auto& policy = *loaded.policies.at(p.name);
    const auto what = "trained policy '" + p.name + "'";
    std::optional<ArtifactClaim> claim;
    const bool leader = !access.parallel || access.parallel->rank() == 0;
    if (decide_build(dir, what, access, claim)) {
      // A jointly fine-tuned base is trained on its own copy: the shared base stays as prepared.
      auto own_base = p.finetune_base ? fresh_expert(spec, loaded, registry, spec.base().name) : nullptr;
      auto& base = own_base ? *own_base : *loaded.experts.at(spec.base().name);
      const auto max_len = std::min<int64_t>(1024, loaded.expert_info.at(spec.base().name).max_positions > 0
                                                       ? loaded.expert_info.at(spec.base().name).max_positions
                                                       : 1024);
      const auto data = make_pair_data(task_pairs(*loaded.task, p.split, p.max_examples), base.tokenizer(), max_len);
      TrainConfig c;
      c.steps = p.steps;
      c.batch_size = p.batch_size;
      c.lr = p.lr;
      c.seed = uint64_t(p.seed);
      c.max_len = max_len;
      c.checkpoint_every = std::max<int64_t>(1, p.steps / 10);
      c.label = "train:" + p.name;
      c.parallel = access.parallel;
      DeferralSpec ds;
      ds.objective = p.objective;
      ds.finetune_base = p.finetune_base ? "full" : "none";
      ds.init = p.init == "weak_supervision" ? "weak" : "none";
      ds.init_steps = p.init_steps;
      ds.pos_weight = p.pos_weight;
      ds.weak_rule = parse_weak_rule(p.weak_rule);
      ds.lm_weight = p.objective == "weak_supervision" ? p.lm_weight : 0.0;
      fs::create_directories(dir);
      spdlog::info("[runner] train: policy '{}' ({}{}) for {} steps on {} examples ({})", p.name, p.objective,
                   p.init == "none" ? "" : " after " + p.init, p.steps, data.size(), dir.string());
      // The head names the base it decodes with: the fine-tuned copy as it will be loaded back.
      auto saved_base_fingerprint = [&](const std::string& base_dir) {
        const auto& b = spec.base();
        return as_loaded(loaded, b.name,
                         registry.create_expert(b.plugin, checkpoint_view(b, base_dir), expert_context(spec, b.name)))
            ->fingerprint();
      };
      // Once scored, the assistants' weights are not needed by training: release them (unless
      // COLM_KEEP_EXPERTS=1: memory to spare and a slow reload).
      auto release_assistants = [&] {
        if (const char* keep = std::getenv("COLM_KEEP_EXPERTS"); keep && std::string(keep) == "1") return;
        for (const auto* a : spec.assistants_of(p.name))
          if (auto r = std::dynamic_pointer_cast<ReloadableExpert>(loaded.experts.at(a->name))) r->release();
      };
      train_deferral(base, assistants, policy, data, nullptr, c, ds, dir.string(),
                     (fs::path(spec.artifacts_dir) / "scores").string(), saved_base_fingerprint, release_assistants);
      if (leader) mark_artifact_done(dir);
      if (access.parallel) access.parallel->barrier();
    } else {
      spdlog::info("[runner] train: policy '{}' reused from {}", p.name, dir.string());
      const auto head = (dir / "head.safetensors").string();
      const auto meta = policy.load(head);
      // A reused head must belong to the experts it will decide between (the prepared assistants, and
      // the base it decodes with: its own fine-tuned copy or the shared one).
      std::vector<std::string> assistant_fps;
      for (const auto* a : assistants) assistant_fps.push_back(a->fingerprint());
      std::string base_fp;
      if (p.finetune_base) {
        const auto& b = spec.base();
        base_fp = as_loaded(loaded, b.name,
                            registry.create_expert(b.plugin, checkpoint_view(b, (dir / "base").string()),
                                                   expert_context(spec, b.name)))
                      ->fingerprint();
      } else {
        base_fp = loaded.experts.at(spec.base().name)->fingerprint();
      }
      check_head_matches(meta, base_fp, assistant_fps, head);
    }
    if (p.finetune_base) base_dirs[p.name] = (dir / "base").string();
  }
  return base_dirs;
}

std::set<std::string> needed_policies(const ExperimentSpec& spec, const std::vector<RunSpec>& runs,
                                      const std::vector<std::pair<std::string, std::string>>& calibrations) {
  std::set<std::string> out;
  auto need = [&](const std::string& name) {
    if (spec.policy(name).trained) out.insert(name);
    // The base that decodes it may be another trained policy's fine-tuned base.
    const auto base = spec.decoding_base(name);
    for (const auto& p : spec.policies)
      if (p.name == base && p.trained) out.insert(base);
  };
  for (const auto& r : runs)
    if (r.kind == "policy" || r.kind == "teacher_forced") need(r.policy);
  for (const auto& c : calibrations) need(c.first);
  return out;
}

double choose_eta(const std::vector<CalibrationPoint>& curve) {
  COLM_CHECK(!curve.empty(), "[runner] calibration: empty curve");
  const CalibrationPoint* best = &curve.front();
  for (const auto& p : curve) {
    const bool better = p.metric > best->metric ||
                        (p.metric == best->metric && (p.deferral_rate < best->deferral_rate ||
                                                      (p.deferral_rate == best->deferral_rate && p.eta > best->eta)));
    if (better) best = &p;
  }
  return best->eta;
}

double threshold_for_rate(std::vector<double> p, double rate) {
  if (rate <= 0 || p.empty()) return 1.0;
  std::sort(p.begin(), p.end(), std::greater<double>());
  const auto n = p.size();
  const auto k = size_t(std::llround(rate * double(n)));
  if (k == 0) return std::min(1.0, p[0]);             // p[0] itself does not exceed it: nothing defers
  if (k >= n) return std::max(0.0, p[n - 1]) * 0.5;  // everything above half the smallest defers
  return 0.5 * (p[k - 1] + p[k]);
}

double eta_for_rate(const std::vector<CalibrationPoint>& curve, double target_rate) {
  COLM_CHECK(!curve.empty(), "[runner] calibration: empty curve");
  const CalibrationPoint* best = &curve.front();
  for (const auto& p : curve) {
    const double d = std::fabs(p.deferral_rate - target_rate), bd = std::fabs(best->deferral_rate - target_rate);
    if (d < bd || (d == bd && p.metric > best->metric)) best = &p;
  }
  return best->eta;
}


// ---- statistics -----------------------------------------------------------------------------------

namespace {

uint64_t hash64(const std::string& text) { return std::stoull(sha1_hex(text).substr(0, 16), nullptr, 16); }

}  // namespace

std::vector<MetricRecord> summarize_examples(const std::vector<ExampleRecord>& examples, int64_t samples,
                                             double confidence, uint64_t seed) {
  std::map<std::string, std::vector<double>> per_metric;  // values of the examples that have the metric
  for (const auto& e : examples)
    for (const auto& [name, value] : e.metrics) per_metric[name].push_back(value);

  std::map<std::string, MetricRecord> out;
  for (const auto& entry : per_metric) {
    const auto& name = entry.first;
    const auto& v = entry.second;  // a plain reference: C++17 lambdas cannot capture structured bindings
    MetricRecord r;
    r.name = name;
    double sum = 0;
    for (double x : v) sum += x;
    r.value = sum / double(v.size());
    if (samples > 0) {
      const auto e = bootstrap_statistic(v.size(), [&](const std::vector<size_t>& idx) {
        double s = 0;
        for (size_t i : idx) s += v[i];
        return s / double(idx.size());
      }, BootstrapOptions{samples, confidence, seed ^ hash64(name)});
      r.ci_low = e.ci_low, r.ci_high = e.ci_high;
    }
    out[name] = r;
  }

  // A ratio of sums: long outputs weigh more, as each token is one deferral decision.
  MetricRecord rate;
  rate.name = "deferral_rate";
  auto ratio = [&](const auto& idx) {
    double tokens = 0, deferred = 0;
    for (size_t i : idx) tokens += double(examples[i].n_tokens), deferred += double(examples[i].n_deferred);
    return tokens > 0 ? deferred / tokens : 0.0;
  };
  std::vector<size_t> all(examples.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  rate.value = ratio(all);
  if (samples > 0 && !examples.empty()) {
    const auto e = bootstrap_statistic(examples.size(), ratio, BootstrapOptions{samples, confidence, seed ^ hash64(rate.name)});
    rate.ci_low = e.ci_low, rate.ci_high = e.ci_high;
  }
  out[rate.name] = rate;

  std::vector<MetricRecord> records;
  for (auto& [name, r] : out) records.push_back(std::move(r));
  return records;
}

// ---- decoding -------------------------------------------------------------------------------------

RunContext::RunContext(const ExperimentSpec& spec, LoadedExperiment& loaded, const Registry& registry,
                       std::map<std::string, std::string> base_dirs)
    : spec_(spec), loaded_(loaded), registry_(registry), base_dirs_(std::move(base_dirs)) {}

void RunContext::override_policy(const std::string& name, const std::vector<std::string>& overrides) {
  loaded_.policies[name] = create_policy_with(spec_, loaded_, registry_, name, overrides);
}

const std::vector<Example>& RunContext::examples(const std::string& split, int64_t max_examples) {
  const auto key = std::make_pair(split, max_examples);
  auto it = examples_.find(key);
  if (it != examples_.end()) return it->second;
  auto all = loaded_.task->examples(split);
  if (max_examples > 0 && int64_t(all.size()) > max_examples) all.resize(size_t(max_examples));
  return examples_[key] = std::move(all);
}

Expert& RunContext::base_for(const std::string& policy) { return base_named(spec_.decoding_base(policy)); }

Expert& RunContext::base_named(const std::string& name) {
  if (const auto e = loaded_.experts.find(name); e != loaded_.experts.end()) return *e->second;
  // A trained policy's jointly fine-tuned base: loaded once, whoever decodes with it.
  const auto dir = base_dirs_.find(name);
  COLM_CHECK(dir != base_dirs_.end() && !dir->second.empty(),
             "[runner] no base named '" << name << "' (neither an expert nor a policy with a fine-tuned base)");
  auto& tuned = tuned_bases_[name];
  if (!tuned) {
    const auto& b = spec_.base();
    spdlog::info("[runner] loading policy '{}''s jointly fine-tuned base ({})", name, dir->second);
    tuned = as_loaded(loaded_, b.name,
                      registry_.create_expert(b.plugin, checkpoint_view(b, dir->second), expert_context(spec_, b.name)));
  }
  return *tuned;
}

namespace {
// "policy colm eta=0.0105 valid", "single base test", "teacher_forced colm eta=0.5": progress labels.
std::string decode_label(const std::string& kind, const std::string& name, double eta, const std::string& split) {
  std::string label = kind + " " + name;
  if (kind == "policy" || kind == "teacher_forced") label += fmt::format(" eta={:.4g}", eta);
  return split.empty() ? label : label + " " + split;
}
}  // namespace

std::vector<ExampleRecord> RunContext::decode(const std::string& kind, const std::string& name, double eta,
                                              const std::string& strategy, int64_t seed, const std::string& split,
                                              const std::vector<Example>& examples, const std::vector<size_t>& idx,
                                              Progress* progress, int64_t done_before, const RecordSink& sink) {
  const auto gen = loaded_.task->generation();
  // Examples done, tokens/s and ETA: a bar on a terminal, a log line every 10 s otherwise.
  std::unique_ptr<Progress> own;
  if (!progress) {
    own = std::make_unique<Progress>(Progress::counting(decode_label(kind, name, eta, split), "examples",
                                                        int64_t(idx.size())));
    progress = own.get();
  }
  DecodeOptions o;
  o.on_finished = [&](int64_t done, int64_t tokens) { progress->update(done_before + done, 0.0, tokens); };
  o.threshold = eta;
  o.strategy = kind == "single" || kind == "combine" ? "defer" : strategy;
  o.sample = spec_.sweep.sample;
  o.temperature = spec_.sweep.temperature;
  o.top_p = spec_.sweep.top_p;
  o.seed = uint64_t(seed);
  o.batch_size = spec_.sweep.batch_size;
  o.max_tokens = gen.max_tokens;
  o.stop = gen.stop;
  o.trace_probs = true;
  std::vector<std::string> prompts;
  std::vector<uint64_t> seeds;
  for (size_t i : idx) {
    prompts.push_back(examples.at(i).prompt);
    seeds.push_back(uint64_t(i));
  }
  // One example's record from its result (k: its place in idx).
  auto to_record = [&](size_t k, const DecodeResult& r) {
    const auto& ex = examples.at(idx[k]);
    ExampleRecord rec;
    rec.example_id = ex.id;
    rec.index = int64_t(idx[k]);
    rec.prompt = ex.prompt;
    rec.output = r.output;
    rec.reference = ex.reference;
    rec.metrics = loaded_.task->score(ex, r.output);
    rec.n_tokens = int64_t(r.ids.size());
    rec.n_deferred = r.n_deferred;
    rec.latency_s = r.latency_s;
    for (size_t t = 0; t < r.trace.size(); ++t) {
      TokenRecord tok;
      tok.position = int64_t(t);
      tok.token_id = r.trace[t].id;
      tok.text = r.trace[t].text;
      tok.source = r.trace[t].source;
      tok.probs.assign(r.trace[t].probs.begin(), r.trace[t].probs.end());
      rec.tokens.push_back(std::move(tok));
    }
    return rec;
  };
  std::vector<ExampleRecord> pending;
  if (sink) {
    o.on_result = [&](int64_t k, const DecodeResult& r) {
      pending.push_back(to_record(size_t(k), r));
      if (int64_t(pending.size()) >= spec_.sweep.batch_size) sink(std::exchange(pending, {}));
    };
  }
  std::vector<DecodeResult> results;
  if (kind == "single") {
    results = decode_single(*loaded_.experts.at(name), prompts, seeds, o);
  } else if (kind == "combine") {
    const auto& c = spec_.combination(name);
    std::vector<Expert*> models;
    for (const char* role : c.strategy == "contrastive" ? std::vector<const char*>{"expert", "amateur"}
                                                        : std::vector<const char*>{"large", "tuned", "untuned"})
      models.push_back(loaded_.experts.at(c.models.at(role)).get());
    results = combined_decode(models, CombineOptions{c.strategy, c.alpha, c.beta}, prompts, seeds, o);
  } else {
    std::vector<Expert*> assistants;
    for (const auto* a : spec_.assistants_of(name)) assistants.push_back(loaded_.experts.at(a->name).get());
    results = collaborative_decode(base_for(name), assistants, *loaded_.policies.at(name), prompts, seeds, o);
  }
  if (own) own->finish();
  std::vector<ExampleRecord> records;
  if (sink) {
    if (!pending.empty()) sink(std::exchange(pending, {}));
    return records;
  }
  for (size_t k = 0; k < idx.size(); ++k) records.push_back(to_record(k, results.at(k)));
  return records;
}

std::vector<ExampleRecord> RunContext::analyze(const std::string& policy_name, double eta, int64_t seed,
                                               const std::vector<Example>& examples, const std::vector<size_t>& idx,
                                               Progress* progress, int64_t done_before) {
  auto& base = base_for(policy_name);
  auto& policy = *loaded_.policies.at(policy_name);
  std::vector<Expert*> assistants;
  for (const auto* a : spec_.assistants_of(policy_name)) assistants.push_back(loaded_.experts.at(a->name).get());
  const auto& tok = base.tokenizer();
  std::unique_ptr<Progress> own;
  if (!progress) {
    own = std::make_unique<Progress>(
        Progress::counting(decode_label("teacher_forced", policy_name, eta, ""), "examples", int64_t(idx.size())));
    progress = own.get();
  }
  // Every example's ids first, then the traces of the whole group in batched forwards.
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<TeacherForcedExample> inputs;
  for (size_t i : idx) {
    const auto& ex = examples.at(i);
    const auto prompt_ids = tok.encode(ex.prompt, true);
    auto target_ids = tok.encode(ex.target, false);
    // Like generation, the analysis stops where the base's context ends.
    const int64_t max_pos = base.info().max_positions;
    if (max_pos > 0 && int64_t(prompt_ids.size() + target_ids.size()) - 1 > max_pos)
      target_ids.resize(size_t(std::max<int64_t>(0, max_pos - int64_t(prompt_ids.size()) + 1)));
    COLM_CHECK(!target_ids.empty(), "[runner] analysis: example '" << ex.id << "' has no target token within the "
                                                                   << "base's " << max_pos << " positions");
    inputs.push_back({prompt_ids, target_ids, decode_row_seed(uint64_t(seed), uint64_t(i), 0)});
  }
  const auto traces = teacher_forced_traces(base, assistants, policy, inputs, int64_t(idx.size()));
  // The group's time, shared equally by its examples.
  const double latency = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
                         double(std::max<size_t>(1, idx.size()));
  std::vector<ExampleRecord> records;
  for (size_t k = 0; k < idx.size(); ++k) {
    const size_t i = idx[k];
    const auto& ex = examples.at(i);
    const auto& tr = traces[k];
    const auto& target_ids = inputs[k].target_ids;
    const int64_t T = tr.gold.size(0), M = int64_t(assistants.size());
    // Who would emit each gold token: the same rule as the decoder's `defer` strategy.
    const auto defer = (1 - tr.probs.select(1, 0)) > eta;                                   // [T]
    const auto best = tr.probs.narrow(1, 1, M).argmax(1) + 1;                                // [T]
    const auto who = defer.to(torch::kLong) * best;                                          // [T]
    const auto chosen_top1 = tr.top1.gather(1, who.unsqueeze(1)).squeeze(1);                // [T]
    const auto correct = chosen_top1 == tr.gold;                                             // [T]
    const auto right = tr.top1 == tr.gold.unsqueeze(1);                                      // [T, M+1]
    const auto oracle = right.narrow(1, 1, M).any(1).logical_and(right.select(1, 0).logical_not());  // [T]
    const double n_def = defer.sum().item<double>(), n_oracle = oracle.sum().item<double>();
    const double both = defer.logical_and(oracle).sum().item<double>();

    ExampleRecord rec;
    rec.example_id = ex.id;
    rec.index = int64_t(i);
    rec.prompt = ex.prompt;
    rec.output = tok.decode(target_ids);
    rec.reference = ex.reference;
    rec.n_tokens = T;
    rec.n_deferred = int64_t(n_def);
    rec.metrics["token_accuracy"] = correct.to(torch::kDouble).mean().item<double>();
    rec.metrics["base_token_accuracy"] = right.select(1, 0).to(torch::kDouble).mean().item<double>();
    rec.metrics["oracle_token_accuracy"] = right.any(1).to(torch::kDouble).mean().item<double>();
    rec.metrics["tf_deferral_rate"] = n_def / double(T);
    rec.metrics["oracle_rate"] = n_oracle / double(T);
    if (n_def > 0) rec.metrics["deferred_where_oracle"] = both / n_def;  // precision against the oracle
    if (n_oracle > 0) rec.metrics["oracle_deferred"] = both / n_oracle;  // recall
    for (int64_t t = 0; t < T; ++t) {
      TokenRecord tokr;
      tokr.position = t;
      tokr.token_id = tr.gold[t].item<int64_t>();
      tokr.text = tok.decode({tokr.token_id});
      tokr.source = int(who[t].item<int64_t>());
      const auto row = tr.probs[t].contiguous();
      tokr.probs.assign(row.data_ptr<float>(), row.data_ptr<float>() + row.numel());
      rec.tokens.push_back(std::move(tokr));
    }
    rec.latency_s = latency;
    records.push_back(std::move(rec));
    progress->update(done_before + int64_t(records.size()), 0.0, T);
  }
  if (own) own->finish();
  return records;
}

// ---- calibrate ------------------------------------------------------------------------------------

namespace {

// The whole curve into the calibration table: one row per (eta, metric), (eta, deferral_rate) and,
// by rate, (eta, target_rate); chosen marks the eta(s) the sweep uses.
void store_calibration(ResultsStore& store, int64_t experiment_id, const std::string& policy,
                       const std::string& strategy, const std::string& split, const std::string& metric,
                       const CalibrationResult& res) {
  std::vector<CalibrationRecord> rows;
  for (const auto& p : res.curve) {
    const bool chosen = std::find(res.chosen.begin(), res.chosen.end(), p.eta) != res.chosen.end();
    std::vector<std::pair<std::string, double>> values = {{metric, p.metric}};
    if (metric != "deferral_rate") values.emplace_back("deferral_rate", p.deferral_rate);
    if (p.target_rate) values.emplace_back("target_rate", *p.target_rate);
    for (const auto& [name, value] : values) {
      CalibrationRecord r;
      r.experiment_id = experiment_id;
      r.policy = policy;
      r.strategy = strategy;
      r.threshold = p.eta;
      r.split = split;
      r.metric = name;
      r.value = value;
      r.chosen = chosen;
      rows.push_back(r);
    }
  }
  store.set_calibration(experiment_id, policy, strategy, split, rows);
}

}  // namespace

CalibrationPoint RunContext::calibration_point(ResultsStore& store, const std::string& policy,
                                               const std::string& strategy, const std::string& point_key, double eta,
                                               const std::vector<double>& rates, std::vector<double>* thresholds,
                                               RunSummary* summary) {
  const auto& cal = *spec_.calibrate;
  const auto metric = cal.metric.empty() ? loaded_.task->primary_metric() : cal.metric;
  CalibrationPoint point;
  point.eta = eta;
  if (const auto a = store.get_artifact(point_key)) {
    const auto meta = nlohmann::json::parse(a->meta_json);
    point.metric = meta.at("metric").get<double>();
    point.deferral_rate = meta.at("deferral_rate").get<double>();
    if (thresholds) *thresholds = meta.value("thresholds", std::vector<double>{});
    if (summary) ++summary->calibration_reused;
    return point;
  }
  const auto t0 = std::chrono::steady_clock::now();
  const auto& exs = examples(cal.split, cal.max_examples);
  std::vector<size_t> all(exs.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  const auto records = decode("policy", policy, eta, strategy, spec_.sweep.seeds.front(), cal.split, exs, all);
  double sum = 0, tokens = 0, deferred = 0;
  int64_t n = 0;
  std::vector<double> p_defer;  // the policy's own P(defer) = 1 - P(Z = 0) at every decoded token
  for (const auto& r : records) {
    tokens += double(r.n_tokens), deferred += double(r.n_deferred);
    const auto m = r.metrics.find(metric);
    if (m != r.metrics.end()) sum += m->second, ++n;
    for (const auto& t : r.tokens)
      if (!t.probs.empty()) p_defer.push_back(1.0 - double(t.probs[0]));
  }
  point.metric = n ? sum / double(n) : 0.0;
  point.deferral_rate = tokens > 0 ? deferred / tokens : 0.0;
  std::vector<double> next;
  for (double r : rates) next.push_back(threshold_for_rate(p_defer, r));
  if (thresholds) *thresholds = next;
  nlohmann::json meta;
  meta["policy"] = policy;
  meta["strategy"] = strategy;
  meta["eta"] = eta;
  meta["split"] = cal.split;
  meta["metric_name"] = metric;
  meta["metric"] = point.metric;
  meta["deferral_rate"] = point.deferral_rate;
  meta["examples"] = int64_t(records.size());
  meta["examples_with_metric"] = n;
  meta["rates"] = rates;
  meta["thresholds"] = next;
  ArtifactRecord artifact;
  artifact.hash = point_key;
  artifact.kind = "calibration_point";
  artifact.path = store.path();
  artifact.meta_json = meta.dump();
  store.put_artifact(artifact);
  if (summary) ++summary->calibration_points;
  spdlog::info("[runner] calibrate: policy '{}' ({}) eta={:.4g} on {} ({} examples): {}={:.4f} deferral_rate={:.4f} "
               "({:.1f} s)", policy, strategy, eta, cal.split, records.size(), metric, point.metric,
               point.deferral_rate, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return point;
}

CalibrationResult RunContext::calibrate(ResultsStore& store, int64_t experiment_id, const std::string& policy,
                                        const std::string& strategy, RunSummary* summary) {
  const auto& cal = *spec_.calibrate;
  CalibrationResult res;
  res.key = calibration_key(spec_, policy, strategy, loaded_);
  const auto metric = cal.metric.empty() ? loaded_.task->primary_metric() : cal.metric;
  // Each candidate is its own artifact: a calibration killed half-way keeps the points it finished.
  auto point_at = [&](const std::string& tag, double eta, const std::vector<double>& rates, std::vector<double>* th) {
    const auto key = Hasher().add("calibration-point-v1").add(res.key).add(tag).add(eta).hex();
    return calibration_point(store, policy, strategy, key, eta, rates, th, summary);
  };

  if (!cal.rates.empty() && strategy == "defer") {
    // Candidates by deferral rate: the probe never defers (eta 1) and gives the policy's own P(defer)
    // over the split; each rate's threshold is a quantile of it, then of the decoding at that
    // threshold (deferring changes what follows), until the measured rate is within the tolerance.
    std::vector<double> start;
    const auto probe = point_at("probe", 1.0, cal.rates, &start);
    COLM_CHECK(start.size() == cal.rates.size(), "[runner] calibration point of '" << policy << "' stored without "
                                                                                   "its thresholds");
    for (size_t i = 0; i < cal.rates.size(); ++i) {
      const double rate = cal.rates[i];
      CalibrationPoint best = probe;
      double eta = start[i];
      // Measured (eta, rate) pairs bracket the target: the rate falls as eta rises. A proposal that
      // leaves the bracket (deferring changed the trajectory too much) is replaced by its midpoint.
      double lo = -1, hi = probe.eta;  // largest eta measured above the target, smallest below it
      for (int64_t it = 0; rate > 0 && it <= cal.refine; ++it) {
        std::vector<double> next;
        const auto p = point_at(fmt::format("rate {:.17g} step {}", rate, it), eta, {rate}, &next);
        if (it == 0 || std::fabs(p.deferral_rate - rate) <= std::fabs(best.deferral_rate - rate)) best = p;
        if (std::fabs(p.deferral_rate - rate) <= cal.tolerance || next.empty()) break;
        if (p.deferral_rate > rate) lo = std::max(lo, eta);
        else hi = std::min(hi, eta);
        double proposal = next[0];
        if (!(proposal > lo && proposal < hi)) proposal = lo < 0 ? hi / 2 : 0.5 * (lo + hi);
        if (proposal == eta) break;
        eta = proposal;
      }
      best.target_rate = rate;
      spdlog::info("[runner] calibrate: policy '{}' target rate {:.4g}: eta={:.4g} measured rate {:.4f}, {}={:.4f}",
                   policy, rate, best.eta, best.deferral_rate, metric, best.metric);
      res.curve.push_back(best);
    }
  } else {
    // An explicit eta grid (or a strategy whose threshold does not decide who emits: one point).
    const std::vector<double> grid = cal.rates.empty() ? cal.eta : std::vector<double>{0.5};
    for (double eta : grid) res.curve.push_back(point_at("", eta, {}, nullptr));
  }

  if (cal.target_rates.empty()) {
    res.chosen.push_back(choose_eta(res.curve));
    // Whether the best point is the tried candidate with the lowest or the highest deferral rate.
    const CalibrationPoint* chosen = nullptr;
    for (const auto& p : res.curve)
      if (p.eta == res.chosen.back() && (!chosen || p.deferral_rate < chosen->deferral_rate)) chosen = &p;
    std::string edge;
    if (res.curve.size() > 1) {
      auto order = [&](const CalibrationPoint& p) { return p.target_rate ? *p.target_rate : -p.eta; };
      double lo = order(res.curve.front()), hi = lo;
      for (const auto& p : res.curve) lo = std::min(lo, order(p)), hi = std::max(hi, order(p));
      // Nothing lies below never deferring (rate 0, eta 1) or above always deferring (rate 1, eta 0).
      const double rate_of_chosen = chosen->target_rate ? *chosen->target_rate : chosen->deferral_rate;
      if (order(*chosen) == lo && !(chosen->target_rate ? rate_of_chosen <= 0 : chosen->eta >= 1)) edge = "lowest";
      else if (order(*chosen) == hi && !(chosen->target_rate ? rate_of_chosen >= 1 : chosen->eta <= 0)) edge = "highest";
    }
    res.edge.push_back(edge);
    if (!edge.empty())
      spdlog::warn("[runner] calibrate: policy '{}' ({}): the best candidate is the {} tried (eta {:.4g}, measured "
                   "rate {:.4f}); the optimum may lie beyond: widen [calibrate] {}", policy, strategy,
                   cal.rates.empty() ? (edge == "lowest" ? "largest eta" : "smallest eta")
                                     : (edge == "lowest" ? "lowest target rate" : "highest target rate"),
                   chosen->eta, chosen->deferral_rate, cal.rates.empty() ? "eta" : "rates");
  } else {
    for (double rate : cal.target_rates) res.chosen.push_back(eta_for_rate(res.curve, rate)), res.edge.push_back("");
  }

  store_calibration(store, experiment_id, policy, strategy, cal.split, metric, res);
  // The same result as a file artifact, for sweep shards that run as a stage of their own (perhaps on
  // other machines, with databases of their own). Every field round-trips exactly (JSON doubles).
  const auto dir = fs::path(spec_.artifacts_dir) / "calibrations" / res.key;
  if (!artifact_done(dir)) {
    nlohmann::json j;
    j["policy"] = policy;
    j["strategy"] = strategy;
    j["split"] = cal.split;
    j["metric"] = metric;
    j["chosen"] = res.chosen;
    j["edge"] = res.edge;
    for (const auto& p : res.curve) {
      nlohmann::json q = {{"eta", p.eta}, {"metric", p.metric}, {"deferral_rate", p.deferral_rate}};
      if (p.target_rate) q["target_rate"] = *p.target_rate;
      j["curve"].push_back(q);
    }
    write_file_atomic(dir / "calibration.json", j.dump());
    mark_artifact_done(dir);
  }
  std::string chosen_text;
  for (double e : res.chosen) chosen_text += (chosen_text.empty() ? "" : ", ") + fmt::format("{:.4g}", e);
  spdlog::info("[runner] calibrate: policy '{}' ({}) eta = {} (on {}, {} points)", policy, strategy, chosen_text,
               cal.split, res.curve.size());
  return res;
}

CalibrationResult RunContext::load_calibration(ResultsStore& store, int64_t experiment_id, const std::string& policy,
                                               const std::string& strategy, double wait_s) {
  CalibrationResult res;
  res.key = calibration_key(spec_, policy, strategy, loaded_);
  const auto dir = fs::path(spec_.artifacts_dir) / "calibrations" / res.key;
  wait_for_artifact(dir, "the calibration of policy '" + policy + "' (" + strategy + ")", wait_s,
                    "Run `colm run EXPERIMENT.toml --stage calibrate` (all its shards) first.");
  const auto path = dir / "calibration.json";
  nlohmann::json j;
  try {
    std::ifstream in(path);
    in >> j;
    res.chosen = j.at("chosen").get<std::vector<double>>();
    res.edge = j.at("edge").get<std::vector<std::string>>();
    for (const auto& q : j.at("curve")) {
      CalibrationPoint p;
      p.eta = q.at("eta").get<double>();
      p.metric = q.at("metric").get<double>();
      p.deferral_rate = q.at("deferral_rate").get<double>();
      if (q.contains("target_rate")) p.target_rate = q.at("target_rate").get<double>();
      res.curve.push_back(p);
    }
  } catch (const std::exception& e) {
    throw Error("[runner] calibration artifact " + path.string() + " is unreadable (" + e.what() +
                "); delete its directory and run the calibrate stage again");
  }
  COLM_CHECK(!res.chosen.empty() && res.chosen.size() == res.edge.size() && !res.curve.empty(),
             "[runner] calibration artifact " << path.string() << " is incomplete; delete its directory and run "
                                                                   "the calibrate stage again");
  store_calibration(store, experiment_id, policy, strategy, j.at("split").get<std::string>(),
                    j.at("metric").get<std::string>(), res);
  spdlog::info("[runner] calibrate: policy '{}' ({}) read from {}", policy, strategy, dir.string());
  return res;
}

std::vector<std::pair<std::string, std::string>> needed_calibrations(const ExperimentSpec& spec,
                                                                     const std::vector<RunSpec>& runs,
                                                                     const ResultsStore& store) {
  std::vector<std::pair<std::string, std::string>> out;
  if (!spec.calibrate) return out;
  auto need = [&](const RunSpec& r, const std::pair<std::string, std::string>& key) {
    if (std::find(out.begin(), out.end(), key) != out.end()) return;
    const auto stored = store.find_run(r.key);
    if (stored && stored->status == "done") return;
    out.push_back(key);
  };
  for (const auto& r : runs) {
    if (r.kind == "single" || r.kind == "combine" || !r.calibrated) continue;
    // A teacher-forced analysis uses the eta calibrated for the sweep's first strategy.
    need(r, {r.policy, r.kind == "teacher_forced" ? spec.sweep.strategies.front() : r.strategy});
  }
  // Runs whose rate is matched to another policy need that policy's calibration.
  for (const auto& r : runs) {
    if (r.kind != "policy" || spec.policy(r.policy).match_rate.empty()) continue;
    need(r, {spec.policy(r.policy).match_rate, r.strategy});
  }
  return out;
}

namespace {
// The runs this process decodes (all of them when the shards split examples).
std::vector<RunSpec> shard_runs(const std::vector<RunSpec>& runs, const RunnerOptions& options) {
  std::vector<RunSpec> mine;
  for (size_t i = 0; i < runs.size(); ++i)
    if (options.shard_by == "examples" || in_shard(i, options.shard)) mine.push_back(runs[i]);
  return mine;
}
}  // namespace

std::map<std::pair<std::string, std::string>, CalibrationResult> calibrate_stage(
    const ExperimentSpec& spec, RunContext& context, ResultsStore& store, int64_t experiment_id,
    const std::vector<RunSpec>& runs, const RunnerOptions& options, RunSummary* summary) {
  std::map<std::pair<std::string, std::string>, CalibrationResult> out;
  if (options.stage == "calibrate") {
    // This shard's share of every calibration the experiment needs (its points are stored artifacts:
    // the sweep stage of any shard then finds them).
    const auto pairs = needed_calibrations(spec, runs, store);
    for (size_t i = 0; i < pairs.size(); ++i)
      if (in_shard(i, options.shard))
        out[pairs[i]] = context.calibrate(store, experiment_id, pairs[i].first, pairs[i].second, summary);
    return out;
  }
  for (const auto& key : needed_calibrations(spec, shard_runs(runs, options), store))
    out[key] = options.stage == "sweep"
                   ? context.load_calibration(store, experiment_id, key.first, key.second,
                                              artifact_wait_seconds(options.wait_s))
                   : context.calibrate(store, experiment_id, key.first, key.second, summary);
  return out;
}

// ---- sweep ----------------------------------------------------------------------------------------

std::string git_revision(const std::string& path) {
  auto dir = fs::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  std::string quoted = "'";
  for (char c : dir) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  quoted += "'";
  FILE* pipe = ::popen(("git -C " + quoted + " rev-parse HEAD 2>/dev/null").c_str(), "r");
  if (!pipe) return "unknown";
  char buf[128] = {0};
  std::string out;
  while (std::fgets(buf, sizeof buf, pipe)) out += buf;
  const int rc = ::pclose(pipe);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  const bool hex = out.size() >= 40 && std::all_of(out.begin(), out.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; });
  return rc == 0 && hex ? out : "unknown";
}

namespace {

nlohmann::json plugin_fingerprints(const ExperimentSpec& spec, const LoadedExperiment& loaded) {
  nlohmann::json j;
  for (const auto& e : spec.experts) {
    j["experts." + e.name] = loaded.expert_keys.at(e.name);
    if (loaded.experts.count(e.name)) j["experts." + e.name + ".weights"] = loaded.experts.at(e.name)->fingerprint();
  }
  for (const auto& p : spec.policies) j[(p.trained ? "train." : "policies.") + p.name] = loaded.policy_keys.at(p.name);
  j["task"] = loaded.task_key;
  j["plugin_versions"] = loaded.plugin_versions;
  const auto core = core_build_info();
  j["core"] = {{"version", core.version}, {"api_version", core.api_version}, {"compiler", core.compiler},
               {"cxx11_abi", core.cxx11_abi}, {"torch", core.torch_version}};
  return j;
}

struct SweepEnv {
  const ExperimentSpec& spec;
  RunContext& context;
  ResultsStore& store;
  int64_t experiment_id;
  std::string git;
  std::string fingerprints;
  const std::map<std::pair<std::string, std::string>, CalibrationResult>& calibrations;
  const ShardSpec* examples_shard = nullptr;  // sharded by examples: this process's share of each run
};

// Metrics from every stored example of the run (however many processes decoded them), then "done".
void complete_run(ResultsStore& store, int64_t id, const RunSpec& run, const ExperimentSpec& spec) {
  const auto all = store.examples(id, false);
  const auto metrics =
      summarize_examples(all, spec.report.bootstrap_samples, spec.report.confidence, hash64("bootstrap" + run.key));
  store.set_metrics(id, metrics);
  store.set_run_status(id, "done");
  std::string line;
  for (const auto& m : metrics) line += fmt::format(" {}={:.4f}", m.name, m.value);
  spdlog::info("[runner] sweep: done {}:{}", describe_run(run), line);
}

// How many examples of `exs` run `id` has not stored.
size_t missing_examples(const ResultsStore& store, int64_t id, const std::vector<Example>& exs) {
  const auto stored = store.finished_example_ids(id);
  size_t missing = 0;
  for (const auto& e : exs) missing += stored.count(e.id) ? 0 : 1;
  return missing;
}

// One run of the sweep: skipped when done, else decoded from the first example not yet stored,
// written chunk by chunk (one transaction each), then summarised.
void execute_run(const RunSpec& run, SweepEnv& env, RunSummary& summary) {
  const auto& spec = env.spec;
  auto& store = env.store;
  if (const auto stored = store.find_run(run.key); stored && stored->status == "done") {
    ++summary.runs_skipped;
    spdlog::info("[runner] sweep: {} already done", describe_run(run));
    return;
  }
  auto params = run.params;
  double eta = run.eta.value_or(0.0);
  const bool thresholded = run.kind == "policy" || run.kind == "teacher_forced";
  if (thresholded && !run.eta) {
    const auto& cal = env.calibrations.at(
        {run.policy, run.kind == "teacher_forced" ? spec.sweep.strategies.front() : run.strategy});
    if (run.curve) {
      // A curve run: the threshold calibrated for its target rate.
      bool found = false;
      for (const auto& p : cal.curve)
        if (p.target_rate && *p.target_rate == *run.target_rate) eta = p.eta, found = true;
      COLM_CHECK(found, "[runner] no calibration point of policy '" << run.policy << "' at rate " << *run.target_rate);
    } else {
      size_t which = 0;
      if (run.target_rate) {
        const auto& rates = spec.calibrate->target_rates;
        which = size_t(std::find(rates.begin(), rates.end(), *run.target_rate) - rates.begin());
      }
      eta = cal.chosen.at(which);
      if (!cal.edge.at(which).empty()) params["calibration_edge"] = cal.edge.at(which);
      // By rate: the target rate of the candidate chosen (the lowest, when candidates share the eta).
      if (!run.target_rate) {
        std::optional<double> chosen_rate;
        for (const auto& p : cal.curve)
          if (p.eta == eta && p.target_rate && (!chosen_rate || *p.target_rate < *chosen_rate)) chosen_rate = p.target_rate;
        if (chosen_rate) params["target_rate"] = *chosen_rate;
      }
    }
    params["calibrated_eta"] = eta;
  }
  // Which weights decoded: the base (an expert or a policy's fine-tuned base), or the combined models.
  if (thresholded) {
    params["base_fingerprint"] = env.context.base_for(run.policy).fingerprint();
  } else if (run.kind == "single") {
    params["base_fingerprint"] = env.context.base_for_expert(run.policy).fingerprint();
  } else if (run.kind == "combine") {
    for (const auto& [role, expert] : spec.combination(run.policy).models)
      params["model_fingerprints"][role] = env.context.base_for_expert(expert).fingerprint();
  }
  const std::string match = run.kind == "policy" ? spec.policy(run.policy).match_rate : std::string();
  if (!match.empty()) {
    // The matched policy's deferral rate at its calibrated eta, measured on the calibration split.
    const auto& cal = env.calibrations.at({match, run.strategy});
    double rate = -1;
    for (const auto& p : cal.curve)
      if (p.eta == cal.chosen.at(0)) rate = p.deferral_rate;
    COLM_CHECK(rate >= 0, "[runner] no calibrated deferral rate for policy '" << match << "'");
    params["matched_rate"] = rate;
    env.context.override_policy(run.policy, {"p=" + fmt::format("{:.17g}", rate)});
    spdlog::info("[runner] sweep: policy '{}' defers at '{}''s calibrated rate {:.4f}", run.policy, match, rate);
  }
  params["git_revision"] = env.git;
  RunRecord rec;
  rec.experiment_id = env.experiment_id;
  rec.content_key = run.key;
  rec.policy = run.policy;
  if (thresholded) rec.threshold = eta;
  rec.strategy = run.strategy;
  rec.split = run.split;
  rec.seed = run.seed;
  rec.params_json = params.dump();
  rec.plugin_fingerprints_json = env.fingerprints;
  rec.git_revision = env.git;
  const auto id = store.ensure_run(rec);
  try {
    store.set_run_status(id, "running");
    const auto& exs = env.context.examples(
        run.split, run.kind == "teacher_forced" ? spec.analysis->max_examples : spec.sweep.max_examples);
    const auto finished = store.finished_example_ids(id);
    // This process's examples: all, or its range when the shards split each run's examples.
    const auto range = env.examples_shard ? examples_range(exs.size(), *env.examples_shard)
                                          : std::pair<size_t, size_t>{0, exs.size()};
    std::vector<size_t> todo;
    for (size_t i = range.first; i < range.second; ++i)
      if (!finished.count(exs[i].id)) todo.push_back(i);
    const size_t mine = range.second - range.first;
    spdlog::info("[runner] sweep: {}: {} examples{}{}", describe_run(run), exs.size(),
                 env.examples_shard ? fmt::format(" (this shard: {} to {})", range.first, range.second) : std::string(),
                 mine == todo.size() ? std::string() : fmt::format(" ({} already stored, resuming)", mine - todo.size()));
    // One display for the whole run; examples are stored as they finish, a group at a time (one
    // transaction each), so a killed run resumes from what was stored.
    Progress progress = Progress::counting(decode_label(run.kind, run.policy, eta, run.split), "examples",
                                           int64_t(mine), int64_t(mine - todo.size()));
    auto store_records = [&](std::vector<ExampleRecord> records) {
      store.add_examples(id, records);
      summary.examples_decoded += int64_t(records.size());
    };
    const auto before = int64_t(mine - todo.size());
    if (run.kind == "teacher_forced") {
      const auto chunk = size_t(spec.sweep.batch_size);
      for (size_t start = 0; start < todo.size(); start += chunk) {
        const std::vector<size_t> idx(todo.begin() + long(start), todo.begin() + long(std::min(todo.size(), start + chunk)));
        store_records(env.context.analyze(run.policy, eta, run.seed, exs, idx, &progress, before + int64_t(start)));
      }
    } else if (!todo.empty()) {
      // One call for the whole run: its rows take the next example as soon as one finishes.
      env.context.decode(run.kind, run.policy, eta, run.strategy, run.seed, run.split, exs, todo, &progress, before,
                         store_records);
    }
    progress.finish();
    if (env.examples_shard) {
      // The run is finished by whichever process finds every example stored (all shards writing one
      // database), or after the shard databases are merged (`--stage finish`).
      if (const auto missing = missing_examples(store, id, exs)) {
        ++summary.runs_partial;
        spdlog::info("[runner] sweep: {}: examples {} to {} stored; {} of {} still missing (other shards)",
                     describe_run(run), range.first, range.second, missing, exs.size());
        return;
      }
    }
    complete_run(store, id, run, spec);
    ++summary.runs_done;
  } catch (const std::exception& e) {
    ++summary.runs_failed;
    spdlog::error("[runner] sweep: {} failed: {}", describe_run(run), e.what());
    try {
      store.set_run_status(id, "failed", e.what());
    } catch (const std::exception& e2) {
      spdlog::error("[runner] could not record the failure: {}", e2.what());
    }
  }
}

}  // namespace

namespace {

// Stage "finish": every run of the experiment whose examples are all stored (shard databases merged,
// each shard having decoded a range of every run's examples) gets its metrics and is marked done.
RunSummary finish_runs(const ExperimentSpec& spec, RunContext& context, ResultsStore& store,
                       const std::vector<RunSpec>& runs) {
  RunSummary summary;
  for (const auto& run : runs) {
    const auto stored = store.find_run(run.key);
    if (stored && stored->status == "done") {
      ++summary.runs_skipped;
      continue;
    }
    if (!stored) {
      ++summary.runs_partial;
      spdlog::error("[runner] finish: {} is not in {}: no shard started it", describe_run(run), spec.database);
      continue;
    }
    const auto& exs = context.examples(
        run.split, run.kind == "teacher_forced" ? spec.analysis->max_examples : spec.sweep.max_examples);
    if (const auto missing = missing_examples(store, stored->id, exs)) {
      ++summary.runs_partial;
      spdlog::error("[runner] finish: {}: {} of its {} examples are missing (a shard database not merged, or a "
                    "shard that did not finish)", describe_run(run), missing, exs.size());
      continue;
    }
    complete_run(store, stored->id, run, spec);
    ++summary.runs_done;
  }
  spdlog::info("[runner] {}: finish: {} runs completed from their stored examples, {} done before, {} incomplete",
               spec.name, summary.runs_done, summary.runs_skipped, summary.runs_partial);
  return summary;
}

}  // namespace

RunSummary run_experiment(const ExperimentSpec& spec, LoadedExperiment& loaded, const std::vector<RunSpec>& runs,
                          const Registry& registry, const RunnerOptions& options) {
  RunSummary summary;
  parse_stage(options.stage);
  parse_shard_by(options.shard_by);
  const double wait_s = artifact_wait_seconds(options.wait_s);
  // A stage alone after "train" uses the trained artifacts and never builds them: it waits for them.
  const bool alone = options.stage == "calibrate" || options.stage == "sweep" || options.stage == "finish";
  ArtifactAccess access{!alone, wait_s, nullptr};
  if (options.stage == "prepare" || options.stage == "train") access.parallel = options.parallel;
  if (options.stage != "finish") {
    // A "prepare" or "train" stage alone splits the experts and policies to train across the shards.
    const bool split_training = options.stage == "prepare" || options.stage == "train";
    prepare_experts(spec, loaded, registry, split_training ? options.shard : ShardSpec{}, access);
    if (options.stage == "prepare") return summary;
    if (options.stage == "train") {
      // Train one share after the other: experts first (a policy never needs a reference expert).
      size_t n_experts = 0;
      for (const auto& e : spec.experts) n_experts += e.train && e.role == "reference";
      train_policies(spec, loaded, registry, options.shard, n_experts, access);
      return summary;
    }
  }

  auto store = ResultsStore::open(spec.database);
  const auto git = git_revision(spec.file);
  const auto experiment_id = store.ensure_experiment(spec.name, spec.root.to_toml(), git, core_build_info().version);
  if (options.stage == "finish") {
    RunContext context(spec, loaded, registry, {});
    return finish_runs(spec, context, store, runs);
  }
  // This process's calibrations (stage "calibrate") or unfinished runs: a stage alone loads the
  // trained policies those need and no other.
  std::vector<std::pair<std::string, std::string>> my_calibrations;
  std::vector<RunSpec> my_runs;
  if (options.stage == "calibrate") {
    const auto pairs = needed_calibrations(spec, runs, store);
    for (size_t i = 0; i < pairs.size(); ++i)
      if (in_shard(i, options.shard)) my_calibrations.push_back(pairs[i]);
  } else {
    for (const auto& r : shard_runs(runs, options))
      if (const auto stored = store.find_run(r.key); !stored || stored->status != "done") my_runs.push_back(r);
  }
  const auto wanted = needed_policies(spec, my_runs, my_calibrations);
  auto base_dirs = train_policies(spec, loaded, registry, {}, 0, access, alone ? &wanted : nullptr);

  RunContext context(spec, loaded, registry, std::move(base_dirs));
  const auto calibrations = calibrate_stage(spec, context, store, experiment_id, runs, options, &summary);
  if (options.stage == "calibrate") {
    spdlog::info("[runner] {}: calibrate stage of shard {}/{}: {} calibrations, {} points decoded ({} reused)",
                 spec.name, options.shard.index, options.shard.count, calibrations.size(),
                 summary.calibration_points, summary.calibration_reused);
    return summary;
  }

  SweepEnv env{spec, context, store, experiment_id, git, plugin_fingerprints(spec, loaded).dump(), calibrations};
  if (options.shard_by == "examples") env.examples_shard = &options.shard;
  for (size_t i = 0; i < runs.size(); ++i)
    if (options.shard_by == "examples" || in_shard(i, options.shard)) execute_run(runs[i], env, summary);
  spdlog::info("[runner] {}: {} runs done, {} skipped (finished before), {} failed, {} with this shard's examples "
               "stored (others missing); {} examples decoded, {} calibration points decoded ({} reused)", spec.name,
               summary.runs_done, summary.runs_skipped, summary.runs_failed, summary.runs_partial,
               summary.examples_decoded, summary.calibration_points, summary.calibration_reused);
  return summary;
}

}  // namespace colm
