// ResultsStore over SQLiteCpp: schema creation and version check, one transaction per write call,
// and the shard merge. The SQL lives here and nowhere else; callers see records, not statements.
#include "harness/store.hpp"

#include <SQLiteCpp/SQLiteCpp.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "colm/hash.hpp"

namespace colm {

namespace {

namespace fs = std::filesystem;

constexpr int kBusyTimeoutMs = 30000;
// Millisecond ISO-8601 UTC: sorts as text and julianday() reads it back.
constexpr const char* kNow = "strftime('%Y-%m-%dT%H:%M:%fZ','now')";

// The schema of version 1. Tokens reference their example, examples and metrics their run, so
// deleting a run's examples takes the tokens with them (ON DELETE CASCADE).
const char* const kSchemaV1 = R"sql(
CREATE TABLE configs (
  hash TEXT PRIMARY KEY,
  toml TEXT NOT NULL,
  created TEXT NOT NULL
);
CREATE TABLE experiments (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  config TEXT NOT NULL,
  config_hash TEXT NOT NULL REFERENCES configs(hash),
  created TEXT NOT NULL,
  updated TEXT NOT NULL,
  git_revision TEXT NOT NULL DEFAULT '',
  colm_version TEXT NOT NULL DEFAULT ''
);
CREATE TABLE runs (
  id INTEGER PRIMARY KEY,
  experiment_id INTEGER NOT NULL REFERENCES experiments(id),
  content_key TEXT NOT NULL UNIQUE,
  policy TEXT NOT NULL DEFAULT '',
  threshold REAL,
  strategy TEXT NOT NULL DEFAULT '',
  split TEXT NOT NULL DEFAULT '',
  seed INTEGER NOT NULL DEFAULT 0,
  params TEXT NOT NULL DEFAULT '{}',
  status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')),
  started TEXT,
  finished TEXT,
  wall_seconds REAL,
  error TEXT,
  plugin_fingerprints TEXT NOT NULL DEFAULT '{}',
  git_revision TEXT NOT NULL DEFAULT '',
  config_hash TEXT REFERENCES configs(hash)
);
CREATE INDEX runs_experiment ON runs(experiment_id);
CREATE INDEX runs_status ON runs(status);
CREATE TABLE metrics (
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  value REAL,
  ci_low REAL,
  ci_high REAL,
  PRIMARY KEY (run_id, name)
);
CREATE TABLE examples (
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  example_id TEXT NOT NULL,
  idx INTEGER NOT NULL,
  prompt TEXT NOT NULL,
  output TEXT NOT NULL,
  reference TEXT NOT NULL,
  metrics TEXT NOT NULL DEFAULT '{}',
  n_tokens INTEGER NOT NULL DEFAULT 0,
  n_deferred INTEGER NOT NULL DEFAULT 0,
  latency_s REAL,
  created TEXT NOT NULL,
  PRIMARY KEY (run_id, example_id)
);
CREATE INDEX examples_run ON examples(run_id, idx);
CREATE TABLE tokens (
  run_id INTEGER NOT NULL,
  example_id TEXT NOT NULL,
  position INTEGER NOT NULL,
  token_id INTEGER NOT NULL,
  text TEXT NOT NULL,
  source INTEGER NOT NULL,
  probs TEXT,
  PRIMARY KEY (run_id, example_id, position),
  FOREIGN KEY (run_id, example_id) REFERENCES examples(run_id, example_id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE TABLE artifacts (
  hash TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  path TEXT NOT NULL,
  created TEXT NOT NULL,
  meta TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX artifacts_kind ON artifacts(kind);
CREATE TABLE calibration (
  experiment_id INTEGER NOT NULL REFERENCES experiments(id),
  policy TEXT NOT NULL,
  strategy TEXT NOT NULL,
  threshold REAL NOT NULL,
  split TEXT NOT NULL,
  metric TEXT NOT NULL,
  value REAL,
  chosen INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (experiment_id, policy, strategy, split, threshold, metric)
);
)sql";

const char* const kRunColumns =
    "r.id, r.experiment_id, e.name, r.content_key, r.policy, r.threshold, r.strategy, r.split, r.seed, "
    "r.params, r.status, r.started, r.finished, r.wall_seconds, r.error, r.plugin_fingerprints, "
    "r.git_revision, r.config_hash";

const char* const kExperimentColumns =
    "id, name, config, config_hash, created, updated, git_revision, colm_version";

std::string text_or_empty(const SQLite::Column& c) { return c.isNull() ? std::string() : c.getString(); }
double real_or_nan(const SQLite::Column& c) {
  return c.isNull() ? std::numeric_limits<double>::quiet_NaN() : c.getDouble();
}
std::optional<double> real_or_none(const SQLite::Column& c) {
  return c.isNull() ? std::nullopt : std::optional<double>(c.getDouble());
}

// SQLite stores NaN as NULL; binding NULL explicitly keeps that visible in the code.
void bind_real(SQLite::Statement& st, int index, double v) {
  if (std::isnan(v)) st.bind(index);
  else st.bind(index, v);
}
void bind_real(SQLite::Statement& st, int index, const std::optional<double>& v) {
  if (v) bind_real(st, index, *v);
  else st.bind(index);
}

RunRecord read_run(SQLite::Statement& st) {
  RunRecord r;
  r.id = st.getColumn(0).getInt64();
  r.experiment_id = st.getColumn(1).getInt64();
  r.experiment = text_or_empty(st.getColumn(2));
  r.content_key = st.getColumn(3).getString();
  r.policy = st.getColumn(4).getString();
  r.threshold = real_or_none(st.getColumn(5));
  r.strategy = st.getColumn(6).getString();
  r.split = st.getColumn(7).getString();
  r.seed = st.getColumn(8).getInt64();
  r.params_json = st.getColumn(9).getString();
  r.status = st.getColumn(10).getString();
  r.started = text_or_empty(st.getColumn(11));
  r.finished = text_or_empty(st.getColumn(12));
  r.wall_seconds = st.getColumn(13).isNull() ? 0.0 : st.getColumn(13).getDouble();
  r.error = text_or_empty(st.getColumn(14));
  r.plugin_fingerprints_json = st.getColumn(15).getString();
  r.git_revision = st.getColumn(16).getString();
  r.config_hash = text_or_empty(st.getColumn(17));
  return r;
}

ExperimentRecord read_experiment(SQLite::Statement& st) {
  ExperimentRecord e;
  e.id = st.getColumn(0).getInt64();
  e.name = st.getColumn(1).getString();
  e.config_toml = st.getColumn(2).getString();
  e.config_hash = st.getColumn(3).getString();
  e.created = st.getColumn(4).getString();
  e.updated = st.getColumn(5).getString();
  e.git_revision = st.getColumn(6).getString();
  e.colm_version = st.getColumn(7).getString();
  return e;
}

// JSON for the per-example metrics and the per-token probabilities; NaN travels as null.
std::string metrics_to_json(const std::map<std::string, double>& m) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : m) j[k] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
  return j.dump();
}
std::map<std::string, double> metrics_from_json(const std::string& text) {
  std::map<std::string, double> out;
  const auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) return out;
  for (const auto& [k, v] : j.items())
    out[k] = v.is_number() ? v.get<double>() : std::numeric_limits<double>::quiet_NaN();
  return out;
}
std::string probs_to_json(const std::vector<double>& p) {
  nlohmann::json j = nlohmann::json::array();
  for (const double v : p) j.push_back(std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr));
  return j.dump();
}
std::vector<double> probs_from_json(const std::string& text) {
  std::vector<double> out;
  const auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_array()) return out;
  for (const auto& v : j) out.push_back(v.is_number() ? v.get<double>() : std::numeric_limits<double>::quiet_NaN());
  return out;
}

