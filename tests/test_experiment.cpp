// Tests of the experiment schema: malformed experiments fail before any work with a message naming
// the problem and its file:line, grids and zips expand as documented, run keys are stable.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "colm/tokenizer.hpp"
#include "harness/experiment.hpp"
#include "plugin/registry.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using namespace colm;

namespace {

// Two tiny fresh GPT-2 experts (byte vocabulary), the arithmetic task, two rule policies.
const std::string kValid = R"([experiment]
name = "schema-test"
seed = 1
database = "DBPATH"

)" + colm::test::tiny_experts() + R"(
[task]
plugin = "arithmetic"
train_size = 20
valid_size = 10
test_size = 10

[policies.conf]
plugin = "rules"
rule = "confidence"

[policies.rand]
plugin = "rules"
rule = "random"
p = 0.3

[sweep]
policies = ["conf", "rand"]
eta = [0.2, 0.5]
baselines = ["base", "helper"]
)";

// A byte-level tokenizer.json whose ids 65 and 66 are swapped: same size and kind as the experts'
// own vocabulary, yet ids mean other strings.
std::string swapped_tokenizer() {
  auto j = nlohmann::json::parse(Tokenizer::byte_level().to_json_string());
  auto& vocab = j.at("model").at("vocab");
  std::string a, b;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (it.value() == 65) a = it.key();
    if (it.value() == 66) b = it.key();
  }
  REQUIRE(!a.empty());
  REQUIRE(!b.empty());
  vocab[a] = 66;
  vocab[b] = 65;
  const auto path = test::temp_dir("colm-tok") + "/tokenizer.json";
  std::ofstream(path) << j.dump();
  return path;
}

std::string replace(std::string text, const std::string& from, const std::string& to) {
  const auto pos = text.find(from);
  REQUIRE(pos != std::string::npos);
  return text.replace(pos, from.size(), to);
}

struct Written {
  std::string dir, toml, db;
};

Written write(const std::string& text) {
  Written w;
  w.dir = test::temp_dir("colm-exp");
  w.db = w.dir + "/results.db";
  w.toml = w.dir + "/exp.toml";
  std::ofstream(w.toml) << replace(text, "DBPATH", w.db);
  return w;
}

struct Loaded {
  ExperimentSpec spec;
  LoadedExperiment loaded;
  std::vector<RunSpec> runs;
};

Loaded load(const std::string& text, const std::vector<std::string>& overrides = {}) {
  const auto w = write(text);
  Loaded l{parse_experiment_file(w.toml, overrides), {}, {}};
  LoadOptions o;
  o.dry_run = true;
  l.loaded = load_experiment(l.spec, default_registry(), o);
  l.runs = expand_runs(l.spec, l.loaded);
  return l;
}

// Parses and loads; returns the ConfigError message (fails the test when nothing is thrown).
std::string error_of(const std::string& text) {
  const auto w = write(text);
  try {
    const auto spec = parse_experiment_file(w.toml);
    LoadOptions o;
    o.dry_run = true;
    const auto loaded = load_experiment(spec, default_registry(), o);
    expand_runs(spec, loaded);
  } catch (const ConfigError& e) {
    CHECK_FALSE(fs::exists(w.db));  // no work: not even the database was created
    return e.what();
  }
  FAIL("no error for a malformed experiment");
  return "";
}

}  // namespace

TEST_CASE("a valid experiment loads and expands its grid", "[experiment]") {
  const auto l = load(kValid);
  CHECK(l.spec.name == "schema-test");
  CHECK(l.spec.base().name == "base");
  REQUIRE(l.spec.assistants().size() == 1);
  // 2 policies x 2 eta x 1 strategy x 1 seed + 2 single-model baselines.
  REQUIRE(l.runs.size() == 6);
  CHECK(l.runs[0].policy == "conf");
  CHECK(*l.runs[0].eta == Approx(0.2));
  CHECK(l.runs[1].policy == "conf");
  CHECK(*l.runs[1].eta == Approx(0.5));
  CHECK(l.runs[2].policy == "rand");
  CHECK(l.runs[4].kind == "single");
  CHECK(l.runs[4].policy == "base");
  CHECK(l.runs[5].policy == "helper");
  std::set<std::string> keys;
  for (const auto& r : l.runs) {
    CHECK(r.split == "test");
    CHECK(r.key.size() == 40);
    keys.insert(r.key);
  }
  CHECK(keys.size() == l.runs.size());
}

