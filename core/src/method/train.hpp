// The one training loop (AdamW, warm-up + decay, clipping, accumulation, masked padded batches,
// seeded data order, validation, atomic checkpoints, exact resume) and the training data it eats.
// The losses are in objectives.hpp, the assistants' cached scores in scoring.hpp.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "colm/expert.hpp"
#include "colm/policy.hpp"
#include "colm/tokenizer.hpp"
#include "method/objectives.hpp"

namespace colm {

class DataParallel;

struct TrainConfig {
  int64_t steps = 100;            // optimiser steps
  int64_t batch_size = 8;         // sequences per micro-batch
  int64_t grad_accum = 1;         // micro-batches per optimiser step
  double lr = 1e-3;               // peak learning rate
  double weight_decay = 0.0;      // AdamW decoupled decay, applied to matrices only (not biases, norms)
  double beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8;
  int64_t warmup = 0;             // steps of linear warm-up from lr/warmup to lr
  std::string schedule = "linear";  // after warm-up: "linear" decay to min_lr_ratio*lr, "cosine", "constant"
  double min_lr_ratio = 0.0;
  double clip = 1.0;              // max global gradient norm; <= 0 disables clipping
  uint64_t seed = 0;              // data order (and Torch's CPU generator, for dropout)
  int64_t eval_every = 0;         // steps between validation losses; 0: only at the end
  int64_t eval_batch_size = 0;    // 0: batch_size
  int64_t checkpoint_every = 0;   // steps between checkpoints; 0: only at the end
  int64_t max_len = 256;          // longest training sequence (the data builders truncate/chunk to it)
  std::string checkpoint_dir;     // empty: no checkpoints and no resume
  bool resume = true;             // continue from checkpoint_dir's last checkpoint when there is one
  std::string label = "train";    // prefix of progress and log lines
  double log_every_s = 10.0;      // seconds between progress log lines when stderr is not a terminal
  // Mixed precision: parameters stored in bf16/fp16 are optimised through f32 master copies (AdamW's
  // moments are f32 too) and rounded back after every step, so updates smaller than the low
  // precision's spacing accumulate instead of rounding away. false: AdamW on the stored dtype.
  bool f32_master = true;
  // Data parallel (distributed.hpp): this process's group, or null. Every process draws the same
  // global micro-batches; each computes the loss of its share of the rows (every world_size-th),
  // divided by the whole batch's target tokens, and the gradients are summed across processes, so
  // each takes the step one process would take on the whole batch (to float rounding) and the
  // parameters stay equal everywhere. Only rank 0 writes checkpoints; every rank can resume.
  std::shared_ptr<DataParallel> parallel;
};

// Throws colm::Error naming the first field that is out of range.
void validate(const TrainConfig& config);
// Learning rate of 0-based step `step`: linear warm-up, then the configured decay.
double learning_rate_at(const TrainConfig& config, int64_t step);

// Tokenised training sequences. loss_mask[i][t] = 1: token t of sequence i is a target (predicted
// from the tokens before it); prompt tokens, position 0 and padding are 0.
struct TrainData {
  std::vector<std::vector<int64_t>> ids;
  std::vector<std::vector<uint8_t>> loss_mask;