bool is_status(const std::string& s) {
  return s == "pending" || s == "running" || s == "done" || s == "failed";
}

}  // namespace

struct ResultsStore::Impl {
  Impl(const std::string& p, int flags) : path(p), db(p, flags, kBusyTimeoutMs) {}
  std::string path;
  SQLite::Database db;
  int version = 0;
  std::mutex mutex;

  // Runs fn, turning SQLite failures into colm::Error naming the database and the operation.
  template <typename F>
  auto guarded(const std::string& what, F&& fn) -> decltype(fn()) {
    try {
      return fn();
    } catch (const SQLite::Exception& e) {
      throw Error("results database " + path + ": " + what + ": " + e.what());
    }
  }

  void require_run(int64_t run_id) {
    SQLite::Statement st(db, "SELECT 1 FROM runs WHERE id = ?");
    st.bind(1, run_id);
    if (!st.executeStep()) throw Error("results database " + path + ": no run with id " + std::to_string(run_id));
  }

  void store_config(const std::string& hash, const std::string& toml) {
    SQLite::Statement st(db, std::string("INSERT INTO configs(hash, toml, created) VALUES (?, ?, ") + kNow +
                                 ") ON CONFLICT(hash) DO NOTHING");
    st.bind(1, hash);
    st.bind(2, toml);
    st.exec();
  }
};

ResultsStore::ResultsStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ResultsStore::ResultsStore(ResultsStore&&) noexcept = default;
ResultsStore& ResultsStore::operator=(ResultsStore&&) noexcept = default;
ResultsStore::~ResultsStore() = default;

