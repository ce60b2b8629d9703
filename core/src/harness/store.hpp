// ResultsStore: the SQLite results database (DESIGN.md section 5) the experiment runner writes and
// `colm report` reads. It owns the schema and its version; what a run means is the runner's business.
//
// Concurrency: one ResultsStore per thread or process is the intended use (each has its own
// connection; WAL mode and a 30 s busy timeout let several processes write one database). One
// ResultsStore may also be shared between threads: its methods are serialised by a mutex.
// Every write method is one transaction: a process killed mid-call leaves all of it or none of it.
// All methods throw colm::Error naming the database and the operation on failure.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "colm/error.hpp"

namespace colm {

// The schema this code writes and reads. A database with a newer version is refused.
constexpr int kResultsSchemaVersion = 1;

struct ExperimentRecord {
  int64_t id = 0;
  std::string name;          // unique
  std::string config_toml;   // the resolved configuration, as given to the latest ensure_experiment
  std::string config_hash;   // sha1 of config_toml; every version is kept in the configs table
  std::string created;       // ISO-8601 UTC, set by the store
  std::string updated;       // ISO-8601 UTC, last ensure_experiment
  std::string git_revision;
  std::string colm_version;
};

// Run status values (checked by the schema): "pending", "running", "done", "failed".
struct RunRecord {
  int64_t id = 0;              // assigned by the store
  int64_t experiment_id = 0;   // must exist (ensure_experiment)
  std::string experiment;      // the experiment's name; filled by readers, ignored by ensure_run
  std::string content_key;     // unique identity of the run (hash of everything it depends on)
  std::string policy;
  std::optional<double> threshold;  // eta; none for runs without one (single-model baselines)
  std::string strategy;
  std::string split;
  int64_t seed = 0;
  std::string params_json = "{}";               // every resolved parameter of the run, a JSON object
  std::string status = "pending";
  std::string started;                          // ISO-8601 UTC; empty until status "running"
  std::string finished;                         // ISO-8601 UTC; empty until "done"/"failed"
  double wall_seconds = 0;                      // finished - started, set by set_run_status
  std::string error;                            // the failure message of a "failed" run
  std::string plugin_fingerprints_json = "{}";  // {"experts.base": "<fingerprint>", ...}
  std::string git_revision;
  std::string config_hash;  // configs.hash of the experiment config; empty -> the experiment's current
};

// One generated token. source: 0 = base model, j = assistant j.
struct TokenRecord {
  int64_t position = 0;          // 0-based index within the output
  int64_t token_id = 0;
  std::string text;              // decoded piece
  int source = 0;
  std::vector<double> probs;     // deferral probabilities P(Z = 0..M); may be empty (not stored)
};

struct ExampleRecord {
  std::string example_id;        // the task's id; unique within a run
  int64_t index = 0;             // position in the split, for stable ordering
  std::string prompt;
  std::string output;
  std::string reference;
  std::map<std::string, double> metrics;  // task.score() of this example
  int64_t n_tokens = 0;
  int64_t n_deferred = 0;        // tokens emitted by an assistant
  double latency_s = 0;
  std::vector<TokenRecord> tokens;  // written by add_examples; read back only when asked for
};

struct MetricRecord {
  std::string name;
  double value = 0;
  std::optional<double> ci_low;   // confidence interval bounds, when computed
  std::optional<double> ci_high;
};

struct ArtifactRecord {
  std::string hash;        // content key of the artifact (primary key)
  std::string kind;        // "checkpoint", "scores", "policy", ...
  std::string path;        // where the files are
  std::string created;     // ISO-8601 UTC, set by the store
  std::string meta_json = "{}";
};

// One point of a calibration sweep on the validation split.
struct CalibrationRecord {
  int64_t experiment_id = 0;
  std::string policy;
  std::string strategy;
  double threshold = 0;
  std::string split;
  std::string metric;
  double value = 0;
  bool chosen = false;     // the threshold picked for the test sweep
};

// What merge_from added (rows new to this database).
struct MergeStats {
  int64_t experiments = 0, runs = 0, runs_replaced = 0, examples = 0, tokens = 0, metrics = 0,
          artifacts = 0, calibration = 0, configs = 0;
};

class COLM_VISIBLE ResultsStore {
 public:
  // Opens (creating it and its parent directories when absent) the database at path: WAL mode,
  // 30 s busy timeout, foreign keys on, schema created when new. Refuses a file that is not a
  // SQLite database and a database whose schema version is newer than kResultsSchemaVersion.
  static ResultsStore open(const std::string& path);
  ResultsStore(ResultsStore&&) noexcept;
  ResultsStore& operator=(ResultsStore&&) noexcept;
  ~ResultsStore();

