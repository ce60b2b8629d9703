// Tests of stages run alone, artifacts shared without flock (claims, DONE markers, waiting) and
// shards that split every run's examples: merged, they must equal one process run by run.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "harness/artifacts.hpp"
#include "harness/runner.hpp"
#include "harness/store.hpp"
#include "db_snapshot.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using namespace colm;
using colm::test::max_probability_difference;
using colm::test::num;
using colm::test::snapshot;

namespace {

// A trained policy (Co-LLM, base fine-tuned), a rule on that policy's tuned base, a rule on the
// untuned base, calibration, and 7 test examples (uneven ranges for 2 or 3 shards).
const std::string kExperiment = R"([experiment]
name = "shard-test"
seed = 5
database = "DBPATH"
artifacts_dir = "ARTDIR"

)" + colm::test::tiny_experts() + R"(
[task]
plugin = "arithmetic"
train_size = 8
valid_size = 4
test_size = 7
max_tokens = 8

[train.colm]
plugin = "learned"
objective = "marginal_likelihood"
steps = 3
batch_size = 4

[policies.random]
plugin = "rules"
rule = "random"
p = 0.4

[policies.confidence]
plugin = "rules"
rule = "confidence"
base = "colm"

[calibrate]
eta = [0.3, 0.95]
policies = ["colm", "confidence"]

[sweep]
policies = ["colm", "random", "confidence"]
eta = [0.5]
baselines = ["base"]
batch_size = 3

[report]
bootstrap_samples = 100
)";

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t pos = text.find(from); pos != std::string::npos; pos = text.find(from, pos + to.size()))
    text.replace(pos, from.size(), to);
  return text;
}

std::string write_experiment(const std::string& dir, const std::string& db) {
  const auto path = dir + "/exp.toml";
  std::ofstream(path) << replace_all(replace_all(kExperiment, "DBPATH", db), "ARTDIR", dir + "/artifacts");
  return path;
}

std::multiset<std::string> calibration_rows(const std::string& db) {
  auto s = ResultsStore::open(db);
  std::multiset<std::string> out;
  for (const auto& e : s.experiments())
    for (const auto& c : s.calibration(e.id))
      out.insert(c.policy + " " + c.strategy + " " + num(c.threshold) + " " + c.metric + " " + num(c.value) + " " +
                 std::to_string(c.chosen));
  return out;
}

size_t count_status(const std::string& db, const std::string& status) {
  size_t n = 0;
  for (const auto& r : ResultsStore::open(db).runs()) n += r.status == status;
  return n;
}

std::string colm_cmd() { return "COLM_THREADS=2 " + test::colm_binary() + " --log-level warn"; }

}  // namespace

TEST_CASE("example ranges of n shards cover every example once, in order", "[shard]") {
  for (size_t n_examples : {0, 1, 6, 7, 1319})
    for (int64_t n : {1, 2, 3, 8}) {
      size_t next = 0;
      for (int64_t i = 0; i < n; ++i) {
        const auto [lo, hi] = examples_range(n_examples, ShardSpec{i, n});
        CHECK(lo == next);
        CHECK(hi >= lo);
        CHECK(hi - lo <= n_examples / size_t(n) + 1);
        next = hi;
      }
      CHECK(next == n_examples);
    }
  CHECK(parse_shard_by("examples") == "examples");
  CHECK_THROWS_WITH(parse_shard_by("rows"), Catch::Contains("expected runs or examples"));
  CHECK(parse_stage("finish") == "finish");
}

namespace {
// A claim file's text naming this host and a process that has exited.
std::string dead_holder() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  char host[256] = {0};
  ::gethostname(host, sizeof host - 1);
  return std::string(host) + " " + std::to_string(child) + "\n";
}
}  // namespace