ResultsStore ResultsStore::open(const std::string& path) {
  const fs::path p(path);
  std::error_code ec;
  if (p.has_parent_path()) {
    fs::create_directories(p.parent_path(), ec);
    if (ec) throw Error("results database " + path + ": cannot create its directory: " + ec.message());
  }
  if (fs::is_directory(p, ec)) throw Error("results database " + path + " is a directory, not a file");

  std::unique_ptr<Impl> impl;
  try {
    impl = std::make_unique<Impl>(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE | SQLite::OPEN_FULLMUTEX);
  } catch (const SQLite::Exception& e) {
    throw Error("results database " + path + ": cannot open: " + e.what());
  }
  auto& db = impl->db;
  try {
    // The first statement that reads the file is where SQLite notices it is not a database.
    // Switching a new database to WAL needs it alone: another process opening the same new file at
    // that moment makes SQLite answer "database is locked" at once (no busy handler here), so retry.
    std::string mode;
    for (int waited_ms = 0;; waited_ms += 20) {
      try {
        mode = db.execAndGet("PRAGMA journal_mode = WAL").getString();
        break;
      } catch (const SQLite::Exception& e) {
        const int code = e.getErrorCode() & 0xff;
        if ((code != SQLITE_BUSY && code != SQLITE_LOCKED) || waited_ms >= kBusyTimeoutMs) throw;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    if (mode != "wal") {
      spdlog::warn("[store] {}: journal mode is '{}', not WAL (file system without shared memory?): "
                   "concurrent writers will wait on each other",
                   path, mode);
    }
    db.exec("PRAGMA foreign_keys = ON");
    // WAL + NORMAL: a killed process never corrupts the database or loses a committed transaction;
    // only a power failure can lose the last commits.
    db.exec("PRAGMA synchronous = NORMAL");

    SQLite::Transaction tx(db, SQLite::TransactionBehavior::IMMEDIATE);
    if (!db.tableExists("schema_version")) {
      const int n_tables = db.execAndGet("SELECT count(*) FROM sqlite_master WHERE type = 'table'").getInt();
      if (n_tables > 0) {
        throw Error("results database " + path +
                    " is a SQLite database but not a colm results database (it has no schema_version "
                    "table): use another path");
      }
      db.exec("CREATE TABLE schema_version (version INTEGER NOT NULL)");
      db.exec(kSchemaV1);
      db.exec("INSERT INTO schema_version(version) VALUES (" + std::to_string(kResultsSchemaVersion) + ")");
      spdlog::debug("[store] created results database {} (schema version {})", path, kResultsSchemaVersion);
    }
    const auto v = db.execAndGet("SELECT max(version) FROM schema_version");
    const int version = v.isNull() ? 0 : v.getInt();
    if (version > kResultsSchemaVersion) {
      throw Error("results database " + path + " has schema version " + std::to_string(version) +
                  ", this colm understands up to " + std::to_string(kResultsSchemaVersion) +
                  ": upgrade colm or use another database");
    }
    if (version < 1) {
      throw Error("results database " + path + " has no valid schema version (found " + std::to_string(version) +
                  "): it is damaged or not a colm results database");
    }
    // Version 1 is the first schema: there is nothing older to migrate yet.
    tx.commit();
    impl->version = version;
  } catch (const SQLite::Exception& e) {
    if (e.getErrorCode() == SQLITE_NOTADB) {
      throw Error("results database " + path +
                  " is not a SQLite database (file is not a database): move it away or use another path");
    }
    throw Error("results database " + path + ": cannot open: " + e.what());
  }
  return ResultsStore(std::move(impl));
}

const std::string& ResultsStore::path() const { return impl_->path; }
int ResultsStore::schema_version() const { return impl_->version; }

// ---- experiments ----------------------------------------------------------------------------------

int64_t ResultsStore::ensure_experiment(const std::string& name, const std::string& config_toml,
                                        const std::string& git_revision, const std::string& colm_version) {
  COLM_CHECK(!name.empty(), "results database " << impl_->path << ": an experiment needs a name");
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->guarded("ensure_experiment '" + name + "'", [&] {
    auto& db = impl_->db;
    SQLite::Transaction tx(db, SQLite::TransactionBehavior::IMMEDIATE);
    const std::string hash = sha1_hex(config_toml);
    impl_->store_config(hash, config_toml);
    SQLite::Statement st(db, std::string("INSERT INTO experiments(name, config, config_hash, created, updated, "
                                         "git_revision, colm_version) VALUES (?, ?, ?, ") +
                                 kNow + ", " + kNow +
                                 ", ?, ?) ON CONFLICT(name) DO UPDATE SET config = excluded.config, "
                                 "config_hash = excluded.config_hash, updated = excluded.updated, "
                                 "git_revision = excluded.git_revision, colm_version = excluded.colm_version");
    st.bind(1, name);
    st.bind(2, config_toml);
    st.bind(3, hash);
    st.bind(4, git_revision);
    st.bind(5, colm_version);
    st.exec();
    SQLite::Statement id(db, "SELECT id FROM experiments WHERE name = ?");
    id.bind(1, name);
    id.executeStep();
    const int64_t result = id.getColumn(0).getInt64();
    tx.commit();
    return result;
  });
}

std::optional<ExperimentRecord> ResultsStore::find_experiment(const std::string& name) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->guarded("find_experiment", [&]() -> std::optional<ExperimentRecord> {
    SQLite::Statement st(impl_->db, std::string("SELECT ") + kExperimentColumns + " FROM experiments WHERE name = ?");
    st.bind(1, name);
    if (!st.executeStep()) return std::nullopt;
    return read_experiment(st);
  });
}

std::vector<ExperimentRecord> ResultsStore::experiments() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->guarded("experiments", [&] {
    SQLite::Statement st(impl_->db, std::string("SELECT ") + kExperimentColumns + " FROM experiments ORDER BY id");
    std::vector<ExperimentRecord> out;
    while (st.executeStep()) out.push_back(read_experiment(st));
    return out;
  });
}

std::optional<std::string> ResultsStore::config_text(const std::string& config_hash) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->guarded("config_text", [&]() -> std::optional<std::string> {
    SQLite::Statement st(impl_->db, "SELECT toml FROM configs WHERE hash = ?");
    st.bind(1, config_hash);
    if (!st.executeStep()) return std::nullopt;
    return st.getColumn(0).getString();
  });
}

// ---- runs -----------------------------------------------------------------------------------------

