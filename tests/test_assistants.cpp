// Policies over a subset of the assistants (`assistants = [...]`): what is decoded, trained, keyed
// and reported is that subset, in the experiment's order; and the parse errors of the key.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "harness/experiment.hpp"
#include "harness/report.hpp"
#include "harness/runner.hpp"
#include "harness/store.hpp"
#include "plugin/registry.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using namespace colm;

namespace {

std::string tiny(const std::string& name, const std::string& role, int seed) {
  return "[experts." + name + "]\nplugin = \"transformer\"\nrole = \"" + role +
         "\"\nfamily = \"gpt2\"\nn_layer = 1\nn_head = 2\nd_model = 16\nd_ff = 32\nmax_positions = 256\ninit_seed = " +
         std::to_string(seed) + "\n\n";
}

std::string experiment(const std::string& dir, const std::string& body) {
  const auto path = dir + "/exp.toml";
  std::ofstream(path) << "[experiment]\nname = \"subset\"\nseed = 3\ndatabase = \"" << dir << "/colm.db\"\n"
                      << "artifacts_dir = \"" << dir << "/artifacts\"\n\n"
                      << tiny("base", "base", 1) << tiny("first", "assistant", 2) << tiny("second", "assistant", 3)
                      << "[task]\nplugin = \"arithmetic\"\ntrain_size = 16\nvalid_size = 4\ntest_size = 5\nmax_tokens = 10\n\n"
                      << body;
  return path;
}

std::string config_error(const std::string& toml) { return test::experiment_config_error(toml); }

}  // namespace

TEST_CASE("a policy over a subset of the assistants decodes, trains and is keyed with that subset", "[assistants][runner]") {
  const auto dir = test::temp_dir("assistants-subset");
  const auto toml = experiment(dir, R"([train.both]
objective = "marginal_likelihood"
finetune_base = false
steps = 2
lr = 0.01
batch_size = 4

[train.only_second]
objective = "marginal_likelihood"
assistants = ["second"]
finetune_base = false
steps = 2
lr = 0.01
batch_size = 4

[policies.always_second]
plugin = "rules"
rule = "assistant_only"
assistants = ["second"]

[policies.always_second_of_two]
plugin = "rules"
rule = "assistant_only"
assistant = 2

[policies.always_first]
plugin = "rules"
rule = "assistant_only"
assistants = ["second", "first"]

[sweep]
policies = ["both", "only_second", "always_second", "always_second_of_two", "always_first"]
eta = [0.5]
baselines = ["first", "second"]
batch_size = 5

[report]
bootstrap_samples = 0
)");
  const auto spec = parse_experiment_file(toml);
  // The subset keeps the experiment's order whatever order the key lists.
  CHECK(spec.policy("always_first").assistants == std::vector<std::string>{"first", "second"});
  CHECK(spec.policy("both").assistants == std::vector<std::string>{"first", "second"});
  CHECK(spec.policy("only_second").assistants == std::vector<std::string>{"second"});
  auto loaded = load_experiment(spec, default_registry(), {});
  // A different set of assistants is a different policy artifact, even with the same training keys.
  CHECK(loaded.policy_keys.at("both") != loaded.policy_keys.at("only_second"));
  const auto runs = expand_runs(spec, loaded);
  const auto summary = run_experiment(spec, loaded, runs, default_registry(), {});
  REQUIRE(summary.runs_failed == 0);

  auto store = ResultsStore::open(dir + "/colm.db");
  std::map<std::string, RunRecord> by_policy;
  for (const auto& r : store.runs()) by_policy[r.policy] = r;
  auto params = [&](const std::string& p) { return nlohmann::json::parse(by_policy.at(p).params_json); };
  auto outputs = [&](const std::string& p) {
    std::map<std::string, std::string> out;
    for (const auto& e : store.examples(by_policy.at(p).id, false)) out[e.example_id] = e.output;
    return out;
  };
  CHECK(params("only_second").at("assistants") == nlohmann::json::array({"second"}));
  CHECK(params("only_second").at("assistant_keys") == nlohmann::json::array({loaded.expert_keys.at("second")}));
  CHECK(params("both").at("assistants") == nlohmann::json::array({"first", "second"}));
  // Always deferring within {second} is the second assistant alone, as is choice 2 of {first, second}.
  CHECK(outputs("always_second") == outputs("second"));
  CHECK(outputs("always_second_of_two") == outputs("second"));
  CHECK(outputs("always_second") != outputs("first"));
  CHECK(outputs("always_first") == outputs("first"));  // choice 1 of ["second", "first"] in the experiment's order
  // The trained heads decide between 2 (base, second) and 3 (base, first, second) models.
  for (const auto& [policy, width] : std::map<std::string, size_t>{{"only_second", 2}, {"both", 3}}) {
    const auto ex = store.examples(by_policy.at(policy).id, true);
    REQUIRE_FALSE(ex.empty());
    REQUIRE_FALSE(ex.front().tokens.empty());
    INFO(policy);
    CHECK(ex.front().tokens.front().probs.size() == width);
  }
  // The report names each run's own sources: source 1 of always_second is "second".
  ReportOptions ro;
  ro.bootstrap_samples = 0;
  const auto data = load_report(store, ro);
  REQUIRE(data.experiments.size() == 1);
  bool seen = false;
  for (const auto& d : data.experiments[0].deferrals) {
    const auto* r = data.experiments[0].find_run(d.run_id);
    if (r->run.policy != "always_second") continue;
    seen = true;
    CHECK(d.source_names == std::vector<std::string>{"base", "second"});
    REQUIRE(d.by_source.size() == 2);
    CHECK(d.by_source[1] == d.tokens);
  }
  CHECK(seen);
  const auto json = nlohmann::json::parse(report_json(data));
  for (const auto& r : json.at("runs"))
    if (r.at("policy") == "always_second") {
      CHECK(r.at("assistants") == nlohmann::json::array({"second"}));
      REQUIRE(r.at("by_model").size() == 2);
      CHECK(r.at("by_model")[1].at("model") == "second");
      CHECK(r.at("by_model")[1].at("share") == 1.0);
    }
}

TEST_CASE("the assistants key names distinct experts with role assistant", "[assistants][config]") {
  const auto dir = test::temp_dir("assistants-bad");
  auto error_of = [&](const std::string& list) {
    return config_error(experiment(dir, "[policies.c]\nplugin = \"rules\"\nrule = \"confidence\"\nassistants = " +
                                            list + "\n\n[sweep]\npolicies = [\"c\"]\neta = [0.5]\n"));
  };
  CHECK_THAT(error_of("[\"third\"]"), Catch::Contains("policies.c.assistants") && Catch::Contains("'third'") &&
                                          Catch::Contains("assistants: first, second"));
  CHECK_THAT(error_of("[\"base\"]"), Catch::Contains("not an expert with role = \"assistant\""));
  CHECK_THAT(error_of("[\"first\", \"first\"]"), Catch::Contains("named twice"));
  CHECK_THAT(error_of("[]"), Catch::Contains("at least one"));
  CHECK(error_of("[\"second\"]").empty());
  // A fixed assistant beyond the subset is the plugin's error, raised when the experiment loads.
  const auto toml = experiment(dir, "[policies.c]\nplugin = \"rules\"\nrule = \"confidence\"\nassistants = [\"second\"]\n"
                                    "assistant = 2\n\n[sweep]\npolicies = [\"c\"]\neta = [0.5]\n");
  const auto spec = parse_experiment_file(toml);
  CHECK_THROWS_WITH(load_experiment(spec, default_registry(), {}), Catch::Contains("must be in 1..1"));
}
