// `colm report` on a results database built by hand through the ResultsStore API: JSON structure and
// values, Markdown tables, HTML plots and token colours, CLI errors, and the page in headless Chromium.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "colm/hash.hpp"
#include "harness/report.hpp"
#include "harness/stats.hpp"
#include "harness/store.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const char* const kAlphaConfig = R"toml(
[experiment]
name = "alpha"
seed = 1

[experts.base]
plugin = "transformer"
role = "base"

[experts.calc]
plugin = "transformer"
role = "assistant"

[task]
plugin = "arithmetic"

[policies.confidence]
plugin = "rules"
rule = "confidence"

[policies.always]
plugin = "rules"
rule = "assistant_only"

[train.colm]
objective = "marginal_likelihood"

[sweep]
policies = ["colm", "confidence", "always"]
eta = [0.2, 0.5, 0.8]
baselines = ["base", "calc"]

[report]
bootstrap_samples = 200
examples = 3
)toml";

const char* const kBetaConfig = R"toml(
[experiment]
name = "beta"

[experts.big]
plugin = "transformer"
role = "base"

[experts.small]
plugin = "transformer"
role = "assistant"

[task]
plugin = "jsonl"

[policies.rand]
plugin = "rules"
rule = "random"

[sweep]
policies = ["rand"]
eta = [0.3, 0.7]
baselines = ["big"]

[report]
examples = 2
)toml";

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + needle.size())) ++n;
  return n;
}

// Example i of the test split: the answer is 10 + i; the two digits come from digit_source.
colm::ExampleRecord make_example(int i, bool right, int digit_source, const std::string& metric, bool extra_token) {
  colm::ExampleRecord e;
  e.example_id = "test-" + std::to_string(i);
  e.index = i;
  e.prompt = "Question: what is " + std::to_string(i) + " + 10?\nAnswer: " + std::to_string(i) + " + 10 =";
  e.reference = std::to_string(10 + i);
  const std::string answer = right ? e.reference : "99";
  std::vector<std::pair<std::string, int>> pieces = {
      {" ", 0}, {answer.substr(0, 1), digit_source}, {answer.substr(1, 1), digit_source}, {"\n", 0}};
  // A deferred non-digit that must be HTML-escaped.
  if (extra_token) pieces.insert(pieces.begin() + 1, std::make_pair(std::string("<b>&\"'"), 1));
  for (size_t p = 0; p < pieces.size(); ++p) {
    colm::TokenRecord t;
    t.position = int64_t(p);
    t.token_id = int64_t(static_cast<unsigned char>(pieces[p].first[0]));
    t.text = pieces[p].first;
    t.source = pieces[p].second;
    t.probs = {t.source == 0 ? 0.8 : 0.3, t.source == 0 ? 0.2 : 0.7};
    e.tokens.push_back(t);
    e.output += t.text;
    e.n_deferred += t.source != 0;
  }
  e.n_tokens = int64_t(e.tokens.size());
  e.metrics[metric] = right ? 1.0 : 0.0;
  return e;
}

struct RunSpecForTest {
  std::string policy;
  std::optional<double> eta;
  std::string kind;  // "single" or "policy"
  std::function<bool(int)> right;
  std::function<int(int)> digit_source;
  bool calibrated = false;
  bool pending = false;
  bool extra_token = false;
};

