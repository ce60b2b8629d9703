// Expert: a causal language model with its tokenizer, as the decoder and the trainer see it.
// Teacher-forced forward for training/scoring; incremental decoding through a per-row KV cache.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "colm/error.hpp"
#include "colm/tokenizer.hpp"

namespace colm {

struct ExpertOutput {
  torch::Tensor logits;  // float32; [B,T,V] from forward, [R,V] from extend
  torch::Tensor hidden;  // float32; final hidden state after the last norm: [B,T,d] / [R,d]
};

struct ExpertInfo {
  std::string family;        // "gpt2", "llama", ...
  int64_t vocab_size = 0;    // rows of the output layer (may exceed the tokenizer's vocab: padding)
  int64_t hidden_size = 0;
  int64_t max_positions = 0; // longest context the model accepts
  int64_t num_parameters = 0;
  std::string dtype;         // compute dtype, e.g. "float32"
  std::string source;        // checkpoint directory, or "init:<seed>" for a fresh model
};

// Per-row incremental state (KV caches). Created by one expert and only passed back to it.
class COLM_VISIBLE DecodeState {
 public:
  virtual ~DecodeState();
  virtual int64_t rows() const = 0;
  // Tokens row `row` has consumed so far.
  virtual int64_t length(int64_t row) const = 0;
  // Empties row `row` (length 0) so that it can take a new sequence; the other rows are untouched.
  // The decoder reuses a finished row for the next example this way (continuous batching).
  virtual void reset(int64_t row) = 0;
};

class COLM_VISIBLE Expert {
 public:
  virtual ~Expert();

  virtual ExpertInfo info() const = 0;
  virtual const Tokenizer& tokenizer() const = 0;
  virtual torch::Device device() const = 0;

  // Teacher-forced forward. ids: [B,T] int64; mask: [B,T] (1 = token, 0 = right padding) or an
  // undefined tensor (no padding). Returns logits [B,T,V] and hidden [B,T,d]; autograd-capable.
  virtual ExpertOutput forward(const torch::Tensor& ids, const torch::Tensor& mask) = 0;

  // A fresh decoding state for `rows` independent sequences (all empty).
  virtual std::unique_ptr<DecodeState> new_state(int64_t rows) const = 0;
  // Appends tokens[i] (non-empty; lengths may differ) to row rows[i] of `state` and returns the
  // logits [R,V] and hidden [R,d] at each row's last new token. Prefill and single steps are the
  // same call. Runs without autograd. Rows not listed are untouched.
  virtual ExpertOutput extend(DecodeState& state, const std::vector<int64_t>& rows,
                              const std::vector<std::vector<int64_t>>& tokens) = 0;

  // Trainable parameters (for the trainer's optimiser) and the train/eval switch (dropout).
  virtual std::vector<torch::Tensor> parameters() = 0;
  virtual void set_training(bool training) = 0;

  // Writes an HF-format checkpoint: config.json + model.safetensors + tokenizer.json.
  virtual void save(const std::string& dir) const = 0;
  // Identity of the weights + architecture + tokenizer (a content hash), for artifact keys.
  virtual std::string fingerprint() const = 0;
};

}  // namespace colm
