// Tests of what makes comparisons fair: calibration by deferral rate, decoding with a named base
// (another policy's fine-tuned base), the paper's weak-supervision loss, contrastive decoding and
// proxy tuning against argmaxes computed by hand, and the split guard.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "harness/experiment.hpp"
#include "harness/runner.hpp"
#include "harness/store.hpp"
#include "method/decode.hpp"
#include "method/objectives.hpp"
#include "plugin/registry.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using namespace colm;

namespace {

std::shared_ptr<Expert> tiny_expert(int seed, int d_model = 32) {
  const std::string toml = "family = \"gpt2\"\nn_layer = 1\nn_head = 2\nd_model = " + std::to_string(d_model) +
                           "\nd_ff = " + std::to_string(2 * d_model) +
                           "\nmax_positions = 128\nvocab = \"bytes\"\ninit_seed = " + std::to_string(seed) + "\n";
  PluginContext ctx;
  ctx.instance = "expert" + std::to_string(seed);
  return default_registry().create_expert("transformer", ConfigView::from_string(toml, "test_fair"), ctx);
}

// Last-position logits of `e` after reading ids, teacher-forced (no cache): [V] float32, cut to vocab.
torch::Tensor last_logits(Expert& e, const std::vector<int64_t>& ids, int64_t vocab) {
  torch::NoGradGuard no_grad;
  const auto x = torch::tensor(ids, torch::kLong).unsqueeze(0);
  return e.forward(x, torch::Tensor()).logits[0][int64_t(ids.size()) - 1].narrow(0, 0, vocab).to(torch::kFloat32);
}

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t pos = text.find(from); pos != std::string::npos; pos = text.find(from, pos + to.size()))
    text.replace(pos, from.size(), to);
  return text;
}

const std::string kExperts = colm::test::tiny_experts();

std::string experiment(const std::string& dir, const std::string& body) {
  const auto path = dir + "/exp.toml";
  std::ofstream(path) << "[experiment]\nname = \"fair\"\nseed = 5\ndatabase = \"" << dir << "/colm.db\"\n"
                      << "artifacts_dir = \"" << dir << "/artifacts\"\n\n" << kExperts << "\n" << body;
  return path;
}

std::string config_error(const std::string& toml) { return test::experiment_config_error(toml); }

struct Ran {
  ExperimentSpec spec;
  LoadedExperiment loaded;
  std::vector<RunSpec> runs;
  RunSummary summary;
};

Ran run(const std::string& toml) {
  Ran r{parse_experiment_file(toml), {}, {}, {}};
  r.loaded = load_experiment(r.spec, default_registry(), {});
  r.runs = expand_runs(r.spec, r.loaded);
  r.summary = run_experiment(r.spec, r.loaded, r.runs, default_registry(), {});
  return r;
}

}  // namespace

TEST_CASE("threshold_for_rate places eta so that the given share of P(defer) values exceeds it", "[fair][calibrate]") {
  const std::vector<double> p = {0.9, 0.1, 0.5, 0.7, 0.3, 0.2, 0.8, 0.4, 0.6, 0.0};
  auto share_above = [&](double eta) {
    double n = 0;
    for (double v : p) n += v > eta;
    return n / double(p.size());
  };
  for (double rate : {0.1, 0.2, 0.3, 0.5, 0.9}) {
    const double eta = threshold_for_rate(p, rate);
    CHECK(share_above(eta) == Approx(rate));
  }
  CHECK(threshold_for_rate(p, 0.0) == 1.0);       // rate 0: never defer
  CHECK(share_above(threshold_for_rate(p, 1.0)) == Approx(0.9));  // 0.0 cannot exceed anything >= 0
  CHECK(threshold_for_rate({}, 0.3) == 1.0);
}

