// Reading a results database into ReportData: runs and their metrics, the stored configuration,
// paired comparisons, deferral statistics from token traces and example showcases. Renders nothing.
#include "harness/report_internal.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

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
  std::map<std::string, std::string> rules;  // [policies.NAME] rule
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
      if (policies.is_table(name)) c.rules[name] = policies.sub(name).get_string("rule", "", "rule");
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
    if (p.value("kind", "") == "teacher_forced") {
      r.calibrated = p.contains("calibrated_eta");
      x.analysis.push_back(std::move(r));
      continue;
    }
    r.single = p.value("kind", "") == "single" || run.strategy == "single";
    r.calibrated = p.contains("calibrated_eta");
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
  if (!o.analysis) return x;

  // Examples without tokens for every run (counts, paired comparisons).
  std::map<int64_t, std::vector<ExampleRecord>> examples;
  for (auto& r : x.runs) {
    auto& ex = examples[r.run.id] = store.examples(r.run.id, false);
    r.n_examples = int64_t(ex.size());
    for (const auto& e : ex) r.n_tokens += e.n_tokens, r.n_deferred += e.n_deferred;
  }

  // Paired comparisons with the best single model of each split.
  std::set<std::string> splits;
  for (const auto& r : x.runs) splits.insert(r.run.split);
  for (const auto& split : splits) {
    const ReportRun* best = nullptr;
    for (const auto& r : x.runs) {
      if (!r.baseline || r.run.split != split || r.run.status != "done") continue;
      const double v = metric_value(r, x.metric);
      if (std::isfinite(v) && (!best || v > metric_value(*best, x.metric))) best = &r;
    }
    if (!best) continue;
    const auto ref = per_example(examples[best->run.id], x.metric);
    for (const auto& r : x.runs) {
      if (r.baseline || r.run.split != split || r.run.status != "done") continue;
      const auto mine = per_example(examples[r.run.id], x.metric);
      std::vector<double> a, b;
      for (const auto& [id, v] : mine) {
        const auto it = ref.find(id);
        if (it != ref.end()) a.push_back(v), b.push_back(it->second);
      }
      if (a.empty()) continue;
      ReportComparison c;
      c.run_id = r.run.id;
      c.reference_run_id = best->run.id;
      c.metric = x.metric;
      c.n = int64_t(a.size());
      for (size_t i = 0; i < a.size(); ++i) c.policy_mean += a[i], c.reference_mean += b[i];
      c.policy_mean /= double(a.size());
      c.reference_mean /= double(a.size());
      // Seeded by both runs' identities: the same database gives the same intervals.
      c.difference = paired_bootstrap(
          a, b,
          BootstrapOptions{x.bootstrap_samples, x.confidence,
                           seed_from("paired|" + r.run.content_key + "|" + best->run.content_key + "|" + x.metric)});
      if (is_binary(a) && is_binary(b)) c.mcnemar = mcnemar_exact(a, b);
      x.comparisons.push_back(std::move(c));
    }
  }
  examples.clear();

  // Representative run per policy for the example outputs: the calibrated run, else the best.
  std::map<std::string, int64_t> showcase_run;
  for (const auto& r : x.runs) {
    if (r.single || r.run.status != "done") continue;
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
    if (r.single) continue;
    const auto ex = store.examples(r.run.id, true);
    ReportDeferral d;
    d.run_id = r.run.id;
    d.by_source.assign(x.source_names.size(), 0);
    std::map<std::string, int64_t> counts;
    for (const auto& e : ex) {
      std::string before = e.prompt;  // the text so far: a result may follow a prompt ending in '='
      for (const auto& t : e.tokens) {
        ++d.tokens;
        const bool digit = is_digit_token(t.text);
        const bool result = digit && is_result_digit(before, t.text);
        before += t.text;
        d.digits += digit;
        d.result_digits += result;
        if (t.source >= 0) {
          if (size_t(t.source) >= d.by_source.size()) d.by_source.resize(size_t(t.source) + 1, 0);
          ++d.by_source[size_t(t.source)];
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
