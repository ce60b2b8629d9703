// The report: reads a results database (never writes it) and renders its runs, calibration curves,
// paired comparisons (each policy with the best single model, the learned policy with every run),
// curves on test and deferral statistics as Markdown, HTML or JSON.
// What a run means comes from the runner (store.hpp, experiments/README.md); this file only reads.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "harness/stats.hpp"
#include "harness/store.hpp"

namespace colm {

struct ReportOptions {
  std::string experiment;        // only this experiment (must exist); empty: every experiment
  std::string metric;            // the compared metric; empty: accuracy, else exact_match, else the first
  int64_t bootstrap_samples = -1;  // paired bootstrap resamples; -1: the experiment's [report] setting
  double confidence = -1;        // interval level; -1: the experiment's [report] setting
  int64_t examples = -1;         // example outputs shown per policy; -1: the experiment's [report] setting
  int64_t top_tokens = 12;       // most frequent deferred tokens listed per run
  bool comparisons = true;       // paired comparisons (reads the examples, not their tokens)
  bool analysis = true;          // deferral statistics and example outputs (reads the token traces)
};

// One run as the report sees it.
struct ReportRun {
  RunRecord run;
  std::map<std::string, MetricRecord> metrics;  // by name, as stored by the runner
  bool single = false;          // a single-model run (runner kind "single" / strategy "single")
  bool baseline = false;        // single, or a rules policy that never / always defers
  std::string baseline_label;   // e.g. "base alone (base)"
  bool calibrated = false;      // the runner's calibrated run (params "calibrated", or calibrated_eta)
  // From the run's params; empty / absent where an older database did not record them.
  std::string kind;             // "policy", "single", "teacher_forced", "combine"
  std::string plugin;           // the policy plugin (else the stored config's [policies.NAME] plugin)
  std::string rule;             // a rules policy's rule (else the stored config's)
  std::string objective;        // a trained policy's objective (else the stored config's [train.NAME])
  std::string base;             // what decoded as base: an expert, or a trained policy's tuned base
  std::vector<std::string> assistants;  // the assistants it decided between (source j = assistants[j-1])
  std::optional<double> target_rate;  // the deferral rate a rate-calibrated or curve run aimed at
  std::string calibration_edge;  // "lowest" / "highest": the chosen candidate was at an edge of those tried
  bool curve = false;           // a test-split run of a policy at a fixed deferral rate (params "curve")
  bool learned = false;         // its policy was trained with objective "marginal_likelihood"
  int64_t n_examples = 0;       // examples stored
  int64_t n_tokens = 0;         // generated tokens, summed over examples
  int64_t n_deferred = 0;       // tokens an assistant emitted
};

// A policy run against a reference run on the same split, paired by example id: the best single
// model (ReportExperiment::comparisons), or any other run (ReportExperiment::learned_comparisons).
struct ReportComparison {
  int64_t run_id = 0;
  int64_t reference_run_id = 0;
  std::string metric;
  int64_t n = 0;                 // examples both runs have the metric for
  double policy_mean = 0, reference_mean = 0;
  PairedDifference difference;   // policy - reference
  std::optional<McNemarResult> mcnemar;  // when the metric is 0/1 on every paired example
};

struct TokenCount {
  std::string text;
  int64_t count = 0;
};

// Where a policy run defers, from the per-token trace.
struct ReportDeferral {
  int64_t run_id = 0;
  int64_t tokens = 0;              // tokens in the trace
  int64_t deferred = 0;            // source != 0
  int64_t deferred_digits = 0;     // deferred tokens whose text (without spaces) is all digits
  int64_t digits = 0;              // such tokens among all
  int64_t result_digits = 0;       // digit tokens of a computed result: a number right after "=" (see is_result_digit)
  int64_t deferred_result_digits = 0;
  std::vector<int64_t> by_source;  // tokens per source (0 = base)
  std::vector<std::string> source_names;  // per source: the base, then the run's assistants
  // Per source: result digits it emitted, by the operation of the calculation they end ('+', '-',
  // '*', '/', or '?' when none is found; see result_operation).
  std::vector<std::map<char, int64_t>> results_by_source;
  std::vector<TokenCount> top;     // most frequent deferred token texts
};

struct ReportExample {
  ExampleRecord example;  // with tokens
  std::optional<double> metric;
};

// Example outputs of one policy (from its representative run: the calibrated one, else the best).
struct ReportShowcase {
  int64_t run_id = 0;
  std::vector<ReportExample> examples;
};

struct ReportExperiment {
  ExperimentRecord record;
  std::string metric;                    // compared / plotted metric
  int64_t bootstrap_samples = 1000;
  double confidence = 0.95;
  int64_t examples_per_policy = 20;
  std::vector<std::string> source_names;  // index 0: the base expert, j: assistant j
  std::vector<ReportRun> runs;            // by id (decoded runs: policies and single models)
  std::vector<ReportRun> analysis;        // teacher-forced analysis runs ([analysis]), by id
  std::vector<CalibrationRecord> calibration;
  std::vector<ReportComparison> comparisons;          // each policy run vs the best single model
  // The learned policy's representative runs (its calibrated runs; where a split, strategy and base
  // has none, its best run there) against every other finished decoded run of the same split, curve
  // runs excepted (they are plotted).
  std::vector<ReportComparison> learned_comparisons;
  std::vector<ReportDeferral> deferrals;
  std::vector<ReportShowcase> showcases;