TEST_CASE("calibration by rate measures valid deferral rates within 0.01 of each target", "[fair][calibrate][runner]") {
  const auto dir = test::temp_dir("fair-rates");
  const auto toml = experiment(dir, R"([task]
plugin = "arithmetic"
train_size = 8
valid_size = 24
test_size = 4
max_tokens = 40

[policies.confidence]
plugin = "rules"
rule = "confidence"

[calibrate]
rates = [0.0, 0.05, 0.2, 0.5]
refine = 4
policies = ["confidence"]

[sweep]
policies = ["confidence"]
batch_size = 8
calibrated_only = true

[report]
bootstrap_samples = 0
)");
  const auto r = run(toml);
  auto store = ResultsStore::open(dir + "/colm.db");
  const auto rows = store.calibration(store.experiments().front().id);
  std::map<double, double> measured;  // target rate -> measured rate
  // Rows of one point share a threshold; pair them through it.
  std::map<double, double> rate_at, target_at;
  for (const auto& row : rows) {
    if (row.metric == "deferral_rate") rate_at[row.threshold] = row.value;
    if (row.metric == "target_rate") target_at[row.threshold] = row.value;
  }
  REQUIRE(target_at.size() == 4);
  for (const auto& [eta, target] : target_at) {
    INFO("target " << target << " eta " << eta << " measured " << rate_at.at(eta));
    CHECK(std::fabs(rate_at.at(eta) - target) <= 0.01);
    measured[target] = rate_at.at(eta);
  }
  CHECK(measured.at(0.0) == 0.0);
  // The calibrated test run records its threshold and whether the choice sat at an edge.
  for (const auto& run : store.runs()) {
    const auto params = nlohmann::json::parse(run.params_json);
    CHECK(params.at("calibrated").get<bool>());
    CHECK(params.at("base") == "base");
    CHECK(params.at("rule") == "confidence");
    REQUIRE(run.threshold.has_value());
    bool is_candidate = false;
    for (const auto& [eta, target] : target_at) is_candidate = is_candidate || eta == *run.threshold;
    CHECK(is_candidate);
  }
  // A rerun decodes nothing: every candidate is a stored artifact.
  const auto again = run(toml);
  CHECK(again.summary.calibration_points == 0);
  CHECK(again.summary.runs_skipped == int64_t(again.runs.size()));
}

TEST_CASE("a policy decoding with another policy's fine-tuned base uses that base", "[fair][base][runner]") {
  const auto dir = test::temp_dir("fair-base");
  const auto toml = experiment(dir, R"([task]
plugin = "arithmetic"
train_size = 16
valid_size = 4
test_size = 4
max_tokens = 8

[train.colm]
plugin = "learned"
objective = "marginal_likelihood"
steps = 3
lr = 0.01
batch_size = 4

[policies.confidence]
plugin = "rules"
rule = "confidence"

[policies.confidence_colm]
plugin = "rules"
rule = "confidence"
base = "colm"

[sweep]
policies = ["confidence", "confidence_colm", "colm"]
eta = [0.5]
batch_size = 4

[report]
bootstrap_samples = 0
)");
  const auto r = run(toml);
  CHECK(r.summary.runs_failed == 0);
  // The tuned base as the trainer saved it, loaded on its own.
  const auto tuned_dir = fs::path(dir) / "artifacts" / "policies" / r.loaded.policy_keys.at("colm") / "base";
  REQUIRE(fs::exists(tuned_dir / "model.safetensors"));
  const auto tuned = default_registry().create_expert(
      "transformer", ConfigView::from_string("checkpoint = \"" + tuned_dir.string() + "\"\n", "tuned"), PluginContext{});
  const auto untuned_fp = r.loaded.experts.at("base")->fingerprint();
  REQUIRE(tuned->fingerprint() != untuned_fp);

  auto store = ResultsStore::open(dir + "/colm.db");
  std::map<std::string, nlohmann::json> params;
  for (const auto& run : store.runs()) params[run.policy] = nlohmann::json::parse(run.params_json);
  CHECK(params.at("confidence").at("base") == "base");
  CHECK(params.at("confidence").at("base_fingerprint") == untuned_fp);
  CHECK(params.at("confidence_colm").at("base") == "colm");
  CHECK(params.at("confidence_colm").at("base_fingerprint") == tuned->fingerprint());
  CHECK(params.at("colm").at("base") == "colm");
  CHECK(params.at("colm").at("base_fingerprint") == tuned->fingerprint());
  CHECK(params.at("colm").at("objective") == "marginal_likelihood");

  // The outputs are the tuned base's: decoding it directly with the same rule gives the same text.
  auto policy = default_registry().create_policy(
      "rules", ConfigView::from_string("rule = \"confidence\"\n", "p"), [] {
        PluginContext c;
        c.num_assistants = 1;
        return c;
      }());
  const auto exs = r.loaded.task->examples("test");
  std::vector<std::string> prompts;
  for (const auto& e : exs) prompts.push_back(e.prompt);
  DecodeOptions o;
  o.threshold = 0.5;
  o.max_tokens = 8;
  o.stop = r.loaded.task->generation().stop;
  o.seed = uint64_t(r.spec.sweep.seeds.front());
  std::vector<uint64_t> seeds;
  for (size_t i = 0; i < prompts.size(); ++i) seeds.push_back(i);
  const auto direct = collaborative_decode(*tuned, {r.loaded.experts.at("helper").get()}, *policy, prompts, seeds, o);
  for (const auto& run : store.runs()) {
    if (run.policy != "confidence_colm") continue;
    const auto examples = store.examples(run.id, false);
    REQUIRE(examples.size() == direct.size());
    for (const auto& e : examples) CHECK(e.output == direct.at(size_t(e.index)).output);
  }
}