int64_t ResultsStore::ensure_run(const RunRecord& run) {
  const auto& path = impl_->path;
  COLM_CHECK(!run.content_key.empty(), "results database " << path << ": a run needs a content key");
  COLM_CHECK(is_status(run.status), "results database " << path << ": run " << run.content_key
                                                         << " has unknown status '" << run.status
                                                         << "' (pending, running, done, failed)");
  COLM_CHECK(nlohmann::json::accept(run.params_json),
             "results database " << path << ": params of run " << run.content_key << " are not valid JSON");
  COLM_CHECK(nlohmann::json::accept(run.plugin_fingerprints_json),
             "results database " << path << ": plugin fingerprints of run " << run.content_key
                                 << " are not valid JSON");
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->guarded("ensure_run " + run.content_key, [&] {
    auto& db = impl_->db;
    SQLite::Transaction tx(db, SQLite::TransactionBehavior::IMMEDIATE);
    SQLite::Statement exp(db, "SELECT config_hash FROM experiments WHERE id = ?");
    exp.bind(1, run.experiment_id);
    if (!exp.executeStep()) {
      throw Error("results database " + path + ": run " + run.content_key + " names experiment id " +
                  std::to_string(run.experiment_id) + ", which does not exist (call ensure_experiment first)");
    }
    const std::string config_hash = run.config_hash.empty() ? exp.getColumn(0).getString() : run.config_hash;
    SQLite::Statement st(db,
                         "INSERT INTO runs(experiment_id, content_key, policy, threshold, strategy, split, seed, "
                         "params, status, error, plugin_fingerprints, git_revision, config_hash) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(content_key) DO NOTHING");
    st.bind(1, run.experiment_id);
    st.bind(2, run.content_key);
    st.bind(3, run.policy);
    bind_real(st, 4, run.threshold);
    st.bind(5, run.strategy);
    st.bind(6, run.split);
    st.bind(7, run.seed);
    st.bind(8, run.params_json);
    st.bind(9, run.status);
    if (run.error.empty()) st.bind(10);
    else st.bind(10, run.error);
    st.bind(11, run.plugin_fingerprints_json);
    st.bind(12, run.git_revision);
    st.bind(13, config_hash);
    st.exec();
    SQLite::Statement id(db, "SELECT id FROM runs WHERE content_key = ?");
    id.bind(1, run.content_key);
    id.executeStep();
    const int64_t result = id.getColumn(0).getInt64();
    tx.commit();
    return result;
  });
}

std::optional<RunRecord> ResultsStore::find_run(const std::string& content_key) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->guarded("find_run", [&]() -> std::optional<RunRecord> {
    SQLite::Statement st(impl_->db, std::string("SELECT ") + kRunColumns +
                                        " FROM runs r JOIN experiments e ON e.id = r.experiment_id "
                                        "WHERE r.content_key = ?");
    st.bind(1, content_key);
    if (!st.executeStep()) return std::nullopt;
    return read_run(st);
  });
}

std::optional<RunRecord> ResultsStore::run(int64_t run_id) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->guarded("run", [&]() -> std::optional<RunRecord> {
    SQLite::Statement st(impl_->db, std::string("SELECT ") + kRunColumns +
                                        " FROM runs r JOIN experiments e ON e.id = r.experiment_id WHERE r.id = ?");
    st.bind(1, run_id);
    if (!st.executeStep()) return std::nullopt;
    return read_run(st);
  });
}

std::vector<RunRecord> ResultsStore::runs(const std::string& experiment) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->guarded("runs", [&] {
    std::string sql = std::string("SELECT ") + kRunColumns + " FROM runs r JOIN experiments e ON e.id = r.experiment_id";
    if (!experiment.empty()) sql += " WHERE e.name = ?";
    sql += " ORDER BY r.id";
    SQLite::Statement st(impl_->db, sql);
    if (!experiment.empty()) st.bind(1, experiment);
    std::vector<RunRecord> out;
    while (st.executeStep()) out.push_back(read_run(st));
    return out;
  });
}

void ResultsStore::set_run_status(int64_t run_id, const std::string& status, const std::string& error) {
  COLM_CHECK(is_status(status), "results database " << impl_->path << ": unknown run status '" << status
                                                    << "' (pending, running, done, failed)");
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->guarded("set_run_status " + std::to_string(run_id), [&] {
    auto& db = impl_->db;
    SQLite::Transaction tx(db, SQLite::TransactionBehavior::IMMEDIATE);
    impl_->require_run(run_id);
    std::string sql;
    if (status == "running") {
      sql = std::string("UPDATE runs SET status = ?, started = ") + kNow +
            ", finished = NULL, wall_seconds = NULL, error = NULLIF(?, '') WHERE id = ?";
    } else if (status == "done" || status == "failed") {
      // wall_seconds from the stored timestamps, so it is right across processes and resumes.
      sql = std::string("UPDATE runs SET status = ?, finished = ") + kNow +
            ", wall_seconds = (julianday(" + kNow + ") - julianday(started)) * 86400.0, error = NULLIF(?, '') "
            "WHERE id = ?";
    } else {
      sql = "UPDATE runs SET status = ?, started = NULL, finished = NULL, wall_seconds = NULL, "
            "error = NULLIF(?, '') WHERE id = ?";
    }
    SQLite::Statement st(db, sql);
    st.bind(1, status);
    st.bind(2, error);
    st.bind(3, run_id);
    st.exec();
    tx.commit();
  });
}

void ResultsStore::reset_run(int64_t run_id) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->guarded("reset_run " + std::to_string(run_id), [&] {
    auto& db = impl_->db;
    SQLite::Transaction tx(db, SQLite::TransactionBehavior::IMMEDIATE);
    impl_->require_run(run_id);
    const std::string id = std::to_string(run_id);
    db.exec("DELETE FROM examples WHERE run_id = " + id);  // tokens follow by cascade
    db.exec("DELETE FROM metrics WHERE run_id = " + id);
    db.exec("UPDATE runs SET status = 'pending', started = NULL, finished = NULL, wall_seconds = NULL, "
            "error = NULL WHERE id = " + id);
    tx.commit();
  });
}