  const std::string& path() const;
  int schema_version() const;

  // --- experiments ---
  // Insert-or-get by name. An existing experiment gets config/git/version updated to these
  // values (runs keep the config hash they were made with); every config text is kept.
  int64_t ensure_experiment(const std::string& name, const std::string& config_toml,
                            const std::string& git_revision, const std::string& colm_version);
  std::optional<ExperimentRecord> find_experiment(const std::string& name) const;
  std::vector<ExperimentRecord> experiments() const;
  // The config text with this hash (any version ever given to ensure_experiment), if stored.
  std::optional<std::string> config_text(const std::string& config_hash) const;

  // --- runs ---
  // Insert-or-get by content_key: returns the id of the stored run. An existing run is left
  // untouched (its status tells the caller whether to skip it or resume it).
  int64_t ensure_run(const RunRecord& run);
  std::optional<RunRecord> find_run(const std::string& content_key) const;
  std::optional<RunRecord> run(int64_t run_id) const;
  // Runs of one experiment (by name), or of all experiments when experiment is empty; by id.
  std::vector<RunRecord> runs(const std::string& experiment = "") const;
  // status "running" stamps started (and clears finished/error); "done"/"failed" stamp finished
  // and wall_seconds; error is stored for "failed". Unknown status or run id -> colm::Error.
  void set_run_status(int64_t run_id, const std::string& status, const std::string& error = "");
  // Deletes a run's examples, tokens and metrics and sets it back to "pending" (a forced rerun).
  void reset_run(int64_t run_id);

  // --- examples and tokens ---
  std::set<std::string> finished_example_ids(int64_t run_id) const;
  // Stores a batch of examples with their tokens in ONE transaction. An example already stored
  // for this run is replaced (with its tokens). Any failing row rolls back the whole batch.
  void add_examples(int64_t run_id, const std::vector<ExampleRecord>& examples);
  // Examples of a run ordered by index; tokens (ordered by position) only when with_tokens.
  std::vector<ExampleRecord> examples(int64_t run_id, bool with_tokens) const;

  // --- metrics ---
  // Replaces every metric of the run with these, in one transaction.
  void set_metrics(int64_t run_id, const std::vector<MetricRecord>& metrics);
  std::vector<MetricRecord> metrics(int64_t run_id) const;  // ordered by name

  // --- artifacts ---
  // Insert or update (kind, path, meta) by hash; created is kept from the first put.
  void put_artifact(const ArtifactRecord& artifact);
  std::optional<ArtifactRecord> get_artifact(const std::string& hash) const;
  std::vector<ArtifactRecord> artifacts(const std::string& kind = "") const;  // all kinds when empty
  void remove_artifact(const std::string& hash);

  // --- calibration ---
  // Replaces the calibration rows of (experiment, policy, strategy, split) with rows, in one
  // transaction; each row's own experiment_id/policy/strategy/split must match.
  void set_calibration(int64_t experiment_id, const std::string& policy, const std::string& strategy,
                       const std::string& split, const std::vector<CalibrationRecord>& rows);
  std::vector<CalibrationRecord> calibration(int64_t experiment_id) const;
  // The chosen row of (experiment, policy, strategy, split), if calibration picked one.
  std::optional<CalibrationRecord> chosen_calibration(int64_t experiment_id, const std::string& policy,
                                                      const std::string& strategy,
                                                      const std::string& split) const;

  // --- maintenance ---
  // Copies everything from a shard database into this one, in one transaction. Experiments are
  // matched by name, runs by content_key, artifacts by hash. A run new here is copied whole; a run
  // "done" there and not here replaces this one; otherwise only examples missing here are added.
  // Idempotent: merging the same shard twice adds nothing the second time.
  MergeStats merge_from(const std::string& other_path);
  // PRAGMA integrity_check's text ("ok" for a sound database).
  std::string integrity_check() const;

  struct Impl;

 private:
  explicit ResultsStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace colm
