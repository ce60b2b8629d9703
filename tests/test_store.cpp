// ResultsStore: round trips of every table, schema-version and not-a-database refusals, idempotent
// runs, transactional batches, concurrent writers on one WAL database, and shard merges.
#include <catch2/catch.hpp>

#include <SQLiteCpp/SQLiteCpp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <thread>

#include "harness/store.hpp"
#include "support.hpp"

using namespace colm;
using Catch::Matchers::Contains;

namespace {

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const colm::Error& e) {
    return e.what();
  }
  return "";
}

RunRecord make_run(int64_t experiment_id, const std::string& key, double eta = 0.5) {
  RunRecord r;
  r.experiment_id = experiment_id;
  r.content_key = key;
  r.policy = "learned";
  r.threshold = eta;
  r.strategy = "greedy";
  r.split = "test";
  r.seed = 7;
  r.params_json = R"({"eta":0.5,"max_tokens":32})";
  r.plugin_fingerprints_json = R"({"experts.base":"abc"})";
  r.git_revision = "deadbeef";
  return r;
}

ExampleRecord make_example(const std::string& id, int64_t index, int n_tokens = 3) {
  ExampleRecord e;
  e.example_id = id;
  e.index = index;
  e.prompt = "Q: " + id + "?";
  e.output = "answer " + id;
  e.reference = "ref " + id;
  e.metrics = {{"exact_match", 1.0}, {"f1", 0.5}};
  e.n_tokens = n_tokens;
  e.n_deferred = 1;
  e.latency_s = 0.25;
  for (int t = 0; t < n_tokens; ++t) {
    TokenRecord tok;
    tok.position = t;
    tok.token_id = 100 + t;
    tok.text = "t" + std::to_string(t);
    tok.source = t == 1 ? 1 : 0;
    tok.probs = {0.75, 0.25};
    e.tokens.push_back(tok);
  }
  return e;
}

}  // namespace

