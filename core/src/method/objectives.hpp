// The training losses as pure tensor functions: next-token cross-entropy (`lm`), Co-LLM's marginal
// likelihood over who emits each token, and weak supervision of the deferral head. The training loop,
// the batches and the assistants' cached scores live in train.hpp and scoring.hpp.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <torch/types.h>

#include "colm/error.hpp"

namespace colm {

// Alignment used everywhere: loss_mask[b,t] = 1 says token ids[b,t] is a training target, predicted
// from ids[b,<t]. Position 0 is never a target. Model outputs at position t-1 predict token t, so the
// "shifted" tensors below have T-1 positions and line up with ids[:, 1:].

// log P(ids[b,t] | ids[b,<t]) for t = 1..T-1. logits: [B,T,V], ids: [B,T] -> [B,T-1].
COLM_VISIBLE torch::Tensor gold_logprobs(const torch::Tensor& logits, const torch::Tensor& ids);
// Whether the model's top-1 at t-1 is ids[b,t] (ties resolved as argmax does). -> [B,T-1] bool.
COLM_VISIBLE torch::Tensor gold_is_top1(const torch::Tensor& logits, const torch::Tensor& ids);

// `lm`: -sum_t mask_t log P(x_t | x_<t). logits [B,T,V], ids [B,T], loss_mask [B,T] -> scalar (a sum;
// the trainer divides by the number of target tokens of the whole accumulated batch).
COLM_VISIBLE torch::Tensor lm_loss_sum(const torch::Tensor& logits, const torch::Tensor& ids,
                                       const torch::Tensor& loss_mask);

// `marginal_likelihood` (Co-LLM, eq. 2):
//   -sum_t mask_t log sum_j P(Z_t = j | x_<t) P_j(x_t | x_<t),  P(Z_t | x_<t) = softmax(head_logits_t).
// head_logits: [..., M+1] (j = 0 the base), component_logp: [..., M+1] = log P_j(x_t | x_<t),
// mask: [...]. Positions with mask 0 contribute exactly 0 (value and gradient). Returns a scalar sum.
COLM_VISIBLE torch::Tensor marginal_nll_sum(const torch::Tensor& head_logits, const torch::Tensor& component_logp,
                                            const torch::Tensor& mask);
// The same averaged over target tokens (sum / max(1, number of masked-in positions)).
COLM_VISIBLE torch::Tensor marginal_nll_mean(const torch::Tensor& head_logits, const torch::Tensor& component_logp,
                                             const torch::Tensor& mask);

// `weak_supervision` pseudo-labels.
enum class WeakRule {
  assistant_right_base_wrong,  // z = first assistant whose top-1 is gold, when the base's top-1 is not
  base_wrong,                  // z = first right assistant (else assistant 1) whenever the base is wrong
};
// "assistant_right_base_wrong" | "base_wrong"; anything else is a colm::Error listing both.
COLM_VISIBLE WeakRule parse_weak_rule(const std::string& name);
COLM_VISIBLE std::string to_string(WeakRule rule);
// base_right: [...] bool, assistant_right: [..., M] bool -> labels [...] int64 in {0 (base), 1..M}.
COLM_VISIBLE torch::Tensor weak_labels(const torch::Tensor& base_right, const torch::Tensor& assistant_right,
                                       WeakRule rule);
// Weighted cross-entropy on the head: -sum_t mask_t w_{z_t} log softmax(head_logits_t)_{z_t}, with
// w_0 = 1 and w_j = pos_weight for every assistant. With M = 1 this is exactly BCE-with-logits with
// pos_weight on the logit head[1] - head[0] (softmax over two = sigmoid of the difference).
// head_logits [..., M+1], labels [...] int64, mask [...] -> scalar sum.
COLM_VISIBLE torch::Tensor weak_nll_sum(const torch::Tensor& head_logits, const torch::Tensor& labels,
                                        const torch::Tensor& mask, double pos_weight);
// The weak-supervision baseline of the paper: the base is fine-tuned on
//   lm_weight * LM loss + (1 - lm_weight) * weighted BCE on the pseudo-labels
// (2/3 and 1/3 there). logits [B,T,V], ids [B,T], loss_mask [B,T] (the LM part, as lm_loss_sum);
// head_logits [B,T-1,M+1] and labels [B,T-1] line up with ids[:, 1:] (as weak_nll_sum, masked by
// loss_mask[:, 1:]). Returns a scalar sum over target tokens; lm_weight 0 is weak_nll_sum alone.
COLM_VISIBLE torch::Tensor weak_supervision_loss_sum(const torch::Tensor& logits, const torch::Tensor& ids,
                                                     const torch::Tensor& loss_mask, const torch::Tensor& head_logits,
                                                     const torch::Tensor& labels, double pos_weight, double lm_weight);
// #negatives / #positives over masked positions (labels == 0 are negatives); 1 when either is absent.
COLM_VISIBLE double auto_pos_weight(const torch::Tensor& labels, const torch::Tensor& mask);

// Metadata keys a deferral head file carries (written by the trainer, checked on load).
constexpr const char* kHeadObjectiveKey = "objective";
constexpr const char* kHeadBaseKey = "base_fingerprint";
constexpr const char* kHeadAssistantsKey = "assistant_fingerprints";  // comma-separated, in order
constexpr const char* kHeadNumAssistantsKey = "num_assistants";
constexpr const char* kHeadHiddenSizeKey = "hidden_size";

// Throws a colm::Error naming the fingerprint that differs (base, assistant j, or their number) when a
// head trained for other experts is loaded. `what` names the file in the message.
COLM_VISIBLE void check_head_matches(const std::map<std::string, std::string>& metadata, const std::string& base_fp,
                                     const std::vector<std::string>& assistant_fps, const std::string& what = "head");
COLM_VISIBLE std::string join_fingerprints(const std::vector<std::string>& fps);

}  // namespace colm