TEST_CASE("artifact claims: one builder, the others wait for DONE; a dead builder's claim is taken over",
          "[shard][artifacts]") {
  const auto dir = fs::path(test::temp_dir("colm-claim")) / "artifact";
  auto first = ArtifactClaim::try_take(dir);
  REQUIRE(first);
  CHECK(fs::exists(dir.string() + ".claim"));
  CHECK_FALSE(ArtifactClaim::try_take(dir));  // held by this live process
  // Waiting for an artifact nobody finishes: a clear error naming the claim, after the timeout.
  CHECK_THROWS_WITH(wait_for_artifact(dir, "test artifact", 0.3, "HINT"),
                    Catch::Contains("test artifact is not ready after 0 s") && Catch::Contains("claimed by") &&
                        Catch::Contains("HINT"));
  CHECK_THROWS_WITH(claim_or_wait(dir, "test artifact", 0.3), Catch::Contains("is not ready"));
  fs::create_directories(dir);
  mark_artifact_done(dir);
  CHECK(artifact_done(dir));
  CHECK_FALSE(claim_or_wait(dir, "test artifact", 0.3));  // done: nothing to build
  first.reset();
  CHECK_FALSE(fs::exists(dir.string() + ".claim"));  // released with the claim

  // A claim left by a process of this host that is gone is taken over; nobody's claim: the error says so.
  const auto other = fs::path(test::temp_dir("colm-claim")) / "artifact";
  std::ofstream(other.string() + ".claim") << dead_holder();
  auto taken = claim_or_wait(other, "other artifact", 5);
  CHECK(taken);
  taken.reset();
  CHECK_THROWS_WITH(wait_for_artifact(other, "other artifact", 0.2, ""), Catch::Contains("nobody is building it"));
  // Another host's claim cannot be checked from here: it is respected.
  std::ofstream(other.string() + ".claim") << "some-other-host 1\n";
  CHECK_FALSE(ArtifactClaim::try_take(other));
}

TEST_CASE("a dead builder's claim seen by several waiters at once is taken over by exactly one",
          "[shard][artifacts]") {
  const std::string holder = dead_holder();
  const auto root = fs::path(test::temp_dir("colm-claim-race"));
  constexpr int kThreads = 4, kRounds = 200;
  int rounds_with_one = 0;
  for (int round = 0; round < kRounds; ++round) {
    const auto dir = root / ("artifact" + std::to_string(round));
    std::ofstream(dir.string() + ".claim") << holder;
    std::atomic<int> ready{0};
    std::vector<std::optional<ArtifactClaim>> taken(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&, t] {
        ready.fetch_add(1);
        while (ready.load() < kThreads) {
        }
        taken[static_cast<size_t>(t)] = ArtifactClaim::try_take(dir);
      });
    for (auto& th : threads) th.join();
    int holders = 0;
    for (const auto& c : taken) holders += c.has_value();
    rounds_with_one += holders == 1;
    INFO("round " << round);
    CHECK(holders <= 1);  // never two builders
  }
  // Each round's stale claim was taken over by one waiter at most; the others may simply see the
  // fresh claim (or the takeover in progress) and come back later.
  CHECK(rounds_with_one > 0);
  for (const auto& e : fs::directory_iterator(root)) CHECK(e.path().extension() != ".takeover");
}