TEST_CASE("malformed experiments fail before any work, naming the problem and where", "[experiment]") {
  struct Case {
    const char* what;
    std::string text;
    std::vector<std::string> expected;  // substrings of the message
  };
  const std::vector<Case> cases = {
      {"bad TOML", replace(kValid, "[sweep]", "[sweep"), {"exp.toml:"}},
      {"unknown key", replace(kValid, "eta = [0.2, 0.5]", "eta = [0.2, 0.5]\netaa = 1"),
       {"unknown key 'sweep.etaa'", "exp.toml:"}},
      {"unknown key in a plugin table", replace(kValid, "n_layer = 1\nn_head = 2\nd_model = 16\nd_ff = 32\nmax_positions = 256\ninit_seed = 1",
                                               "n_layers = 1\nn_head = 2\nd_model = 16\nd_ff = 32\nmax_positions = 256\ninit_seed = 1"),
       {"unknown key 'experts.base.n_layers'", "exp.toml:"}},
      {"unknown section", replace(kValid, "[sweep]", "[sweeps]\neta = 1\n[sweep]"), {"unknown section 'sweeps'", "exp.toml:"}},
      {"wrong type", replace(kValid, "seed = 1", "seed = \"one\""), {"experiment.seed", "exp.toml:3:"}},
      {"missing required key", replace(kValid, "name = \"schema-test\"\n", ""), {"'name'", "[experiment]", "exp.toml:"}},
      {"unknown task plugin", replace(kValid, "plugin = \"arithmetic\"", "plugin = \"arithmetik\""),
       {"unknown task plugin 'arithmetik'", "available", "arithmetic", "exp.toml:"}},
      {"unknown expert plugin", replace(kValid, "plugin = \"transformer\"", "plugin = \"transfromer\""),
       {"unknown expert plugin 'transfromer'", "exp.toml:7:"}},
      {"missing checkpoint", replace(kValid, "family = \"gpt2\"", "checkpoint = \"/nonexistent/ckpt\""),
       {"checkpoint directory '/nonexistent/ckpt' does not exist", "experts.base.checkpoint", "exp.toml:"}},
      {"mismatched vocabularies",
       replace(kValid, "init_seed = 2", "init_seed = 2\nvocab = \"tokenizer\"\ntokenizer = \"" + swapped_tokenizer() + "\""),
       {"assistant 'helper'", "different tokenizers", "exp.toml:"}},
      {"unknown calibration metric", kValid + "\n[calibrate]\nmetric = \"acc\"\n",
       {"has no metric 'acc'", "accuracy", "calibrate.metric", "exp.toml:"}},
      {"an oracle in the sweep",
       replace(replace(kValid, "[sweep]", "[policies.oracle]\nplugin = \"rules\"\nrule = \"oracle\"\n\n[sweep]"),
               "policies = [\"conf\", \"rand\"]", "policies = [\"conf\", \"oracle\"]"),
       {"policy 'oracle' needs the gold next token", "sweep.policies", "exp.toml:"}},
      {"empty grid", replace(kValid, "eta = [0.2, 0.5]", "eta = []"), {"empty grid", "sweep.eta", "exp.toml:"}},
      {"no eta and no calibration", replace(kValid, "eta = [0.2, 0.5]\n", ""), {"empty grid", "sweep.eta"}},
      {"eta outside [0, 1]", replace(kValid, "eta = [0.2, 0.5]", "eta = [0.2, 1.5]"),
       {"outside [0, 1]", "sweep.eta", "exp.toml:"}},
      {"missing split", replace(kValid, "baselines = [\"base\", \"helper\"]", "baselines = [\"base\", \"helper\"]\nsplit = \"dev\""),
       {"no split 'dev'", "train, valid, test", "sweep.split"}},
      {"unknown policy in the sweep", replace(kValid, "policies = [\"conf\", \"rand\"]", "policies = [\"conf\", \"nope\"]"),
       {"unknown policy 'nope'", "conf, rand", "exp.toml:"}},
      {"unknown baseline", replace(kValid, "baselines = [\"base\", \"helper\"]", "baselines = [\"bsae\"]"),
       {"unknown expert 'bsae'", "sweep.baselines"}},
      {"two base experts", replace(kValid, "role = \"assistant\"", "role = \"base\""), {"exactly one expert", "found 2"}},
      {"bad role", replace(kValid, "role = \"assistant\"", "role = \"helper\""), {"'helper' is not one of", "experts.helper.role"}},
      {"calibration on the test split",
       kValid + "\n[calibrate]\nsplit = \"test\"\n", {"calibrate.split", "test"}},
      {"target rate outside [0, 1]", kValid + "\n[calibrate]\ntarget_rates = [0.2, 2]\n",
       {"outside [0, 1]", "calibrate.target_rates"}},
      {"a calibration grid with a repeated value", kValid + "\n[calibrate]\neta = [0.1, 0.3, 0.1]\n",
       {"twice", "calibrate.eta"}},
      {"zip of unequal axes", replace(kValid, "eta = [0.2, 0.5]", "eta = [0.2, 0.5, 0.7]\nzip = [\"policies\", \"eta\"]"),
       {"same length", "sweep.zip"}},
      {"unknown strategy", replace(kValid, "eta = [0.2, 0.5]", "eta = [0.2]\nstrategies = [\"greedy\"]"),
       {"'greedy' is not one of", "sweep.strategies"}},
      {"unknown rule (plugin-owned key)", replace(kValid, "rule = \"confidence\"", "rule = \"confident\""),
       {"policies.conf"}},
      {"trained policy with a bad objective",
       replace(kValid, "[sweep]", "[train.colm]\nobjective = \"likelihood\"\n\n[sweep]"),
       {"'likelihood' is not one of", "train.colm.objective"}},
  };
  for (const auto& c : cases) {
    INFO("case: " << c.what);
    const auto msg = error_of(c.text);
    INFO("message: " << msg);
    for (const auto& e : c.expected) CHECK(msg.find(e) != std::string::npos);
  }
}