  size_t size() const { return ids.size(); }
  int64_t target_tokens() const;
  int64_t max_length() const;
  // Same number of sequences, matching lengths, no empty sequence, no target at position 0.
  void validate(const std::string& what = "training data") const;
  // Content hash of ids and masks (for cache keys).
  std::string hash() const;
};

// (prompt, target) pairs -> [BOS] prompt target [EOS], loss on target tokens and EOS. Each sequence is
// tokenised in one pass (prompt + target), as the text reads: a separate tokenisation of the target
// would start it as a text of its own (SentencePiece tokenizers then put a stray "▁" there). The
// prompt's tokens are the longest run of the joint tokens whose text is a prefix of the prompt (see
// prompt_token_count); a token straddling the boundary is a target. Sequences longer than max_len
// keep their first max_len tokens; pairs whose targets fall entirely beyond max_len are dropped with a warning.
// BOS/EOS are added only when the tokenizer has them and the flags ask for them.
TrainData make_pair_data(const std::vector<std::pair<std::string, std::string>>& pairs, const Tokenizer& tokenizer,
                         int64_t max_len, bool add_bos = true, bool add_eos = true);
// How many of `joint` (the tokens of prompt + target, no special tokens) belong to the prompt: the
// largest k such that the text of joint[0, k) is a prefix of the prompt's text as the tokenizer
// reproduces it (decode(encode(prompt))).
size_t prompt_token_count(const Tokenizer& tokenizer, const std::string& prompt, const std::vector<int64_t>& joint);
// Text files -> one token stream ([BOS] text [EOS] per file) cut into chunks of max_len tokens, every
// token but each chunk's first a target. A missing or unreadable file is a colm::Error naming it.
TrainData make_text_data(const std::vector<std::string>& files, const Tokenizer& tokenizer, int64_t max_len);
// A seeded split: `valid_fraction` of the sequences (at least one when there are two or more) go to
// the second element.
std::pair<TrainData, TrainData> split_data(const TrainData& data, double valid_fraction, uint64_t seed);

// One padded micro-batch.
struct Batch {
  torch::Tensor ids;        // [B,T] int64, right-padded with the pad id
  torch::Tensor attn_mask;  // [B,T] int64, 1 = token, 0 = padding
  torch::Tensor loss_mask;  // [B,T] bool, 1 = target
  std::vector<int64_t> rows;  // index of each row's sequence in its TrainData
  int64_t target_tokens = 0;
  bool valid_split = false;   // rows index the validation data (objectives with per-split caches)
};
Batch make_batch(const TrainData& data, const std::vector<int64_t>& rows, int64_t pad_id, torch::Device device);

// What the loop trains: the parameters, a summed loss per batch, and what a finished run writes.
class TrainObjective {
 public:
  virtual ~TrainObjective();
  virtual std::string name() const = 0;
  // Trainable tensors in a fixed order (checkpoints store them by position).
  virtual std::vector<torch::Tensor> parameters() = 0;
  virtual void set_training(bool training) = 0;
  // Sum of the per-target-token losses of the batch (autograd-capable unless under NoGradGuard).
  virtual torch::Tensor loss_sum(const Batch& batch) = 0;
  // Writes the run's product (HF checkpoint, head file) into the existing directory dir.
  virtual void save_artifacts(const std::string& dir) const = 0;
  virtual int64_t pad_id() const { return 0; }
  virtual torch::Device device() const { return torch::kCPU; }
};

struct TrainResult {
  int64_t steps = 0;                // the step the run ended at
  int64_t resumed_from = 0;         // checkpoint step the run continued from (0: a fresh start)
  double train_loss = NAN;          // mean target-token loss of the last step
  double valid_loss = NAN;          // the last validation loss (NaN without validation data)
  std::vector<std::pair<int64_t, double>> valid_history;  // (step, loss), this process only
  int64_t tokens = 0;               // target tokens trained on by this process
  double seconds = 0;               // wall time of this process's steps
  double tokens_per_second = 0;
  std::string checkpoint;           // the last checkpoint directory (its artifacts/ holds the product)
};

// Called after every optimiser step (tests use it to interrupt a run).
using StepCallback = std::function<void(int64_t step, double loss)>;

// Runs (or resumes) a training run. Bit-identical to an uninterrupted run when resumed, given the
// same thread count (at::set_num_threads is the caller's business).
TrainResult train(TrainObjective& objective, const TrainData& train_data, const TrainData* valid_data,
                  const TrainConfig& config, const StepCallback& on_step = {});
// Mean target-token loss over data, in order, without gradients, in eval mode.
double evaluate(TrainObjective& objective, const TrainData& data, int64_t batch_size, bool valid_split = true);

// The step of the last complete checkpoint in dir (0 when none).
int64_t last_checkpoint_step(const std::string& checkpoint_dir);

// ---------- objectives over experts ----------

// `lm`: next-token cross-entropy of one expert; the product is its HF checkpoint.
class LmObjective : public TrainObjective {
 public:
  explicit LmObjective(Expert& expert);
  std::string name() const override { return "lm"; }
  std::vector<torch::Tensor> parameters() override;
  void set_training(bool training) override;
  torch::Tensor loss_sum(const Batch& batch) override;
  void save_artifacts(const std::string& dir) const override;  // dir/model: Expert::save
  int64_t pad_id() const override;
  torch::Device device() const override;