// Stores one run with n examples and its metrics (mean with a bootstrap interval, deferral rate).
int64_t add_run(colm::ResultsStore& store, int64_t experiment_id, const std::string& experiment,
                const RunSpecForTest& s, const std::string& metric, int n) {
  colm::RunRecord r;
  r.experiment_id = experiment_id;
  r.policy = s.policy;
  r.threshold = s.eta;
  r.strategy = s.kind == "single" ? "single" : "defer";
  r.split = "test";
  r.seed = 1;
  json params = {{"kind", s.kind}, {"policy", s.policy}, {"seed", 1}};
  if (s.kind == "single") {
    params["expert_key"] = "key-" + s.policy;
  } else {
    params["assistant_keys"] = experiment == "alpha" ? json::array({"key-calc"}) : json::array({"key-small"});
    params["base_key"] = experiment == "alpha" ? "key-base" : "key-big";
    if (s.calibrated) params["calibrated_eta"] = *s.eta;
    else if (s.eta) params["eta"] = *s.eta;
  }
  r.params_json = params.dump();
  r.content_key = colm::sha1_hex(experiment + "|" + r.params_json + (s.calibrated ? "|cal" : ""));
  const auto id = store.ensure_run(r);
  if (s.pending) return id;
  store.set_run_status(id, "running");
  std::vector<colm::ExampleRecord> examples;
  std::vector<double> values;
  for (int i = 0; i < n; ++i) {
    examples.push_back(make_example(i, s.right(i), s.digit_source(i), metric, s.extra_token && i == 0));
    values.push_back(s.right(i) ? 1.0 : 0.0);
  }
  store.add_examples(id, examples);
  const auto acc = colm::bootstrap_mean(values, colm::BootstrapOptions{200, 0.95, uint64_t(id)});
  const auto rate = colm::bootstrap_statistic(
      examples.size(),
      [&](const std::vector<size_t>& idx) {
        double d = 0, t = 0;
        for (size_t i : idx) d += double(examples[i].n_deferred), t += double(examples[i].n_tokens);
        return d / t;
      },
      colm::BootstrapOptions{200, 0.95, uint64_t(id) + 1000});
  store.set_metrics(id, {{metric, acc.value, acc.ci_low, acc.ci_high},
                         {"deferral_rate", rate.value, rate.ci_low, rate.ci_high}});
  store.set_run_status(id, "done");
  return id;
}

// Two experiments: alpha (arithmetic-like, accuracy; single models base 0.25 and calc 0.5; colm,
// confidence and an assistant_only rule; calibration) and beta (exact_match; one single model).
std::string build_store(const std::string& dir) {
  const std::string path = dir + "/results.db";
  auto store = colm::ResultsStore::open(path);
  const auto alpha = store.ensure_experiment("alpha", kAlphaConfig, "abc123", "0.1.0");
  const int n = 20;
  auto never = [](int) { return 0; };
  auto digits = [](int) { return 1; };
  add_run(store, alpha, "alpha", {"base", std::nullopt, "single", [](int i) { return i % 4 == 0; }, never}, "accuracy", n);
  add_run(store, alpha, "alpha", {"calc", std::nullopt, "single", [](int i) { return i % 2 == 0; }, never}, "accuracy", n);
  RunSpecForTest colm02{"colm", 0.2, "policy", [](int i) { return i % 5 != 4; }, digits};
  colm02.extra_token = true;
  add_run(store, alpha, "alpha", colm02, "accuracy", n);
  RunSpecForTest colm05{"colm", 0.5, "policy", [](int i) { return i % 10 != 9; }, digits};
  colm05.extra_token = true;
  add_run(store, alpha, "alpha", colm05, "accuracy", n);
  add_run(store, alpha, "alpha",
          {"colm", 0.8, "policy", [](int i) { return i % 2 == 0 || i % 3 == 0; }, [](int i) { return i % 2 == 0 ? 1 : 0; }},
          "accuracy", n);
  RunSpecForTest calibrated{"colm", 0.5, "policy", [](int i) { return i % 10 != 9; }, digits};
  calibrated.calibrated = true;
  calibrated.extra_token = true;
  add_run(store, alpha, "alpha", calibrated, "accuracy", n);
  add_run(store, alpha, "alpha", {"confidence", 0.2, "policy", [](int i) { return i % 2 == 0; }, digits}, "accuracy", n);
  add_run(store, alpha, "alpha", {"confidence", 0.5, "policy", [](int i) { return i % 3 == 0; }, digits}, "accuracy", n);
  add_run(store, alpha, "alpha", {"confidence", 0.8, "policy", [](int i) { return i % 4 == 0; }, never}, "accuracy", n);
  add_run(store, alpha, "alpha",
          {"always", 0.5, "policy", [](int i) { return i % 2 == 0 && i != 18; }, digits}, "accuracy", n);
  RunSpecForTest pending{"colm", 0.9, "policy", [](int) { return true; }, digits};
  pending.pending = true;
  add_run(store, alpha, "alpha", pending, "accuracy", n);

  std::vector<colm::CalibrationRecord> rows;
  for (double eta : {0.2, 0.5, 0.8}) {
    for (const char* metric : {"accuracy", "deferral_rate"}) {
      colm::CalibrationRecord c;
      c.experiment_id = alpha;
      c.policy = "colm";
      c.strategy = "defer";
      c.split = "valid";
      c.threshold = eta;
      c.metric = metric;
      c.value = std::string(metric) == "accuracy" ? (eta == 0.5 ? 0.85 : 0.7) : 1.0 - eta;
      c.chosen = eta == 0.5;
      rows.push_back(c);
    }
  }
  store.set_calibration(alpha, "colm", "defer", "valid", rows);

  const auto beta = store.ensure_experiment("beta", kBetaConfig, "", "0.1.0");
  add_run(store, beta, "beta", {"big", std::nullopt, "single", [](int i) { return i < 3; }, never}, "exact_match", 6);
  add_run(store, beta, "beta", {"rand", 0.3, "policy", [](int i) { return i < 4; }, digits}, "exact_match", 6);
  add_run(store, beta, "beta", {"rand", 0.7, "policy", [](int i) { return i < 2; }, never}, "exact_match", 6);
  return path;
}