TEST_CASE("an assistant with another tokenizer is refused before any work", "[experiment]") {
  const auto ckpt = colm::test::fixture("models/gpt2-tiny");
  const auto text = replace(kValid,
                            "family = \"gpt2\"\nn_layer = 1\nn_head = 2\nd_model = 16\nd_ff = 32\nmax_positions = 256\ninit_seed = 2",
                            "checkpoint = \"" + ckpt + "\"");
  const auto msg = error_of(text);
  INFO(msg);
  // The fixture has no tokenizer.json of its own: it cannot share the base's byte vocabulary.
  CHECK(msg.find("assistant 'helper'") != std::string::npos);
  CHECK(msg.find("tokenizer") != std::string::npos);
  CHECK(msg.find("exp.toml:") != std::string::npos);
}

TEST_CASE("zipped axes iterate together and seeds multiply policy runs only", "[experiment]") {
  SECTION("zip") {
    const auto l = load(replace(kValid, "eta = [0.2, 0.5]", "eta = [0.2, 0.5]\nzip = [\"policies\", \"eta\"]"));
    REQUIRE(l.runs.size() == 4);
    CHECK(l.runs[0].policy == "conf");
    CHECK(*l.runs[0].eta == Approx(0.2));
    CHECK(l.runs[1].policy == "rand");
    CHECK(*l.runs[1].eta == Approx(0.5));
  }
  SECTION("seeds and strategies") {
    const auto l = load(replace(kValid, "eta = [0.2, 0.5]", "eta = [0.2, 0.5]\nseeds = [1, 2, 3]\nstrategies = [\"defer\", \"mixture\"]"));
    // 2 policies x 2 eta x 2 strategies x 3 seeds = 24, + 2 greedy baselines (seed-independent).
    CHECK(l.runs.size() == 26);
  }
  SECTION("calibrated runs") {
    const auto l = load(kValid + "\n[calibrate]\neta = [0.1, 0.3]\npolicies = [\"conf\"]\n");
    REQUIRE(l.runs.size() == 7);
    const auto& cal = l.runs[4];
    CHECK(cal.policy == "conf");
    CHECK(cal.calibrated);
    CHECK_FALSE(cal.eta.has_value());
    CHECK(cal.params.contains("calibration_key"));
  }
  SECTION("calibrated_only: calibrated policies skip the grid") {
    const auto l = load(replace(kValid, "eta = [0.2, 0.5]", "eta = [0.2, 0.5]\ncalibrated_only = true") +
                        "\n[calibrate]\neta = [0.1, 0.3]\npolicies = [\"conf\"]\n");
    // rand on the grid (2), conf calibrated (1), 2 baselines.
    REQUIRE(l.runs.size() == 5);
    CHECK(l.runs[0].policy == "rand");
    CHECK(l.runs[1].policy == "rand");
    CHECK(l.runs[2].policy == "conf");
    CHECK(l.runs[2].calibrated);
    CHECK_THROWS_WITH(load(replace(kValid, "eta = [0.2, 0.5]", "eta = [0.2, 0.5]\ncalibrated_only = true")),
                      Catch::Contains("calibrated_only"));
  }
  SECTION("target rates: one calibrated run per rate") {
    const auto l = load(kValid + "\n[calibrate]\ntarget_rates = [0.1, 0.4]\npolicies = [\"conf\"]\n");
    REQUIRE(l.runs.size() == 8);
    CHECK(l.spec.calibrate->eta.empty());       // candidates by rate: the default rates are measured
    CHECK(l.spec.calibrate->rates.size() == 10);
    REQUIRE(l.runs[4].target_rate.has_value());
    CHECK(*l.runs[4].target_rate == Approx(0.1));
    CHECK(*l.runs[5].target_rate == Approx(0.4));
    CHECK(l.runs[4].key != l.runs[5].key);
    CHECK(describe_run(l.runs[5]).find("eta=calibrated@rate=0.4") != std::string::npos);
  }
  SECTION("curve runs: every calibrated policy at each calibration rate, and combinations") {
    const auto l = load(replace(kValid, "[sweep]",
                                "[combine.cd]\nstrategy = \"contrastive\"\nexpert = \"helper\"\namateur = \"base\"\n\n"
                                "[combine.pt]\nstrategy = \"proxy\"\nlarge = \"helper\"\ntuned = \"base\"\n"
                                "untuned = \"base\"\n\n[sweep]\ncurve = true") +
                        "\n[calibrate]\nrates = [0, 0.1, 0.3]\npolicies = [\"conf\"]\n");
    std::vector<double> curve_rates;
    std::vector<std::string> combined;
    for (const auto& r : l.runs) {
      if (r.curve) {
        curve_rates.push_back(*r.target_rate);
        CHECK(r.policy == "conf");
      }
      if (r.kind == "combine") combined.push_back(r.strategy);
      if (r.kind == "policy") CHECK(r.params.at("base") == "base");
    }
    CHECK(curve_rates == std::vector<double>{0, 0.1, 0.3});
    CHECK(combined == std::vector<std::string>{"contrastive", "proxy"});
    CHECK_THROWS_WITH(load(replace(kValid, "[sweep]", "[sweep]\ncurve = true")), Catch::Contains("sweep.curve"));
    CHECK_THROWS_WITH(load(replace(kValid, "[sweep]", "[combine.cd]\nstrategy = \"contrastive\"\nexpert = \"x\"\n"
                                                      "amateur = \"base\"\n\n[sweep]")),
                      Catch::Contains("combine.cd.expert") && Catch::Contains("unknown expert 'x'"));
  }
  SECTION("an output layer padded beyond the tokenizer is compatible") {
    const auto l = load(replace(kValid, "init_seed = 2", "init_seed = 2\nvocab_size = 300"));
    CHECK(l.runs.size() == 6);
  }
  SECTION("--set overrides the grid") {
    const auto l = load(kValid, {"sweep.eta=[0.9]", "sweep.baselines=[]"});
    REQUIRE(l.runs.size() == 2);
    CHECK(*l.runs[0].eta == Approx(0.9));
  }
}

