// The scoring cache: frozen assistants' gold-token log-probs and top-1 flags over a training set,
// computed once in batches without autograd and stored as content-addressed safetensors files.
#include "method/scoring.hpp"

#include <unistd.h>

#include <chrono>
#include <filesystem>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "colm/hash.hpp"
#include "colm/safetensors.hpp"
#include "method/objectives.hpp"
#include "method/train.hpp"

namespace fs = std::filesystem;

namespace colm {

ScoreTable::ScoreTable(torch::Tensor logp, torch::Tensor top1, std::vector<int64_t> offsets)
    : logp_(std::move(logp)), top1_(std::move(top1)), offsets_(std::move(offsets)) {
  COLM_CHECK(!offsets_.empty() && offsets_.front() == 0, "ScoreTable: offsets must start at 0");
  for (size_t i = 1; i < offsets_.size(); ++i)
    COLM_CHECK(offsets_[i] >= offsets_[i - 1], "ScoreTable: offsets must not decrease (entry " << i << ")");
  COLM_CHECK(logp_.dim() == 1 && logp_.size(0) == offsets_.back() && top1_.dim() == 1 &&
                 top1_.size(0) == offsets_.back(),
             "ScoreTable: logp and top1 must be [" << offsets_.back() << "], got " << logp_.sizes() << " and "
                                                   << top1_.sizes());
  logp_ = logp_.to(torch::kFloat32).contiguous();
  top1_ = top1_.to(torch::kBool).contiguous();
}

std::pair<torch::Tensor, torch::Tensor> ScoreTable::rows(const std::vector<int64_t>& rows, int64_t T) const {
  const auto B = static_cast<int64_t>(rows.size());
  auto lp = torch::zeros({B, T}, torch::kFloat32);
  auto top = torch::zeros({B, T}, torch::kBool);
  for (int64_t i = 0; i < B; ++i) {
    const auto r = rows[static_cast<size_t>(i)];
    COLM_CHECK(r >= 0 && r < sequences(), "ScoreTable: row " << r << " out of range (" << sequences() << " sequences)");
    const auto begin = offsets_[static_cast<size_t>(r)], len = offsets_[static_cast<size_t>(r) + 1] - begin;
    COLM_CHECK(len <= T, "ScoreTable: sequence " << r << " has " << len << " positions, the batch only " << T);
    lp[i].slice(0, 0, len).copy_(logp_.slice(0, begin, begin + len));
    top[i].slice(0, 0, len).copy_(top1_.slice(0, begin, begin + len));
  }
  return {lp, top};
}

void ScoreTable::check_matches(const TrainData& data, const std::string& what) const {
  COLM_CHECK(sequences() == static_cast<int64_t>(data.size()),
             what << ": scores for " << sequences() << " sequences, the data has " << data.size());
  for (size_t i = 0; i < data.size(); ++i) {
    COLM_CHECK(offsets_[i + 1] - offsets_[i] == static_cast<int64_t>(data.ids[i].size()),
               what << ": sequence " << i << " has " << offsets_[i + 1] - offsets_[i] << " scored positions, the data "
                    << data.ids[i].size() << " tokens");
  }
}

ScoreTable score_expert(Expert& expert, const TrainData& data, int64_t batch_size) {
  COLM_CHECK(batch_size >= 1, "score_expert: batch_size must be >= 1");
  data.validate("scoring data");
  torch::NoGradGuard no_grad;
  expert.set_training(false);
  std::vector<int64_t> offsets{0};
  for (const auto& s : data.ids) offsets.push_back(offsets.back() + static_cast<int64_t>(s.size()));
  auto logp = torch::zeros({offsets.back()}, torch::kFloat32);
  auto top1 = torch::zeros({offsets.back()}, torch::kBool);
  const int64_t pad = expert.tokenizer().pad_id().value_or(0);
  for (size_t at = 0; at < data.size(); at += static_cast<size_t>(batch_size)) {
    std::vector<int64_t> rows;
    for (size_t i = at; i < std::min(data.size(), at + static_cast<size_t>(batch_size)); ++i) rows.push_back(static_cast<int64_t>(i));
    auto b = make_batch(data, rows, pad, expert.device());
    auto out = expert.forward(b.ids, b.attn_mask);               // logits [B,T,V]
    auto lp = gold_logprobs(out.logits, b.ids).to(torch::kCPU, torch::kFloat32);  // [B,T-1]
    auto top = gold_is_top1(out.logits, b.ids).cpu();           // [B,T-1]
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto r = static_cast<size_t>(rows[i]);
      const auto len = offsets[r + 1] - offsets[r];
      // Position 0 stays 0: nothing predicts the first token.
      logp.slice(0, offsets[r] + 1, offsets[r] + len).copy_(lp[static_cast<int64_t>(i)].slice(0, 0, len - 1));
      top1.slice(0, offsets[r] + 1, offsets[r] + len).copy_(top[static_cast<int64_t>(i)].slice(0, 0, len - 1));
    }
  }
  return ScoreTable(logp, top1, offsets);
}

