// Tests of the runner end to end on a tiny experiment (two fresh byte-level experts, the arithmetic
// task, rule policies, calibration): storage, resume, determinism, shards, merge, calibration data.
#include <catch2/catch.hpp>

#include <SQLiteCpp/SQLiteCpp.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "harness/experiment.hpp"
#include "plugin/registry.hpp"
#include "harness/runner.hpp"
#include "harness/store.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using namespace colm;

namespace {

// 4 grid runs + 2 calibrated runs + 2 single-model baselines, 6 test examples each.
const std::string kTiny = R"([experiment]
name = "runner-test"
seed = 3
database = "DBPATH"
artifacts_dir = "ARTDIR"

)" + colm::test::tiny_experts() + R"(
[task]
plugin = "arithmetic"
train_size = 8
valid_size = 4
test_size = 6
max_tokens = 8

[policies.base_only]
plugin = "rules"
rule = "base_only"

[policies.assistant_only]
plugin = "rules"
rule = "assistant_only"

[policies.random]
plugin = "rules"
rule = "random"
p = 0.4

[policies.confidence]
plugin = "rules"
rule = "confidence"

[calibrate]
eta = [0.3, 0.95]
policies = ["random", "confidence"]

[sweep]
policies = ["base_only", "assistant_only", "random", "confidence"]
eta = [0.5]
baselines = ["base", "helper"]
batch_size = 4

[report]
bootstrap_samples = 200
)";
constexpr size_t kRuns = 8;
constexpr size_t kTestExamples = 6;

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t pos = text.find(from); pos != std::string::npos; pos = text.find(from, pos + to.size()))
    text.replace(pos, from.size(), to);
  return text;
}

// An experiment file in dir writing to db (artifacts under dir).
std::string write_experiment(const std::string& dir, const std::string& db, const std::string& text = kTiny) {
  const auto path = dir + "/exp.toml";
  std::ofstream(path) << replace_all(replace_all(text, "DBPATH", db), "ARTDIR", dir + "/artifacts");
  return path;
}

RunSummary run_in_process(const std::string& toml, const std::string& shard = "0/1") {
  const auto spec = parse_experiment_file(toml);
  auto loaded = load_experiment(spec, default_registry(), {});
  const auto runs = expand_runs(spec, loaded);
  RunnerOptions o;
  o.shard = parse_shard(shard);
  return run_experiment(spec, loaded, runs, default_registry(), o);
}

std::string num(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}

// Everything a database says about the results, keyed by content (not by row ids or timings):
// runs, metrics with intervals, examples with their metrics, tokens with sources and probabilities.
std::string snapshot(const std::string& db) {
  auto store = ResultsStore::open(db);
  std::map<std::string, std::string> by_key;
  for (const auto& r : store.runs()) {
    std::ostringstream os;
    os << r.experiment << " " << r.policy << " " << (r.threshold ? num(*r.threshold) : "-") << " " << r.strategy << " "
       << r.split << " " << r.seed << " " << r.status << "\n";
    for (const auto& m : store.metrics(r.id))
      os << "  metric " << m.name << " " << num(m.value) << " [" << (m.ci_low ? num(*m.ci_low) : "-") << ", "
         << (m.ci_high ? num(*m.ci_high) : "-") << "]\n";
    for (const auto& e : store.examples(r.id, true)) {
      os << "  example " << e.index << " " << e.example_id << " " << e.output.size() << ":" << e.output
         << " n=" << e.n_tokens << " d=" << e.n_deferred;
      for (const auto& [k, v] : e.metrics) os << " " << k << "=" << num(v);
      os << "\n   ";
      for (const auto& t : e.tokens) {
        os << " " << t.position << ":" << t.token_id << "/" << t.source;
        for (double p : t.probs) os << "," << num(p);
      }
      os << "\n";
    }
    by_key[r.content_key] = os.str();
  }
  std::string out;
  for (const auto& [k, v] : by_key) out += k + " " + v;
  return out;
}

std::vector<RunRecord> done_runs(const std::string& db) {
  std::vector<RunRecord> out;
  for (const auto& r : ResultsStore::open(db).runs())
    if (r.status == "done") out.push_back(r);
  return out;
}

std::optional<double> metric(ResultsStore& store, int64_t run, const std::string& name) {
  for (const auto& m : store.metrics(run))
    if (m.name == name) return m.value;
  return std::nullopt;
}

