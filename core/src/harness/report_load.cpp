// Reading a results database into ReportData: runs and their metrics, the stored configuration,
// paired comparisons, deferral statistics from token traces and example showcases. Renders nothing.
#include "harness/report_internal.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "colm/config.hpp"
#include "colm/hash.hpp"

namespace colm {

using namespace report_detail;

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

uint64_t seed_from(const std::string& text) { return std::stoull(sha1_hex(text).substr(0, 16), nullptr, 16); }

// ---- loading -------------------------------------------------------------------------------------------

// What the report takes from the experiment's stored configuration. A config it cannot read
// leaves the defaults (the runs are still reported).
struct StoredConfig {
  int64_t bootstrap_samples = 1000;
  double confidence = 0.95;
  int64_t examples = 20;
  std::string calibrate_metric;
  std::string base;
  std::vector<std::string> assistants;
  std::map<std::string, std::string> rules;       // [policies.NAME] rule
  std::map<std::string, std::string> plugins;     // [policies.NAME] plugin
  std::map<std::string, std::string> objectives;  // [train.NAME] objective
};

StoredConfig read_config(const ExperimentRecord& e) {
  StoredConfig c;
  try {
    const auto root = ConfigView::from_string(e.config_toml, "stored config of experiment '" + e.name + "'");
    const auto report = root.sub("report");
    c.bootstrap_samples = report.get_int("bootstrap_samples", c.bootstrap_samples, "bootstrap resamples");
    c.confidence = report.get_double("confidence", c.confidence, "interval level");
    c.examples = report.get_int("examples", c.examples, "example outputs per policy");
    c.calibrate_metric = root.sub("calibrate").get_string("metric", "", "calibration metric");
    const auto experts = root.sub("experts");
    for (const auto& name : experts.keys()) {
      if (!experts.is_table(name)) continue;
      const auto role = experts.sub(name).get_string("role", "", "expert role");
      if (role == "base") c.base = name;
      else if (role == "assistant") c.assistants.push_back(name);
    }
    const auto policies = root.sub("policies");
    for (const auto& name : policies.keys())
      if (policies.is_table(name)) {
        c.rules[name] = policies.sub(name).get_string("rule", "", "rule");
        c.plugins[name] = policies.sub(name).get_string("plugin", "", "policy plugin");
      }
    const auto train = root.sub("train");
    for (const auto& name : train.keys())
      if (train.is_table(name)) c.objectives[name] = train.sub(name).get_string("objective", "", "objective");
  } catch (const std::exception& ex) {
    spdlog::warn("[report] experiment '{}': cannot read its stored configuration ({}); using the defaults",
                 e.name, ex.what());
  }
  return c;
}

json parse_params(const RunRecord& r) {
  auto j = json::parse(r.params_json, nullptr, false);
  return j.is_object() ? j : json::object();
}

// A string param, else the fallback (older databases, or a value of another type).
std::string param_string(const json& p, const char* key, const std::string& fallback = "") {
  const auto it = p.find(key);
  return it != p.end() && it->is_string() ? it->get<std::string>() : fallback;
}

std::string lookup(const std::map<std::string, std::string>& m, const std::string& key) {
  const auto it = m.find(key);
  return it == m.end() ? "" : it->second;
}

// What the runner recorded about a run; the stored config fills in what older databases lack.
void read_params(ReportRun& r, const json& p, const StoredConfig& cfg) {
  r.kind = param_string(p, "kind");
  r.calibrated = p.contains("calibrated") && p["calibrated"].is_boolean() ? p["calibrated"].get<bool>()
                                                                           : p.contains("calibrated_eta");
  const bool single = r.kind == "single" || r.run.strategy == "single";
  r.plugin = param_string(p, "plugin", single ? "" : lookup(cfg.plugins, r.run.policy));
  r.rule = param_string(p, "rule", single ? "" : lookup(cfg.rules, r.run.policy));
  r.objective = param_string(p, "objective", single ? "" : lookup(cfg.objectives, r.run.policy));
  r.base = param_string(p, "base", single ? r.run.policy : "");
  if (p.contains("assistants") && p["assistants"].is_array())
    for (const auto& a : p["assistants"])
      if (a.is_string()) r.assistants.push_back(a.get<std::string>());
  if (p.contains("target_rate") && p["target_rate"].is_number()) r.target_rate = p["target_rate"].get<double>();
  r.calibration_edge = param_string(p, "calibration_edge");
  r.curve = p.contains("curve") && p["curve"].is_boolean() && p["curve"].get<bool>();
  r.learned = r.objective == "marginal_likelihood";
}

// Paired comparison of run a with reference run b on the examples both scored; nullopt when none.
std::optional<ReportComparison> compare(const ReportExperiment& x, const ReportRun& a, const ReportRun& b,
                                        const std::map<std::string, double>& mine,
                                        const std::map<std::string, double>& ref) {
  std::vector<double> va, vb;
  for (const auto& [id, v] : mine) {
    const auto it = ref.find(id);
    if (it != ref.end()) va.push_back(v), vb.push_back(it->second);
  }
  if (va.empty()) return std::nullopt;
  ReportComparison c;
  c.run_id = a.run.id;
  c.reference_run_id = b.run.id;
  c.metric = x.metric;
  c.n = int64_t(va.size());
  for (size_t i = 0; i < va.size(); ++i) c.policy_mean += va[i], c.reference_mean += vb[i];
  c.policy_mean /= double(va.size());
  c.reference_mean /= double(va.size());
  // Seeded by both runs' identities: the same database gives the same intervals.
  c.difference = paired_bootstrap(
      va, vb,
      BootstrapOptions{x.bootstrap_samples, x.confidence,
                       seed_from("paired|" + a.run.content_key + "|" + b.run.content_key + "|" + x.metric)});
  if (is_binary(va) && is_binary(vb)) c.mcnemar = mcnemar_exact(va, vb);
  return c;
}

std::string choose_metric(const ReportOptions& o, const StoredConfig& c, const std::vector<ReportRun>& runs) {
  std::set<std::string> names;
  for (const auto& r : runs)
    for (const auto& [name, m] : r.metrics) names.insert(name);
  if (!o.metric.empty()) {
    if (!names.count(o.metric) && !runs.empty()) {
      std::string known;
      for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
      throw Error("report: metric '" + o.metric + "' is not stored for any run (stored: " +
                  (known.empty() ? "none" : known) + ")");
    }
    return o.metric;
  }
  if (!c.calibrate_metric.empty() && c.calibrate_metric != "deferral_rate" && names.count(c.calibrate_metric))
    return c.calibrate_metric;
  for (const char* preferred : {"accuracy", "exact_match"})
    if (names.count(preferred)) return preferred;
  for (const auto& n : names)
    if (n != "deferral_rate") return n;
  return "accuracy";
}

// Per-example values of a metric by example id (examples that have a finite value).
std::map<std::string, double> per_example(const std::vector<ExampleRecord>& examples, const std::string& metric) {
  std::map<std::string, double> out;
  for (const auto& e : examples) {
    const auto it = e.metrics.find(metric);
    if (it != e.metrics.end() && std::isfinite(it->second)) out[e.example_id] = it->second;
  }
  return out;
}

ReportExperiment load_experiment(const ResultsStore& store, const ExperimentRecord& record, const ReportOptions& o) {
  ReportExperiment x;
  x.record = record;
  const auto cfg = read_config(record);
  x.bootstrap_samples = o.bootstrap_samples >= 0 ? o.bootstrap_samples : cfg.bootstrap_samples;
  x.confidence = o.confidence > 0 ? o.confidence : cfg.confidence;
  x.examples_per_policy = o.examples >= 0 ? o.examples : cfg.examples;
  COLM_CHECK(x.confidence > 0 && x.confidence < 1, "report: confidence must be in (0, 1), got " << x.confidence);
  x.source_names.push_back(cfg.base.empty() ? "base" : cfg.base);
  for (const auto& a : cfg.assistants) x.source_names.push_back(a);

  std::map<std::string, std::string> expert_by_key;  // single runs' expert_key -> expert name
  std::vector<json> params;
  for (const auto& run : store.runs(record.name)) {
    ReportRun r;
    r.run = run;
    for (auto& m : store.metrics(run.id)) r.metrics[m.name] = m;
    auto p = parse_params(run);
    read_params(r, p, cfg);
    if (r.kind == "teacher_forced") {
      x.analysis.push_back(std::move(r));
      continue;
    }
    r.single = r.kind == "single" || run.strategy == "single";
    if (r.single) {
      r.baseline = true;
      const bool is_base = run.policy == x.source_names[0];
      const bool is_assistant =
          std::find(cfg.assistants.begin(), cfg.assistants.end(), run.policy) != cfg.assistants.end();
      r.baseline_label = is_base ? "base alone" : is_assistant ? "assistant alone" : "single model";
      if (p.contains("expert_key") && p["expert_key"].is_string())
        expert_by_key[p["expert_key"].get<std::string>()] = run.policy;
    } else if (const auto rule = cfg.rules.find(run.policy); rule != cfg.rules.end()) {
      if (rule->second == "base_only") r.baseline = true, r.baseline_label = "base alone, rule base_only";
      if (rule->second == "assistant_only")
        r.baseline = true, r.baseline_label = "assistant alone, rule assistant_only";
    } else if (run.policy == "base_only" || run.policy == "assistant_only") {
      r.baseline = true;
      r.baseline_label = run.policy == "base_only" ? "base alone" : "assistant alone";
    }
    params.push_back(std::move(p));
    x.runs.push_back(std::move(r));
  }
  // The runner records the assistants' keys in order (source j = assistant j); where a single-model
  // run names the expert of a key, that name is authoritative over the stored config's order.
  for (const auto& p : params) {
    if (!p.contains("assistant_keys") || !p["assistant_keys"].is_array()) continue;
    const auto& keys = p["assistant_keys"];
    if (x.source_names.size() < keys.size() + 1) x.source_names.resize(keys.size() + 1);
    for (size_t j = 0; j < keys.size(); ++j) {
      const auto it = keys[j].is_string() ? expert_by_key.find(keys[j].get<std::string>()) : expert_by_key.end();
      if (it != expert_by_key.end()) x.source_names[j + 1] = it->second;
      else if (x.source_names[j + 1].empty()) x.source_names[j + 1] = "assistant " + std::to_string(j + 1);
    }
    if (p.contains("base_key") && p["base_key"].is_string()) {
      const auto it = expert_by_key.find(p["base_key"].get<std::string>());
      if (it != expert_by_key.end()) x.source_names[0] = it->second;
    }
    break;
  }
  x.metric = choose_metric(o, cfg, x.runs);
  x.calibration = store.calibration(record.id);
  if (!o.comparisons && !o.analysis) return x;

  // Examples without tokens for every run (counts, paired comparisons).
  std::map<int64_t, std::map<std::string, double>> values;  // run -> example id -> metric
  for (auto& r : x.runs) {
    const auto ex = store.examples(r.run.id, false);
    r.n_examples = int64_t(ex.size());
    for (const auto& e : ex) r.n_tokens += e.n_tokens, r.n_deferred += e.n_deferred;
    values[r.run.id] = per_example(ex, x.metric);
  }
  auto comparable = [&](const ReportRun& r) { return r.run.status == "done" && !r.curve; };

  // Paired comparisons with the best single model of each split.
  std::set<std::string> splits;
  for (const auto& r : x.runs) splits.insert(r.run.split);
  for (const auto& split : splits) {
    const ReportRun* best = nullptr;
    for (const auto& r : x.runs) {
      if (!r.baseline || r.run.split != split || !comparable(r)) continue;
      const double v = metric_value(r, x.metric);
      if (std::isfinite(v) && (!best || v > metric_value(*best, x.metric))) best = &r;
    }
    if (!best) continue;
    for (const auto& r : x.runs) {
      if (r.baseline || r.run.split != split || !comparable(r)) continue;
      if (auto c = compare(x, r, *best, values[r.run.id], values[best->run.id])) x.comparisons.push_back(std::move(*c));
    }
  }

  // The learned policy against every other run of its split. Representatives: its calibrated runs;
  // where a (policy, split, strategy, base) has none, its best run there.
  std::map<std::tuple<std::string, std::string, std::string, std::string>, std::vector<const ReportRun*>> groups;
  for (const auto& r : x.runs)
    if (r.learned && comparable(r)) groups[{r.run.policy, r.run.split, r.run.strategy, r.base}].push_back(&r);
  std::vector<const ReportRun*> representatives;
  for (const auto& [key, runs] : groups) {
    std::vector<const ReportRun*> calibrated;
    const ReportRun* best = nullptr;
    for (const auto* r : runs) {
      if (r->calibrated) calibrated.push_back(r);
      if (!best || metric_value(*r, x.metric) > metric_value(*best, x.metric)) best = r;
    }
    if (calibrated.empty() && best) calibrated.push_back(best);
    representatives.insert(representatives.end(), calibrated.begin(), calibrated.end());
  }
  std::sort(representatives.begin(), representatives.end(),
            [](const ReportRun* a, const ReportRun* b) { return a->run.id < b->run.id; });
  for (const auto* l : representatives)
    for (const auto& r : x.runs) {
      if (&r == l || r.run.split != l->run.split || !comparable(r)) continue;
      if (auto c = compare(x, *l, r, values[l->run.id], values[r.run.id]))
        x.learned_comparisons.push_back(std::move(*c));
    }
  values.clear();
  if (!o.analysis) return x;

  // Representative run per policy for the example outputs: the calibrated run, else the best.
  std::map<std::string, int64_t> showcase_run;
  for (const auto& r : x.runs) {
    if (r.single || r.curve || r.run.status != "done") continue;
    auto it = showcase_run.find(r.run.policy);
    if (it == showcase_run.end()) {
      showcase_run[r.run.policy] = r.run.id;
      continue;
    }
    const auto* cur = x.find_run(it->second);
    const bool better = (r.calibrated && !cur->calibrated) ||
                        (r.calibrated == cur->calibrated && metric_value(r, x.metric) > metric_value(*cur, x.metric));
    if (better) it->second = r.run.id;
  }
  std::set<int64_t> showcase_ids;
  for (const auto& [policy, id] : showcase_run) showcase_ids.insert(id);

  // Token traces: where each policy run defers.
  for (const auto& r : x.runs) {
    if (r.single || r.curve) continue;
    const auto ex = store.examples(r.run.id, true);
    ReportDeferral d;
    d.run_id = r.run.id;
    d.source_names = x.source_names;
    if (!r.assistants.empty()) {  // the run's own assistants (a policy may use a subset)
      d.source_names.resize(1);
      d.source_names.insert(d.source_names.end(), r.assistants.begin(), r.assistants.end());
    }
    d.by_source.assign(d.source_names.size(), 0);
    d.results_by_source.assign(d.source_names.size(), {});
    std::map<std::string, int64_t> counts;
    for (const auto& e : ex) {
      std::string before = e.prompt;  // the text so far: a result may follow a prompt ending in '='
      for (const auto& t : e.tokens) {
        ++d.tokens;
        const bool digit = is_digit_token(t.text);
        const bool result = digit && is_result_digit(before, t.text);
        const char op = result ? result_operation(before, t.text) : '?';  // read before `before` grows
        before += t.text;
        d.digits += digit;
        d.result_digits += result;
        if (t.source >= 0) {
          const auto j = size_t(t.source);
          if (j >= d.by_source.size()) {
            d.by_source.resize(j + 1, 0);
            d.results_by_source.resize(j + 1);
            while (d.source_names.size() <= j) d.source_names.push_back("assistant " + std::to_string(d.source_names.size()));
          }
          ++d.by_source[j];
          if (result) ++d.results_by_source[j][op];
        }
        if (t.source != 0) {
          ++d.deferred;
          d.deferred_digits += digit;
          d.deferred_result_digits += result;
          ++counts[t.text];
        }
      }
    }
    for (const auto& [text, n] : counts) d.top.push_back({text, n});
    std::sort(d.top.begin(), d.top.end(), [](const TokenCount& a, const TokenCount& b) {
      return a.count != b.count ? a.count > b.count : a.text < b.text;
    });
    if (d.top.size() > size_t(std::max<int64_t>(o.top_tokens, 0))) d.top.resize(size_t(std::max<int64_t>(o.top_tokens, 0)));
    x.deferrals.push_back(std::move(d));
    if (showcase_ids.count(r.run.id) && x.examples_per_policy > 0) {
      ReportShowcase s;
      s.run_id = r.run.id;
      for (const auto& e : ex) {
        if (int64_t(s.examples.size()) >= x.examples_per_policy) break;
        ReportExample re;
        re.example = e;
        const auto it = e.metrics.find(x.metric);
        if (it != e.metrics.end()) re.metric = it->second;
        s.examples.push_back(std::move(re));
      }
      x.showcases.push_back(std::move(s));
    }
  }
  return x;
}

}  // namespace