TEST_CASE("an lm-trained expert's key follows the seed it trains with, explicit or from the experiment",
          "[experiment]") {
  // base_lm: the base fine-tuned with lm; its training seed defaults to experiment.seed.
  const auto base = kValid.substr(kValid.find("[experts.base]"), kValid.find("[experts.helper]") - kValid.find("[experts.base]"));
  const auto with_lm = replace(kValid, "[task]",
                               replace(replace(base, "[experts.base]", "[experts.base_lm]"), "role = \"base\"",
                                       "role = \"reference\"") + R"([experts.base_lm.train]
steps = 2

[task]
seed = 4)");  // the task's data pinned: only the training seed follows experiment.seed
  const auto seed1 = load(with_lm);
  const auto seed2 = load(with_lm, {"experiment.seed=2"});
  CHECK(seed1.spec.expert("base_lm").train->seed == 1);
  CHECK(seed2.spec.expert("base_lm").train->seed == 2);
  CHECK(seed1.loaded.expert_keys.at("base_lm") != seed2.loaded.expert_keys.at("base_lm"));
  // An explicit seed wins over the experiment's: the same key whatever experiment.seed is.
  const auto pinned = replace(with_lm, "steps = 2", "steps = 2\nseed = 9");
  CHECK(load(pinned).loaded.expert_keys.at("base_lm") ==
        load(pinned, {"experiment.seed=2"}).loaded.expert_keys.at("base_lm"));
  CHECK(load(with_lm).loaded.expert_keys.at("base_lm") == seed1.loaded.expert_keys.at("base_lm"));  // stable
}