// ---- examples and tokens --------------------------------------------------------------------------

std::set<std::string> ResultsStore::finished_example_ids(int64_t run_id) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->guarded("finished_example_ids", [&] {
    SQLite::Statement st(impl_->db, "SELECT example_id FROM examples WHERE run_id = ?");
    st.bind(1, run_id);
    std::set<std::string> out;
    while (st.executeStep()) out.insert(st.getColumn(0).getString());
    return out;
  });
}

void ResultsStore::add_examples(int64_t run_id, const std::vector<ExampleRecord>& examples) {
  const auto& path = impl_->path;
  {
    // A duplicate within one batch is a caller bug; storing either copy would hide it.
    std::set<std::string> seen;
    for (const auto& ex : examples) {
      COLM_CHECK(seen.insert(ex.example_id).second, "results database " << path << ": example '" << ex.example_id
                                                                        << "' appears twice in one batch for run "
                                                                        << run_id);
    }
  }
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->guarded("add_examples for run " + std::to_string(run_id), [&] {
    auto& db = impl_->db;
    SQLite::Transaction tx(db, SQLite::TransactionBehavior::IMMEDIATE);
    impl_->require_run(run_id);
    SQLite::Statement del(db, "DELETE FROM examples WHERE run_id = ? AND example_id = ?");
    SQLite::Statement ins(db, std::string("INSERT INTO examples(run_id, example_id, idx, prompt, output, reference, "
                                          "metrics, n_tokens, n_deferred, latency_s, created) "
                                          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ") + kNow + ")");
    SQLite::Statement tok(db, "INSERT INTO tokens(run_id, example_id, position, token_id, text, source, probs) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?)");
    for (const auto& ex : examples) {
      try {
        del.bind(1, run_id);
        del.bind(2, ex.example_id);
        del.exec();
        del.reset();
        ins.bind(1, run_id);
        ins.bind(2, ex.example_id);
        ins.bind(3, ex.index);
        ins.bind(4, ex.prompt);
        ins.bind(5, ex.output);
        ins.bind(6, ex.reference);
        ins.bind(7, metrics_to_json(ex.metrics));
        ins.bind(8, ex.n_tokens);
        ins.bind(9, ex.n_deferred);
        bind_real(ins, 10, ex.latency_s);
        ins.exec();
        ins.reset();
        for (const auto& t : ex.tokens) {
          tok.bind(1, run_id);
          tok.bind(2, ex.example_id);
          tok.bind(3, t.position);
          tok.bind(4, t.token_id);
          tok.bind(5, t.text);
          tok.bind(6, t.source);
          if (t.probs.empty()) tok.bind(7);
          else tok.bind(7, probs_to_json(t.probs));
          tok.exec();
          tok.reset();
        }
      } catch (const SQLite::Exception& e) {
        // The transaction's destructor rolls the whole batch back.
        throw Error("results database " + path + ": cannot store example '" + ex.example_id + "' of run " +
                    std::to_string(run_id) + " (the whole batch of " + std::to_string(examples.size()) +
                    " examples was rolled back): " + e.what());
      }
    }
    tx.commit();
  });
}

std::vector<ExampleRecord> ResultsStore::examples(int64_t run_id, bool with_tokens) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->guarded("examples of run " + std::to_string(run_id), [&] {
    auto& db = impl_->db;
    // One read transaction, so examples and tokens come from the same snapshot.
    SQLite::Transaction tx(db, SQLite::TransactionBehavior::DEFERRED);
    SQLite::Statement st(db, "SELECT example_id, idx, prompt, output, reference, metrics, n_tokens, n_deferred, "
                             "latency_s FROM examples WHERE run_id = ? ORDER BY idx, example_id");
    st.bind(1, run_id);
    std::vector<ExampleRecord> out;
    std::map<std::string, size_t> index_of;
    while (st.executeStep()) {
      ExampleRecord e;
      e.example_id = st.getColumn(0).getString();
      e.index = st.getColumn(1).getInt64();
      e.prompt = st.getColumn(2).getString();
      e.output = st.getColumn(3).getString();
      e.reference = st.getColumn(4).getString();
      e.metrics = metrics_from_json(st.getColumn(5).getString());
      e.n_tokens = st.getColumn(6).getInt64();
      e.n_deferred = st.getColumn(7).getInt64();
      e.latency_s = real_or_nan(st.getColumn(8));
      index_of[e.example_id] = out.size();
      out.push_back(std::move(e));
    }
    if (with_tokens && !out.empty()) {
      SQLite::Statement t(db, "SELECT example_id, position, token_id, text, source, probs FROM tokens "
                              "WHERE run_id = ? ORDER BY example_id, position");
      t.bind(1, run_id);
      while (t.executeStep()) {
        auto it = index_of.find(t.getColumn(0).getString());
        if (it == index_of.end()) continue;
        TokenRecord tr;
        tr.position = t.getColumn(1).getInt64();
        tr.token_id = t.getColumn(2).getInt64();
        tr.text = t.getColumn(3).getString();
        tr.source = t.getColumn(4).getInt();
        if (!t.getColumn(5).isNull()) tr.probs = probs_from_json(t.getColumn(5).getString());
        out[it->second].tokens.push_back(std::move(tr));
      }
    }
    tx.commit();
    return out;
  });
}