// A task that records which splits were asked for and refuses `forbidden`.
class RecordingTask : public Task {
 public:
  RecordingTask(std::shared_ptr<Task> inner, std::string forbidden)
      : inner_(std::move(inner)), forbidden_(std::move(forbidden)) {}
  std::vector<std::string> splits() const override { return inner_->splits(); }
  std::vector<Example> examples(const std::string& split) override {
    requested.insert(split);
    if (split == forbidden_) throw Error("split '" + split + "' must not be read here");
    return inner_->examples(split);
  }
  GenerationSettings generation() const override { return inner_->generation(); }
  std::map<std::string, double> score(const Example& e, const std::string& out) const override {
    return inner_->score(e, out);
  }
  std::string primary_metric() const override { return inner_->primary_metric(); }
  std::string fingerprint() override { return inner_->fingerprint(); }
  std::set<std::string> requested;

 private:
  std::shared_ptr<Task> inner_;
  std::string forbidden_;
};

// colm subprocesses use as many Torch threads as this process (2), so numbers match bit for bit.
std::string colm_cmd() { return "COLM_THREADS=2 " + test::colm_binary() + " --log-level warn"; }

}  // namespace

TEST_CASE("a tiny experiment runs end to end, and a rerun executes nothing and changes nothing", "[runner]") {
  const auto dir = test::temp_dir("colm-runner");
  const auto db = dir + "/results.db";
  const auto toml = write_experiment(dir, db);

  const auto first = run_in_process(toml);
  CHECK(first.runs_done == int64_t(kRuns));
  CHECK(first.runs_failed == 0);
  CHECK(first.runs_skipped == 0);
  CHECK(first.examples_decoded == int64_t(kRuns * kTestExamples));
  CHECK(first.calibration_points == 4);  // 2 policies x 2 eta

  auto store = ResultsStore::open(db);
  CHECK(store.integrity_check() == "ok");
  const auto exp = store.find_experiment("runner-test");
  REQUIRE(exp);
  CHECK(exp->config_toml.find("runner-test") != std::string::npos);
  const auto runs = store.runs("runner-test");
  REQUIRE(runs.size() == kRuns);
  for (const auto& r : runs) {
    INFO(r.policy << " " << r.strategy);
    CHECK(r.status == "done");
    CHECK(r.split == "test");
    CHECK(r.seed == 3);
    CHECK_FALSE(r.git_revision.empty());
    const auto params = nlohmann::json::parse(r.params_json);
    CHECK(params.at("seed") == 3);
    CHECK(params.contains("git_revision"));
    const auto fp = nlohmann::json::parse(r.plugin_fingerprints_json);
    CHECK(fp.contains("experts.base"));
    CHECK(fp.contains("task"));
    CHECK(fp.at("plugin_versions").contains("policy/rules"));
    const auto examples = store.examples(r.id, true);
    REQUIRE(examples.size() == kTestExamples);
    int64_t tokens = 0, deferred = 0;
    for (const auto& e : examples) {
      CHECK(e.n_tokens >= 1);
      CHECK(e.n_tokens <= 8);
      REQUIRE(e.tokens.size() == size_t(e.n_tokens));
      CHECK(e.metrics.count("accuracy"));
      tokens += e.n_tokens;
      for (const auto& t : e.tokens) {
        deferred += t.source != 0;
        if (r.strategy != "single") CHECK(t.probs.size() == 2);
      }
      CHECK(deferred <= tokens);
    }
    const auto acc = metric(store, r.id, "accuracy");
    const auto rate = metric(store, r.id, "deferral_rate");
    REQUIRE(acc);
    REQUIRE(rate);
    CHECK(*rate == Approx(double(deferred) / double(tokens)));
    for (const auto& m : store.metrics(r.id)) {
      INFO(m.name);
      REQUIRE(m.ci_low);
      REQUIRE(m.ci_high);
      CHECK(*m.ci_low <= m.value + 1e-12);
      CHECK(*m.ci_high >= m.value - 1e-12);
    }
    if (r.policy == "base_only" || r.strategy == "single") CHECK(*rate == 0.0);
    if (r.policy == "assistant_only") CHECK(*rate == 1.0);
    if (r.strategy == "single") CHECK_FALSE(r.threshold.has_value());
  }

  // Calibration: the whole curve on the valid split, one chosen eta per policy, used by its run.
  const auto cal = store.calibration(exp->id);
  CHECK(cal.size() == 2 * 2 * 2);  // policies x eta x {accuracy, deferral_rate}
  for (const auto& c : cal) CHECK(c.split == "valid");
  for (const std::string policy : {"random", "confidence"}) {
    const auto chosen = store.chosen_calibration(exp->id, policy, "defer", "valid");
    REQUIRE(chosen);
    bool found = false;
    for (const auto& r : runs) {
      const auto params = nlohmann::json::parse(r.params_json);
      if (r.policy != policy || !params.contains("calibration_key")) continue;
      found = true;
      REQUIRE(r.threshold);
      CHECK(*r.threshold == chosen->threshold);
      CHECK(params.at("calibrated_eta") == chosen->threshold);
    }
    CHECK(found);
  }

  const auto before = snapshot(db);
  const auto again = run_in_process(toml);
  CHECK(again.runs_done == 0);
  CHECK(again.runs_skipped == int64_t(kRuns));
  CHECK(again.examples_decoded == 0);
  CHECK(again.calibration_points == 0);
  CHECK(snapshot(db) == before);

  {
    INFO("the same config and seed give identical results in a fresh database");
    const auto dir2 = test::temp_dir("colm-runner");
    const auto db2 = dir2 + "/results.db";
    run_in_process(write_experiment(dir2, db2));
    CHECK(snapshot(db2) == before);
  }

  {
    INFO("an interrupted run resumes from the examples not yet stored, with the same results");
    // What a kill leaves: a run "running" with only its first chunk of examples, no metrics.
    int64_t victim = 0;
    for (const auto& r : runs)
      if (r.policy == "random" && r.threshold && *r.threshold == 0.5) victim = r.id;
    REQUIRE(victim != 0);
    {
      SQLite::Database raw(db, SQLite::OPEN_READWRITE);
      raw.exec("PRAGMA foreign_keys = ON");
      raw.exec("DELETE FROM examples WHERE run_id = " + std::to_string(victim) + " AND idx >= 4");
      raw.exec("DELETE FROM metrics WHERE run_id = " + std::to_string(victim));
      raw.exec("UPDATE runs SET status = 'running' WHERE id = " + std::to_string(victim));
    }
    const auto resumed = run_in_process(toml);
    CHECK(resumed.runs_done == 1);
    CHECK(resumed.runs_skipped == int64_t(kRuns - 1));
    CHECK(resumed.examples_decoded == 2);
    CHECK(snapshot(db) == before);
  }

  {
    INFO("a calibrated run that was never finished reuses the stored calibration points");
    int64_t victim = 0;
    for (const auto& r : runs)
      if (r.policy == "confidence" && nlohmann::json::parse(r.params_json).contains("calibration_key")) victim = r.id;
    REQUIRE(victim != 0);
    store.reset_run(victim);
    const auto resumed = run_in_process(toml);
    CHECK(resumed.runs_done == 1);
    CHECK(resumed.calibration_points == 0);
    CHECK(resumed.calibration_reused == 2);
    CHECK(snapshot(db) == before);
  }
}

