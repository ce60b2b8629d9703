// `colm report`'s engine: loads runs, metrics, calibration curves and token traces from the results
// store, computes paired comparisons and deferral statistics, and renders Markdown, HTML+SVG or JSON.
#include "harness/report.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <tuple>

#include "colm/config.hpp"
#include "colm/hash.hpp"

namespace colm {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---- text helpers ------------------------------------------------------------------------------------

// Replaces every invalid UTF-8 sequence (a byte-level token may be half a character) with U+FFFD.
std::string sanitize_utf8(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t len = 0;
    uint32_t cp = 0;
    if (c < 0x80) len = 1, cp = c;
    else if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07;
    bool ok = len > 0 && i + len <= s.size();
    for (size_t k = 1; ok && k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) ok = false;
      else cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are invalid too.
    if (ok && ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
               (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF))
      ok = false;
    if (ok) {
      out.append(s, i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

// Control characters other than newline and tab would make the XML-ish SVG invalid.
std::string strip_controls(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 && c != '\n' && c != '\t') out += "\xEF\xBF\xBD";
    else if (c == 0x7F) out += "\xEF\xBF\xBD";
    else out += ch;
  }
  return out;
}

// Plain text inside a Markdown table cell: no line breaks, no pipes, no inline markup.
std::string md_escape(const std::string& text) {
  std::string out;
  for (char ch : strip_controls(sanitize_utf8(text))) {
    if (ch == '\n' || ch == '\t') {
      out += ' ';
      continue;
    }
    if (std::string("\\|*_`<>~").find(ch) != std::string::npos) out += '\\';
    out += ch;
  }
  return out;
}


std::string printf_text(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}
std::string num(double v, int decimals = 3) {
  if (!std::isfinite(v)) return "—";
  char format[16];
  std::snprintf(format, sizeof format, "%%.%df", decimals);
  return printf_text(format, v);
}
std::string short_num(double v) { return std::isfinite(v) ? printf_text("%.4g", v) : "—"; }
std::string p_value_text(double p) {
  if (!std::isfinite(p)) return "—";
  return p < 1e-4 ? printf_text("%.1e", p) : printf_text("%.4f", p);
}
std::string percent(int64_t part, int64_t whole) {
  return whole > 0 ? printf_text("%.1f%%", 100.0 * double(part) / double(whole)) : "—";
}
std::string with_ci(double v, double lo, double hi, int decimals = 3) {
  if (!std::isfinite(v)) return "—";
  std::string s = num(v, decimals);
  if (std::isfinite(lo) && std::isfinite(hi)) s += " [" + num(lo, decimals) + ", " + num(hi, decimals) + "]";
  return s;
}
std::string metric_text(const ReportRun& r, const std::string& name) {
  const auto it = r.metrics.find(name);
  if (it == r.metrics.end()) return "—";
  const auto& m = it->second;
  return with_ci(m.value, m.ci_low.value_or(kNaN), m.ci_high.value_or(kNaN));
}
double metric_value(const ReportRun& r, const std::string& name) {
  const auto it = r.metrics.find(name);
  return it == r.metrics.end() ? kNaN : it->second.value;
}

uint64_t seed_from(const std::string& text) { return std::stoull(sha1_hex(text).substr(0, 16), nullptr, 16); }

std::string eta_text(const ReportRun& r) {
  if (!r.run.threshold) return "—";
  return short_num(*r.run.threshold) + (r.calibrated ? " (calibrated)" : "");
}
std::string policy_text(const ReportRun& r) {
  return r.baseline ? r.run.policy + " — " + r.baseline_label : r.run.policy;
}

// ---- tables: one structure, rendered as Markdown or HTML ------------------------------------------------

struct Table {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::string css_class;
};

std::string render_markdown(const Table& t) {
  if (t.rows.empty()) return "_(none)_\n";
  std::ostringstream os;
  os << "|";
  for (const auto& h : t.header) os << " " << md_escape(h) << " |";
  os << "\n|";
  for (size_t i = 0; i < t.header.size(); ++i) os << "---|";
  os << "\n";
  for (const auto& row : t.rows) {
    os << "|";
    for (const auto& c : row) os << " " << md_escape(c) << " |";
    os << "\n";
  }
  return os.str();
}

std::string render_html(const Table& t) {
  if (t.rows.empty()) return "<p class=\"none\">(none)</p>\n";
  std::ostringstream os;
  os << "<table" << (t.css_class.empty() ? "" : " class=\"" + html_escape(t.css_class) + "\"") << ">\n<thead><tr>";
  for (const auto& h : t.header) os << "<th>" << html_escape(h) << "</th>";
  os << "</tr></thead>\n<tbody>\n";
  for (const auto& row : t.rows) {
    os << "<tr>";
    for (const auto& c : row) os << "<td>" << html_escape(c) << "</td>";
    os << "</tr>\n";
  }
  os << "</tbody></table>\n";
  return os.str();
}

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

// ---- SVG plots -------------------------------------------------------------------------------------------

const char* const kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
                                "#17becf", "#8c564b", "#e377c2", "#bcbd22", "#7f7f7f"};
const char* const kReferenceColors[] = {"#222222", "#555555", "#888888", "#aa6600"};
const char* const kReferenceDash[] = {"8 4", "2 3", "12 4 2 4", "4 4"};

struct PlotPoint {
  double x = 0, y = 0, lo = kNaN, hi = kNaN;
  bool calibrated = false;
  std::string note;  // tooltip
};
struct PlotSeries {
  std::string name;
  std::string color;
  std::vector<PlotPoint> points;
};
struct PlotReference {
  std::string label;
  double y = 0;
};
struct Plot {
  std::string title, x_label, y_label, id;
  std::vector<PlotSeries> series;
  std::vector<PlotReference> references;
};

std::string coord(double v) { return printf_text("%.1f", v); }

// Cuts text to at most max_bytes on a character boundary.
std::string truncate_utf8(const std::string& text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return text.substr(0, cut) + "…";
}

// A legend entry fits the 270 px beside the plot; the whole label stays as its tooltip.
std::string legend_text(const std::string& label) {
  const auto shown = truncate_utf8(label, 40);
  if (shown == label) return html_escape(label);
  return "<title>" + html_escape(label) + "</title>" + html_escape(shown);
}

std::string render_svg(const Plot& plot) {
  const double W = 900, H = 380, left = 66, top = 40, right = W - 300, bottom = H - 52;
  // Ranges: x covers [0, 1] (eta and deferral rates live there) and any point outside; y covers
  // every point, interval and reference line, widened to whole ticks.
  double xlo = 0, xhi = 1, ylo = std::numeric_limits<double>::infinity(), yhi = -ylo;
  auto take_y = [&](double v) {
    if (std::isfinite(v)) ylo = std::min(ylo, v), yhi = std::max(yhi, v);
  };
  for (const auto& s : plot.series)
    for (const auto& p : s.points) {
      xlo = std::min(xlo, p.x), xhi = std::max(xhi, p.x);
      take_y(p.y), take_y(p.lo), take_y(p.hi);
    }
  for (const auto& r : plot.references) take_y(r.y);
  if (!std::isfinite(ylo)) ylo = 0, yhi = 1;
  const double data_lo = ylo, data_hi = yhi;
  if (yhi - ylo < 1e-9) ylo -= 0.05, yhi += 0.05;
  // Rates and accuracies live in [0, 1]: a flat line at 0 should not get negative ticks.
  if (data_lo >= 0) ylo = std::max(ylo, 0.0);
  if (data_hi <= 1) yhi = std::min(yhi, 1.0);
  const auto yt = nice_ticks(ylo, yhi, 6);
  const auto xt = nice_ticks(xlo, xhi, 5);
  ylo = std::min(ylo, yt.front()), yhi = std::max(yhi, yt.back());
  xlo = std::min(xlo, xt.front()), xhi = std::max(xhi, xt.back());
  auto X = [&](double v) { return left + (v - xlo) / (xhi - xlo) * (right - left); };
  auto Y = [&](double v) { return bottom - (v - ylo) / (yhi - ylo) * (bottom - top); };

  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"plot\" id=\"" << html_escape(plot.id) << "\" width=\""
     << W << "\" height=\"" << H << "\" viewBox=\"0 0 " << W << " " << H << "\" role=\"img\" aria-label=\""
     << html_escape(plot.title) << "\">\n";
  os << "<title>" << html_escape(plot.title) << "</title>\n";
  os << "<rect x=\"0\" y=\"0\" width=\"" << W << "\" height=\"" << H << "\" fill=\"#ffffff\"/>\n";
  os << "<text class=\"plot-title\" x=\"" << coord((left + right) / 2) << "\" y=\"22\" text-anchor=\"middle\">"
     << html_escape(plot.title) << "</text>\n";
  // Grid, ticks and tick labels.
  for (double t : yt) {
    const auto y = coord(Y(t));
    os << "<line class=\"grid\" x1=\"" << left << "\" x2=\"" << right << "\" y1=\"" << y << "\" y2=\"" << y
       << "\" stroke=\"#e4e4e4\"/>";
    os << "<line class=\"tick\" x1=\"" << left - 5 << "\" x2=\"" << left << "\" y1=\"" << y << "\" y2=\"" << y
       << "\" stroke=\"#333\"/>";
    os << "<text class=\"tick-label\" x=\"" << left - 8 << "\" y=\"" << y
       << "\" text-anchor=\"end\" dominant-baseline=\"middle\">" << short_num(t) << "</text>\n";
  }
  for (double t : xt) {
    const auto x = coord(X(t));
    os << "<line class=\"grid\" x1=\"" << x << "\" x2=\"" << x << "\" y1=\"" << top << "\" y2=\"" << bottom
       << "\" stroke=\"#e4e4e4\"/>";
    os << "<line class=\"tick\" x1=\"" << x << "\" x2=\"" << x << "\" y1=\"" << bottom << "\" y2=\"" << bottom + 5
       << "\" stroke=\"#333\"/>";
    os << "<text class=\"tick-label\" x=\"" << x << "\" y=\"" << bottom + 18 << "\" text-anchor=\"middle\">"
       << short_num(t) << "</text>\n";
  }
  os << "<line class=\"axis\" x1=\"" << left << "\" x2=\"" << right << "\" y1=\"" << bottom << "\" y2=\"" << bottom
     << "\" stroke=\"#333\"/>\n";
  os << "<line class=\"axis\" x1=\"" << left << "\" x2=\"" << left << "\" y1=\"" << top << "\" y2=\"" << bottom
     << "\" stroke=\"#333\"/>\n";
  os << "<text class=\"axis-label\" x=\"" << coord((left + right) / 2) << "\" y=\"" << H - 12
     << "\" text-anchor=\"middle\">" << html_escape(plot.x_label) << "</text>\n";
  os << "<text class=\"axis-label\" transform=\"translate(16 " << coord((top + bottom) / 2)
     << ") rotate(-90)\" text-anchor=\"middle\">" << html_escape(plot.y_label) << "</text>\n";

  // Single models: horizontal reference lines across the plot.
  for (size_t i = 0; i < plot.references.size(); ++i) {
    const auto& r = plot.references[i];
    const auto y = coord(Y(r.y));
    os << "<line class=\"reference\" data-label=\"" << html_escape(r.label) << "\" x1=\"" << left << "\" x2=\""
       << right << "\" y1=\"" << y << "\" y2=\"" << y << "\" stroke=\"" << kReferenceColors[i % 4]
       << "\" stroke-width=\"1.5\" stroke-dasharray=\"" << kReferenceDash[i % 4] << "\"><title>"
       << html_escape(r.label) << ": " << short_num(r.y) << "</title></line>\n";
  }
  // Policies: intervals, then the line through the points, then the points on top.
  for (const auto& s : plot.series) {
    const auto name = html_escape(s.name);
    for (const auto& p : s.points) {
      if (!std::isfinite(p.lo) || !std::isfinite(p.hi)) continue;
      os << "<line class=\"ci\" data-series=\"" << name << "\" x1=\"" << coord(X(p.x)) << "\" x2=\"" << coord(X(p.x))
         << "\" y1=\"" << coord(Y(p.lo)) << "\" y2=\"" << coord(Y(p.hi)) << "\" stroke=\"" << s.color
         << "\" stroke-opacity=\"0.45\" stroke-width=\"2\"/>\n";
    }
    if (s.points.size() >= 2) {
      os << "<polyline class=\"series\" data-series=\"" << name << "\" fill=\"none\" stroke=\"" << s.color
         << "\" stroke-width=\"2\" points=\"";
      for (size_t i = 0; i < s.points.size(); ++i)
        os << (i ? " " : "") << coord(X(s.points[i].x)) << "," << coord(Y(s.points[i].y));
      os << "\"/>\n";
    }
    for (const auto& p : s.points) {
      if (p.calibrated)
        os << "<circle class=\"calibrated-mark\" data-series=\"" << name << "\" cx=\"" << coord(X(p.x)) << "\" cy=\""
           << coord(Y(p.y)) << "\" r=\"7\" fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"1.5\"/>";
      os << "<circle class=\"point\" data-series=\"" << name << "\" cx=\"" << coord(X(p.x)) << "\" cy=\""
         << coord(Y(p.y)) << "\" r=\"3.5\" fill=\"" << s.color << "\"><title>" << html_escape(p.note)
         << "</title></circle>\n";
    }
  }
  // Legend, right of the plot area.
  os << "<g class=\"legend\">\n";
  double ly = top + 6;
  const double lx = right + 18;
  for (const auto& s : plot.series) {
    os << "<line x1=\"" << lx << "\" x2=\"" << lx + 22 << "\" y1=\"" << coord(ly) << "\" y2=\"" << coord(ly)
       << "\" stroke=\"" << s.color << "\" stroke-width=\"2\"/><circle cx=\"" << lx + 11 << "\" cy=\"" << coord(ly)
       << "\" r=\"3.5\" fill=\"" << s.color << "\"/><text class=\"legend-label\" x=\"" << lx + 30 << "\" y=\""
       << coord(ly) << "\" dominant-baseline=\"middle\">" << legend_text(s.name) << "</text>\n";
    ly += 18;
  }
  for (size_t i = 0; i < plot.references.size(); ++i) {
    os << "<line x1=\"" << lx << "\" x2=\"" << lx + 22 << "\" y1=\"" << coord(ly) << "\" y2=\"" << coord(ly)
       << "\" stroke=\"" << kReferenceColors[i % 4] << "\" stroke-width=\"1.5\" stroke-dasharray=\""
       << kReferenceDash[i % 4] << "\"/><text class=\"legend-label\" x=\"" << lx + 30 << "\" y=\"" << coord(ly)
       << "\" dominant-baseline=\"middle\">" << legend_text(plot.references[i].label) << "</text>\n";
    ly += 18;
  }
  bool any_calibrated = false;
  for (const auto& s : plot.series)
    for (const auto& p : s.points) any_calibrated = any_calibrated || p.calibrated;
  if (any_calibrated) {
    os << "<circle cx=\"" << lx + 11 << "\" cy=\"" << coord(ly) << "\" r=\"7\" fill=\"none\" stroke=\"#333\"/>"
       << "<text class=\"legend-label\" x=\"" << lx + 30 << "\" y=\"" << coord(ly)
       << "\" dominant-baseline=\"middle\">calibrated η</text>\n";
  }
  os << "</g>\n</svg>\n";
  return os.str();
}

// Colours by policy name, stable across the plots of one experiment.
std::map<std::string, std::string> policy_colors(const ReportExperiment& x) {
  std::map<std::string, std::string> out;
  size_t next = 0;
  for (const auto& r : x.runs)
    if (!r.baseline && !out.count(r.run.policy)) out[r.run.policy] = kPalette[next++ % 10];
  for (const auto& c : x.calibration)
    if (!out.count(c.policy)) out[c.policy] = kPalette[next++ % 10];
  return out;
}

// The sweep plots of one split: metric against eta and against the deferral rate.
std::vector<Plot> sweep_plots(const ReportExperiment& x, const std::string& split) {
  const auto colors = policy_colors(x);
  std::set<std::string> strategies;
  for (const auto& r : x.runs)
    if (!r.baseline && r.run.split == split) strategies.insert(r.run.strategy);
  // (policy, strategy) -> eta -> runs at that eta (several seeds are averaged).
  std::map<std::pair<std::string, std::string>, std::map<double, std::vector<const ReportRun*>>> groups;
  for (const auto& r : x.runs) {
    if (r.baseline || r.run.split != split || !r.run.threshold || r.run.status != "done") continue;
    if (!std::isfinite(metric_value(r, x.metric))) continue;
    groups[{r.run.policy, r.run.strategy}][*r.run.threshold].push_back(&r);
  }
  std::map<std::string, std::vector<const ReportRun*>> references;  // label -> runs
  for (const auto& r : x.runs)
    if (r.baseline && r.run.split == split && r.run.status == "done" && std::isfinite(metric_value(r, x.metric)))
      references[r.run.policy + " (" + r.baseline_label + ")"].push_back(&r);

  Plot by_eta, by_rate;
  by_eta.id = "plot-" + x.record.name + "-" + split + "-eta";
  by_rate.id = "plot-" + x.record.name + "-" + split + "-rate";
  by_eta.title = x.record.name + " (" + split + "): " + x.metric + " against η";
  by_rate.title = x.record.name + " (" + split + "): " + x.metric + " against deferral rate";
  by_eta.x_label = "deferral threshold η";
  by_rate.x_label = "deferral rate (assistant tokens / tokens)";
  by_eta.y_label = by_rate.y_label = x.metric;
  for (const auto& [key, by_threshold] : groups) {
    PlotSeries se, sr;
    se.name = sr.name = strategies.size() > 1 ? key.first + " (" + key.second + ")" : key.first;
    se.color = sr.color = colors.at(key.first);
    for (const auto& [eta, runs] : by_threshold) {
      double y = 0, rate = 0;
      bool calibrated = false;
      for (const auto* r : runs) {
        y += metric_value(*r, x.metric);
        rate += metric_value(*r, "deferral_rate");
        calibrated = calibrated || r->calibrated;
      }
      y /= double(runs.size());
      rate /= double(runs.size());
      PlotPoint p;
      p.y = y;
      p.calibrated = calibrated;
      if (runs.size() == 1) {
        const auto& m = runs.front()->metrics.at(x.metric);
        p.lo = m.ci_low.value_or(kNaN), p.hi = m.ci_high.value_or(kNaN);
      }
      p.note = se.name + ": η = " + short_num(eta) + ", " + x.metric + " = " + with_ci(y, p.lo, p.hi) +
               ", deferral rate = " + num(rate) + (runs.size() > 1 ? " (mean of " + std::to_string(runs.size()) + " seeds)" : "") +
               (calibrated ? " (calibrated)" : "");
      p.x = eta;
      se.points.push_back(p);
      if (std::isfinite(rate)) {
        p.x = rate;
        sr.points.push_back(p);
      }
    }
    // Against the deferral rate the line runs left to right (ties: by eta, the order they were added).
    std::stable_sort(sr.points.begin(), sr.points.end(), [](const PlotPoint& a, const PlotPoint& b) { return a.x < b.x; });
    by_eta.series.push_back(se);
    by_rate.series.push_back(sr);
  }
  for (const auto& [label, runs] : references) {
    double y = 0;
    for (const auto* r : runs) y += metric_value(*r, x.metric);
    by_eta.references.push_back({label, y / double(runs.size())});
  }
  by_rate.references = by_eta.references;
  return {by_eta, by_rate};
}

// The calibration curves on the validation split (one series per policy and strategy).
std::optional<Plot> calibration_plot(const ReportExperiment& x) {
  if (x.calibration.empty()) return std::nullopt;
  const auto colors = policy_colors(x);
  std::set<std::string> strategies;
  std::string metric;
  for (const auto& c : x.calibration) {
    strategies.insert(c.strategy);
    if (c.metric != "deferral_rate" && (metric.empty() || c.metric == x.metric)) metric = c.metric;
  }
  if (metric.empty()) metric = "deferral_rate";
  Plot plot;
  plot.id = "plot-" + x.record.name + "-calibration";
  plot.x_label = "deferral threshold η";
  plot.y_label = metric;
  std::map<std::tuple<std::string, std::string, std::string>, PlotSeries> series;
  std::set<std::string> splits;
  for (const auto& c : x.calibration) {
    if (c.metric != metric || !std::isfinite(c.value)) continue;
    splits.insert(c.split);
    auto& s = series[{c.policy, c.strategy, c.split}];
    s.name = c.policy + (strategies.size() > 1 ? " (" + c.strategy + ")" : "");
    s.color = colors.at(c.policy);
    PlotPoint p;
    p.x = c.threshold;
    p.y = c.value;
    p.calibrated = c.chosen;
    p.note = s.name + " on " + c.split + ": η = " + short_num(c.threshold) + ", " + metric + " = " + num(c.value) +
             (c.chosen ? " (chosen)" : "");
    s.points.push_back(p);
  }
  std::string split_text;
  for (const auto& s : splits) split_text += (split_text.empty() ? "" : ", ") + s;
  plot.title = x.record.name + ": calibration on " + split_text + " (" + metric + " against η)";
  for (auto& [key, s] : series) {
    std::sort(s.points.begin(), s.points.end(), [](const PlotPoint& a, const PlotPoint& b) { return a.x < b.x; });
    plot.series.push_back(std::move(s));
  }
  return plot;
}

// ---- report sections (shared by Markdown and HTML) ------------------------------------------------------

Table runs_table(const ReportExperiment& x) {
  Table t;
  t.header = {"policy", "η", "strategy", "split", "seed", "status", x.metric + " [95% CI]",
              "deferral rate [95% CI]", "examples", "tokens", "deferred tokens"};
  if (x.confidence != 0.95) {
    const auto level = printf_text("%.0f%%", 100 * x.confidence);
    t.header[6] = x.metric + " [" + level + " CI]";
    t.header[7] = "deferral rate [" + level + " CI]";
  }
  t.css_class = "runs";
  for (const auto& r : x.runs)
    t.rows.push_back({policy_text(r), eta_text(r), r.run.strategy, r.run.split, std::to_string(r.run.seed),
                      r.run.status, metric_text(r, x.metric), metric_text(r, "deferral_rate"),
                      std::to_string(r.n_examples), std::to_string(r.n_tokens), std::to_string(r.n_deferred)});
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

std::string source_name(const ReportExperiment& x, size_t source) {
  if (source < x.source_names.size() && !x.source_names[source].empty()) return x.source_names[source];
  return source == 0 ? "base" : "assistant " + std::to_string(source);
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
      by_model += (s ? ", " : "") + source_name(x, s) + " " + std::to_string(d.by_source[s]);
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

constexpr const char* kAnalysisNote =
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

std::set<std::string> plot_splits(const ReportExperiment& x) {
  std::set<std::string> out;
  for (const auto& r : x.runs)
    if (!r.baseline && r.run.threshold) out.insert(r.run.split);
  return out;
}

// ---- HTML pieces ----------------------------------------------------------------------------------------

const char* const kSourceColors[] = {"#dbe9f6", "#ffd8a8", "#c7f0c2", "#f3c6e9", "#fff3a0", "#d9d2f5"};

const char* const kCss = R"css(
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #333; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
h3 { margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f1f1f1; }
tbody tr:nth-child(even) { background: #fafafa; }
p.note, p.none { color: #555; font-size: 13px; }
svg.plot { display: block; margin: .8em 0; border: 1px solid #ddd; }
svg.plot text { font-size: 12px; fill: #222; }
svg.plot text.plot-title { font-size: 14px; font-weight: bold; }
svg.plot text.axis-label { font-size: 13px; }
.legend-box { margin: .5em 0; font-size: 13px; }
.legend-box span.swatch { display: inline-block; padding: 1px 8px; margin-right: 8px; border: 1px solid #bbb; }
.example { border: 1px solid #ddd; border-radius: 4px; margin: .8em 0; padding: .5em .8em; }
.example .meta { font-size: 12px; color: #555; }
.example .prompt { white-space: pre-wrap; color: #666; font-family: monospace; font-size: 13px; margin: .3em 0; }
.example .output { white-space: pre-wrap; font-family: monospace; font-size: 14px; margin: .3em 0; }
.example .reference { white-space: pre-wrap; font-family: monospace; font-size: 12px; color: #444; }
.tok { border-radius: 2px; box-shadow: inset -1px 0 0 rgba(0, 0, 0, 0.12); }
.right { color: #1a7f37; font-weight: bold; }
.wrong { color: #b42318; font-weight: bold; }
)css";

std::string source_css(const ReportData& d) {
  size_t n = 1;
  for (const auto& x : d.experiments) n = std::max(n, x.source_names.size());
  std::ostringstream os;
  for (size_t s = 0; s < std::max<size_t>(n, 2); ++s)
    os << ".src" << s << " { background: " << kSourceColors[s % 6] << "; }\n";
  return os.str();
}

std::string html_showcase(const ReportExperiment& x, const ReportShowcase& s) {
  const auto* r = x.find_run(s.run_id);
  std::ostringstream os;
  os << "<h4>" << html_escape(r->run.policy) << " — η " << html_escape(eta_text(*r)) << ", "
     << html_escape(r->run.strategy) << ", " << html_escape(r->run.split) << ", seed " << r->run.seed << "</h4>\n";
  for (const auto& e : s.examples) {
    const auto& ex = e.example;
    os << "<div class=\"example\">\n<div class=\"meta\">#" << ex.index << " · " << html_escape(ex.example_id) << " · "
       << ex.n_tokens << " tokens, " << ex.n_deferred << " deferred";
    if (e.metric)
      os << " · " << html_escape(x.metric) << " "
         << (*e.metric == 1.0   ? "<span class=\"right\">1 ✓</span>"
             : *e.metric == 0.0 ? "<span class=\"wrong\">0 ✗</span>"
                                : html_escape(num(*e.metric)));
    os << "</div>\n<div class=\"prompt\">" << html_escape(truncate_utf8(ex.prompt, 800)) << "</div>\n";
    os << "<div class=\"output\">";
    if (ex.tokens.empty()) {
      os << html_escape(ex.output) << " <span class=\"meta\">(no token trace stored)</span>";
    } else {
      for (const auto& t : ex.tokens) {
        std::string title = source_name(x, size_t(std::max(t.source, 0)));
        if (t.probs.size() > 1 && std::isfinite(t.probs[0])) title += ", P(defer) = " + num(1.0 - t.probs[0]);
        os << "<span class=\"tok src" << std::max(t.source, 0) << "\" title=\"" << html_escape(title) << "\">"
           << html_escape(t.text) << "</span>";
      }
    }
    os << "</div>\n<div class=\"reference\">reference: " << html_escape(ex.reference) << "</div>\n</div>\n";
  }
  return os.str();
}

uint32_t count_source_legend(const ReportExperiment& x) { return uint32_t(std::max<size_t>(x.source_names.size(), 1)); }

}  // namespace

// ---- public -------------------------------------------------------------------------------------------------

const ReportRun* ReportExperiment::find_run(int64_t id) const {
  for (const auto& r : runs)
    if (r.run.id == id) return &r;
  return nullptr;
}

std::string html_escape(const std::string& text) {
  std::string out;
  for (char ch : strip_controls(sanitize_utf8(text))) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += ch;
    }
  }
  return out;
}

std::string visible_token(const std::string& text) {
  std::string out = "\"";
  char buf[8];
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      // The sequence the lead byte announces, when it is complete and valid.
      size_t len = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
      const std::string piece = len && i + len <= text.size() ? text.substr(i, len) : std::string();
      if (!piece.empty() && sanitize_utf8(piece) == piece) {
        out += piece;
        i += len;
      } else {
        std::snprintf(buf, sizeof buf, "\\x%02X", unsigned(c));
        out += buf;
        ++i;
      }
      continue;
    }
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (c < 0x20 || c == 0x7F) {
      std::snprintf(buf, sizeof buf, "\\x%02X", unsigned(c));
      out += buf;
    } else {
      out += char(c);
    }
    ++i;
  }
  return out + "\"";
}

bool is_result_digit(const std::string& text_before, const std::string& token) {
  if (!is_digit_token(token)) return false;
  // A token with a leading space starts a new number: only spaces may stand between it and '='.
  const bool starts_number = token[0] < '0' || token[0] > '9';  // non-empty: is_digit_token
  size_t i = text_before.size();
  if (!starts_number)
    while (i > 0 && text_before[i - 1] >= '0' && text_before[i - 1] <= '9') --i;
  while (i > 0 && (text_before[i - 1] == ' ' || text_before[i - 1] == '\t')) --i;
  return i > 0 && text_before[i - 1] == '=';
}

bool is_digit_token(const std::string& text) {
  bool any = false;
  for (char ch : text) {
    if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') continue;
    if (ch < '0' || ch > '9') return false;
    any = true;
  }
  return any;
}

std::vector<double> nice_ticks(double lo, double hi, int target_count) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {0, 1};
  if (hi < lo) std::swap(lo, hi);
  if (hi - lo < 1e-12) lo -= 0.5, hi += 0.5;
  const double rough = (hi - lo) / std::max(target_count, 1);
  const double p10 = std::pow(10.0, std::floor(std::log10(rough)));
  const double f = rough / p10;
  const double step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * p10;
  const double start = std::floor(lo / step + 1e-9), end = std::ceil(hi / step - 1e-9);
  std::vector<double> out;
  for (double i = start; i <= end + 0.5; i += 1) {
    double v = i * step;
    if (std::abs(v) < step * 1e-9) v = 0;  // no "-0"
    out.push_back(v);
  }
  return out;
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

std::string report_markdown(const ReportData& data) {
  std::ostringstream os;
  os << "# colm report\n\nDatabase: `" << sanitize_utf8(data.database) << "` — " << data.experiments.size()
     << " experiment(s).\n";
  for (const auto& x : data.experiments) {
    os << "\n## Experiment " << md_escape(x.record.name) << "\n\n" << md_escape(experiment_summary(x)) << "\n\n";
    os << "### Runs\n\n" << render_markdown(runs_table(x)) << "\n";
    const auto all = all_metrics_table(x);
    if (!all.header.empty()) os << "### All metrics\n\n" << render_markdown(all) << "\n";
    os << "### Calibration curve\n\n";
    const auto cal = calibration_tables(x);
    if (cal.empty()) os << "_(no calibration stored)_\n\n";
    for (const auto& [title, table] : cal) os << "#### " << md_escape(title) << "\n\n" << render_markdown(table) << "\n";
    os << "### Compared with the best single model\n\n";
    const auto refs = best_reference_text(x);
    os << (refs.empty() ? "_(no single-model run with " + md_escape(x.metric) + " to compare with)_"
                        : "Reference: " + md_escape(refs) + ".")
       << "\n\n" << render_markdown(comparison_table(x)) << "\n" << md_escape(methods_text(x)) << "\n\n";
    os << "### Where it defers\n\n" << md_escape(kDeferralNote) << "\n\n"
       << render_markdown(deferral_table(x)) << "\n";
    if (!x.analysis.empty())
      os << "### Teacher-forced analysis\n\n" << md_escape(kAnalysisNote) << "\n\n"
         << render_markdown(analysis_table(x)) << "\n";
  }
  return os.str();
}

std::string report_html(const ReportData& data) {
  std::ostringstream os;
  os << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
     << "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
     << "<title>colm report</title>\n<style>" << kCss << source_css(data) << "</style>\n</head>\n<body>\n";
  os << "<h1>colm report</h1>\n<p class=\"note\">Database: " << html_escape(data.database) << " — "
     << data.experiments.size() << " experiment(s).</p>\n";
  for (const auto& x : data.experiments) {
    os << "<h2>Experiment " << html_escape(x.record.name) << "</h2>\n<p class=\"note\">"
       << html_escape(experiment_summary(x)) << "</p>\n";
    os << "<h3>Plots</h3>\n";
    const auto splits = plot_splits(x);
    if (splits.empty()) os << "<p class=\"none\">(no policy runs with a threshold to plot)</p>\n";
    for (const auto& split : splits)
      for (const auto& plot : sweep_plots(x, split)) os << render_svg(plot);
    if (const auto cal = calibration_plot(x)) os << render_svg(*cal);
    os << "<p class=\"note\">Dashed lines: single models (their " << html_escape(x.metric)
       << " on the split); vertical bars: the run's interval; rings: the calibrated η.</p>\n";
    os << "<h3>Runs</h3>\n" << render_html(runs_table(x));
    const auto all = all_metrics_table(x);
    if (!all.header.empty()) os << "<h3>All metrics</h3>\n" << render_html(all);
    os << "<h3>Calibration curve</h3>\n";
    const auto cal = calibration_tables(x);
    if (cal.empty()) os << "<p class=\"none\">(no calibration stored)</p>\n";
    for (const auto& [title, table] : cal) os << "<h4>" << html_escape(title) << "</h4>\n" << render_html(table);
    os << "<h3>Compared with the best single model</h3>\n";
    const auto refs = best_reference_text(x);
    os << "<p>" << (refs.empty() ? "(no single-model run to compare with)" : "Reference: " + html_escape(refs) + ".")
       << "</p>\n" << render_html(comparison_table(x)) << "<p class=\"note\">" << html_escape(methods_text(x))
       << "</p>\n";
    os << "<h3>Where it defers</h3>\n<p class=\"note\">" << html_escape(kDeferralNote)
       << "</p>\n" << render_html(deferral_table(x));
    if (!x.analysis.empty())
      os << "<h3>Teacher-forced analysis</h3>\n<p class=\"note\">" << html_escape(kAnalysisNote) << "</p>\n"
         << render_html(analysis_table(x));
    os << "<h3>Example outputs</h3>\n<div class=\"legend-box\">Token colours: ";
    for (uint32_t s = 0; s < count_source_legend(x); ++s)
      os << "<span class=\"swatch src" << s << "\">" << html_escape(source_name(x, s)) << (s == 0 ? " (base)" : " (assistant)")
         << "</span>";
    os << "</div>\n";
    if (x.showcases.empty()) os << "<p class=\"none\">(no example outputs)</p>\n";
    for (const auto& s : x.showcases) os << html_showcase(x, s);
  }
  os << "</body>\n</html>\n";
  return os.str();
}

}  // namespace colm