TEST_CASE("the store round-trips experiments, runs, examples, tokens, metrics, artifacts, calibration",
          "[core][store]") {
  const auto dir = test::temp_dir("colm-store");
  auto store = ResultsStore::open(dir + "/nested/dir/results.db");  // parent directories are created
  CHECK(store.schema_version() == kResultsSchemaVersion);
  CHECK(store.integrity_check() == "ok");

  const int64_t exp = store.ensure_experiment("demo", "[experiment]\nname = \"demo\"\n", "rev1", "0.1.0");
  CHECK(store.ensure_experiment("demo", "[experiment]\nname = \"demo\"\n", "rev1", "0.1.0") == exp);
  const auto e = store.find_experiment("demo");
  REQUIRE(e);
  CHECK(e->config_toml == "[experiment]\nname = \"demo\"\n");
  CHECK(e->git_revision == "rev1");
  CHECK(e->colm_version == "0.1.0");
  CHECK(store.config_text(e->config_hash) == e->config_toml);
  CHECK_FALSE(store.find_experiment("other"));

  auto rec = make_run(exp, "key-1");
  const int64_t run_id = store.ensure_run(rec);
  auto r = store.find_run("key-1");
  REQUIRE(r);
  CHECK(r->id == run_id);
  CHECK(r->experiment == "demo");
  CHECK(r->policy == "learned");
  CHECK(r->threshold == Approx(0.5));
  CHECK(r->strategy == "greedy");
  CHECK(r->split == "test");
  CHECK(r->seed == 7);
  CHECK(r->params_json == rec.params_json);
  CHECK(r->plugin_fingerprints_json == rec.plugin_fingerprints_json);
  CHECK(r->git_revision == "deadbeef");
  CHECK(r->config_hash == e->config_hash);  // the experiment's config at the time of the run
  CHECK(r->status == "pending");

  auto baseline = make_run(exp, "key-2");
  baseline.threshold.reset();  // a single-model baseline has no eta
  store.ensure_run(baseline);
  CHECK_FALSE(store.find_run("key-2")->threshold.has_value());
  CHECK(store.runs("demo").size() == 2);
  CHECK(store.runs().size() == 2);
  CHECK(store.runs("other").empty());

  store.set_run_status(run_id, "running");
  CHECK(store.run(run_id)->started.size() >= 20);
  store.add_examples(run_id, {make_example("b", 1), make_example("a", 0, 0)});
  CHECK(store.finished_example_ids(run_id) == std::set<std::string>{"a", "b"});

  const auto no_tokens = store.examples(run_id, false);
  REQUIRE(no_tokens.size() == 2);
  CHECK(no_tokens[0].example_id == "a");  // ordered by index
  CHECK(no_tokens[1].tokens.empty());
  const auto with_tokens = store.examples(run_id, true);
  const auto& b = with_tokens[1];
  CHECK(b.example_id == "b");
  CHECK(b.prompt == "Q: b?");
  CHECK(b.output == "answer b");
  CHECK(b.reference == "ref b");
  CHECK(b.metrics == std::map<std::string, double>{{"exact_match", 1.0}, {"f1", 0.5}});
  CHECK(b.n_tokens == 3);
  CHECK(b.n_deferred == 1);
  CHECK(b.latency_s == Approx(0.25));
  REQUIRE(b.tokens.size() == 3);
  CHECK(b.tokens[1].position == 1);
  CHECK(b.tokens[1].token_id == 101);
  CHECK(b.tokens[1].text == "t1");
  CHECK(b.tokens[1].source == 1);
  CHECK(b.tokens[1].probs == std::vector<double>{0.75, 0.25});

  // Re-adding an example replaces it and its tokens.
  store.add_examples(run_id, {make_example("b", 1, 2)});
  CHECK(store.examples(run_id, true)[1].tokens.size() == 2);

  store.set_metrics(run_id, {{"accuracy", 0.8, 0.7, 0.9}, {"deferral_rate", 0.3, std::nullopt, std::nullopt}});
  store.set_metrics(run_id, {{"accuracy", 0.75, 0.6, 0.85}, {"deferral_rate", 0.25, std::nullopt, std::nullopt}});
  const auto m = store.metrics(run_id);
  REQUIRE(m.size() == 2);
  CHECK(m[0].name == "accuracy");
  CHECK(m[0].value == Approx(0.75));
  CHECK(*m[0].ci_low == Approx(0.6));
  CHECK(*m[0].ci_high == Approx(0.85));
  CHECK_FALSE(m[1].ci_low.has_value());

  store.set_run_status(run_id, "done");
  r = store.run(run_id);
  CHECK(r->status == "done");
  CHECK_FALSE(r->finished.empty());
  CHECK(r->wall_seconds >= 0.0);
  store.set_run_status(store.find_run("key-2")->id, "failed", "out of memory");
  CHECK(store.find_run("key-2")->error == "out of memory");
  CHECK_THAT(error_of([&] { store.set_run_status(run_id, "finished"); }), Contains("unknown run status"));
  CHECK_THAT(error_of([&] { store.set_run_status(9999, "done"); }), Contains("no run with id 9999"));

  store.put_artifact({"h1", "checkpoint", "/tmp/ckpt", "", R"({"steps":10})"});
  store.put_artifact({"h1", "checkpoint", "/tmp/ckpt2", "", R"({"steps":20})"});
  store.put_artifact({"h2", "scores", "/tmp/scores", "", "{}"});
  const auto a = store.get_artifact("h1");
  REQUIRE(a);
  CHECK(a->path == "/tmp/ckpt2");
  CHECK(a->meta_json == R"({"steps":20})");
  CHECK(store.artifacts("scores").size() == 1);
  CHECK(store.artifacts().size() == 2);
  store.remove_artifact("h2");
  CHECK_FALSE(store.get_artifact("h2"));

  std::vector<CalibrationRecord> cal;
  for (int i = 0; i < 3; ++i)
    cal.push_back({exp, "learned", "greedy", 0.1 * (i + 1), "valid", "accuracy", 0.5 + 0.1 * i, i == 1});
  store.set_calibration(exp, "learned", "greedy", "valid", cal);
  store.set_calibration(exp, "learned", "greedy", "valid", cal);  // replaces, no duplicates
  CHECK(store.calibration(exp).size() == 3);
  const auto chosen = store.chosen_calibration(exp, "learned", "greedy", "valid");
  REQUIRE(chosen);
  CHECK(chosen->threshold == Approx(0.2));
  CHECK(chosen->value == Approx(0.6));
  CHECK_FALSE(store.chosen_calibration(exp, "random", "greedy", "valid"));

  store.reset_run(run_id);
  CHECK(store.run(run_id)->status == "pending");
  CHECK(store.examples(run_id, true).empty());
  CHECK(store.metrics(run_id).empty());
  CHECK(store.integrity_check() == "ok");
}

