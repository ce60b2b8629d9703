// The scoring cache: each frozen assistant's log P(gold token | prefix) and top-1 correctness at
// every position of a training set, computed once under NoGradGuard and stored as safetensors keyed
// by (assistant fingerprint, data hash, tokenizer fingerprint). Training reads it instead of the model.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "colm/expert.hpp"

namespace colm {

struct TrainData;

class ScoreTable {
 public:
  ScoreTable() = default;
  // logp: [N] float32, top1: [N] bool, offsets: sequences + 1 entries (offsets.back() == N).
  ScoreTable(torch::Tensor logp, torch::Tensor top1, std::vector<int64_t> offsets);

  int64_t sequences() const { return static_cast<int64_t>(offsets_.size()) - 1; }
  int64_t positions() const { return offsets_.empty() ? 0 : offsets_.back(); }
  // Position t of sequence i holds log P(ids[i][t] | ids[i][<t]) (0 at t = 0) and whether it was the top-1.
  const torch::Tensor& logp() const { return logp_; }
  const torch::Tensor& top1() const { return top1_; }
  const std::vector<int64_t>& offsets() const { return offsets_; }
  // Rows of a batch, right-padded to T: logp [B,T] float32 (0 in padding), top1 [B,T] bool (false).
  std::pair<torch::Tensor, torch::Tensor> rows(const std::vector<int64_t>& rows, int64_t T) const;
  // Throws unless the table has exactly the shape of data (sequence count and lengths).
  void check_matches(const TrainData& data, const std::string& what) const;

 private:
  torch::Tensor logp_, top1_;
  std::vector<int64_t> offsets_;
};

// Runs the expert over data in batches (NoGradGuard, eval mode) and returns its gold-token scores.
ScoreTable score_expert(Expert& expert, const TrainData& data, int64_t batch_size);

// Cache key of (expert, data): sha1 of the expert's fingerprint, its tokenizer's and the data hash.
std::string score_cache_key(const Expert& expert, const TrainData& data);

struct ScoreCacheInfo {
  std::string path;  // <cache_dir>/scores-<key>.safetensors
  bool hit = false;  // true when the file was reused
  double seconds = 0;
};
// Loads the cached scores of (expert, data) from cache_dir, or computes and stores them (atomically).
// A cache file that does not fit the data is recomputed with a warning.
ScoreTable cached_scores(Expert& expert, const TrainData& data, const std::string& cache_dir, int64_t batch_size,
                         ScoreCacheInfo* info = nullptr);

}  // namespace colm
