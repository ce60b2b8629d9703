// The report as JSON (`colm report --format json`): every run with its metrics and intervals, for
// scripts. The schema is documented in report.hpp and experiments/README.md.
#include "harness/report_internal.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

namespace colm {

using namespace report_detail;

using nlohmann::json;

std::string report_json(const ReportData& data) {
  auto number = [](std::optional<double> v) { return v && std::isfinite(*v) ? json(*v) : json(nullptr); };
  auto text = [](const std::string& v) { return v.empty() ? json(nullptr) : json(v); };
  auto interval = [&](double lo, double hi) { return json::array({number(lo), number(hi)}); };
  json runs = json::array();
  for (const auto& x : data.experiments) {
    std::map<int64_t, std::vector<const ReportComparison*>> comparisons;  // learned run -> its comparisons
    for (const auto& c : x.learned_comparisons) comparisons[c.run_id].push_back(&c);
    // Decoded and teacher-forced runs, in the store's order.
    std::vector<const ReportRun*> all;
    for (const auto& r : x.runs) all.push_back(&r);
    for (const auto& r : x.analysis) all.push_back(&r);
    std::map<int64_t, const ReportDeferral*> deferral_of;
    for (const auto& d : x.deferrals) deferral_of[d.run_id] = &d;
    std::sort(all.begin(), all.end(), [](const ReportRun* a, const ReportRun* b) { return a->run.id < b->run.id; });
    for (const auto* r : all) {
      json j = json::object();
      j["id"] = r->run.id;
      j["experiment"] = x.record.name;
      j["kind"] = text(r->kind);
      j["policy"] = r->run.policy;
      j["plugin"] = text(r->plugin);
      j["rule"] = text(r->rule);
      j["objective"] = text(r->objective);
      j["base"] = text(r->base);
      j["assistants"] = r->assistants;
      if (const auto it = deferral_of.find(r->run.id); it != deferral_of.end()) {
        // Per model (the base first): tokens emitted, share of all tokens, result digits by operation.
        const auto& d = *it->second;
        json models = json::array();
        for (size_t s = 0; s < d.by_source.size(); ++s) {
          json ops = json::object();
          if (s < d.results_by_source.size())
            for (const auto& [op, c] : d.results_by_source[s]) ops[std::string(1, op)] = c;
          models.push_back({{"model", s < d.source_names.size() ? json(d.source_names[s]) : json(nullptr)},
                            {"source", s},
                            {"tokens", d.by_source[s]},
                            {"share", d.tokens ? json(double(d.by_source[s]) / double(d.tokens)) : json(nullptr)},
                            {"result_digits_by_operation", std::move(ops)}});
        }
        j["by_model"] = std::move(models);
      }
      j["strategy"] = r->run.strategy;
      j["threshold"] = number(r->run.threshold);
      j["target_rate"] = number(r->target_rate);
      j["calibrated"] = r->calibrated;
      j["calibration_edge"] = text(r->calibration_edge);
      j["curve"] = r->curve;
      j["split"] = r->run.split;
      j["seed"] = r->run.seed;
      j["status"] = r->run.status;
      json metrics = json::object();
      for (const auto& [name, m] : r->metrics)
        metrics[name] = json{{"value", number(m.value)},
                             {"ci", interval(m.ci_low.value_or(kNaN), m.ci_high.value_or(kNaN))}};
      j["metrics"] = std::move(metrics);
      json cs = json::array();
      for (const auto* c : comparisons[r->run.id]) {
        const auto* other = x.find_run(c->reference_run_id);
        cs.push_back({{"run", c->reference_run_id},
                      {"policy", other->run.policy},
                      {"base", text(other->base)},
                      {"strategy", other->run.strategy},
                      {"threshold", number(other->run.threshold)},
                      {"metric", c->metric},
                      {"n", c->n},
                      {"difference", number(c->difference.difference)},
                      {"ci", interval(c->difference.ci_low, c->difference.ci_high)},
                      {"p", number(c->difference.p_value)},
                      {"mcnemar_p", c->mcnemar ? number(c->mcnemar->p_value) : json(nullptr)}});
      }
      j["comparisons"] = std::move(cs);
      runs.push_back(std::move(j));
    }
  }
  return json{{"runs", std::move(runs)}}.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

}  // namespace colm
