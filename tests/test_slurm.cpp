// `colm submit --slurm` against a real single-node Slurm cluster (scripts/slurm-local.sh): the
// merged database of train + calibrate array + sweep array + merge equals one process's run by run.
// Skipped, with the reason, where the cluster cannot start (not root, slurm-wlm/munge missing).
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "db_snapshot.hpp"
#include "harness/store.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using namespace colm;

namespace {

std::string colm_cmd() { return "COLM_THREADS=2 " + test::colm_binary() + " --log-level warn"; }

std::string tiny() { return test::source_dir() + "/experiments/tiny-rules.toml"; }

}  // namespace

TEST_CASE("colm submit checks its command line and writes one batch script per job", "[slurm][cli]") {
  const auto dir = test::temp_dir("colm-submit");
  std::string out;
  CHECK(test::run_command(colm_cmd() + " submit " + tiny() + " --shards 2", &out) == 2);
  CHECK_THAT(out, Catch::Contains("--slurm"));
  CHECK(test::run_command(colm_cmd() + " submit " + tiny() + " --slurm --shards 0", &out) == 2);
  CHECK_THAT(out, Catch::Contains("N >= 1"));
  CHECK(test::run_command(colm_cmd() + " submit " + tiny() + " --slurm --shards 2 --shard-by rows", &out) == 2);
  CHECK(test::run_command(colm_cmd() + " submit " + tiny() + " --slurm --shards 2 --set sweep.bogus=1 --dry-run",
                          &out) != 0);
  CHECK_THAT(out, Catch::Contains("bogus"));

  REQUIRE(test::run_command(colm_cmd() + " submit " + tiny() + " --slurm --shards 3 --dir " + dir +
                                " --dry-run -- --partition=local --time=10",
                            &out) == 0);
  INFO(out);
  // Four sbatch calls, each after the one before it, the extra options passed on.
  CHECK_THAT(out, Catch::Contains("--array=0-2 --dependency=afterok:<train> --kill-on-invalid-dep=yes"));
  CHECK_THAT(out, Catch::Contains("--array=0-2 --dependency=afterok:<calibrate>"));
  CHECK_THAT(out, Catch::Contains("--dependency=afterok:<sweep> --kill-on-invalid-dep=yes --partition=local --time=10"));
  for (const char* job : {"train", "calibrate", "sweep", "merge"}) CHECK(fs::exists(dir + "/" + job + ".sbatch"));
  std::ifstream in(dir + "/sweep.sbatch");
  const std::string sweep((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK_THAT(sweep, Catch::Contains("--stage sweep --shard-by examples --shard \"$SLURM_ARRAY_TASK_ID/3\""));
  std::ifstream min(dir + "/merge.sbatch");
  const std::string merge((std::istreambuf_iterator<char>(min)), std::istreambuf_iterator<char>());
  CHECK_THAT(merge, Catch::Contains("sweep-2.db") && Catch::Contains("--stage finish"));
}

TEST_CASE("an experiment submitted to a local Slurm cluster merges into one process's results, run by run",
          "[slurm]") {
  std::string out;
  const int started = test::run_command("bash " + test::source_dir() + "/scripts/slurm-local.sh start", &out);
  if (started == 3) COLM_SKIP("no local Slurm cluster: " + out);
  REQUIRE(started == 0);

  const auto dir = test::temp_dir("colm-slurm");
  const auto ref_db = dir + "/ref.db", merged_db = dir + "/merged.db";
  REQUIRE(test::run_command(colm_cmd() + " run " + tiny() + " --set experiment.database=" + ref_db +
                                " --set experiment.artifacts_dir=" + dir + "/ref-artifacts",
                            &out) == 0);
  // Three shards by examples (16 test examples: ranges of 5, 5 and 6), one CPU per task.
  const int rc = test::run_command(colm_cmd() + " submit " + tiny() + " --slurm --shards 3 --set experiment.artifacts_dir=" +
                                       dir + "/artifacts --database " + merged_db + " --dir " + dir +
                                       "/slurm --wait-jobs -- --cpus-per-task=1",
                                   &out);
  INFO(out);
  std::string logs;
  test::run_command("tail -n 20 " + dir + "/slurm/*.out", &logs);
  INFO(logs);
  REQUIRE(rc == 0);
  CHECK_THAT(out, Catch::Contains("(merge): COMPLETED"));
  for (int i = 0; i < 3; ++i) {
    CHECK(fs::exists(dir + "/slurm/calibrate-" + std::to_string(i) + ".db"));
    CHECK(fs::exists(dir + "/slurm/sweep-" + std::to_string(i) + ".db"));
  }
  // Every shard's sweep database holds its part of every run, none finished.
  {
    auto shard = ResultsStore::open(dir + "/slurm/sweep-1.db");
    const auto runs = shard.runs();
    REQUIRE(runs.size() == 6);
    for (const auto& r : runs) {
      CHECK(r.status != "done");
      CHECK(shard.examples(r.id, false).size() == 5);  // examples 5..9 of 16
    }
  }
  auto ref = ResultsStore::open(ref_db), merged = ResultsStore::open(merged_db);
  REQUIRE(ref.runs().size() == 6);
  REQUIRE(merged.runs().size() == ref.runs().size());
  for (const auto& r : merged.runs()) CHECK(r.status == "done");
  const auto merged_snapshot = test::snapshot(merged_db), ref_snapshot = test::snapshot(ref_db);
  INFO("first difference (merged, then single process): " << test::first_difference(merged_snapshot, ref_snapshot));
  CHECK(merged_snapshot == ref_snapshot);
  const double diff = test::max_probability_difference(merged_db, ref_db);
  INFO("largest difference of a deferral probability: " << diff);
  CHECK(diff < 1e-6);
}