TEST_CASE("ensure_run is insert-or-get by content key", "[core][store]") {
  const auto dir = test::temp_dir("colm-store");
  auto store = ResultsStore::open(dir + "/r.db");
  const int64_t exp = store.ensure_experiment("e", "", "", "");
  const int64_t id = store.ensure_run(make_run(exp, "same"));
  store.set_run_status(id, "done");
  auto again = make_run(exp, "same", 0.9);  // different fields, same identity: the stored run wins
  CHECK(store.ensure_run(again) == id);
  CHECK(store.run(id)->status == "done");
  CHECK(store.run(id)->threshold == Approx(0.5));
  CHECK(store.runs().size() == 1);
  CHECK_THAT(error_of([&] { store.ensure_run(make_run(exp + 100, "other")); }), Contains("does not exist"));
  auto bad = make_run(exp, "bad");
  bad.params_json = "{not json";
  CHECK_THAT(error_of([&] { store.ensure_run(bad); }), Contains("not valid JSON"));
}

TEST_CASE("a database with a newer schema version is refused", "[core][store]") {
  const auto dir = test::temp_dir("colm-store");
  const auto path = dir + "/v.db";
  { ResultsStore::open(path); }
  {
    SQLite::Database db(path, SQLite::OPEN_READWRITE);
    db.exec("UPDATE schema_version SET version = 99");
  }
  const auto msg = error_of([&] { ResultsStore::open(path); });
  CHECK(msg == "results database " + path + " has schema version 99, this colm understands up to " +
                   std::to_string(kResultsSchemaVersion) + ": upgrade colm or use another database");
}