const ReportRun* ReportExperiment::find_run(int64_t id) const {
  for (const auto& r : runs)
    if (r.run.id == id) return &r;
  return nullptr;
}

ResultsStore open_results_for_reading(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec))
    throw Error("results database " + path + " does not exist (run `colm run EXPERIMENT.toml` first, or check the path)");
  if (!fs::is_regular_file(path, ec)) throw Error("results database " + path + " is not a regular file");
  return ResultsStore::open(path);
}

ReportData load_report(const ResultsStore& store, const ReportOptions& options) {
  ReportData d;
  d.database = store.path();
  auto experiments = store.experiments();
  if (!options.experiment.empty()) {
    const auto e = store.find_experiment(options.experiment);
    if (!e) {
      std::string known;
      for (const auto& x : experiments) known += (known.empty() ? "" : ", ") + x.name;
      throw Error("results database " + store.path() + " has no experiment '" + options.experiment +
                  "' (it has: " + (known.empty() ? "none" : known) + ")");
    }
    experiments = {*e};
  }
  if (experiments.empty())
    throw Error("results database " + store.path() + " holds no experiments (nothing has been run into it)");
  for (const auto& e : experiments) {
    d.experiments.push_back(load_experiment(store, e, options));
    spdlog::debug("[report] experiment '{}': {} runs, {} comparisons", e.name, d.experiments.back().runs.size(),
                  d.experiments.back().comparisons.size());
  }
  return d;
}

}  // namespace colm
