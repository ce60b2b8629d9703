// Helpers shared by the task plugins (header-only, compiled into each plugin): a portable seeded
// RNG and shuffle, jsonl reading with file:line errors, text normalisation and seeded splitting.
#pragma once
#include <algorithm>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "colm/error.hpp"

namespace colm::task_util {

// splitmix64: the same numbers on every platform and standard library (std distributions are not).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform integer in [lo, hi] (inclusive), without modulo bias.
  int64_t uniform(int64_t lo, int64_t hi) {
    const uint64_t span = uint64_t(hi - lo) + 1;
    const uint64_t limit = UINT64_MAX - UINT64_MAX % span;
    uint64_t r;
    do r = next(); while (r >= limit);
    return lo + int64_t(r % span);
  }
  double uniform01() { return double(next() >> 11) * (1.0 / 9007199254740992.0); }

 private:
  uint64_t state_;
};

template <typename T>
void shuffle(std::vector<T>& v, uint64_t seed) {
  Rng rng(seed);
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[size_t(rng.uniform(0, int64_t(i) - 1))]);
}

// One JSON object per non-empty line; a bad line is a colm::Error naming file:line.
inline std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot open '" + path + "': no such file or not readable");
  std::vector<nlohmann::json> rows;
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      rows.push_back(nlohmann::json::parse(line));
    } catch (const std::exception& e) {
      throw Error(path + ":" + std::to_string(n) + ": not valid JSON: " + e.what());
    }
    if (!rows.back().is_object()) throw Error(path + ":" + std::to_string(n) + ": expected a JSON object");
  }
  return rows;
}

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot open '" + path + "': no such file or not readable");
  try {
    return nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw Error(path + ": not valid JSON: " + e.what());
  }
}

inline std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// Trimmed, inner whitespace runs collapsed to one space, optionally ASCII-lowercased.
inline std::string normalize_text(const std::string& s, bool lower) {
  std::string out;
  bool space = false;
  for (char c : trim(s)) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      space = true;
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += lower && c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c;
  }
  return out;
}

// The output up to the first occurrence of any stop string (decoders may keep the stop string).
inline std::string cut_at_stop(const std::string& output, const std::vector<std::string>& stop) {
  size_t cut = output.size();
  for (const auto& s : stop)
    if (!s.empty()) cut = std::min(cut, output.find(s));
  return output.substr(0, cut);
}

// Deterministic split of n items into (first, second) by a seeded permutation: `second_size`
// items go to the second part. Returns the two index lists, each sorted (original order kept).
inline std::pair<std::vector<size_t>, std::vector<size_t>> split_indices(size_t n, size_t second_size, uint64_t seed) {
  std::vector<size_t> idx(n);
  for (size_t i = 0; i < n; ++i) idx[i] = i;
  shuffle(idx, seed);
  second_size = std::min(second_size, n);
  std::vector<size_t> second(idx.begin(), idx.begin() + long(second_size));
  std::vector<size_t> first(idx.begin() + long(second_size), idx.end());
  std::sort(first.begin(), first.end());
  std::sort(second.begin(), second.end());
  return {first, second};
}

}  // namespace colm::task_util