TEST_CASE("stages alone, shards by examples, one database each: merged and finished, they equal one process",
          "[shard][runner]") {
  const auto ref_dir = test::temp_dir("colm-shard-ref");
  const auto ref_db = ref_dir + "/ref.db";
  std::string out;
  REQUIRE(test::run_command(colm_cmd() + " run " + write_experiment(ref_dir, ref_db), &out) == 0);
  const auto expected = snapshot(ref_db);
  REQUIRE(count_status(ref_db, "done") == 6);  // colm, random, confidence at 0.5; colm, confidence calibrated; base

  const auto dir = test::temp_dir("colm-shard");
  const auto toml = write_experiment(dir, dir + "/unused.db");
  auto run = [&](const std::string& db, const std::string& args, const std::string& env = "") {
    const int rc = test::run_command(env + colm_cmd() + " run " + toml + " --set experiment.database=" + db + " " + args, &out);
    return rc;
  };
  // A stage alone never builds what an earlier stage makes: it waits, then says what to run.
  CHECK(run(dir + "/early.db", "--stage sweep", "COLM_ARTIFACT_WAIT=0.5 ") != 0);
  CHECK_THAT(out, Catch::Contains("trained policy 'colm' is not ready") && Catch::Contains("--stage train"));
  REQUIRE(run(dir + "/none.db", "--stage train") == 0);
  CHECK(fs::exists(dir + "/artifacts/policies"));
  CHECK(run(dir + "/early.db", "--stage sweep --wait 0.5") != 0);
  CHECK_THAT(out, Catch::Contains("calibration of policy") && Catch::Contains("--stage calibrate"));

  // Calibration in 2 shards, the sweep in 3 shards by examples; each its own database.
  REQUIRE(run(dir + "/c0.db", "--stage calibrate --shard 0/2") == 0);
  REQUIRE(run(dir + "/c1.db", "--stage calibrate --shard 1/2") == 0);
  for (int i = 0; i < 3; ++i) {
    REQUIRE(run(dir + "/s" + std::to_string(i) + ".db", "--stage sweep --shard-by examples --shard " +
                                                             std::to_string(i) + "/3") == 0);
    INFO(out);
    CHECK_THAT(out, Catch::Contains("6 with this shard's examples stored"));
    CHECK(count_status(dir + "/s" + std::to_string(i) + ".db", "done") == 0);
  }
  const auto merged = dir + "/merged.db";
  REQUIRE(test::run_command(colm_cmd() + " merge " + merged + " " + dir + "/c0.db " + dir + "/c1.db " + dir +
                                "/s0.db " + dir + "/s1.db", &out) == 0);
  // One shard missing: finish says which runs are incomplete and fails.
  CHECK(run(merged, "--stage finish", "") == 1);
  CHECK_THAT(out, Catch::Contains("examples are missing"));
  CHECK(count_status(merged, "done") == 0);
  REQUIRE(test::run_command(colm_cmd() + " merge " + merged + " " + dir + "/s2.db", &out) == 0);
  REQUIRE(run(merged, "--stage finish") == 0);
  CHECK_THAT(out, Catch::Contains("6 runs done"));
  INFO("first difference (merged, then single process): " << test::first_difference(snapshot(merged), expected));
  CHECK(snapshot(merged) == expected);
  const double diff = max_probability_difference(merged, ref_db);
  INFO("largest difference of a deferral probability: " << diff);
  CHECK(diff < 1e-6);
  CHECK(calibration_rows(merged) == calibration_rows(ref_db));
  CHECK(calibration_rows(merged).size() == 8);  // 2 policies x 2 eta x (accuracy, deferral_rate)
  // Finishing again changes nothing.
  REQUIRE(run(merged, "--stage finish") == 0);
  CHECK(snapshot(merged) == expected);
}

TEST_CASE("two processes sharding examples into one database at once: the last one finishes every run",
          "[shard][runner]") {
  const auto ref_dir = test::temp_dir("colm-shard-ref");
  const auto ref_db = ref_dir + "/ref.db";
  std::string out;
  REQUIRE(test::run_command(colm_cmd() + " run " + write_experiment(ref_dir, ref_db), &out) == 0);

  // Both start from no artifacts: one trains the policy under its claim, the other waits for it.
  const auto dir = test::temp_dir("colm-shard");
  const auto db = dir + "/shared.db";
  const auto toml = write_experiment(dir, db);
  const auto both = "(" + colm_cmd() + " run " + toml + " --shard-by examples --shard 0/2 > " + dir +
                    "/s0.log 2>&1 & p0=$!; " + colm_cmd() + " run " + toml + " --shard-by examples --shard 1/2 > " +
                    dir + "/s1.log 2>&1 & p1=$!; wait $p0; r0=$?; wait $p1; r1=$?; cat " + dir + "/s0.log " + dir +
                    "/s1.log; exit $((r0 | r1)))";
  const int rc = test::run_command(both, &out);
  INFO(out);
  CHECK(rc == 0);
  CHECK(count_status(db, "done") == 6);
  CHECK(snapshot(db) == snapshot(ref_db));
  CHECK(max_probability_difference(db, ref_db) < 1e-6);
  size_t claims = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir + "/artifacts"))
    claims += e.path().extension() == ".claim";
  CHECK(claims == 0);  // every claim released
}
