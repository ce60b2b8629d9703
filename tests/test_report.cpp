// `colm report` on results databases built by hand through the ResultsStore API (one as older runners
// wrote them, one with everything the runner records now): JSON structure and values, paired
// comparisons, Markdown tables, HTML plots and token colours, CLI errors, and the page in headless
// Chromium judged by its pixels.
#include <catch2/catch.hpp>

#include <dlfcn.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
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
  json extra = json::object();  // params the runner records now (base, plugin, rule, objective, ...)
  std::string strategy;         // default: "single" for single runs, else "defer"
  std::string metric;           // default: the experiment's
};

// Stores one run with n examples and its metrics (mean with a bootstrap interval, deferral rate).
int64_t add_run(colm::ResultsStore& store, int64_t experiment_id, const std::string& experiment,
                const RunSpecForTest& s, const std::string& metric, int n) {
  colm::RunRecord r;
  r.experiment_id = experiment_id;
  r.policy = s.policy;
  r.threshold = s.eta;
  r.strategy = !s.strategy.empty() ? s.strategy : s.kind == "single" ? "single" : "defer";
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
  params.update(s.extra);
  const auto name = s.metric.empty() ? metric : s.metric;
  r.params_json = params.dump();
  r.content_key = colm::sha1_hex(experiment + "|" + r.params_json + (s.calibrated ? "|cal" : ""));
  const auto id = store.ensure_run(r);
  if (s.pending) return id;
  store.set_run_status(id, "running");
  std::vector<colm::ExampleRecord> examples;
  std::vector<double> values;
  for (int i = 0; i < n; ++i) {
    examples.push_back(make_example(i, s.right(i), s.digit_source(i), name, s.extra_token && i == 0));
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
  store.set_metrics(id, {{name, acc.value, acc.ci_low, acc.ci_high},
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

const char* const kGammaConfig = R"toml(
[experiment]
name = "gamma"

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

[train.colm]
objective = "marginal_likelihood"

[report]
bootstrap_samples = 200
examples = 2
)toml";

// Deferral on the first k examples' two digits: a measured rate of 2k / 80 tokens.
std::function<int(int)> first(int k) {
  return [k](int i) { return i < k ? 1 : 0; };
}

// Experiment gamma, as the runner stores it since issue 13: every run records its base, plugin, rule
// or objective and calibration; a frozen-base ablation, a rule on both bases, contrastive decoding,
// a teacher-forced run and curve runs at fixed deferral rates (measured 0 to 0.075).
std::string build_new_store(const std::string& dir) {
  const std::string path = dir + "/gamma.db";
  auto store = colm::ResultsStore::open(path);
  const auto id = store.ensure_experiment("gamma", kGammaConfig, "def456", "0.2.0");
  const int n = 20;
  auto never = [](int) { return 0; };
  auto digits = [](int) { return 1; };
  auto run = [&](RunSpecForTest s) { return add_run(store, id, "gamma", s, "accuracy", n); };
  auto calibrated = [](json extra, double rate) {
    extra["calibrated"] = true;
    extra["target_rate"] = rate;
    return extra;
  };
  const json learned = {{"plugin", "colm"}, {"objective", "marginal_likelihood"}};
  const json rule = {{"plugin", "rules"}, {"rule", "confidence"}};
  run({"base", std::nullopt, "single", [](int i) { return i % 4 == 0; }, never, false, false, false,
       {{"base", "base"}}});
  run({"calc", std::nullopt, "single", [](int i) { return i % 2 == 0; }, never, false, false, false,
       {{"base", "calc"}}});
  auto colm_extra = calibrated(learned, 0.5);
  colm_extra["base"] = "colm";
  colm_extra["base_fingerprint"] = "fp-colm";
  run({"colm", 0.31, "policy", [](int i) { return i % 10 != 9; }, digits, true, false, false, colm_extra});
  auto frozen = calibrated(learned, 0.3);
  frozen["base"] = "base";
  run({"colm_frozen", 0.4, "policy", [](int i) { return i % 5 != 4; }, digits, true, false, false, frozen});
  auto conf = calibrated(rule, 0.2);
  conf["base"] = "base";
  conf["calibration_edge"] = "lowest";
  run({"confidence", 0.9, "policy", [](int i) { return i % 2 == 0; }, first(4), true, false, false, conf});
  auto tuned = calibrated(rule, 0.2);
  tuned["base"] = "colm";
  run({"confidence_tuned", 0.7, "policy", [](int i) { return i % 3 != 2; }, first(4), true, false, false, tuned});
  run({"cd", std::nullopt, "combine", [](int i) { return i % 4 != 3; }, [](int i) { return i % 2; }, false, false,
       false, {{"base", "calc"}, {"models", {{"expert", "calc"}, {"amateur", "base"}}}}, "contrastive"});
  auto tf = learned;
  tf["base"] = "colm";
  run({"colm", 0.31, "teacher_forced", [](int i) { return i % 3 != 0; }, digits, false, false, false, tf,
       "teacher_forced", "token_accuracy"});
  for (int k = 0; k < 4; ++k) {
    auto c = learned;
    c["base"] = "colm";
    c["curve"] = true;
    c["target_rate"] = 2.0 * k / 80.0;
    run({"colm", 0.9 - 0.2 * k, "policy", [k](int i) { return i % 10 < 5 + k; }, first(k), false, false, false, c});
  }
  for (int k = 1; k < 3; ++k) {
    auto c = rule;
    c["base"] = "base";
    c["curve"] = true;
    c["target_rate"] = 2.0 * k / 80.0;
    run({"confidence", 0.8 - 0.2 * k, "policy", [k](int i) { return i % 10 < 3 + k; }, first(k), false, false, false,
         c});
  }
  return path;
}

struct Fixture {
  std::string dir = colm::test::temp_dir("colm-report");
  std::string db = build_store(dir);
  std::string gamma = build_new_store(dir);
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

// An 8-bit RGB or RGBA, non-interlaced PNG (what Chromium's --screenshot writes), decoded with the
// system's zlib (loaded at run time: the tests link no compression library).
struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // 3 bytes per pixel, row by row
  std::array<int, 3> at(int x, int y) const {
    const size_t i = 3 * (size_t(y) * size_t(width) + size_t(x));
    return {rgb[i], rgb[i + 1], rgb[i + 2]};
  }
};

Image read_png(const std::string& path) {
  const auto data = read_text(path);
  auto be32 = [&](size_t at) {
    return uint32_t(uint8_t(data[at])) << 24 | uint32_t(uint8_t(data[at + 1])) << 16 |
           uint32_t(uint8_t(data[at + 2])) << 8 | uint32_t(uint8_t(data[at + 3]));
  };
  REQUIRE(data.size() > 8);
  REQUIRE(data.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0);
  Image img;
  int channels = 0;
  std::string idat;
  for (size_t at = 8; at + 8 <= data.size();) {
    const size_t len = be32(at);
    const auto type = data.substr(at + 4, 4);
    REQUIRE(at + 12 + len <= data.size());
    if (type == "IHDR") {
      img.width = int(be32(at + 8));
      img.height = int(be32(at + 12));
      const int depth = uint8_t(data[at + 16]), color = uint8_t(data[at + 17]), interlace = uint8_t(data[at + 20]);
      INFO("PNG bit depth " << depth << ", colour type " << color << ", interlace " << interlace);
      REQUIRE(depth == 8);
      REQUIRE((color == 2 || color == 6));
      REQUIRE(interlace == 0);
      channels = color == 2 ? 3 : 4;
    } else if (type == "IDAT") {
      idat += data.substr(at + 8, len);
    }
    at += 12 + len;
  }
  REQUIRE(channels > 0);
  void* zlib = dlopen("libz.so.1", RTLD_NOW | RTLD_LOCAL);
  INFO("dlopen libz.so.1: " << (zlib ? "ok" : dlerror()));
  REQUIRE(zlib);
  const auto inflate_all = reinterpret_cast<decltype(&::uncompress)>(dlsym(zlib, "uncompress"));
  REQUIRE(inflate_all);
  const size_t stride = size_t(img.width) * size_t(channels);
  std::vector<uint8_t> raw((stride + 1) * size_t(img.height));
  uLongf raw_size = raw.size();
  REQUIRE(inflate_all(raw.data(), &raw_size, reinterpret_cast<const Bytef*>(idat.data()), idat.size()) == Z_OK);
  REQUIRE(raw_size == raw.size());
  // Undo the per-row filters (PNG spec, section 9) in place.
  std::vector<uint8_t> prev(stride, 0), row(stride);
  img.rgb.resize(3 * size_t(img.width) * size_t(img.height));
  for (int y = 0; y < img.height; ++y) {
    const uint8_t* in = raw.data() + size_t(y) * (stride + 1);
    const int filter = in[0];
    for (size_t i = 0; i < stride; ++i) {
      const int a = i >= size_t(channels) ? row[i - channels] : 0, b = prev[i],
                c = i >= size_t(channels) ? prev[i - channels] : 0;
      int pred = 0;
      if (filter == 1) pred = a;
      else if (filter == 2) pred = b;
      else if (filter == 3) pred = (a + b) / 2;
      else if (filter == 4) {
        const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
        pred = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      row[i] = uint8_t(in[1 + i] + pred);
    }
    for (int x = 0; x < img.width; ++x)
      for (int k = 0; k < 3; ++k)
        img.rgb[3 * (size_t(y) * size_t(img.width) + size_t(x)) + size_t(k)] = row[size_t(x) * size_t(channels) + size_t(k)];
    std::swap(prev, row);
  }
  return img;
}

// Pixels within tolerance of a colour given as "#rrggbb": how many, and their horizontal and
// vertical extent.
struct ColourHits {
  int64_t count = 0;
  int x_min = INT32_MAX, x_max = -1, y_min = INT32_MAX, y_max = -1;
};
ColourHits find_colour(const Image& img, const std::string& hex, int tolerance = 12) {
  const int r = std::stoi(hex.substr(1, 2), nullptr, 16), g = std::stoi(hex.substr(3, 2), nullptr, 16),
            b = std::stoi(hex.substr(5, 2), nullptr, 16);
  ColourHits h;
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x) {
      const auto p = img.at(x, y);
      if (std::abs(p[0] - r) > tolerance || std::abs(p[1] - g) > tolerance || std::abs(p[2] - b) > tolerance) continue;
      ++h.count;
      h.x_min = std::min(h.x_min, x), h.x_max = std::max(h.x_max, x);
      h.y_min = std::min(h.y_min, y), h.y_max = std::max(h.y_max, y);
    }
  return h;
}

// The colour of a series' points in the page.
std::string series_colour(const std::string& html, const std::string& series) {
  const auto at = html.find("<circle class=\"point\" data-series=\"" + series + "\"");
  if (at == std::string::npos) return "";
  const auto fill = html.find("fill=\"", at) + 6;
  return html.substr(fill, 7);
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

  // What the store holds, field by field; the older runner recorded no base, plugin or rates.
  REQUIRE(out["runs"].size() == 14);
  size_t i = 0;
  for (const auto& e : store.experiments())
    for (const auto& r : store.runs(e.name)) {
      const auto& j = out["runs"][i++];
      INFO("run " << r.id << " " << r.policy);
      json metrics = json::object();
      for (const auto& m : store.metrics(r.id))
        metrics[m.name] = {{"value", m.value}, {"ci", {*m.ci_low, *m.ci_high}}};
      CHECK(j["id"] == r.id);
      CHECK(j["experiment"] == e.name);
      CHECK(j["policy"] == r.policy);
      CHECK(j["threshold"] == (r.threshold ? json(*r.threshold) : json(nullptr)));
      CHECK(j["strategy"] == r.strategy);
      CHECK(j["split"] == r.split);
      CHECK(j["seed"] == r.seed);
      CHECK(j["status"] == r.status);
      CHECK(j["metrics"] == metrics);
      CHECK(j["target_rate"].is_null());
      CHECK(j["calibration_edge"].is_null());
      CHECK(j["curve"] == false);
      CHECK(j["kind"] == json::parse(r.params_json)["kind"]);
      // Single runs decoded with their own expert; other runs' base was not recorded.
      CHECK(j["base"] == (r.strategy == "single" ? json(r.policy) : json(nullptr)));
    }
  for (const auto& r : out["runs"])
    for (const auto& [name, m] : r["metrics"].items()) {
      CHECK(m["ci"][0].get<double>() <= m["value"].get<double>());
      CHECK(m["value"].get<double>() <= m["ci"][1].get<double>());
    }
  // The stored config fills in the policy's plugin, rule and objective.
  const auto& base = out["runs"][0];
  CHECK(base["policy"] == "base");
  CHECK(base["threshold"].is_null());
  CHECK(base["strategy"] == "single");
  CHECK(base["plugin"].is_null());
  CHECK(base["metrics"]["accuracy"]["value"].get<double>() == Approx(0.25));
  CHECK(base["metrics"]["deferral_rate"]["value"].get<double>() == 0.0);
  const auto& colm05 = out["runs"][3];
  CHECK(colm05["policy"] == "colm");
  CHECK(colm05["objective"] == "marginal_likelihood");
  CHECK(colm05["rule"].is_null());
  CHECK(colm05["calibrated"] == false);
  CHECK(colm05["threshold"].get<double>() == 0.5);
  CHECK(colm05["metrics"]["accuracy"]["value"].get<double>() == Approx(0.9));
  CHECK(colm05["metrics"]["deferral_rate"]["value"].get<double>() == Approx(41.0 / 81.0));
  const auto& confidence = out["runs"][6];
  CHECK(confidence["plugin"] == "rules");
  CHECK(confidence["rule"] == "confidence");
  CHECK(confidence["objective"].is_null());
  // The learned policy's calibrated run is compared with every other finished run of its split.
  const auto& calibrated = out["runs"][5];
  CHECK(calibrated["calibrated"] == true);
  REQUIRE(calibrated["comparisons"].size() == 9);
  for (const auto& r : out["runs"])
    if (r["id"] != calibrated["id"]) CHECK(r["comparisons"].empty());
  // The pending run is listed, with no metrics.
  CHECK(out["runs"][10]["status"] == "pending");
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
  CHECK(md.find("| policy | base | η | strategy | split | seed | status | accuracy [95% CI] | deferral rate [95% CI] |") !=
        std::string::npos);
  CHECK(md.find("| policy | base | η | strategy | split | seed | status | exact\\_match [95% CI] |") != std::string::npos);
  // An older database recorded no base for policy runs: shown as unknown, not guessed.
  CHECK(md.find("| colm | — | 0.5 | defer | test | 1 | done | 0.900 [") != std::string::npos);
  CHECK(md.find("| colm | — | 0.5 (calibrated) | defer | test | 1 | done | 0.900 [") != std::string::npos);
  CHECK(md.find("| base — base alone | base | — | single | test | 1 | done | 0.250 [") != std::string::npos);
  CHECK(md.find("| always — assistant alone, rule assistant\\_only | — |") != std::string::npos);
  CHECK(md.find("| colm | — | 0.9 | defer | test | 1 | pending | — |") != std::string::npos);
  // Calibration curve with the chosen eta.
  CHECK(md.find("#### policy colm, strategy defer, split valid") != std::string::npos);
  CHECK(md.find("| η | accuracy | deferral\\_rate | chosen |") != std::string::npos);
  CHECK(md.find("| 0.5 | 0.850 | 0.500 | ✓ |") != std::string::npos);
  // Paired comparison of colm at 0.5 with calc: 8 / 0 discordant pairs, McNemar p = 2/256.
  CHECK(md.find("Reference: calc (assistant alone) on test, accuracy 0.500 [") != std::string::npos);
  CHECK(md.find("| colm | 0.5 | defer | test | 1 | calc (assistant alone) | 20 | 0.900 | 0.500 | 0.400 [") !=
        std::string::npos);
  CHECK(md.find("| 8 / 0 | 0.0078 |") != std::string::npos);
  // The learned policy (colm, by its stored [train] objective) against every other run: 9 in alpha,
  // none in beta.
  CHECK(count(md, "### The learned policy against every run") == 2);
  CHECK(count(md, "\n| colm | 0.5 (calibrated) | — | ") == 9);
  CHECK(md.find("| colm | 0.5 (calibrated) | — | calc — assistant alone | — | single | calc | test | 20 | 0.900 | "
                "0.500 | 0.400 [") != std::string::npos);
  CHECK(md.find("_(no finished run of a policy trained with objective marginal\\_likelihood)_") != std::string::npos);
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

TEST_CASE("report JSON gives each run's base, plugin, rule or objective, calibration and comparisons", "[report]") {
  const auto& f = fixture();
  const auto store = colm::open_results_for_reading(f.gamma);
  colm::ReportOptions o;
  o.analysis = false;
  const auto data = colm::load_report(store, o);
  const auto out = json::parse(colm::report_json(data));
  // 8 decoded or teacher-forced runs and 6 curve runs, in the store's order.
  REQUIRE(out["runs"].size() == 14);
  std::map<std::string, json> by;  // "policy|strategy" of the non-curve runs
  for (const auto& r : out["runs"]) {
    for (const char* key : {"id", "experiment", "kind", "policy", "plugin", "rule", "objective", "base", "strategy",
                            "threshold", "target_rate", "calibrated", "calibration_edge", "curve", "split", "seed",
                            "status", "metrics", "comparisons"})
      CHECK(r.contains(key));
    if (!r["curve"].get<bool>()) by[r["policy"].get<std::string>() + "|" + r["strategy"].get<std::string>()] = r;
  }
  REQUIRE(by.size() == 8);
  const auto& colm = by["colm|defer"];
  CHECK(colm["kind"] == "policy");
  CHECK(colm["plugin"] == "colm");
  CHECK(colm["objective"] == "marginal_likelihood");
  CHECK(colm["rule"].is_null());
  CHECK(colm["base"] == "colm");
  CHECK(colm["threshold"] == 0.31);
  CHECK(colm["target_rate"] == 0.5);
  CHECK(colm["calibrated"] == true);
  CHECK(colm["calibration_edge"].is_null());
  const auto& conf = by["confidence|defer"];
  CHECK(conf["plugin"] == "rules");
  CHECK(conf["rule"] == "confidence");
  CHECK(conf["objective"].is_null());
  CHECK(conf["base"] == "base");
  CHECK(conf["target_rate"] == 0.2);
  CHECK(conf["calibration_edge"] == "lowest");
  CHECK(conf["comparisons"].empty());
  CHECK(by["confidence_tuned|defer"]["base"] == "colm");
  CHECK(by["colm_frozen|defer"]["base"] == "base");
  CHECK(by["base|single"]["base"] == "base");
  CHECK(by["base|single"]["calibrated"] == false);
  CHECK(by["base|single"]["target_rate"].is_null());
  CHECK(by["cd|contrastive"]["kind"] == "combine");
  CHECK(by["cd|contrastive"]["threshold"].is_null());
  CHECK(by["cd|contrastive"]["base"] == "calc");
  // The teacher-forced run is listed, marked by its strategy.
  const auto& tf = by["colm|teacher_forced"];
  CHECK(tf["kind"] == "teacher_forced");
  CHECK(tf["metrics"].contains("token_accuracy"));
  CHECK(tf["comparisons"].empty());
  int curves = 0;
  for (const auto& r : out["runs"])
    if (r["curve"].get<bool>()) {
      ++curves;
      CHECK(r["target_rate"].is_number());
      CHECK(r["comparisons"].empty());
    }
  CHECK(curves == 6);

  // Both learned policies (colm, and its frozen-base ablation) against the 6 other finished decoded
  // runs of the split: not the curve runs, not the teacher-forced one.
  const auto& x = data.experiments.at(0);
  REQUIRE(x.learned_comparisons.size() == 12);
  REQUIRE(colm["comparisons"].size() == 6);
  REQUIRE(by["colm_frozen|defer"]["comparisons"].size() == 6);
  std::set<std::string> others;
  for (const auto& c : colm["comparisons"]) {
    others.insert(c["policy"].get<std::string>());
    CHECK(c["n"] == 20);
    CHECK(c["ci"].size() == 2);
    CHECK(c["ci"][0].get<double>() <= c["difference"].get<double>());
    CHECK(c["difference"].get<double>() <= c["ci"][1].get<double>());
    CHECK(c["p"].get<double>() > 0);
    CHECK(c["p"].get<double>() <= 1);
  }
  CHECK(others == std::set<std::string>{"base", "calc", "colm_frozen", "confidence", "confidence_tuned", "cd"});
  // Each difference is the paired mean difference of the stored examples.
  auto values = [&](int64_t run) {
    std::map<std::string, double> v;
    for (const auto& e : store.examples(run, false)) v[e.example_id] = e.metrics.at("accuracy");
    return v;
  };
  for (const auto& c : x.learned_comparisons) {
    const auto a = values(c.run_id), b = values(c.reference_run_id);
    double d = 0;
    for (const auto& [id, v] : a) d += v - b.at(id);
    CHECK(c.difference.difference == Approx(d / double(a.size())));
  }
  // colm (right unless i % 10 == 9) against the base alone (right when i % 4 == 0): 13 / 0 discordant.
  const json* vs_base = nullptr;
  for (const auto& c : colm["comparisons"])
    if (c["policy"] == "base") vs_base = &c;
  REQUIRE(vs_base);
  CHECK((*vs_base)["difference"].get<double>() == Approx(0.65));
  CHECK((*vs_base)["ci"][0].get<double>() > 0.3);
  CHECK((*vs_base)["p"].get<double>() < 0.05);
  CHECK((*vs_base)["mcnemar_p"].get<double>() == Approx(std::pow(2.0, -12)));

  // The CLI prints the same document.
  std::string text;
  // Only stdout goes to the file (run_command adds 2>&1 for the log).
  REQUIRE(colm::test::run_command("(" + colm::test::colm_binary() + " report " + f.gamma + " --format json > " + f.dir +
                                      "/gamma.json)",
                                  &text) == 0);
  CHECK(json::parse(read_text(f.dir + "/gamma.json")) == out);
}

TEST_CASE("report shows each run's base, edge calibrations, curves and the learned policy's comparisons", "[report]") {
  const auto store = colm::open_results_for_reading(fixture().gamma);
  const auto data = colm::load_report(store, {});
  const auto md = colm::report_markdown(data);
  {
    std::ofstream out(fixture().dir + "/gamma.md");
    out << md;
  }
  keep(fixture().dir + "/gamma.md");
  CHECK(md.find("| colm | colm | 0.31 (calibrated to rate 0.5) | defer | test | 1 | done | 0.900 [") != std::string::npos);
  CHECK(md.find("| colm\\_frozen | base | 0.4 (calibrated to rate 0.3) | defer |") != std::string::npos);
  CHECK(md.find("| confidence | base | 0.9 (calibrated to rate 0.2, at the lowest candidate tried) | defer |") !=
        std::string::npos);
  CHECK(md.find("| confidence\\_tuned | colm | 0.7 (calibrated to rate 0.2) | defer |") != std::string::npos);
  CHECK(md.find("| cd | calc | — | contrastive | test |") != std::string::npos);
  CHECK(md.find("Calibrated at the edge of the candidates tried, so the best point may lie beyond them: confidence "
                "(defer, base base, test): η 0.9, target rate 0.2, the lowest candidate.") != std::string::npos);
  // Curve runs have their own table, not rows of the runs table.
  CHECK(md.find("### Curves (fixed deferral rates)") != std::string::npos);
  CHECK(md.find("| colm | colm | defer | test | 1 | done | 0.075 | 0.3 | 0.075 [") != std::string::npos);
  CHECK(md.find("| confidence | base | defer | test | 1 | done | 0.025 | 0.6 | 0.025 [") != std::string::npos);
  CHECK(md.find("(rate 0.075)") == std::string::npos);
  // The learned policies against every other run, 6 rows each.
  CHECK(count(md, "\n| colm | 0.31 (calibrated to rate 0.5) | colm | ") == 6);
  CHECK(count(md, "\n| colm\\_frozen | 0.4 (calibrated to rate 0.3) | base | ") == 6);
  CHECK(md.find("| colm | 0.31 (calibrated to rate 0.5) | colm | base — base alone | — | single | base | test | 20 | "
                "0.900 | 0.250 | 0.650 [") != std::string::npos);
  CHECK(md.find("| 13 / 0 | 0.0002 |") != std::string::npos);
  CHECK(md.find("### Teacher-forced analysis") != std::string::npos);

  const auto html = colm::report_html(data);
  {
    std::ofstream out(fixture().dir + "/gamma.html");
    out << html;
  }
  keep(fixture().dir + "/gamma.html");
  CHECK(html.find("<p class=\"edge\">Calibrated at the edge") != std::string::npos);
  CHECK(html.find("<th>base</th>") != std::string::npos);
  // The paper's figure: one curve per policy, accuracy against the measured deferral rate.
  const auto begin = html.find("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"plot\" id=\"plot-gamma-test-curve\"");
  REQUIRE(begin != std::string::npos);
  const auto svg = html.substr(begin, html.find("</svg>", begin) - begin);
  CHECK(count(svg, "<polyline class=\"series\" data-series=\"colm\"") == 1);
  CHECK(count(svg, "<polyline class=\"series\" data-series=\"confidence\"") == 1);
  CHECK(count(svg, "<circle class=\"point\"") == 6);
  CHECK(count(svg, "<line class=\"reference\"") == 2);
  // The x-axis is fitted to the rates (0 to 0.075): the points spread over the plot area (x 66 to 600),
  // not into its leftmost 8%.
  std::vector<double> xs;
  for (size_t at = svg.find("<circle class=\"point\""); at != std::string::npos;
       at = svg.find("<circle class=\"point\"", at + 1)) {
    const auto cx = svg.find("cx=\"", at) + 4;
    xs.push_back(std::stod(svg.substr(cx, svg.find('"', cx) - cx)));
  }
  REQUIRE(xs.size() == 6);
  CHECK(*std::min_element(xs.begin(), xs.end()) == Approx(66).margin(1));
  CHECK(*std::max_element(xs.begin(), xs.end()) > 66 + 0.6 * (600 - 66));
  CHECK(*std::max_element(xs.begin(), xs.end()) < 600);
  CHECK(svg.find("text-anchor=\"middle\">0.1</text>") != std::string::npos);  // the last x tick
  CHECK(svg.find("text-anchor=\"middle\">1</text>") == std::string::npos);
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
  // The operation of a result: the operator between the two numbers before '='.
  CHECK(colm::result_operation("Ava has 14 + 9 = ", "2") == '+');
  CHECK(colm::result_operation("Ava has 14 + 9 = 2", "3") == '+');
  CHECK(colm::result_operation("After losing 5, Ava has 23 - 5 = <<23-5=", "1") == '-');
  CHECK(colm::result_operation("3 * 4 = <<3*4=", "12") == '*');
  CHECK(colm::result_operation("3x4=", "1") == '*');
  CHECK(colm::result_operation("3 \xC3\x97 4 =", " 12") == '*');  // U+00D7
  CHECK(colm::result_operation("12/4=", "3") == '/');
  CHECK(colm::result_operation("x = ", "2") == '?');          // no calculation before '='
  CHECK(colm::result_operation("total = 5 + ", "3") == '?');  // not a result digit
  CHECK(colm::result_operation("a + 9 = ", "3") == '?');      // the first operand is not a number
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

  // Only stdout goes to the file (run_command adds 2>&1 for the log): the JSON is all it prints.
  REQUIRE(colm::test::run_command("(" + bin + " report " + f.db + " --format json > " + f.dir + "/runs.json)", &text) ==
          0);
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

  // The screenshot judged by its pixels: each policy's series colour (that of its points in the page)
  // draws lines through its plots, across more than one plot, and is absent from a blank page.
  const auto shot = f.dir + "/browser/report.png", blank = f.dir + "/browser/blank.png";
  run_browser("screenshot", "--window-size=1280,2400 --screenshot=" + shot + " file://" + html_path, "/dev/null", &err);
  run_browser("blank", "--window-size=1280,2400 --screenshot=" + blank + " about:blank", "/dev/null", &err);
  REQUIRE(fs::exists(shot));
  REQUIRE(fs::exists(blank));
  keep(shot);
  const auto page = read_png(shot), empty = read_png(blank);
  CHECK(page.width == 1280);
  CHECK(page.height == 2400);
  const auto html = read_text(html_path);
  for (const char* series : {"colm", "confidence"}) {
    const auto colour = series_colour(html, series);
    REQUIRE(colour.size() == 7);
    const auto hits = find_colour(page, colour);
    INFO(series << " (" << colour << "): " << hits.count << " pixels, x " << hits.x_min << ".." << hits.x_max
                << ", y " << hits.y_min << ".." << hits.y_max);
    // Measured with Chromium 1280 px wide: the points, rings and legend swatches alone give 320 (confidence)
    // and 546 (colm) pixels of the colour; with the 2 px lines through the points, 1278 and 1837.
    CHECK(hits.count > 900);
    CHECK(hits.x_max - hits.x_min > 250);
    CHECK(hits.y_max - hits.y_min > 300);  // in more than one plot
    CHECK(find_colour(empty, colour).count == 0);
  }
}