TEST_CASE("calibration reads only the calibration split, never the test split", "[runner]") {
  const auto dir = test::temp_dir("colm-runner");
  const auto db = dir + "/results.db";
  const auto spec = parse_experiment_file(write_experiment(dir, db));
  auto loaded = load_experiment(spec, default_registry(), {});
  const auto runs = expand_runs(spec, loaded);
  auto recorder = std::make_shared<RecordingTask>(loaded.task, "test");
  loaded.task = recorder;

  auto store = ResultsStore::open(db);
  const auto exp = store.ensure_experiment(spec.name, spec.root.to_toml(), "test", "test");
  RunContext context(spec, loaded, default_registry(), {});
  RunSummary summary;
  const auto cals = calibrate_stage(spec, context, store, exp, runs, {}, &summary);
  CHECK(recorder->requested == std::set<std::string>{"valid"});
  REQUIRE(cals.size() == 2);
  for (const auto& [key, c] : cals) {
    INFO(key.first);
    REQUIRE(c.curve.size() == 2);
    REQUIRE(c.chosen.size() == 1);
    CHECK(c.chosen[0] == choose_eta(c.curve));
  }
  // The random rule defers with p = 0.4 whatever eta below 1 is: both points measure the same rate.
  const auto& random = cals.at({"random", "defer"});
  CHECK(random.curve[0].deferral_rate == random.curve[1].deferral_rate);
  CHECK(random.curve[0].deferral_rate > 0.0);
  CHECK(random.curve[0].deferral_rate < 1.0);
}