// ---- metrics --------------------------------------------------------------------------------------

void ResultsStore::set_metrics(int64_t run_id, const std::vector<MetricRecord>& metrics) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->guarded("set_metrics for run " + std::to_string(run_id), [&] {
    auto& db = impl_->db;
    SQLite::Transaction tx(db, SQLite::TransactionBehavior::IMMEDIATE);
    impl_->require_run(run_id);
    SQLite::Statement del(db, "DELETE FROM metrics WHERE run_id = ?");
    del.bind(1, run_id);
    del.exec();
    SQLite::Statement ins(db, "INSERT INTO metrics(run_id, name, value, ci_low, ci_high) VALUES (?, ?, ?, ?, ?)");
    for (const auto& m : metrics) {
      ins.bind(1, run_id);
      ins.bind(2, m.name);
      bind_real(ins, 3, m.value);
      bind_real(ins, 4, m.ci_low);
      bind_real(ins, 5, m.ci_high);
      ins.exec();
      ins.reset();
    }
    tx.commit();
  });
}

std::vector<MetricRecord> ResultsStore::metrics(int64_t run_id) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->guarded("metrics of run " + std::to_string(run_id), [&] {
    SQLite::Statement st(impl_->db, "SELECT name, value, ci_low, ci_high FROM metrics WHERE run_id = ? ORDER BY name");
    st.bind(1, run_id);
    std::vector<MetricRecord> out;
    while (st.executeStep()) {
      MetricRecord m;
      m.name = st.getColumn(0).getString();
      m.value = real_or_nan(st.getColumn(1));
      m.ci_low = real_or_none(st.getColumn(2));
      m.ci_high = real_or_none(st.getColumn(3));
      out.push_back(std::move(m));
    }
    return out;
  });
}

// ---- artifacts ------------------------------------------------------------------------------------

void ResultsStore::put_artifact(const ArtifactRecord& a) {
  COLM_CHECK(!a.hash.empty(), "results database " << impl_->path << ": an artifact needs a hash");
  COLM_CHECK(nlohmann::json::accept(a.meta_json),
             "results database " << impl_->path << ": meta of artifact " << a.hash << " is not valid JSON");
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->guarded("put_artifact " + a.hash, [&] {
    SQLite::Statement st(impl_->db, std::string("INSERT INTO artifacts(hash, kind, path, created, meta) "
                                                "VALUES (?, ?, ?, ") +
                                        kNow +
                                        ", ?) ON CONFLICT(hash) DO UPDATE SET kind = excluded.kind, "
                                        "path = excluded.path, meta = excluded.meta");
    st.bind(1, a.hash);
    st.bind(2, a.kind);
    st.bind(3, a.path);
    st.bind(4, a.meta_json);
    st.exec();
  });
}

namespace {
ArtifactRecord read_artifact(SQLite::Statement& st) {
  ArtifactRecord a;
  a.hash = st.getColumn(0).getString();
  a.kind = st.getColumn(1).getString();
  a.path = st.getColumn(2).getString();
  a.created = st.getColumn(3).getString();
  a.meta_json = st.getColumn(4).getString();
  return a;
}
}  // namespace

std::optional<ArtifactRecord> ResultsStore::get_artifact(const std::string& hash) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->guarded("get_artifact", [&]() -> std::optional<ArtifactRecord> {
    SQLite::Statement st(impl_->db, "SELECT hash, kind, path, created, meta FROM artifacts WHERE hash = ?");
    st.bind(1, hash);
    if (!st.executeStep()) return std::nullopt;
    return read_artifact(st);
  });
}

std::vector<ArtifactRecord> ResultsStore::artifacts(const std::string& kind) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->guarded("artifacts", [&] {
    std::string sql = "SELECT hash, kind, path, created, meta FROM artifacts";
    if (!kind.empty()) sql += " WHERE kind = ?";
    sql += " ORDER BY created, hash";
    SQLite::Statement st(impl_->db, sql);
    if (!kind.empty()) st.bind(1, kind);
    std::vector<ArtifactRecord> out;
    while (st.executeStep()) out.push_back(read_artifact(st));
    return out;
  });
}

void ResultsStore::remove_artifact(const std::string& hash) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->guarded("remove_artifact " + hash, [&] {
    SQLite::Statement st(impl_->db, "DELETE FROM artifacts WHERE hash = ?");
    st.bind(1, hash);
    st.exec();
  });
}

// ---- calibration ----------------------------------------------------------------------------------