struct Fixture {
  std::string dir = colm::test::temp_dir("colm-report");
  std::string db = build_store(dir);
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

// Keeps the rendered files for a human look when COLM_REPORT_KEEP names a directory.
void keep(const std::string& path) {
  if (const char* dir = std::getenv("COLM_REPORT_KEEP")) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    fs::copy_file(path, fs::path(dir) / fs::path(path).filename(), fs::copy_options::overwrite_existing, ec);
  }
}

}  // namespace

TEST_CASE("report JSON lists every run with its metrics and intervals, exactly as stored", "[report]") {
  const auto& f = fixture();
  const auto store = colm::open_results_for_reading(f.db);
  colm::ReportOptions o;
  o.analysis = false;
  const auto out = json::parse(colm::report_json(colm::load_report(store, o)));

  json expected_runs = json::array();
  for (const auto& e : store.experiments())
    for (const auto& r : store.runs(e.name)) {
      json metrics = json::object();
      for (const auto& m : store.metrics(r.id))
        metrics[m.name] = {{"value", m.value}, {"ci", {*m.ci_low, *m.ci_high}}};
      expected_runs.push_back({{"experiment", e.name},
                               {"policy", r.policy},
                               {"threshold", r.threshold ? json(*r.threshold) : json(nullptr)},
                               {"strategy", r.strategy},
                               {"split", r.split},
                               {"seed", r.seed},
                               {"metrics", metrics}});
    }
  CHECK(out == json{{"runs", expected_runs}});
  REQUIRE(out["runs"].size() == 14);
  for (const auto& r : out["runs"]) {
    CHECK(r.size() == 7);
    for (const auto& [name, m] : r["metrics"].items()) {
      CHECK(m.size() == 2);
      CHECK(m["ci"].size() == 2);
      CHECK(m["ci"][0].get<double>() <= m["value"].get<double>());
      CHECK(m["value"].get<double>() <= m["ci"][1].get<double>());
    }
  }
  // Spot values: the base alone (no threshold) and colm at 0.5.
  const auto& base = out["runs"][0];
  CHECK(base["policy"] == "base");
  CHECK(base["threshold"].is_null());
  CHECK(base["strategy"] == "single");
  CHECK(base["metrics"]["accuracy"]["value"].get<double>() == Approx(0.25));
  CHECK(base["metrics"]["deferral_rate"]["value"].get<double>() == 0.0);
  const auto& colm05 = out["runs"][3];
  CHECK(colm05["policy"] == "colm");
  CHECK(colm05["threshold"].get<double>() == 0.5);
  CHECK(colm05["metrics"]["accuracy"]["value"].get<double>() == Approx(0.9));
  CHECK(colm05["metrics"]["deferral_rate"]["value"].get<double>() == Approx(41.0 / 81.0));
  // The pending run is listed, with no metrics.
  CHECK(out["runs"][10]["metrics"].empty());
  CHECK(out["runs"][13]["experiment"] == "beta");
  CHECK(out["runs"][13]["metrics"].contains("exact_match"));

  o.experiment = "beta";
  const auto beta = json::parse(colm::report_json(colm::load_report(store, o)));
  CHECK(beta["runs"].size() == 3);
  for (const auto& r : beta["runs"]) CHECK(r["experiment"] == "beta");
}