TEST_CASE("a base that is neither an expert nor a fine-tuned policy is refused", "[fair][base][config]") {
  const auto dir = test::temp_dir("fair-base-bad");
  const std::string task = "[task]\nplugin = \"arithmetic\"\n\n";
  const std::string sweep = "[sweep]\npolicies = [\"c\"]\neta = [0.5]\n";
  auto error_of = [&](const std::string& body) { return config_error(experiment(dir, task + body + sweep)); };
  CHECK_THAT(error_of("[policies.c]\nplugin = \"rules\"\nrule = \"confidence\"\nbase = \"nobody\"\n\n"),
             Catch::Contains("unknown base 'nobody'") && Catch::Contains("policies.c.base"));
  CHECK_THAT(error_of("[policies.c]\nplugin = \"rules\"\nrule = \"confidence\"\nbase = \"helper\"\n\n"),
             Catch::Contains("is an assistant"));
  CHECK_THAT(error_of("[train.t]\nobjective = \"marginal_likelihood\"\nfinetune_base = false\n\n"
                      "[policies.c]\nplugin = \"rules\"\nrule = \"confidence\"\nbase = \"t\"\n\n"),
             Catch::Contains("has no fine-tuned base"));
}

TEST_CASE("a policy's training split must differ from the calibration and sweep splits", "[fair][config]") {
  const auto dir = test::temp_dir("fair-guard");
  const std::string head = "[task]\nplugin = \"arithmetic\"\n\n[train.colm]\nobjective = \"marginal_likelihood\"\n";
  auto error_of = [&](const std::string& body) { return config_error(experiment(dir, head + body)); };
  CHECK_THAT(error_of("split = \"test\"\n\n[sweep]\npolicies = [\"colm\"]\neta = [0.5]\n"),
             Catch::Contains("train.colm.split") && Catch::Contains("sweep's split"));
  CHECK_THAT(error_of("split = \"valid\"\n\n[calibrate]\npolicies = [\"colm\"]\n\n[sweep]\npolicies = [\"colm\"]\n"),
             Catch::Contains("train.colm.split") && Catch::Contains("calibration split"));
  CHECK(error_of("\n[calibrate]\npolicies = [\"colm\"]\n\n[sweep]\npolicies = [\"colm\"]\n").empty());
}