TEST_CASE("target-rate calibration picks, per rate, the eta whose measured rate is closest", "[runner]") {
  const auto dir = test::temp_dir("colm-runner");
  const auto db = dir + "/results.db";
  auto text = replace_all(kTiny, "eta = [0.3, 0.95]\npolicies = [\"random\", \"confidence\"]",
                          "eta = [0.0, 0.5, 1.0]\ntarget_rates = [0.0, 1.0]\npolicies = [\"confidence\"]");
  text = replace_all(text, "policies = [\"base_only\", \"assistant_only\", \"random\", \"confidence\"]",
                     "policies = [\"confidence\"]");
  const auto summary = run_in_process(write_experiment(dir, db, text));
  CHECK(summary.runs_failed == 0);
  auto store = ResultsStore::open(db);
  std::map<double, double> rate_of_target;
  for (const auto& r : store.runs()) {
    const auto params = nlohmann::json::parse(r.params_json);
    if (!params.contains("target_rate")) continue;
    REQUIRE(r.threshold);
    rate_of_target[params.at("target_rate").get<double>()] = *r.threshold;
  }
  REQUIRE(rate_of_target.size() == 2);
  // eta = 1 never defers (1 - P(base) > 1 is impossible): it is the point for rate 0; eta = 0
  // defers whenever the base is not certain, the point closest to rate 1.
  CHECK(rate_of_target.at(0.0) == 1.0);
  CHECK(rate_of_target.at(1.0) == 0.0);
}

TEST_CASE("two shards writing one WAL database at once lose no row; merged shard databases equal one run",
          "[runner][shard]") {
  const auto dir = test::temp_dir("colm-runner");
  const auto ref_db = dir + "/ref.db", shared_db = dir + "/shared.db", a_db = dir + "/a.db", b_db = dir + "/b.db",
             merged_db = dir + "/merged.db";
  const auto ref = write_experiment(dir, ref_db);
  std::string out;
  REQUIRE(test::run_command(colm_cmd() + " run " + ref, &out) == 0);
  INFO(out);
  const auto expected = snapshot(ref_db);
  REQUIRE(done_runs(ref_db).size() == kRuns);

  // Two processes at the same time, one database.
  const auto shared_dir = test::temp_dir("colm-runner");
  const auto shared = write_experiment(shared_dir, shared_db);
  const auto both = "(" + colm_cmd() + " run " + shared + " --shard 0/2 > " + shared_dir + "/s0.log 2>&1 & p0=$!; " +
                    colm_cmd() + " run " + shared + " --shard 1/2 > " + shared_dir + "/s1.log 2>&1 & p1=$!; " +
                    "wait $p0; r0=$?; wait $p1; r1=$?; cat " + shared_dir + "/s0.log " + shared_dir +
                    "/s1.log; exit $((r0 | r1)))";
  const int rc = test::run_command(both, &out);
  INFO(out);
  CHECK(rc == 0);
  CHECK(done_runs(shared_db).size() == kRuns);
  CHECK(ResultsStore::open(shared_db).integrity_check() == "ok");
  CHECK(snapshot(shared_db) == expected);

  // One database per shard, merged afterwards.
  const auto a_dir = test::temp_dir("colm-runner"), b_dir = test::temp_dir("colm-runner");
  REQUIRE(test::run_command(colm_cmd() + " run " + write_experiment(a_dir, a_db) + " --shard 0/2", &out) == 0);
  REQUIRE(test::run_command(colm_cmd() + " run " + write_experiment(b_dir, b_db) + " --shard 1/2", &out) == 0);
  CHECK(done_runs(a_db).size() == kRuns / 2);
  CHECK(done_runs(b_db).size() == kRuns / 2);
  REQUIRE(test::run_command(colm_cmd() + " merge " + merged_db + " " + a_db + " " + b_db, &out) == 0);
  INFO(out);
  CHECK(snapshot(merged_db) == expected);
  // Merging again adds nothing.
  REQUIRE(test::run_command(colm_cmd() + " merge " + merged_db + " " + a_db + " " + b_db, &out) == 0);
  CHECK(snapshot(merged_db) == expected);
  CHECK(test::run_command(colm_cmd() + " merge " + merged_db, &out) == 2);
}