TEST_CASE("report compares each policy with the best single model, paired on the examples", "[report]") {
  const auto store = colm::open_results_for_reading(fixture().db);
  colm::ReportOptions o;
  o.experiment = "alpha";
  const auto data = colm::load_report(store, o);
  REQUIRE(data.experiments.size() == 1);
  const auto& x = data.experiments[0];
  CHECK(x.metric == "accuracy");
  CHECK(x.bootstrap_samples == 200);  // from the stored [report]
  CHECK(x.examples_per_policy == 3);
  CHECK(x.source_names == std::vector<std::string>{"base", "calc"});
  // Baselines: both single models and the assistant_only rule.
  int baselines = 0;
  for (const auto& r : x.runs) baselines += r.baseline;
  CHECK(baselines == 3);
  // Done non-baseline runs: colm x4 (one calibrated), confidence x3.
  REQUIRE(x.comparisons.size() == 7);
  for (const auto& c : x.comparisons) {
    CHECK(x.find_run(c.reference_run_id)->run.policy == "calc");  // 0.5 beats base 0.25 and always 0.45
    CHECK(c.n == 20);
  }
  const auto& c = x.comparisons[1];  // colm at 0.5: right unless i % 10 == 9; calc: right for even i
  CHECK(x.find_run(c.run_id)->run.threshold == 0.5);
  CHECK(c.policy_mean == Approx(0.9));
  CHECK(c.reference_mean == Approx(0.5));
  CHECK(c.difference.difference == Approx(0.4));
  CHECK(c.difference.ci_low > 0.1);
  CHECK(c.difference.ci_high <= 0.7);
  CHECK(c.difference.p_value < 0.05);
  REQUIRE(c.mcnemar);
  CHECK(c.mcnemar->a_only == 8);  // odd i other than 9 and 19
  CHECK(c.mcnemar->b_only == 0);
  CHECK(c.mcnemar->p_value == Approx(2.0 / 256));
  // The same database gives the same numbers.
  const auto again = colm::load_report(store, o);
  CHECK(again.experiments[0].comparisons[1].difference.ci_low == c.difference.ci_low);
  CHECK(again.experiments[0].comparisons[1].difference.p_value == c.difference.p_value);

  // Where colm at 0.5 defers: 40 digits + one "<b>&" token of 81 tokens.
  const colm::ReportDeferral* d = nullptr;
  for (const auto& e : x.deferrals)
    if (e.run_id == c.run_id) d = &e;
  REQUIRE(d);
  CHECK(d->tokens == 81);
  CHECK(d->deferred == 41);
  CHECK(d->deferred_digits == 40);
  CHECK(d->digits == 40);
  CHECK(d->by_source == std::vector<int64_t>{40, 41});
  REQUIRE(d->top.size() >= 3);
  // "1": the tens digit of 10..18 (19 is answered "99") and the units digit of 11 and 21; "2" ties
  // with it (20..28, 12, 22) and sorts after it.
  CHECK(d->top[0].text == "1");
  CHECK(d->top[0].count == 11);
  CHECK(d->top[1].text == "2");
  CHECK(d->top[1].count == 11);
  // Showcases: colm's calibrated run, confidence's best run, always; 3 examples each.
  REQUIRE(x.showcases.size() == 3);
  for (const auto& s : x.showcases) CHECK(s.examples.size() == 3);
  bool calibrated_shown = false;
  for (const auto& s : x.showcases) calibrated_shown = calibrated_shown || x.find_run(s.run_id)->calibrated;
  CHECK(calibrated_shown);
}