 private:
  Expert& expert_;
};

class ScoreTable;

struct DeferralSpec {
  std::string objective = "marginal_likelihood";  // or "weak_supervision"
  std::string finetune_base = "full";             // "full" (joint) or "none" (head only)
  std::string init = "none";                      // "none" or "weak" (weak-supervision head init first)
  WeakRule weak_rule = WeakRule::assistant_right_base_wrong;
  double pos_weight = 0;                          // weak supervision; 0: #negatives / #positives
  double lm_weight = 0;                           // objective weak_supervision with finetune_base: LM share
  int64_t init_steps = 0;                         // steps of the weak init; 0: config.steps
  void validate() const;
};

// `marginal_likelihood` / `weak_supervision` over a base, M frozen assistants (their cached scores)
// and a trainable policy head. The product is head.safetensors (+ base/ when the base is fine-tuned).
class DeferralObjective : public TrainObjective {
 public:
  // assistant_scores: M tables over the same TrainData the loop is given (and valid_scores, when
  // validation data is used, over that). For weak supervision pos_weight must already be resolved.
  DeferralObjective(Expert& base, DeferralPolicy& policy, std::vector<const ScoreTable*> train_scores,
                    std::vector<const ScoreTable*> valid_scores, std::string objective, bool finetune_base,
                    WeakRule rule, double pos_weight, std::map<std::string, std::string> head_metadata,
                    double lm_weight = 0);
  std::string name() const override { return objective_; }
  std::vector<torch::Tensor> parameters() override;
  void set_training(bool training) override;
  torch::Tensor loss_sum(const Batch& batch) override;
  void save_artifacts(const std::string& dir) const override;
  int64_t pad_id() const override;
  torch::Device device() const override;

 private:
  Expert& base_;
  DeferralPolicy& policy_;
  std::vector<const ScoreTable*> train_scores_, valid_scores_;
  std::string objective_;
  bool finetune_base_;
  WeakRule rule_;
  double pos_weight_;
  std::map<std::string, std::string> metadata_;
  double lm_weight_ = 0;  // weak_supervision only: share of the base's LM loss
};

struct DeferralTrainResult {
  TrainResult init;                // the weak-supervision init (steps 0 when not run)
  TrainResult main;
  std::string head_path;           // out_dir/head.safetensors
  std::string base_dir;            // out_dir/base (empty when the base was frozen)
  std::vector<std::string> score_caches;  // the scoring-cache files used, per assistant
};

// The whole Co-LLM training stage: score the assistants (cached in cache_dir), optionally fit the head
// by weak supervision, then train the objective. Checkpoints go under out_dir; the products are
// written to out_dir (head.safetensors, base/). Assistants must share the base's tokenizer.
// The head's metadata names the base it goes with. When the base is fine-tuned that is the saved
// out_dir/base, whose fingerprint only a reloaded expert knows (Expert::fingerprint is computed once):
// pass fingerprint_of_saved_base (e.g. reload it through the registry) to stamp it; without it the head
// records the starting base's fingerprint and "base_finetuned" = "full".
// assistants_scored, when given, is called once every assistant's scores are computed or read from
// the cache; after it, training uses only the scores, never the assistants (a caller may release them).
DeferralTrainResult train_deferral(Expert& base, const std::vector<Expert*>& assistants, DeferralPolicy& policy,
                                   const TrainData& train_data, const TrainData* valid_data,
                                   const TrainConfig& config, const DeferralSpec& spec, const std::string& out_dir,
                                   const std::string& cache_dir,
                                   const std::function<std::string(const std::string& base_dir)>&
                                       fingerprint_of_saved_base = {},
                                   const std::function<void()>& assistants_scored = {});

}  // namespace colm