void ResultsStore::set_calibration(int64_t experiment_id, const std::string& policy, const std::string& strategy,
                                   const std::string& split, const std::vector<CalibrationRecord>& rows) {
  for (const auto& r : rows) {
    COLM_CHECK(r.experiment_id == experiment_id && r.policy == policy && r.strategy == strategy && r.split == split,
               "results database " << impl_->path << ": set_calibration(" << experiment_id << ", " << policy << ", "
                                   << strategy << ", " << split << ") got a row for (" << r.experiment_id << ", "
                                   << r.policy << ", " << r.strategy << ", " << r.split << ")");
  }
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->guarded("set_calibration", [&] {
    auto& db = impl_->db;
    SQLite::Transaction tx(db, SQLite::TransactionBehavior::IMMEDIATE);
    SQLite::Statement del(db, "DELETE FROM calibration WHERE experiment_id = ? AND policy = ? AND strategy = ? "
                              "AND split = ?");
    del.bind(1, experiment_id);
    del.bind(2, policy);
    del.bind(3, strategy);
    del.bind(4, split);
    del.exec();
    SQLite::Statement ins(db, "INSERT INTO calibration(experiment_id, policy, strategy, threshold, split, metric, "
                              "value, chosen) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
    for (const auto& r : rows) {
      ins.bind(1, experiment_id);
      ins.bind(2, policy);
      ins.bind(3, strategy);
      ins.bind(4, r.threshold);
      ins.bind(5, split);
      ins.bind(6, r.metric);
      bind_real(ins, 7, r.value);
      ins.bind(8, r.chosen ? 1 : 0);
      ins.exec();
      ins.reset();
    }
    tx.commit();
  });
}

namespace {
CalibrationRecord read_calibration(SQLite::Statement& st) {
  CalibrationRecord c;
  c.experiment_id = st.getColumn(0).getInt64();
  c.policy = st.getColumn(1).getString();
  c.strategy = st.getColumn(2).getString();
  c.threshold = st.getColumn(3).getDouble();
  c.split = st.getColumn(4).getString();
  c.metric = st.getColumn(5).getString();
  c.value = real_or_nan(st.getColumn(6));
  c.chosen = st.getColumn(7).getInt() != 0;
  return c;
}
const char* const kCalibrationColumns = "experiment_id, policy, strategy, threshold, split, metric, value, chosen";
}  // namespace

std::vector<CalibrationRecord> ResultsStore::calibration(int64_t experiment_id) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->guarded("calibration", [&] {
    SQLite::Statement st(impl_->db, std::string("SELECT ") + kCalibrationColumns +
                                        " FROM calibration WHERE experiment_id = ? "
                                        "ORDER BY policy, strategy, split, metric, threshold");
    st.bind(1, experiment_id);
    std::vector<CalibrationRecord> out;
    while (st.executeStep()) out.push_back(read_calibration(st));
    return out;
  });
}

std::optional<CalibrationRecord> ResultsStore::chosen_calibration(int64_t experiment_id, const std::string& policy,
                                                                  const std::string& strategy,
                                                                  const std::string& split) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->guarded("chosen_calibration", [&]() -> std::optional<CalibrationRecord> {
    SQLite::Statement st(impl_->db, std::string("SELECT ") + kCalibrationColumns +
                                        " FROM calibration WHERE experiment_id = ? AND policy = ? AND strategy = ? "
                                        "AND split = ? AND chosen = 1 ORDER BY metric, threshold LIMIT 1");
    st.bind(1, experiment_id);
    st.bind(2, policy);
    st.bind(3, strategy);
    st.bind(4, split);
    if (!st.executeStep()) return std::nullopt;
    return read_calibration(st);
  });
}

// ---- maintenance ----------------------------------------------------------------------------------