TEST_CASE("report Markdown has the runs, calibration, comparison and deferral tables", "[report]") {
  const auto store = colm::open_results_for_reading(fixture().db);
  const auto md = colm::report_markdown(colm::load_report(store, {}));
  {
    std::ofstream out(fixture().dir + "/report.md");
    out << md;
  }
  keep(fixture().dir + "/report.md");
  CHECK(count(md, "## Experiment ") == 2);
  CHECK(count(md, "### Runs") == 2);
  CHECK(md.find("| policy | η | strategy | split | seed | status | accuracy [95% CI] | deferral rate [95% CI] |") !=
        std::string::npos);
  CHECK(md.find("| policy | η | strategy | split | seed | status | exact\\_match [95% CI] |") != std::string::npos);
  CHECK(md.find("| colm | 0.5 | defer | test | 1 | done | 0.900 [") != std::string::npos);
  CHECK(md.find("| colm | 0.5 (calibrated) | defer | test | 1 | done | 0.900 [") != std::string::npos);
  CHECK(md.find("| base — base alone | — | single | test | 1 | done | 0.250 [") != std::string::npos);
  CHECK(md.find("| always — assistant alone, rule assistant\\_only |") != std::string::npos);
  CHECK(md.find("| colm | 0.9 | defer | test | 1 | pending | — |") != std::string::npos);
  // Calibration curve with the chosen eta.
  CHECK(md.find("#### policy colm, strategy defer, split valid") != std::string::npos);
  CHECK(md.find("| η | accuracy | deferral\\_rate | chosen |") != std::string::npos);
  CHECK(md.find("| 0.5 | 0.850 | 0.500 | ✓ |") != std::string::npos);
  // Paired comparison of colm at 0.5 with calc: 8 / 0 discordant pairs, McNemar p = 2/256.
  CHECK(md.find("Reference: calc (assistant alone) on test, accuracy 0.500 [") != std::string::npos);
  CHECK(md.find("| colm | 0.5 | defer | test | 1 | calc (assistant alone) | 20 | 0.900 | 0.500 | 0.400 [") !=
        std::string::npos);
  CHECK(md.find("| 8 / 0 | 0.0078 |") != std::string::npos);
  // Where it defers: 40 of 41 deferred tokens are digits; 38 of them are digits of a result (after
  // the prompt's "=", not the two of example 0, which follow a deferred non-digit token), and all
  // 38 result digits are deferred.
  CHECK(md.find("| 41 (50.6%) | 97.6% | 49.4% | 92.7% | 38 of 38 (100.0%) | base 40, calc 41 |") != std::string::npos);
  // Tokens are shown quoted, and Markdown-special characters are escaped.
  CHECK(md.find("\"\\<b\\>&\\\\\"'\"×1") != std::string::npos);
}

TEST_CASE("report HTML is one self-contained page with SVG plots and coloured tokens", "[report]") {
  const auto store = colm::open_results_for_reading(fixture().db);
  const auto html = colm::report_html(colm::load_report(store, {}));
  // alpha: metric vs eta, metric vs deferral rate, calibration; beta: the two sweep plots.
  CHECK(count(html, "<svg ") == 5);
  CHECK(count(html, "</svg>") == 5);
  // colm: a line in each sweep plot and in the calibration plot; 3 etas (0.5 twice: merged).
  CHECK(count(html, "<polyline class=\"series\" data-series=\"colm\"") == 3);
  CHECK(count(html, "<circle class=\"point\" data-series=\"colm\"") == 9);
  CHECK(count(html, "<circle class=\"calibrated-mark\" data-series=\"colm\"") == 3);
  CHECK(count(html, "<polyline class=\"series\" data-series=\"confidence\"") == 2);
  CHECK(count(html, "<circle class=\"point\" data-series=\"confidence\"") == 6);
  CHECK(count(html, "<polyline class=\"series\" data-series=\"rand\"") == 2);
  // Baselines are reference lines, not series: alpha 3 per sweep plot, beta 1.
  CHECK(count(html, "data-series=\"always\"") == 0);
  CHECK(count(html, "<line class=\"reference\"") == 2 * 3 + 2 * 1);
  CHECK(count(html, "data-label=\"calc (assistant alone)\"") == 2);
  CHECK(count(html, "class=\"tick-label\"") > 20);
  CHECK(count(html, "class=\"axis-label\"") == 10);
  CHECK(count(html, "<g class=\"legend\">") == 5);
  // Examples: 3 policies x 3 examples (alpha) + 1 policy x 2 (beta), tokens coloured by model.
  CHECK(count(html, "<div class=\"example\">") == 11);
  CHECK(count(html, "class=\"tok src1\"") > 0);
  CHECK(count(html, "class=\"tok src0\"") > 0);
  CHECK(html.find("<span class=\"swatch src1\">calc (assistant)</span>") != std::string::npos);
  // Everything escaped; nothing external; no scripts.
  CHECK(html.find("&lt;b&gt;&amp;&quot;&#39;") != std::string::npos);
  CHECK(html.find("<b>&") == std::string::npos);
  CHECK(html.find("<script") == std::string::npos);
  CHECK(html.find("src=") == std::string::npos);
  CHECK(html.find("href=") == std::string::npos);
  CHECK(html.find("url(") == std::string::npos);
  CHECK(count(html, "http") == count(html, "http://www.w3.org/2000/svg"));
}

