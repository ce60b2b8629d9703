// Comparing results databases by content, for tests of shards, merges and clusters: what a
// database says about its runs (keyed by content key, never by row ids or timings).
#pragma once
#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>
#include <string>

#include "harness/store.hpp"

namespace colm::test {

inline std::string num(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}

// Everything a database says about its runs, keyed by content key: status, parameters, metrics with
// intervals, examples with their metrics, tokens with their sources. Not ids, not timings, and not
// the deferral probabilities, which max_probability_difference compares: decoding a run's examples
// in other batches (a shard's range) changes the order of float sums, so they agree to rounding.
inline std::string snapshot(const std::string& db) {
  auto store = ResultsStore::open(db);
  std::map<std::string, std::string> by_key;
  for (const auto& r : store.runs()) {
    std::ostringstream os;
    os << r.experiment << " " << r.policy << " " << (r.threshold ? num(*r.threshold) : "-") << " " << r.strategy << " "
       << r.split << " " << r.seed << " " << r.status << " " << r.params_json << "\n";
    for (const auto& m : store.metrics(r.id))
      os << "  metric " << m.name << " " << num(m.value) << " [" << (m.ci_low ? num(*m.ci_low) : "-") << ", "
         << (m.ci_high ? num(*m.ci_high) : "-") << "]\n";
    for (const auto& e : store.examples(r.id, true)) {
      os << "  example " << e.index << " " << e.example_id << " " << e.output.size() << ":" << e.output
         << " n=" << e.n_tokens << " d=" << e.n_deferred;
      for (const auto& [k, v] : e.metrics) os << " " << k << "=" << num(v);
      os << "\n   ";
      for (const auto& t : e.tokens) {
        os << " " << t.position << ":" << t.token_id << "/" << t.source << "/" << t.probs.size();
      }
      os << "\n";
    }
    by_key[r.content_key] = os.str();
  }
  std::string out;
  for (const auto& [k, v] : by_key) out += k + " " + v;
  return out;
}

// The largest difference between the two databases' deferral probabilities of the same run, example,
// position and model (runs matched by content key); infinity when their shapes differ.
inline double max_probability_difference(const std::string& db_a, const std::string& db_b) {
  auto a = ResultsStore::open(db_a), b = ResultsStore::open(db_b);
  double worst = 0;
  for (const auto& ra : a.runs()) {
    const auto rb = b.find_run(ra.content_key);
    if (!rb) return INFINITY;
    const auto ea = a.examples(ra.id, true), eb = b.examples(rb->id, true);
    if (ea.size() != eb.size()) return INFINITY;
    for (size_t i = 0; i < ea.size(); ++i) {
      if (ea[i].tokens.size() != eb[i].tokens.size()) return INFINITY;
      for (size_t t = 0; t < ea[i].tokens.size(); ++t) {
        const auto &pa = ea[i].tokens[t].probs, &pb = eb[i].tokens[t].probs;
        if (pa.size() != pb.size()) return INFINITY;
        for (size_t k = 0; k < pa.size(); ++k) worst = std::max(worst, std::fabs(pa[k] - pb[k]));
      }
    }
  }
  return worst;
}

// The first line where two snapshots differ, both versions, for a failure message ("" when equal).
inline std::string first_difference(const std::string& a, const std::string& b) {
  std::istringstream ia(a), ib(b);
  std::string la, lb;
  for (int line = 1;; ++line) {
    const bool ga = bool(std::getline(ia, la)), gb = bool(std::getline(ib, lb));
    if (!ga && !gb) return "";
    if (!ga || !gb || la != lb)
      return "line " + std::to_string(line) + ":\n  " + (ga ? la : "<end>") + "\n  " + (gb ? lb : "<end>");
  }
}

}  // namespace colm::test