TEST_CASE("a run that throws is stored as failed with its error; the others go on; a rerun retries it",
          "[runner]") {
  const auto dir = test::temp_dir("colm-runner");
  const auto db = dir + "/results.db";
  // The helper's context (64 positions) is shorter than every prompt: runs that need it fail when
  // they decode, the base alone (256 positions) does not.
  auto text = replace_all(kTiny, "max_positions = 256\ninit_seed = 2", "max_positions = 64\ninit_seed = 2");
  text = replace_all(text, "[calibrate]\neta = [0.3, 0.95]\npolicies = [\"random\", \"confidence\"]\n", "");
  text = replace_all(text, "policies = [\"base_only\", \"assistant_only\", \"random\", \"confidence\"]",
                     "policies = [\"assistant_only\"]");
  const auto toml = write_experiment(dir, db, text);
  const auto first = run_in_process(toml);
  CHECK(first.runs_failed == 2);  // assistant_only and the helper alone
  CHECK(first.runs_done == 1);    // the base alone
  auto store = ResultsStore::open(db);
  for (const auto& r : store.runs()) {
    INFO(r.policy);
    if (r.policy == "base") {
      CHECK(r.status == "done");
    } else {
      CHECK(r.status == "failed");
      CHECK(r.error.find("[decode]") != std::string::npos);
    }
  }
  const auto again = run_in_process(toml);
  CHECK(again.runs_skipped == 1);
  CHECK(again.runs_failed == 2);
}

TEST_CASE("summaries: means, ratio-of-sums deferral rate and seeded bootstrap intervals", "[runner][stats]") {
  std::vector<ExampleRecord> ex(8);
  const double acc[] = {1, 0, 1, 1, 0, 1, 1, 1};
  for (size_t i = 0; i < ex.size(); ++i) {
    ex[i].metrics["accuracy"] = acc[i];
    if (i % 2 == 0) ex[i].metrics["calc_accuracy"] = 0.5;  // present on some examples only
    ex[i].n_tokens = int64_t(i + 1);
    ex[i].n_deferred = int64_t(i % 3);
  }
  const auto m = summarize_examples(ex, 1000, 0.95, 7);
  REQUIRE(m.size() == 3);
  CHECK(m[0].name == "accuracy");
  CHECK(m[0].value == Approx(0.75));
  REQUIRE(m[0].ci_low);
  CHECK(*m[0].ci_low < 0.75);
  CHECK(*m[0].ci_high > 0.7);
  CHECK(*m[0].ci_high <= 1.0);
  CHECK(m[1].name == "calc_accuracy");
  CHECK(m[1].value == Approx(0.5));
  CHECK(*m[1].ci_low == Approx(0.5));  // constant values: a zero-width interval
  CHECK(m[2].name == "deferral_rate");
  CHECK(m[2].value == Approx(double(0 + 1 + 2 + 0 + 1 + 2 + 0 + 1) / 36.0));

  const auto again = summarize_examples(ex, 1000, 0.95, 7);
  CHECK(*again[0].ci_low == *m[0].ci_low);
  CHECK(*again[2].ci_high == *m[2].ci_high);
  const auto none = summarize_examples(ex, 0, 0.95, 7);
  CHECK_FALSE(none[0].ci_low.has_value());
  const auto narrow = summarize_examples(ex, 1000, 0.5, 7);
  CHECK(*narrow[0].ci_low >= *m[0].ci_low);
  CHECK(*narrow[0].ci_high <= *m[0].ci_high);
}

TEST_CASE("eta choice: best metric with ties to fewer deferrals; target rates to the closest measured rate",
          "[runner][calibrate]") {
  const std::vector<CalibrationPoint> curve = {{0.2, 0.5, 0.8}, {0.5, 0.7, 0.4}, {0.8, 0.7, 0.1}, {0.9, 0.3, 0.0}};
  CHECK(choose_eta(curve) == 0.8);
  CHECK(eta_for_rate(curve, 0.35) == 0.5);
  CHECK(eta_for_rate(curve, 0.0) == 0.9);
  CHECK(eta_for_rate(curve, 1.0) == 0.2);
  CHECK_THROWS_AS(choose_eta({}), Error);
  CHECK(parse_shard("1/3").index == 1);
  CHECK_THROWS_WITH(parse_shard("3/3"), Catch::Contains("0 <= i < n"));
  CHECK_THROWS_WITH(parse_shard("a/3"), Catch::Contains("expected i/n"));
  CHECK(in_shard(4, parse_shard("1/3")));
  CHECK_FALSE(in_shard(4, parse_shard("0/3")));
}