MergeStats ResultsStore::merge_from(const std::string& other_path) {
  const auto& path = impl_->path;
  std::error_code ec;
  if (!fs::is_regular_file(other_path, ec)) {
    // ATTACH would silently create an empty database; a typo must not look like an empty shard.
    throw Error("results database " + path + ": cannot merge " + other_path + ": no such file");
  }
  if (fs::equivalent(other_path, path, ec)) {
    throw Error("results database " + path + ": cannot merge a database into itself");
  }
  std::lock_guard<std::mutex> lock(impl_->mutex);
  auto& db = impl_->db;
  MergeStats stats;
  const std::string what = "merge from " + other_path;
  impl_->guarded(what, [&] {
    {
      SQLite::Statement attach(db, "ATTACH DATABASE ? AS src");
      attach.bind(1, other_path);
      attach.exec();
    }
    // Detach on every exit path, success or not; the transaction (below) is already closed then.
    struct Detach {
      SQLite::Database& db;
      ~Detach() {
        try {
          db.exec("DETACH DATABASE src");
        } catch (...) {
        }
      }
    } detach{db};

    int src_version = 0;
    try {
      src_version = db.execAndGet("SELECT max(version) FROM src.schema_version").getInt();
    } catch (const SQLite::Exception& e) {
      throw Error("results database " + path + ": cannot merge " + other_path +
                  ": not a colm results database (" + e.what() + ")");
    }
    if (src_version != kResultsSchemaVersion) {
      throw Error("results database " + path + ": cannot merge " + other_path + ": it has schema version " +
                  std::to_string(src_version) + ", this colm writes version " +
                  std::to_string(kResultsSchemaVersion));
    }

    SQLite::Transaction tx(db, SQLite::TransactionBehavior::IMMEDIATE);
    stats.configs = db.exec("INSERT INTO main.configs(hash, toml, created) SELECT hash, toml, created "
                            "FROM src.configs WHERE true ON CONFLICT(hash) DO NOTHING");
    stats.experiments = db.exec(
        "INSERT INTO main.experiments(name, config, config_hash, created, updated, git_revision, colm_version) "
        "SELECT name, config, config_hash, created, updated, git_revision, colm_version FROM src.experiments "
        "WHERE true ON CONFLICT(name) DO NOTHING");

    // Pair every shard run with this database's run of the same content key (dst_id NULL: new).
    db.exec("DROP TABLE IF EXISTS temp.merge_runs");
    db.exec("CREATE TEMP TABLE merge_runs AS SELECT r.id AS src_id, d.id AS dst_id, "
            "(r.status = 'done' AND d.id IS NOT NULL AND d.status <> 'done') AS take "
            "FROM src.runs r LEFT JOIN main.runs d ON d.content_key = r.content_key");

    // A run the shard finished and this database did not: the shard's version wins whole.
    db.exec("DELETE FROM main.examples WHERE run_id IN (SELECT dst_id FROM temp.merge_runs WHERE take)");
    db.exec("DELETE FROM main.metrics WHERE run_id IN (SELECT dst_id FROM temp.merge_runs WHERE take)");
    stats.runs_replaced = db.exec(
        "UPDATE main.runs SET (policy, threshold, strategy, split, seed, params, status, started, finished, "
        "wall_seconds, error, plugin_fingerprints, git_revision, config_hash) = "
        "(SELECT r.policy, r.threshold, r.strategy, r.split, r.seed, r.params, r.status, r.started, r.finished, "
        "r.wall_seconds, r.error, r.plugin_fingerprints, r.git_revision, r.config_hash FROM src.runs r "
        "WHERE r.id = (SELECT m.src_id FROM temp.merge_runs m WHERE m.dst_id = main.runs.id)) "
        "WHERE id IN (SELECT dst_id FROM temp.merge_runs WHERE take)");

    stats.runs = db.exec(
        "INSERT INTO main.runs(experiment_id, content_key, policy, threshold, strategy, split, seed, params, "
        "status, started, finished, wall_seconds, error, plugin_fingerprints, git_revision, config_hash) "
        "SELECT me.id, r.content_key, r.policy, r.threshold, r.strategy, r.split, r.seed, r.params, r.status, "
        "r.started, r.finished, r.wall_seconds, r.error, r.plugin_fingerprints, r.git_revision, r.config_hash "
        "FROM src.runs r JOIN src.experiments se ON se.id = r.experiment_id "
        "JOIN main.experiments me ON me.name = se.name "
        "WHERE r.id IN (SELECT src_id FROM temp.merge_runs WHERE dst_id IS NULL) ORDER BY r.id");
    db.exec("UPDATE temp.merge_runs SET dst_id = (SELECT d.id FROM main.runs d JOIN src.runs r "
            "ON r.content_key = d.content_key WHERE r.id = merge_runs.src_id) WHERE dst_id IS NULL");

    // Examples this database lacks, with their tokens (an example is copied whole or not at all).
    db.exec("DROP TABLE IF EXISTS temp.merge_examples");
    db.exec("CREATE TEMP TABLE merge_examples AS SELECT m.src_id, m.dst_id, e.example_id "
            "FROM src.examples e JOIN temp.merge_runs m ON m.src_id = e.run_id "
            "WHERE NOT EXISTS (SELECT 1 FROM main.examples x WHERE x.run_id = m.dst_id "
            "AND x.example_id = e.example_id)");
    stats.examples = db.exec(
        "INSERT INTO main.examples(run_id, example_id, idx, prompt, output, reference, metrics, n_tokens, "
        "n_deferred, latency_s, created) SELECT m.dst_id, e.example_id, e.idx, e.prompt, e.output, e.reference, "
        "e.metrics, e.n_tokens, e.n_deferred, e.latency_s, e.created FROM temp.merge_examples m "
        "JOIN src.examples e ON e.run_id = m.src_id AND e.example_id = m.example_id");
    stats.tokens = db.exec(
        "INSERT INTO main.tokens(run_id, example_id, position, token_id, text, source, probs) "
        "SELECT m.dst_id, t.example_id, t.position, t.token_id, t.text, t.source, t.probs "
        "FROM temp.merge_examples m JOIN src.tokens t ON t.run_id = m.src_id AND t.example_id = m.example_id");
    stats.metrics = db.exec(
        "INSERT INTO main.metrics(run_id, name, value, ci_low, ci_high) "
        "SELECT m.dst_id, x.name, x.value, x.ci_low, x.ci_high FROM src.metrics x "
        "JOIN temp.merge_runs m ON m.src_id = x.run_id WHERE true ON CONFLICT(run_id, name) DO NOTHING");
    stats.artifacts = db.exec("INSERT INTO main.artifacts(hash, kind, path, created, meta) "
                              "SELECT hash, kind, path, created, meta FROM src.artifacts "
                              "WHERE true ON CONFLICT(hash) DO NOTHING");
    stats.calibration = db.exec(
        "INSERT INTO main.calibration(experiment_id, policy, strategy, threshold, split, metric, value, chosen) "
        "SELECT me.id, c.policy, c.strategy, c.threshold, c.split, c.metric, c.value, c.chosen "
        "FROM src.calibration c JOIN src.experiments se ON se.id = c.experiment_id "
        "JOIN main.experiments me ON me.name = se.name WHERE true ON CONFLICT DO NOTHING");
    db.exec("DROP TABLE temp.merge_examples");
    db.exec("DROP TABLE temp.merge_runs");
    tx.commit();
  });
  spdlog::info("[store] merged {} into {}: {} experiments, {} runs new, {} runs replaced, {} examples, "
               "{} tokens, {} metrics, {} artifacts, {} calibration rows",
               other_path, path, stats.experiments, stats.runs, stats.runs_replaced, stats.examples,
               stats.tokens, stats.metrics, stats.artifacts, stats.calibration);
  return stats;
}

std::string ResultsStore::integrity_check() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->guarded("integrity_check", [&] {
    SQLite::Statement st(impl_->db, "PRAGMA integrity_check");
    std::string out;
    while (st.executeStep()) {
      if (!out.empty()) out += "\n";
      out += st.getColumn(0).getString();
    }
    return out;
  });
}

}  // namespace colm
