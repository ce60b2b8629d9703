// DeferralPolicy: at each position, P(Z = j | context) over {base (0), assistant 1..M}.
// The decoder defers when 1 - P(Z=0) > eta; trainable policies expose a head the trainer fits.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <torch/types.h>

#include "colm/error.hpp"

namespace colm {

// What a policy needs the decoder to compute before calling probs(). Anything not needed is passed
// as an undefined tensor, so an assistant runs only when it must.
struct PolicyNeeds {
  bool base_hidden = false;
  bool base_logits = false;
  bool assistant_logits = false;  // every assistant's logits at every step (costly)
  bool gold = false;              // teacher-forced analysis only (the oracle)
};

struct PolicyInput {
  torch::Tensor base_hidden;                    // [R,d] float32
  torch::Tensor base_logits;                    // [R,V] float32
  std::vector<torch::Tensor> assistant_logits;  // M entries of [R,V], or empty when not needed
  torch::Tensor gold;                           // [R] int64: the reference next token (teacher forcing)
  std::vector<uint64_t> row_seeds;              // [R] deterministic per (example, seed, position)
};

class COLM_VISIBLE DeferralPolicy {
 public:
  virtual ~DeferralPolicy();

  virtual PolicyNeeds needs() const = 0;
  // Returns [R, M+1] float32 probabilities over {base, assistants}; each row sums to 1.
  virtual torch::Tensor probs(const PolicyInput& input) = 0;

  // --- optional: trainable policies (the default implementations say "not trainable") ---
  virtual bool trainable() const;
  // hidden [..., d] -> unnormalised log-probabilities [..., M+1] (autograd-capable).
  virtual torch::Tensor head_logits(const torch::Tensor& hidden);
  virtual std::vector<torch::Tensor> parameters();
  // Safetensors with string metadata (objective, base/assistant fingerprints, ...).
  virtual void save(const std::string& path, const std::map<std::string, std::string>& metadata) const;
  // Loads weights; returns the file's metadata so core can check it matches the experts.
  virtual std::map<std::string, std::string> load(const std::string& path);
};

}  // namespace colm