TEST_CASE("random deferral at another policy's calibrated rate, a reference expert, and the teacher-forced analysis",
          "[runner][analysis]") {
  const auto dir = test::temp_dir("colm-runner");
  const auto db = dir + "/results.db";
  auto text = replace_all(kTiny, "rule = \"random\"\np = 0.4\n", "rule = \"random\"\nmatch_rate = \"confidence\"\n");
  text = replace_all(text, "policies = [\"random\", \"confidence\"]", "policies = [\"confidence\"]");
  text = replace_all(text, "[task]", R"([experts.other]
plugin = "transformer"
role = "reference"
family = "gpt2"
n_layer = 1
n_head = 2
d_model = 16
d_ff = 32
max_positions = 256
init_seed = 5

[policies.oracle]
plugin = "rules"
rule = "oracle"

[analysis]
policies = ["confidence", "oracle"]

[task])");
  text = replace_all(text, "baselines = [\"base\", \"helper\"]", "baselines = [\"base\", \"helper\", \"other\"]");
  const auto toml = write_experiment(dir, db, text);
  const auto summary = run_in_process(toml);
  CHECK(summary.runs_failed == 0);

  auto store = ResultsStore::open(db);
  const auto exp = store.find_experiment("runner-test");
  REQUIRE(exp);
  double confidence_rate = -1;
  for (const auto& c : store.calibration(exp->id))
    if (c.policy == "confidence" && c.chosen && c.metric == "deferral_rate") confidence_rate = c.value;
  REQUIRE(confidence_rate >= 0);

  int random_runs = 0, analysis_runs = 0, reference_runs = 0;
  for (const auto& r : store.runs()) {
    INFO(r.policy << " " << r.strategy << " " << r.params_json);
    CHECK(r.status == "done");
    const auto params = nlohmann::json::parse(r.params_json);
    if (r.policy == "random") {
      ++random_runs;
      // p is the confidence policy's deferral rate at its calibrated eta, measured on valid.
      CHECK(params.at("match_rate") == "confidence");
      CHECK(params.at("matched_rate").get<double>() == confidence_rate);
    }
    if (r.policy == "other") ++reference_runs;
    if (r.strategy != "teacher_forced") continue;
    ++analysis_runs;
    std::map<std::string, double> m;
    for (const auto& x : store.metrics(r.id)) m[x.name] = x.value;
    const auto examples = store.examples(r.id, true);
    CHECK(examples.size() == kTestExamples);
    for (const auto& e : examples) {
      CHECK(e.n_tokens == int64_t(e.tokens.size()));
      std::string joined;  // the stored tokens spell the gold target
      for (const auto& tok : e.tokens) joined += tok.text;
      CHECK(joined == e.output);
    }
    CHECK(m.at("token_accuracy") >= 0);
    CHECK(m.at("token_accuracy") <= m.at("oracle_token_accuracy") + 1e-12);
    if (r.policy == "oracle") {
      // The oracle defers exactly at the oracle positions: its token accuracy is the oracle's.
      CHECK(m.at("token_accuracy") == Approx(m.at("oracle_token_accuracy")));
      CHECK(m.at("tf_deferral_rate") == Approx(m.at("oracle_rate")));
      if (m.count("deferred_where_oracle")) CHECK(m.at("deferred_where_oracle") == Approx(1.0));
    } else {
      CHECK(params.contains("calibrated_eta"));  // analysed at its calibrated eta
    }
  }
  CHECK(random_runs == 1);
  CHECK(analysis_runs == 2);
  CHECK(reference_runs == 1);
  // A rerun does nothing.
  const auto again = run_in_process(toml);
  CHECK(again.runs_done == 0);
  CHECK(again.runs_failed == 0);
}

