// The report's sections as tables and notes, shared by the Markdown and HTML renderers: runs, metrics,
// calibration, comparisons, deferral statistics, the teacher-forced analysis and the summary line.
#include "harness/report_internal.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

namespace colm {

namespace report_detail {

// ---- report sections (shared by Markdown and HTML) ------------------------------------------------------

Table runs_table(const ReportExperiment& x) {
  Table t;
  t.header = {"policy", "base", "η", "strategy", "split", "seed", "status", x.metric + " [95% CI]",
              "deferral rate [95% CI]", "examples", "tokens", "deferred tokens"};
  if (x.confidence != 0.95) {
    const auto level = printf_text("%.0f%%", 100 * x.confidence);
    t.header[7] = x.metric + " [" + level + " CI]";
    t.header[8] = "deferral rate [" + level + " CI]";
  }
  t.css_class = "runs";
  for (const auto& r : x.runs)
    if (!r.curve)
      t.rows.push_back({policy_text(r), base_text(r), eta_text(r), r.run.strategy, r.run.split,
                        std::to_string(r.run.seed), r.run.status, metric_text(r, x.metric),
                        metric_text(r, "deferral_rate"), std::to_string(r.n_examples), std::to_string(r.n_tokens),
                        std::to_string(r.n_deferred)});
  return t;
}

Table all_metrics_table(const ReportExperiment& x) {
  std::set<std::string> names;
  for (const auto& r : x.runs)
    for (const auto& [n, m] : r.metrics)
      if (n != x.metric && n != "deferral_rate") names.insert(n);
  Table t;
  if (names.empty()) return t;
  t.header = {"policy", "η", "strategy", "split", "seed"};
  for (const auto& n : names) t.header.push_back(n);
  for (const auto& r : x.runs) {
    if (r.curve) continue;
    std::vector<std::string> row = {policy_text(r), eta_text(r), r.run.strategy, r.run.split,
                                    std::to_string(r.run.seed)};
    for (const auto& n : names) row.push_back(metric_text(r, n));
    t.rows.push_back(std::move(row));
  }
  return t;
}

// One table per (policy, strategy, split) of the calibration curve.
std::vector<std::pair<std::string, Table>> calibration_tables(const ReportExperiment& x) {
  std::map<std::tuple<std::string, std::string, std::string>, std::map<double, std::map<std::string, double>>> rows;
  std::map<std::tuple<std::string, std::string, std::string>, std::set<double>> chosen;
  std::set<std::string> metrics;
  for (const auto& c : x.calibration) {
    rows[{c.policy, c.strategy, c.split}][c.threshold][c.metric] = c.value;
    if (c.chosen) chosen[{c.policy, c.strategy, c.split}].insert(c.threshold);
    metrics.insert(c.metric);
  }
  std::vector<std::string> order;
  for (const auto& m : metrics)
    if (m != "deferral_rate") order.push_back(m);
  if (metrics.count("deferral_rate")) order.push_back("deferral_rate");
  std::vector<std::pair<std::string, Table>> out;
  for (const auto& [key, by_eta] : rows) {
    Table t;
    t.header = {"η"};
    for (const auto& m : order) t.header.push_back(m);
    t.header.push_back("chosen");
    for (const auto& [eta, values] : by_eta) {
      std::vector<std::string> row = {short_num(eta)};
      for (const auto& m : order) {
        const auto it = values.find(m);
        row.push_back(it == values.end() ? "—" : num(it->second));
      }
      row.push_back(chosen[key].count(eta) ? "✓" : "");
      t.rows.push_back(std::move(row));
    }
    out.emplace_back("policy " + std::get<0>(key) + ", strategy " + std::get<1>(key) + ", split " + std::get<2>(key),
                     std::move(t));
  }
  return out;
}

Table comparison_table(const ReportExperiment& x) {
  Table t;
  t.header = {"policy", "η", "strategy", "split", "seed", "reference (best single model)", "n",
              "policy " + x.metric, "reference " + x.metric, "difference [" + printf_text("%.0f%%", 100 * x.confidence) + " CI]",
              "paired bootstrap p", "McNemar b / c", "McNemar p"};
  t.css_class = "comparisons";
  for (const auto& c : x.comparisons) {
    const auto* r = x.find_run(c.run_id);
    const auto* ref = x.find_run(c.reference_run_id);
    t.rows.push_back({r->run.policy, eta_text(*r), r->run.strategy, r->run.split, std::to_string(r->run.seed),
                      ref->run.policy + " (" + ref->baseline_label + ")", std::to_string(c.n), num(c.policy_mean),
                      num(c.reference_mean),
                      with_ci(c.difference.difference, c.difference.ci_low, c.difference.ci_high),
                      p_value_text(c.difference.p_value),
                      c.mcnemar ? std::to_string(c.mcnemar->a_only) + " / " + std::to_string(c.mcnemar->b_only) : "—",
                      c.mcnemar ? p_value_text(c.mcnemar->p_value) : "— (not 0/1)"});
  }
  return t;
}

Table learned_comparison_table(const ReportExperiment& x) {
  Table t;
  t.header = {"learned policy", "its η", "its base", "other run", "η", "strategy", "base", "split", "n",
              "learned " + x.metric, "other " + x.metric,
              "difference [" + printf_text("%.0f%%", 100 * x.confidence) + " CI]", "paired bootstrap p",
              "McNemar b / c", "McNemar p"};
  t.css_class = "learned-comparisons";
  for (const auto& c : x.learned_comparisons) {
    const auto* l = x.find_run(c.run_id);
    const auto* r = x.find_run(c.reference_run_id);
    t.rows.push_back({l->run.policy, eta_text(*l), base_text(*l), policy_text(*r), eta_text(*r), r->run.strategy,
                      base_text(*r), r->run.split, std::to_string(c.n), num(c.policy_mean), num(c.reference_mean),
                      with_ci(c.difference.difference, c.difference.ci_low, c.difference.ci_high),
                      p_value_text(c.difference.p_value),
                      c.mcnemar ? std::to_string(c.mcnemar->a_only) + " / " + std::to_string(c.mcnemar->b_only) : "—",
                      c.mcnemar ? p_value_text(c.mcnemar->p_value) : "— (not 0/1)"});
  }
  return t;
}

std::string learned_text(const ReportExperiment& x) {
  std::set<std::string> learned;
  for (const auto& c : x.learned_comparisons) learned.insert(x.find_run(c.run_id)->run.policy);
  if (learned.empty()) return "";
  std::string names;
  for (const auto& n : learned) names += (names.empty() ? "" : ", ") + n;
  return "Learned policy (trained with objective marginal_likelihood): " + names +
         ". Its calibrated run (else its best run, per split, strategy and base) is paired with every other "
         "finished run of the same split on the examples both scored; difference = learned − other, with a "
         "paired bootstrap interval and p-value; McNemar b: only the learned run right, c: only the other. "
         "Curve runs are not compared here (see the curves).";
}

std::string edge_text(const ReportExperiment& x) {
  std::string out;
  for (const auto& r : x.runs) {
    if (r.calibration_edge.empty() || r.curve) continue;
    out += (out.empty() ? "" : "; ") + r.run.policy + " (" + r.run.strategy + ", base " + base_text(r) + ", " +
           r.run.split + "): η " + (r.run.threshold ? short_num(*r.run.threshold) : std::string("—")) +
           (r.target_rate ? ", target rate " + short_num(*r.target_rate) : std::string()) + ", the " +
           r.calibration_edge + " candidate";
  }
  if (out.empty()) return "";
  return "Calibrated at the edge of the candidates tried, so the best point may lie beyond them: " + out + ".";
}

Table curve_table(const ReportExperiment& x) {
  std::vector<const ReportRun*> runs;
  for (const auto& r : x.runs)
    if (r.curve) runs.push_back(&r);
  Table t;
  if (runs.empty()) return t;
  std::stable_sort(runs.begin(), runs.end(), [](const ReportRun* a, const ReportRun* b) {
    return std::make_tuple(a->run.split, a->run.policy, a->run.strategy, a->base, a->target_rate.value_or(-1)) <
           std::make_tuple(b->run.split, b->run.policy, b->run.strategy, b->base, b->target_rate.value_or(-1));
  });
  t.header = {"policy", "base", "strategy", "split", "seed", "status", "target rate", "η",
              "deferral rate [CI]", x.metric + " [CI]"};
  t.css_class = "curves";
  for (const auto* r : runs)
    t.rows.push_back({r->run.policy, base_text(*r), r->run.strategy, r->run.split, std::to_string(r->run.seed),
                      r->run.status, r->target_rate ? short_num(*r->target_rate) : "—",
                      r->run.threshold ? short_num(*r->run.threshold) : "—", metric_text(*r, "deferral_rate"),
                      metric_text(*r, x.metric)});
  return t;
}

std::string source_name(const ReportExperiment& x, size_t source) {
  if (source < x.source_names.size() && !x.source_names[source].empty()) return x.source_names[source];
  return source == 0 ? "base" : "assistant " + std::to_string(source);
}

// A run's own name for its source (its policy may use a subset of the assistants), else the experiment's.
std::string source_name(const ReportExperiment& x, const ReportDeferral& d, size_t source) {
  if (source < d.source_names.size() && !d.source_names[source].empty()) return d.source_names[source];
  return source_name(x, source);
}

Table deferral_table(const ReportExperiment& x) {
  Table t;
  t.header = {"policy", "η", "strategy", "split", "seed", "tokens", "deferred", "digits among deferred",
              "digits among all tokens", "result digits among deferred", "result digits deferred",
              "tokens by model", "most frequent deferred tokens"};
  t.css_class = "deferrals";
  for (const auto& d : x.deferrals) {
    const auto* r = x.find_run(d.run_id);
    std::string by_model, top;
    for (size_t s = 0; s < d.by_source.size(); ++s)
      by_model += (s ? ", " : "") + source_name(x, d, s) + " " + std::to_string(d.by_source[s]);
    for (const auto& tc : d.top) top += (top.empty() ? "" : " ") + visible_token(tc.text) + "×" + std::to_string(tc.count);
    t.rows.push_back({r->run.policy, eta_text(*r), r->run.strategy, r->run.split, std::to_string(r->run.seed),
                      std::to_string(d.tokens),
                      std::to_string(d.deferred) + " (" + percent(d.deferred, d.tokens) + ")",
                      percent(d.deferred_digits, d.deferred), percent(d.digits, d.tokens),
                      percent(d.deferred_result_digits, d.deferred),
                      std::to_string(d.deferred_result_digits) + " of " + std::to_string(d.result_digits) + " (" +
                          percent(d.deferred_result_digits, d.result_digits) + ")",
                      by_model,
                      top.empty() ? "—" : top});
  }
  return t;
}

bool has_several_assistants(const ReportExperiment& x) {
  for (const auto& d : x.deferrals)
    if (d.by_source.size() > 2) return true;
  return false;
}

std::string result_operations_text(const std::map<char, int64_t>& ops) {
  int64_t n = 0;
  for (const auto& [op, c] : ops) n += c;
  if (n == 0) return "—";
  std::string out;
  for (const char op : {'+', '-', '*', '/', '?'}) {
    const auto it = ops.find(op);
    if (it == ops.end() || it->second == 0) continue;
    out += (out.empty() ? "" : ", ") + std::string(1, op) + " " + std::to_string(it->second) + " (" +
           percent(it->second, n) + ")";
  }
  return out;
}

Table assistant_table(const ReportExperiment& x) {
  Table t;
  t.header = {"policy", "η", "split", "seed", "model", "tokens emitted", "share of all tokens",
              "result digits among them", "its result digits by operation"};
  t.css_class = "assistants";
  for (const auto& d : x.deferrals) {
    const auto* r = x.find_run(d.run_id);
    for (size_t s = 0; s < d.by_source.size(); ++s) {
      int64_t results = 0;
      if (s < d.results_by_source.size())
        for (const auto& [op, c] : d.results_by_source[s]) results += c;
      t.rows.push_back({r->run.policy, eta_text(*r), r->run.split, std::to_string(r->run.seed),
                        source_name(x, d, s) + (s == 0 ? " (base)" : ""), std::to_string(d.by_source[s]),
                        percent(d.by_source[s], d.tokens), percent(results, d.by_source[s]),
                        s < d.results_by_source.size() ? result_operations_text(d.results_by_source[s]) : "—"});
    }
  }
  return t;
}

extern const char* const kAssistantNote;
const char* const kAssistantNote =
    "Each model's share of the generated tokens (for an assistant: its deferral rate), and the result digits "
    "it wrote by the operation of their calculation (the operator between the two numbers before '='), so "
    "that an assistant's own skill can be read off: an adder should write the results of '+'.";

extern const char* const kDeferralNote;
const char* const kDeferralNote =
    "Digits: tokens that are all digits once spaces are removed. Result digits: digits of a number "
    "written right after '=' (the result of a computation, as in \"12 + 30 = 42\" or \"<<12+30=42\"); "
    "\"result digits deferred\" is the share of all result digits in the outputs that the assistant emitted.";

// The teacher-forced analysis: who would emit each gold token, and how that compares with the oracle.
Table analysis_table(const ReportExperiment& x) {
  Table t;
  t.header = {"policy", "η", "split", "status", "token accuracy [CI]", "deferral rate", "base alone",
              "oracle", "oracle positions", "deferred at oracle positions", "oracle positions deferred"};
  t.css_class = "analysis";
  for (const auto& r : x.analysis)
    t.rows.push_back({r.run.policy, eta_text(r), r.run.split, r.run.status, metric_text(r, "token_accuracy"),
                      metric_text(r, "tf_deferral_rate"), metric_text(r, "base_token_accuracy"),
                      metric_text(r, "oracle_token_accuracy"), metric_text(r, "oracle_rate"),
                      metric_text(r, "deferred_where_oracle"), metric_text(r, "oracle_deferred")});
  return t;
}

extern const char* const kAnalysisNote;
const char* const kAnalysisNote =
    "Teacher-forced: every model reads the prompt and the gold target once; at each gold token the policy "
    "decides at its η who would emit it. Token accuracy: that model's top-1 is the gold token. Oracle "
    "positions: an assistant is right where the base is wrong (the oracle policy defers exactly there). "
    "Deferred at oracle positions: the share of the policy's deferrals that fall on them; oracle positions "
    "deferred: the share of them it defers. Means over examples.";

std::string best_reference_text(const ReportExperiment& x) {
  std::map<int64_t, int64_t> refs;  // reference run -> comparisons
  for (const auto& c : x.comparisons) ++refs[c.reference_run_id];
  std::string out;
  for (const auto& [id, n] : refs) {
    const auto* r = x.find_run(id);
    out += (out.empty() ? "" : "; ") + r->run.policy + " (" + r->baseline_label + ") on " + r->run.split + ", " +
           x.metric + " " + metric_text(*r, x.metric);
  }
  return out;
}

std::string methods_text(const ReportExperiment& x) {
  std::ostringstream os;
  os << "Intervals: percentile bootstrap over examples (" << x.bootstrap_samples << " resamples, "
     << printf_text("%.0f%%", 100 * x.confidence)
     << "), as stored by the runner for each run. Comparisons pair each policy run with the best single-model "
        "run of its split (the highest "
     << x.metric
     << " among the single-model runs on that split, so the bar is the stronger model) on the examples both "
        "scored; the difference is policy − reference with a paired bootstrap interval and a two-sided p-value "
        "(bootstrap distribution shifted to the null), seeded by the two runs' keys; McNemar's exact test uses "
        "the discordant pairs (b: only the policy right, c: only the reference right).";
  return os.str();
}

std::string experiment_summary(const ReportExperiment& x) {
  int64_t done = 0, failed = 0, other = 0;
  for (const auto& r : x.runs) (r.run.status == "done" ? done : r.run.status == "failed" ? failed : other)++;
  std::ostringstream os;
  os << x.runs.size() << " runs (" << done << " done, " << failed << " failed, " << other
     << " pending or running); compared metric: " << x.metric << "; config " << x.record.config_hash.substr(0, 12)
     << ", git " << (x.record.git_revision.empty() ? "unknown" : x.record.git_revision.substr(0, 12)) << ", colm "
     << (x.record.colm_version.empty() ? "unknown" : x.record.colm_version) << ", updated " << x.record.updated;
  return os.str();
}

}  // namespace report_detail

}  // namespace colm