TEST_CASE("the weak-supervision loss is lm_weight * LM + (1 - lm_weight) * weighted BCE", "[fair][objectives]") {
  torch::manual_seed(11);
  const int64_t B = 2, T = 5, V = 7;
  const auto logits = torch::randn({B, T, V});
  const auto ids = torch::randint(V, {B, T}, torch::kLong);
  auto mask = torch::ones({B, T});
  mask[0][0] = 0, mask[1][0] = 0, mask[1][1] = 0, mask[0][4] = 0;
  const auto head = torch::randn({B, T - 1, 2});
  const auto labels = torch::tensor({0, 1, 1, 0, 1, 0, 0, 1}, torch::kLong).view({B, T - 1});
  for (double pos_weight : {1.0, 5.0}) {
    for (double lm_weight : {0.0, 2.0 / 3.0}) {
      double lm = 0, bce = 0;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t t = 1; t < T; ++t) {
          if (mask[b][t].item<double>() == 0) continue;
          // LM: -log softmax(logits[b, t-1])[ids[b, t]], written out.
          double z = 0;
          for (int64_t v = 0; v < V; ++v) z += std::exp(logits[b][t - 1][v].item<double>());
          lm -= logits[b][t - 1][ids[b][t].item<int64_t>()].item<double>() - std::log(z);
          // BCE with logits on x = head[1] - head[0], target y, pos_weight on the positives.
          const double x = head[b][t - 1][1].item<double>() - head[b][t - 1][0].item<double>();
          const double y = double(labels[b][t - 1].item<int64_t>());
          const double sig = 1 / (1 + std::exp(-x));
          bce -= pos_weight * y * std::log(sig) + (1 - y) * std::log(1 - sig);
        }
      const double expected = lm_weight * lm + (1 - lm_weight) * bce;
      const double got =
          weak_supervision_loss_sum(logits, ids, mask, head, labels, pos_weight, lm_weight).item<double>();
      INFO("pos_weight " << pos_weight << " lm_weight " << lm_weight);
      CHECK(got == Approx(expected).epsilon(1e-5));
    }
  }
  CHECK_THROWS_WITH(weak_supervision_loss_sum(logits, ids, mask, head, labels, 5.0, 1.0),
                    Catch::Contains("lm_weight must be in [0, 1)"));
}

TEST_CASE("contrastive decoding and proxy tuning emit the argmaxes computed by hand", "[fair][decode]") {
  auto a = tiny_expert(1), b = tiny_expert(2, 48), c = tiny_expert(3);
  const int64_t V = a->tokenizer().vocab_size();
  const std::vector<std::string> prompts = {"12 + 30 = ", "Q: 7*6?", "x"};
  DecodeOptions o;
  o.max_tokens = 6;
  o.batch_size = 2;  // two batches, one of two rows
  const auto alpha = GENERATE(0.1, 0.9);
  SECTION("contrastive") {
    const CombineOptions co{"contrastive", alpha, 0.5};
    const auto out = combined_decode({a.get(), b.get()}, co, prompts, {}, o);
    int64_t overridden = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      auto ids = a->tokenizer().encode(prompts[i], true);
      REQUIRE(out[i].ids.size() == 6);
      for (size_t t = 0; t < out[i].ids.size(); ++t) {
        const auto le = torch::log_softmax(last_logits(*a, ids, V).to(torch::kDouble), 0);
        const auto la = torch::log_softmax(last_logits(*b, ids, V).to(torch::kDouble), 0);
        const double top = le.max().item<double>();
        int64_t best = -1, own = le.argmax().item<int64_t>();
        double best_score = -std::numeric_limits<double>::infinity();
        for (int64_t v = 0; v < V; ++v) {
          const double lev = le[v].item<double>();
          if (std::exp(lev) < alpha * std::exp(top)) continue;  // outside the plausible set
          const double score = lev - 0.5 * la[v].item<double>();
          if (score > best_score) best_score = score, best = v;
        }
        INFO("prompt " << i << " step " << t);
        CHECK(out[i].ids[t] == best);
        CHECK(out[i].trace[t].source == (best == own ? 0 : 1));
        overridden += best != own;
        ids.push_back(best);
      }
      CHECK(out[i].n_deferred == int64_t(std::count_if(out[i].trace.begin(), out[i].trace.end(),
                                                       [](const TokenTrace& tr) { return tr.source != 0; })));
    }
    // With near-uniform random models the amateur's penalty decides some tokens when alpha is loose.
    if (alpha < 0.5) CHECK(overridden > 0);
  }
  SECTION("proxy") {
    const CombineOptions co{"proxy", alpha, 0.5};
    const auto out = combined_decode({a.get(), b.get(), c.get()}, co, prompts, {}, o);
    int64_t overridden = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      auto ids = a->tokenizer().encode(prompts[i], true);
      for (size_t t = 0; t < out[i].ids.size(); ++t) {
        const auto s = last_logits(*a, ids, V) + (last_logits(*b, ids, V) - last_logits(*c, ids, V));
        const int64_t best = s.argmax().item<int64_t>(), own = last_logits(*a, ids, V).argmax().item<int64_t>();
        INFO("prompt " << i << " step " << t);
        CHECK(out[i].ids[t] == best);
        CHECK(out[i].trace[t].source == (best == own ? 0 : 1));
        overridden += best != own;
        ids.push_back(best);
      }
    }
    CHECK(overridden > 0);
  }
}

