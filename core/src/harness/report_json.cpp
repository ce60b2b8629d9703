// The report as JSON (`colm report --format json`): every run with its metrics and intervals, for
// scripts. The schema is documented in report.hpp and experiments/README.md.
#include "harness/report_internal.hpp"

#include <cmath>
#include <nlohmann/json.hpp>

namespace colm {

using namespace report_detail;

using nlohmann::json;

std::string report_json(const ReportData& data) {
  auto number = [](std::optional<double> v) { return v && std::isfinite(*v) ? json(*v) : json(nullptr); };
  json runs = json::array();
  for (const auto& x : data.experiments) {
    for (const auto& r : x.runs) {
      json j = json::object();
      j["experiment"] = x.record.name;
      j["policy"] = r.run.policy;
      j["threshold"] = number(r.run.threshold);
      j["strategy"] = r.run.strategy;
      j["split"] = r.run.split;
      j["seed"] = r.run.seed;
      json metrics = json::object();
      for (const auto& [name, m] : r.metrics)
        metrics[name] = json{{"value", number(m.value)}, {"ci", json::array({number(m.ci_low), number(m.ci_high)})}};
      j["metrics"] = std::move(metrics);
      runs.push_back(std::move(j));
    }
  }
  return json{{"runs", std::move(runs)}}.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

}  // namespace colm