TEST_CASE("report helpers escape, classify digits and choose ticks", "[report]") {
  CHECK(colm::html_escape("a<b>&\"'") == "a&lt;b&gt;&amp;&quot;&#39;");
  CHECK(colm::html_escape(std::string("x\xff" "y")) == "x\xEF\xBF\xBDy");  // invalid UTF-8 replaced
  CHECK(colm::html_escape("é") == "é");
  CHECK(colm::visible_token("a\n\"b\\") == "\"a\\n\\\"b\\\\\"");
  CHECK(colm::visible_token("\xE2") == "\"\\xE2\"");           // half of a character
  CHECK(colm::visible_token("\xE2\x82\xAC") == "\"\xE2\x82\xAC\"");  // the euro sign, whole
  CHECK(colm::visible_token(std::string("\x01", 1)) == "\"\\x01\"");
  CHECK(colm::is_digit_token("7"));
  CHECK(colm::is_digit_token(" 12"));
  CHECK_FALSE(colm::is_digit_token(" "));
  CHECK_FALSE(colm::is_digit_token("1a"));
  // Result digits: a number right after '=' (its first and later digits), not an operand or a copy.
  CHECK(colm::is_result_digit("Ava has 14 + 9 = ", "2"));
  CHECK(colm::is_result_digit("Ava has 14 + 9 = 2", "3"));
  CHECK(colm::is_result_digit("14 + 9 = <<14+9=", "2"));
  CHECK(colm::is_result_digit("14 + 9 =", " 23"));
  CHECK_FALSE(colm::is_result_digit("14 + 9 = <<14+9=23>>", "2"));  // the copy after the annotation
  CHECK_FALSE(colm::is_result_digit("Ava has 1", "4"));                // an operand
  CHECK_FALSE(colm::is_result_digit("14 + ", "9"));
  CHECK_FALSE(colm::is_result_digit("x = 23", " 5"));                 // a new number after a space
  CHECK_FALSE(colm::is_result_digit("x = ", "."));
  CHECK_FALSE(colm::is_result_digit("", "7"));
  const auto unit = colm::nice_ticks(0, 1, 5);
  REQUIRE(unit.size() == 6);
  for (size_t i = 0; i < unit.size(); ++i) CHECK(unit[i] == Approx(0.2 * double(i)).margin(1e-12));
  CHECK(colm::nice_ticks(0, 100, 5) == std::vector<double>{0, 20, 40, 60, 80, 100});
  const auto t = colm::nice_ticks(0.23, 0.91, 6);
  CHECK(t.front() <= 0.23);
  CHECK(t.back() >= 0.91);
  CHECK(t.size() >= 4);
  CHECK(t.size() <= 10);
}

TEST_CASE("colm report writes the files, prints JSON and fails clearly", "[report][cli]") {
  const auto& f = fixture();
  const auto bin = colm::test::colm_binary();
  REQUIRE(fs::exists(bin));
  const auto before = colm::sha1_file(f.db);
  const auto out = f.dir + "/out";
  std::string text;
  REQUIRE(colm::test::run_command(bin + " report " + f.db + " --out " + out, &text) == 0);
  INFO(text);
  CHECK(fs::exists(out + "/report.md"));
  CHECK(fs::exists(out + "/report.html"));
  const auto store = colm::open_results_for_reading(f.db);
  CHECK(read_text(out + "/report.md") == colm::report_markdown(colm::load_report(store, {})));
  CHECK(read_text(out + "/report.html") == colm::report_html(colm::load_report(store, {})));

  REQUIRE(colm::test::run_command(bin + " report " + f.db + " --format json > " + f.dir + "/runs.json", &text) == 0);
  colm::ReportOptions o;
  o.analysis = false;
  CHECK(json::parse(read_text(f.dir + "/runs.json")) == json::parse(colm::report_json(colm::load_report(store, o))));
  REQUIRE(colm::test::run_command(bin + " report " + f.db + " --experiment alpha --format md --out " + f.dir + "/md",
                                  &text) == 0);
  CHECK(fs::exists(f.dir + "/md/report.md"));
  CHECK_FALSE(fs::exists(f.dir + "/md/report.html"));
  CHECK(read_text(f.dir + "/md/report.md").find("beta") == std::string::npos);

  // The report never writes the database.
  CHECK(colm::sha1_file(f.db) == before);

  CHECK(colm::test::run_command(bin + " report --help", &text) == 0);
  CHECK(text.find("--format") != std::string::npos);
  CHECK(colm::test::run_command(bin + " report " + f.dir + "/missing.db --out " + out, &text) != 0);
  CHECK(text.find("missing.db does not exist") != std::string::npos);
  CHECK_FALSE(fs::exists(f.dir + "/missing.db"));
  CHECK(colm::test::run_command(bin + " report " + f.db + " --experiment nope --out " + out, &text) != 0);
  CHECK(text.find("no experiment 'nope' (it has: alpha, beta)") != std::string::npos);
  CHECK(colm::test::run_command(bin + " report " + f.db + " --format pdf --out " + out, &text) == 2);
  CHECK(text.find("--format must be md, html or json") != std::string::npos);
  CHECK(colm::test::run_command(bin + " report " + f.db, &text) == 2);
  CHECK(text.find("--out DIR is required") != std::string::npos);
  CHECK(colm::test::run_command(bin + " report " + f.db + " --metric nonsense --out " + out, &text) != 0);
  CHECK(text.find("metric 'nonsense' is not stored") != std::string::npos);
}