  const ReportRun* find_run(int64_t id) const;
};

struct ReportData {
  std::string database;
  std::vector<ReportExperiment> experiments;
};

// Opens an existing results database for reading: a missing path is a colm::Error (the store's own
// open would create one).
COLM_VISIBLE ResultsStore open_results_for_reading(const std::string& path);

// Reads everything the report shows. An unknown options.experiment is a colm::Error listing the
// experiments the database has.
COLM_VISIBLE ReportData load_report(const ResultsStore& store, const ReportOptions& options);

// {"runs": [{"id", "experiment", "kind", "policy", "plugin", "rule", "objective", "base", "strategy",
//            "threshold", "target_rate", "calibrated", "calibration_edge", "curve", "split", "seed",
//            "status", "metrics": {NAME: {"value", "ci": [lo, hi]}},
//            "comparisons": [{"run", "policy", "base", "strategy", "threshold", "metric", "n",
//                             "difference", "ci": [lo, hi], "p", "mcnemar_p"}]}]}
// Teacher-forced runs are listed too (strategy and kind say so). comparisons: for the learned
// policy's representative runs, one per other run (difference = learned - other); else empty.
// Absent values are null.
COLM_VISIBLE std::string report_json(const ReportData& data);
COLM_VISIBLE std::string report_markdown(const ReportData& data);
// One self-contained page: inline CSS and SVG, no scripts, no external resources.
COLM_VISIBLE std::string report_html(const ReportData& data);

// Helpers shared with the tests.
COLM_VISIBLE std::string html_escape(const std::string& text);  // also replaces invalid UTF-8 by U+FFFD
COLM_VISIBLE bool is_digit_token(const std::string& text);     // non-empty, digits after trimming spaces
// Whether a digit token continues or starts the result of a computation: the text before it, less
// the digits of the number it belongs to and spaces, ends with '=' ("12 + 30 = 4", "<<12+30=4" + "2").
COLM_VISIBLE bool is_result_digit(const std::string& text_before, const std::string& token);
// The operation of the calculation a result digit ends: the operator ('+', '-', '*', '/'; 'x' and
// U+00D7 count as '*') between the two numbers before that '=' ("12 + 30 = 4" -> '+'); '?' when the
// text before '=' is not "number operator number" (or the token is not a result digit).
COLM_VISIBLE char result_operation(const std::string& text_before, const std::string& token);
// A token quoted for tables: control characters escaped, and bytes that are not valid UTF-8 (a
// byte-level token may be part of a character) as \xNN, so different bytes stay distinct.
COLM_VISIBLE std::string visible_token(const std::string& text);
// Tick positions covering [lo, hi] at a "nice" step (1, 2 or 5 times a power of ten).
COLM_VISIBLE std::vector<double> nice_ticks(double lo, double hi, int target_count = 5);

}  // namespace colm