TEST_CASE("run keys are stable and depend on what changes results", "[experiment]") {
  const auto a = load(kValid);
  const auto b = load(kValid);
  REQUIRE(a.runs.size() == b.runs.size());
  for (size_t i = 0; i < a.runs.size(); ++i) CHECK(a.runs[i].key == b.runs[i].key);

  // Renaming a policy or changing the batch size keeps the keys (labels and batch-invariant settings).
  auto renamed = replace(replace(kValid, "[policies.conf]", "[policies.confidence]"), "[\"conf\", \"rand\"]",
                         "[\"confidence\", \"rand\"]");
  const auto r = load(renamed);
  CHECK(r.runs[0].key == a.runs[0].key);
  const auto bs = load(replace(kValid, "eta = [0.2, 0.5]", "eta = [0.2, 0.5]\nbatch_size = 3"));
  CHECK(bs.runs[0].key == a.runs[0].key);

  // The expert weights, the task data and the policy's parameters each change the keys.
  const auto init = load(replace(kValid, "init_seed = 1", "init_seed = 7"));
  CHECK(init.runs[0].key != a.runs[0].key);
  CHECK(init.runs[5].key == a.runs[5].key);  // the helper alone did not change
  const auto data = load(replace(kValid, "test_size = 10", "test_size = 11"));
  CHECK(data.runs[0].key != a.runs[0].key);
  const auto p = load(replace(kValid, "p = 0.3", "p = 0.4"));
  CHECK(p.runs[0].key == a.runs[0].key);  // conf unchanged
  CHECK(p.runs[2].key != a.runs[2].key);  // rand changed
}

TEST_CASE("colm run --dry-run prints the runs; a malformed file exits non-zero with file:line", "[experiment][cli]") {
  const auto w = write(kValid);
  std::string out;
  const int rc = test::run_command(test::colm_binary() + " run " + w.toml + " --dry-run", &out);
  INFO(out);
  CHECK(rc == 0);
  CHECK(out.find("run 0: policy=conf eta=0.2 strategy=defer split=test seed=1 key=") != std::string::npos);
  CHECK(out.find("run 5: single=helper") != std::string::npos);
  CHECK_FALSE(fs::exists(w.db));

  std::string again;
  test::run_command(test::colm_binary() + " run " + w.toml + " --dry-run", &again);
  CHECK(again == out);

  const auto bad = write(replace(kValid, "eta = [0.2, 0.5]", "eta = [0.2, 0.5]\netaa = 1"));
  std::string err;
  const int bad_rc = test::run_command(test::colm_binary() + " run " + bad.toml, &err);
  INFO(err);
  CHECK(bad_rc != 0);
  CHECK(err.find("unknown key 'sweep.etaa'") != std::string::npos);
  CHECK(err.find("exp.toml:") != std::string::npos);
  CHECK_FALSE(fs::exists(bad.db));
}