TEST_CASE("a file that is not a SQLite database is refused clearly", "[core][store]") {
  const auto dir = test::temp_dir("colm-store");
  const auto path = dir + "/notes.db";
  {
    std::ofstream out(path);
    for (int i = 0; i < 200; ++i) out << "this is a text file, not a database\n";
  }
  CHECK_THAT(error_of([&] { ResultsStore::open(path); }), Contains(path + " is not a SQLite database"));

  // A SQLite database of some other program is not taken over either.
  const auto other = dir + "/other.db";
  {
    SQLite::Database db(other, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    db.exec("CREATE TABLE things (x INTEGER)");
  }
  CHECK_THAT(error_of([&] { ResultsStore::open(other); }), Contains("not a colm results database"));
  CHECK_THAT(error_of([&] { ResultsStore::open(dir); }), Contains("is a directory"));
}

TEST_CASE("add_examples stores a batch in one transaction", "[core][store]") {
  const auto dir = test::temp_dir("colm-store");
  auto store = ResultsStore::open(dir + "/t.db");
  const int64_t run_id = store.ensure_run(make_run(store.ensure_experiment("e", "", "", ""), "k"));
  store.add_examples(run_id, {make_example("x0", 0)});

  // The third example of the batch has two tokens at position 0: SQLite rejects that row after
  // the first two examples were written inside the transaction; none of the batch may remain.
  std::vector<ExampleRecord> batch = {make_example("x1", 1), make_example("x2", 2), make_example("x3", 3)};
  batch[2].tokens[1].position = 0;
  const auto msg = error_of([&] { store.add_examples(run_id, batch); });
  CHECK_THAT(msg, Contains("cannot store example 'x3'"));
  CHECK_THAT(msg, Contains("rolled back"));
  CHECK(store.finished_example_ids(run_id) == std::set<std::string>{"x0"});
  CHECK(store.examples(run_id, true)[0].tokens.size() == 3);

  CHECK_THAT(error_of([&] { store.add_examples(run_id, {make_example("d", 0), make_example("d", 1)}); }),
             Contains("appears twice"));
  CHECK_THAT(error_of([&] { store.add_examples(run_id + 1, {make_example("y", 0)}); }), Contains("no run with id"));
  CHECK(store.integrity_check() == "ok");
}

TEST_CASE("two threads writing one WAL database lose no row", "[core][store]") {
  const auto dir = test::temp_dir("colm-store");
  const auto path = dir + "/w.db";
  const int64_t exp = ResultsStore::open(path).ensure_experiment("e", "", "", "");
  constexpr int kBatches = 20, kPerBatch = 5;
  std::vector<std::string> errors(2);
  auto writer = [&](int w) {
    try {
      auto store = ResultsStore::open(path);  // each thread its own connection
      for (int b = 0; b < kBatches; ++b) {
        // Both writers also race on the same run identities.
        const int64_t shared = store.ensure_run(make_run(exp, "shared-" + std::to_string(b)));
        const int64_t own = store.ensure_run(make_run(exp, "w" + std::to_string(w) + "-" + std::to_string(b)));
        std::vector<ExampleRecord> batch;
        for (int i = 0; i < kPerBatch; ++i)
          batch.push_back(make_example("w" + std::to_string(w) + "-" + std::to_string(i), i));
        store.add_examples(own, batch);
        store.add_examples(shared, batch);
      }
    } catch (const std::exception& e) {
      errors[w] = e.what();
    }
  };
  std::thread t0(writer, 0), t1(writer, 1);
  t0.join();
  t1.join();
  CHECK(errors[0].empty());
  CHECK(errors[1].empty());
  auto store = ResultsStore::open(path);
  CHECK(store.runs().size() == 3 * kBatches);
  for (int b = 0; b < kBatches; ++b)
    CHECK(store.finished_example_ids(store.find_run("shared-" + std::to_string(b))->id).size() == 2 * kPerBatch);
  CHECK(store.examples(store.find_run("w1-3")->id, true).at(4).tokens.size() == 3);
}

TEST_CASE("two processes writing one WAL database both succeed", "[core][store]") {
  const auto dir = test::temp_dir("colm-store");
  const auto path = dir + "/p.db";
  const int64_t exp = ResultsStore::open(path).ensure_experiment("e", "", "", "");
  constexpr int kRuns = 15, kPerBatch = 8;
  std::vector<pid_t> children;
  for (int w = 0; w < 2; ++w) {
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      int rc = 0;
      try {
        auto store = ResultsStore::open(path);
        for (int r = 0; r < kRuns; ++r) {
          const int64_t id = store.ensure_run(make_run(exp, "p" + std::to_string(w) + "-" + std::to_string(r)));
          store.set_run_status(id, "running");
          std::vector<ExampleRecord> batch;
          for (int i = 0; i < kPerBatch; ++i) batch.push_back(make_example("ex" + std::to_string(i), i));
          store.add_examples(id, batch);
          store.set_metrics(id, {{"accuracy", 0.5, std::nullopt, std::nullopt}});
          store.set_run_status(id, "done");
        }
      } catch (const std::exception& e) {
        std::fprintf(stderr, "writer %d failed: %s\n", w, e.what());
        rc = 1;
      }
      _exit(rc);  // no static destructors or Catch2 reporting in the child
    }
    children.push_back(pid);
  }
  for (const pid_t pid : children) {
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  auto store = ResultsStore::open(path);
  const auto runs = store.runs("e");
  CHECK(runs.size() == 2 * kRuns);
  int64_t examples = 0;
  for (const auto& r : runs) {
    CHECK(r.status == "done");
    examples += static_cast<int64_t>(store.finished_example_ids(r.id).size());
    CHECK(store.metrics(r.id).size() == 1);
  }
  CHECK(examples == 2 * kRuns * kPerBatch);
  CHECK(store.integrity_check() == "ok");
}

TEST_CASE("shard databases merge into a third, idempotently", "[core][store]") {
  const auto dir = test::temp_dir("colm-store");
  const std::string config = "[experiment]\nname = \"sweep\"\n";
  // Shard 0 finishes runs a and c; shard 1 finishes b and has a half-done copy of c.
  {
    auto s0 = ResultsStore::open(dir + "/shard0.db");
    const auto exp = s0.ensure_experiment("sweep", config, "rev", "0.1.0");
    for (const std::string key : {"a", "c"}) {
      const auto id = s0.ensure_run(make_run(exp, key));
      s0.add_examples(id, {make_example("e0", 0), make_example("e1", 1)});
      s0.set_metrics(id, {{"accuracy", 1.0, std::nullopt, std::nullopt}});
      s0.set_run_status(id, "done");
    }
    s0.put_artifact({"ck", "checkpoint", "/x", "", "{}"});
    s0.set_calibration(exp, "learned", "greedy", "valid",
                       {{exp, "learned", "greedy", 0.5, "valid", "accuracy", 0.9, true}});
  }
  {
    auto s1 = ResultsStore::open(dir + "/shard1.db");
    // A different experiment id order than shard 0, so ids must be remapped by name.
    s1.ensure_experiment("other", "", "rev", "0.1.0");
    const auto exp = s1.ensure_experiment("sweep", config, "rev", "0.1.0");
    const auto b = s1.ensure_run(make_run(exp, "b"));
    s1.add_examples(b, {make_example("e0", 0), make_example("e1", 1), make_example("e2", 2)});
    s1.set_run_status(b, "done");
    const auto c = s1.ensure_run(make_run(exp, "c"));
    s1.set_run_status(c, "running");
    s1.add_examples(c, {make_example("e9", 9)});
    s1.put_artifact({"ck", "checkpoint", "/x", "", "{}"});
  }

  auto merged = ResultsStore::open(dir + "/merged.db");
  const auto m0 = merged.merge_from(dir + "/shard0.db");
  CHECK(m0.runs == 2);
  CHECK(m0.examples == 4);
  CHECK(m0.tokens == 12);
  const auto m1 = merged.merge_from(dir + "/shard1.db");
  CHECK(m1.experiments == 1);  // "other"
  CHECK(m1.runs == 1);         // b; c is already here and done
  CHECK(m1.runs_replaced == 0);
  CHECK(m1.artifacts == 0);

  const auto check_merged = [&] {
    CHECK(merged.experiments().size() == 2);
    const auto runs = merged.runs("sweep");
    REQUIRE(runs.size() == 3);
    for (const auto& r : runs) CHECK(r.status == "done");
    CHECK(merged.finished_example_ids(merged.find_run("a")->id).size() == 2);
    CHECK(merged.finished_example_ids(merged.find_run("b")->id).size() == 3);
    // c was done in shard 0: shard 1's partial example e9 is added beside it, nothing replaced.
    CHECK(merged.finished_example_ids(merged.find_run("c")->id) == std::set<std::string>{"e0", "e1", "e9"});
    CHECK(merged.examples(merged.find_run("b")->id, true)[2].tokens.size() == 3);
    CHECK(merged.metrics(merged.find_run("a")->id).size() == 1);
    CHECK(merged.artifacts().size() == 1);
    const auto exp = merged.find_experiment("sweep")->id;
    CHECK(merged.chosen_calibration(exp, "learned", "greedy", "valid").has_value());
    CHECK(merged.integrity_check() == "ok");
  };
  check_merged();

  // Merging the same shards again adds nothing.
  for (const auto& shard : {"/shard0.db", "/shard1.db"}) {
    const auto again = merged.merge_from(dir + shard);
    CHECK(again.experiments + again.runs + again.runs_replaced + again.examples + again.tokens + again.metrics +
              again.artifacts + again.calibration + again.configs ==
          0);
  }
  check_merged();

  // A run done in a shard replaces a half-done copy here.
  {
    auto partial = ResultsStore::open(dir + "/partial.db");
    const auto exp = partial.ensure_experiment("sweep", config, "rev", "0.1.0");
    const auto b = partial.ensure_run(make_run(exp, "b"));
    partial.set_run_status(b, "running");
    partial.add_examples(b, {make_example("stale", 0)});
    const auto m = partial.merge_from(dir + "/shard1.db");
    CHECK(m.runs_replaced == 1);
    CHECK(partial.find_run("b")->status == "done");
    CHECK(partial.finished_example_ids(b) == std::set<std::string>{"e0", "e1", "e2"});
  }

  CHECK_THAT(error_of([&] { merged.merge_from(dir + "/missing.db"); }), Contains("no such file"));
  CHECK_THAT(error_of([&] { merged.merge_from(dir + "/merged.db"); }), Contains("into itself"));
}