TEST_CASE("the oracle analysis on the shipped experts finds and takes every oracle position", "[runner][analysis]") {
  // The shipped arithmetic expert knows the sums the generalist gets wrong (the default experiment's
  // finding), so the gold answers hold positions where only the assistant is right.
  const auto dir = test::temp_dir("colm-runner-oracle");
  const auto db = dir + "/results.db";
  const auto ckpt = test::source_dir() + "/experiments/checkpoints/";
  const std::string text = R"([experiment]
name = "oracle-test"
seed = 7
database = "DBPATH"
artifacts_dir = "ARTDIR"

[experts.base]
plugin = "transformer"
role = "base"
checkpoint = "CKPT/generalist"

[experts.assistant]
plugin = "transformer"
role = "assistant"
checkpoint = "CKPT/arithmetic"

[task]
plugin = "arithmetic"
seed = 7
train_size = 4
valid_size = 4
test_size = 8
max_tokens = 8

[policies.base_only]
plugin = "rules"
rule = "base_only"

[policies.oracle]
plugin = "rules"
rule = "oracle"

[sweep]
policies = ["base_only"]
eta = [0.5]
batch_size = 8

[analysis]
policies = ["base_only", "oracle"]
)";
  const auto toml = write_experiment(dir, db, replace_all(text, "CKPT/", ckpt));
  const auto summary = run_in_process(toml);
  REQUIRE(summary.runs_failed == 0);

  auto store = ResultsStore::open(db);
  std::map<std::string, std::map<std::string, double>> m;  // policy -> analysis metrics
  std::map<std::string, std::vector<ExampleRecord>> examples;
  for (const auto& r : store.runs()) {
    if (r.strategy != "teacher_forced") continue;
    for (const auto& x : store.metrics(r.id)) m[r.policy][x.name] = x.value;
    examples[r.policy] = store.examples(r.id, true);
  }
  REQUIRE(m.count("oracle"));
  REQUIRE(m.count("base_only"));
  const auto& oracle = m["oracle"];
  const auto& base = m["base_only"];
  INFO("oracle_rate " << oracle.at("oracle_rate") << ", base token accuracy " << base.at("token_accuracy")
                      << ", oracle token accuracy " << oracle.at("token_accuracy"));
  // There is work for the oracle (few positions: teacher-forced, the generalist is right on ~99% of
  // the gold tokens; the rest are result digits), and it does exactly that work.
  CHECK(oracle.at("oracle_rate") > 0);
  CHECK(oracle.at("tf_deferral_rate") == Approx(oracle.at("oracle_rate")));
  CHECK(oracle.at("deferred_where_oracle") == Approx(1.0));
  CHECK(oracle.at("oracle_deferred") == Approx(1.0));
  CHECK(oracle.at("token_accuracy") == Approx(oracle.at("oracle_token_accuracy")));
  // With one assistant, the oracle's accuracy is the base's plus the positions only the assistant
  // gets right; the base alone defers nowhere and scores its own accuracy.
  CHECK(oracle.at("token_accuracy") == Approx(base.at("token_accuracy") + oracle.at("oracle_rate")));
  CHECK(base.at("token_accuracy") == Approx(base.at("base_token_accuracy")));
  CHECK(base.at("tf_deferral_rate") == 0.0);
  CHECK(base.at("token_accuracy") < oracle.at("token_accuracy"));
  // Per example and per token: the stored sources are the oracle's choices, and they count up to
  // the example's oracle rate.
  REQUIRE(examples["oracle"].size() == 8);
  int64_t deferred_tokens = 0;
  for (const auto& e : examples["oracle"]) {
    int64_t from_assistant = 0;
    for (const auto& t : e.tokens) {
      CHECK((t.source == 0 || t.source == 1));
      REQUIRE(t.probs.size() == 2);
      CHECK(t.probs[1] == (t.source == 1 ? 1.0 : 0.0));
      from_assistant += t.source == 1;
    }
    CHECK(from_assistant == e.n_deferred);
    CHECK(double(from_assistant) / double(e.n_tokens) == Approx(e.metrics.at("oracle_rate")));
    deferred_tokens += from_assistant;
  }
  CHECK(deferred_tokens > 0);
}

TEST_CASE("matched rates and analyses are validated before any work", "[runner][analysis]") {
  const auto dir = test::temp_dir("colm-runner");
  const auto db = dir + "/results.db";
  auto check = [&](const std::string& text, const std::string& expect) {
    const auto toml = write_experiment(dir, db, text);
    INFO(expect);
    CHECK_THROWS_WITH(parse_experiment_file(toml), Catch::Contains(expect));
  };
  const auto matched = replace_all(kTiny, "p = 0.4\n", "match_rate = \"confidence\"\n");
  check(matched, "remove it from [calibrate] policies");
  check(replace_all(matched, "policies = [\"random\", \"confidence\"]", "policies = [\"random\"]"),
        "'confidence' is not calibrated");
  check(replace_all(kTiny, "p = 0.4\n", "match_rate = \"nobody\"\n"), "unknown policy 'nobody'");
  check(kTiny + "\n[analysis]\npolicies = [\"ghost\"]\n", "unknown policy 'ghost'");
  check(kTiny + "\n[analysis]\npolicies = []\n", "empty list");
  check(replace_all(kTiny, "role = \"assistant\"", "role = \"helper\""), "'helper' is not one of");
}