TEST_CASE("combinations refuse models that do not share a vocabulary and wrong model counts", "[fair][decode]") {
  auto a = tiny_expert(1), b = tiny_expert(2);
  DecodeOptions o;
  o.max_tokens = 2;
  CHECK_THROWS_WITH(combined_decode({a.get()}, CombineOptions{"contrastive", 0.1, 0.5}, {"x"}, {}, o),
                    Catch::Contains("needs 2 models"));
  CHECK_THROWS_WITH(combined_decode({a.get(), b.get()}, CombineOptions{"proxy", 0.1, 0.5}, {"x"}, {}, o),
                    Catch::Contains("needs 3 models"));
  CHECK_THROWS_WITH(combined_decode({a.get(), b.get()}, CombineOptions{"blend", 0.1, 0.5}, {"x"}, {}, o),
                    Catch::Contains("unknown combination"));
}

TEST_CASE("reloaded experts keep the dtype the experiment asked for", "[fair][base][runner][precision]") {
  // A bf16 base: its jointly fine-tuned copy (which Co-LLM and the rules on its base decode with)
  // and its lm-trained reference copy come back in bf16, not in the plugin's default f32.
  const auto dir = test::temp_dir("fair-dtype");
  const auto path = dir + "/exp.toml";
  const auto bf16_experts = replace_all(kExperts, "init_seed = 1\n", "init_seed = 1\ndtype = \"bfloat16\"\n");
  const auto base_table = bf16_experts.substr(0, bf16_experts.find("[experts.helper]"));  // the base, in bf16
  std::ofstream(path) << "[experiment]\nname = \"dtype\"\nseed = 5\ndatabase = \"" << dir << "/colm.db\"\n"
                      << "artifacts_dir = \"" << dir << "/artifacts\"\n\n"
                      << bf16_experts << "\n"
                      << replace_all(replace_all(base_table, "[experts.base]", "[experts.base_lm]"), "role = \"base\"",
                                     "role = \"reference\"")
                      << R"(
[experts.base_lm.train]
steps = 2
batch_size = 4
seq_len = 256

[task]
plugin = "arithmetic"
train_size = 8
valid_size = 4
test_size = 4
max_tokens = 6

[train.colm]
objective = "marginal_likelihood"
steps = 2
lr = 0.01
batch_size = 4

[policies.confidence_colm]
plugin = "rules"
rule = "confidence"
base = "colm"

[sweep]
policies = ["colm", "confidence_colm"]
eta = [0.5]
baselines = ["base_lm"]
batch_size = 4

[report]
bootstrap_samples = 0
)";
  const auto r = run(path);
  REQUIRE(r.summary.runs_failed == 0);
  CHECK(r.loaded.experts.at("base")->info().dtype == "bfloat16");
  CHECK(r.loaded.experts.at("base_lm")->info().dtype == "bfloat16");  // reloaded from its lm artifact
  const auto tuned_dir = fs::path(dir) / "artifacts" / "policies" / r.loaded.policy_keys.at("colm") / "base";
  auto load = [&](const std::string& dtype) {
    return default_registry().create_expert(
        "transformer",
        ConfigView::from_string("checkpoint = \"" + tuned_dir.string() + "\"\ndtype = \"" + dtype + "\"\n", "t"),
        PluginContext{});
  };
  const auto bf16_fp = load("bfloat16")->fingerprint();
  REQUIRE(bf16_fp != load("float32")->fingerprint());
  auto store = ResultsStore::open(dir + "/colm.db");
  int checked = 0;
  for (const auto& run : store.runs()) {
    const auto params = nlohmann::json::parse(run.params_json);
    if (run.policy != "colm" && run.policy != "confidence_colm") continue;
    INFO(run.policy);
    CHECK(params.at("base_fingerprint") == bf16_fp);  // decoded by the tuned base in bf16
    ++checked;
  }
  CHECK(checked == 2);
}