std::string score_cache_key(const Expert& expert, const TrainData& data) {
  return Hasher().add("scores-v1").add(expert.fingerprint()).add(expert.tokenizer().fingerprint()).add(data.hash()).hex();
}

ScoreTable cached_scores(Expert& expert, const TrainData& data, const std::string& cache_dir, int64_t batch_size,
                         ScoreCacheInfo* info) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto key = score_cache_key(expert, data);
  const auto path = cache_dir.empty() ? std::string() : (fs::path(cache_dir) / ("scores-" + key + ".safetensors")).string();
  ScoreCacheInfo local;
  local.path = path;
  auto finish = [&](ScoreTable t, bool hit) {
    local.hit = hit;
    local.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (info) *info = local;
    return t;
  };
  if (!path.empty() && fs::exists(path)) {
    try {
      auto f = SafetensorsFile::open(path);
      COLM_CHECK(f->header().metadata.count("key") && f->header().metadata.at("key") == key,
                 "its metadata key does not match the file name");
      auto offsets_t = f->load("offsets", torch::kInt64);
      std::vector<int64_t> offsets(offsets_t.data_ptr<int64_t>(), offsets_t.data_ptr<int64_t>() + offsets_t.numel());
      ScoreTable t(f->load("logp", torch::kFloat32), f->load("top1", torch::kInt64), offsets);
      t.check_matches(data, path);
      spdlog::debug("[score] reusing {}", path);
      return finish(std::move(t), true);
    } catch (const std::exception& e) {
      spdlog::warn("[score] cache file {} is unusable ({}); recomputing", path, e.what());
    }
  }
  int64_t tokens = 0;
  for (const auto& s : data.ids) tokens += static_cast<int64_t>(s.size());
  spdlog::info("[score] scoring {} sequences ({} tokens) with {}", data.size(), tokens, expert.info().source);
  auto t = score_expert(expert, data, batch_size);
  if (!path.empty()) {
    fs::create_directories(cache_dir);
    auto offsets = torch::tensor(t.offsets(), torch::kInt64);
    // Written under a name of this process's own, then renamed: a process reading the cache while
    // another writes it (shards training policies on the same assistant) never sees half a file.
    const auto tmp = path + ".tmp." + std::to_string(::getpid());
    save_safetensors(tmp, {{"logp", t.logp()}, {"top1", t.top1().to(torch::kInt64)}, {"offsets", offsets}},
                     {{"key", key},
                      {"kind", "colm-assistant-scores"},
                      {"expert_fingerprint", expert.fingerprint()},
                      {"tokenizer_fingerprint", expert.tokenizer().fingerprint()},
                      {"data_hash", data.hash()}});
    fs::rename(tmp, path);
  }
  return finish(std::move(t), false);
}

}  // namespace colm