TEST_CASE("the HTML report loads in headless Chromium without errors and draws its plots", "[report][browser]") {
  const char* candidates[] = {"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"};
  std::string chromium;
  for (const char* c : candidates)
    if (fs::exists(c)) {
      chromium = c;
      break;
    }
  if (chromium.empty()) {
    WARN("skipped: no headless Chromium (/usr/bin/chromium); install the Debian package `chromium` "
         "(scripts/setup.sh --with-browser) to check the HTML report in a browser");
    return;
  }
  const auto& f = fixture();
  const auto store = colm::open_results_for_reading(f.db);
  const auto html_path = f.dir + "/browser/report.html";
  fs::create_directories(f.dir + "/browser");
  {
    std::ofstream out(html_path);
    out << colm::report_html(colm::load_report(store, {}));
  }
  keep(html_path);
  const std::string flags =
      " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking"
      " --disable-component-update --disable-sync --disable-extensions --hide-scrollbars"
      " --enable-logging=stderr --v=0";
  auto run_browser = [&](const std::string& what, const std::string& args, const std::string& stdout_path,
                         std::string* err) {
    const auto profile = colm::test::temp_dir("colm-chromium");
    const auto err_path = profile + ".stderr";
    const auto cmd = "( timeout 120 " + chromium + flags + " --user-data-dir=" + profile + " " + args + " > " +
                     stdout_path + " 2> " + err_path + " )";
    std::string out;
    const int rc = colm::test::run_command(cmd, &out);
    *err = read_text(err_path);
    fs::remove(err_path);
    INFO(what << ": " << cmd << "\n" << *err);
    REQUIRE(rc == 0);
  };

  std::string err;
  const auto dom_path = f.dir + "/browser/dom.html";
  run_browser("dump-dom", "--dump-dom file://" + html_path, dom_path, &err);
  const auto dom = read_text(dom_path);
  // The page's own markup survived the parser: every plot, line and point is in the DOM.
  CHECK(count(dom, "<svg ") == 5);
  CHECK(count(dom, "<polyline class=\"series\" data-series=\"colm\"") == 3);
  CHECK(count(dom, "<circle class=\"point\"") == 9 + 6 + 4);
  CHECK(count(dom, "<line class=\"reference\"") == 8);
  CHECK(count(dom, "<div class=\"example\">") == 11);
  // No console message (errors, failed loads) and no uncaught exception.
  std::istringstream lines(err);
  std::string line;
  int bad = 0;
  while (std::getline(lines, line)) {
    if (line.find("CONSOLE") != std::string::npos || line.find("Uncaught") != std::string::npos ||
        line.find("Failed to load") != std::string::npos || line.find("ERR_") != std::string::npos) {
      UNSCOPED_INFO("browser: " << line);
      ++bad;
    }
  }
  CHECK(bad == 0);

  // A screenshot of the page is far from blank: compared with about:blank at the same size.
  const auto shot = f.dir + "/browser/report.png", blank = f.dir + "/browser/blank.png";
  run_browser("screenshot", "--window-size=1280,2400 --screenshot=" + shot + " file://" + html_path, "/dev/null", &err);
  run_browser("blank", "--window-size=1280,2400 --screenshot=" + blank + " about:blank", "/dev/null", &err);
  REQUIRE(fs::exists(shot));
  REQUIRE(fs::exists(blank));
  keep(shot);
  const auto shot_size = fs::file_size(shot), blank_size = fs::file_size(blank);
  INFO("report screenshot " << shot_size << " bytes, blank page " << blank_size << " bytes");
  CHECK(shot_size > 20000);
  CHECK(shot_size > 5 * blank_size);
}