TEST_CASE("colm run --jobs 2 writes the same runs, metrics and calibrations as --jobs 1", "[runner][jobs]") {
  const auto dir1 = test::temp_dir("colm-jobs1"), dir2 = test::temp_dir("colm-jobs2");
  const auto db1 = dir1 + "/results.db", db2 = dir2 + "/results.db";
  const auto toml1 = write_experiment(dir1, db1), toml2 = write_experiment(dir2, db2);
  // Each worker of --jobs 2 gets half of COLM_THREADS: 2 threads, as the single process has.
  const auto bin = test::colm_binary() + " --log-level warn";
  std::string out;
  REQUIRE(test::run_command("COLM_THREADS=2 " + bin + " run " + toml1 + " --jobs 1", &out) == 0);
  REQUIRE(test::run_command("COLM_THREADS=4 " + bin + " run " + toml2 + " --jobs 2", &out) == 0);
  CHECK_THAT(out, Catch::Contains(std::to_string(kRuns) + " runs done, 0 failed, 0 not finished, by 2 workers"));
  CHECK(snapshot(db1) == snapshot(db2));
  auto s1 = ResultsStore::open(db1), s2 = ResultsStore::open(db2);
  auto rows = [](ResultsStore& s) {
    std::multiset<std::string> out;
    for (const auto& c : s.calibration(s.experiments().front().id))
      out.insert(c.policy + " " + c.strategy + " " + num(c.threshold) + " " + c.metric + " " + num(c.value) + " " +
                 std::to_string(c.chosen));
    return out;
  };
  CHECK(rows(s1) == rows(s2));
  CHECK(rows(s1).size() == 8);  // 2 policies x 2 eta x (accuracy, deferral_rate)
  // A rerun with workers finds everything done.
  REQUIRE(test::run_command("COLM_THREADS=4 " + bin + " run " + toml2 + " --jobs 2", &out) == 0);
  CHECK(snapshot(db1) == snapshot(db2));
  CHECK(test::run_command(bin + " run " + toml2 + " --jobs 0") == 2);
  CHECK(test::run_command(bin + " run " + toml2 + " --stage bake") == 2);
}

TEST_CASE("sweeps with continuous batching store the same examples and metrics as batch-1 decoding",
          "[runner][continuous]") {
  // Batch 4 over 6 test examples: rows are refilled as examples finish; the analysis runs batched.
  auto text = replace_all(kTiny, "[report]", "[analysis]\npolicies = [\"confidence\"]\n\n[report]");
  std::string snapshots[2];
  for (int k = 0; k < 2; ++k) {
    const auto dir = test::temp_dir("colm-runner");
    const auto db = dir + "/results.db";
    const auto batched = replace_all(text, "batch_size = 4", k == 0 ? "batch_size = 4" : "batch_size = 1");
    const auto summary = run_in_process(write_experiment(dir, db, batched));
    CHECK(summary.runs_failed == 0);
    CHECK(summary.runs_done == kRuns + 1);
    snapshots[k] = snapshot(db);
  }
  CHECK(snapshots[0].find("teacher_forced") != std::string::npos);
  // Everything equal (run keys, outputs, token ids, sources, metrics and intervals) except that the
  // stored policy probabilities may differ in the last bits (batched products round differently).
  auto fields = [](const std::string& text) {
    std::vector<std::string> out;
    std::string cur;
    for (char c : text) {
      if (c == ' ' || c == '\n' || c == ',') {
        if (!cur.empty()) out.push_back(cur);
        cur.clear();
      } else {
        cur += c;
      }
    }
    if (!cur.empty()) out.push_back(cur);
    return out;
  };
  const auto a = fields(snapshots[0]), b = fields(snapshots[1]);
  REQUIRE(a.size() == b.size());
  size_t rounded = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] == b[i]) continue;
    char* end_a = nullptr;
    char* end_b = nullptr;
    const double x = std::strtod(a[i].c_str(), &end_a), y = std::strtod(b[i].c_str(), &end_b);
    INFO("field " << i << ": " << a[i] << " vs " << b[i]);
    REQUIRE((*end_a == '\0' && *end_b == '\0'));  // only numbers may differ
    CHECK(std::abs(x - y) < 1e-6);
    ++rounded;
  }
  CHECK(rounded < a.size() / 20);
}
