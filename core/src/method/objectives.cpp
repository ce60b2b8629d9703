// The training losses (lm, marginal likelihood, weak supervision) as short tensor functions with
// shape comments; everything about batches, optimisers and checkpoints lives in train.cpp.
#include "method/objectives.hpp"

#include <sstream>

#include <torch/torch.h>

namespace colm {

namespace {

void check_ids(const torch::Tensor& logits, const torch::Tensor& ids, const char* fn) {
  COLM_CHECK(logits.defined() && logits.dim() == 3, fn << ": logits must be [B,T,V], got "
                                                        << (logits.defined() ? logits.sizes() : c10::IntArrayRef{}));
  COLM_CHECK(ids.defined() && ids.dim() == 2 && ids.size(0) == logits.size(0) && ids.size(1) == logits.size(1),
             fn << ": ids must be [B,T] matching logits " << logits.sizes());
  COLM_CHECK(ids.scalar_type() == torch::kInt64, fn << ": ids must be int64");
}

}  // namespace

torch::Tensor gold_logprobs(const torch::Tensor& logits, const torch::Tensor& ids) {
  check_ids(logits, ids, "gold_logprobs");
  const auto T = logits.size(1);
  auto pred = logits.slice(1, 0, T - 1);                           // [B,T-1,V]
  auto gold = ids.slice(1, 1, T).unsqueeze(-1);                    // [B,T-1,1]
  // gather before normalising: never materialises a [B,T,V] log-softmax.
  return pred.gather(-1, gold).squeeze(-1) - pred.logsumexp(-1);  // [B,T-1]
}

torch::Tensor gold_is_top1(const torch::Tensor& logits, const torch::Tensor& ids) {
  check_ids(logits, ids, "gold_is_top1");
  const auto T = logits.size(1);
  return logits.slice(1, 0, T - 1).argmax(-1) == ids.slice(1, 1, T);  // [B,T-1]
}

torch::Tensor lm_loss_sum(const torch::Tensor& logits, const torch::Tensor& ids, const torch::Tensor& loss_mask) {
  check_ids(logits, ids, "lm_loss_sum");
  COLM_CHECK(loss_mask.defined() && loss_mask.sizes() == ids.sizes(), "lm_loss_sum: loss_mask must be [B,T] like ids");
  auto logp = gold_logprobs(logits, ids);                             // [B,T-1]
  auto mask = loss_mask.slice(1, 1, ids.size(1)).to(torch::kBool);   // [B,T-1]
  return -torch::where(mask, logp, torch::zeros_like(logp)).sum();
}

torch::Tensor marginal_nll_sum(const torch::Tensor& head_logits, const torch::Tensor& component_logp,
                               const torch::Tensor& mask) {
  COLM_CHECK(head_logits.sizes() == component_logp.sizes(),
             "marginal_nll_sum: head_logits " << head_logits.sizes() << " and component_logp "
                                              << component_logp.sizes() << " must have the same shape [..., M+1]");
  COLM_CHECK(mask.dim() + 1 == head_logits.dim() && mask.sizes() == head_logits.sizes().slice(0, mask.dim()),
             "marginal_nll_sum: mask " << mask.sizes() << " must be head_logits' shape without the last axis");
  auto keep = mask.to(torch::kBool);                                            // [...]
  // Masked positions may hold -inf or padding: zero them so neither value nor gradient turns NaN.
  auto comp = torch::where(keep.unsqueeze(-1), component_logp, torch::zeros_like(component_logp));
  auto log_prior = torch::log_softmax(head_logits, -1);                        // [..., M+1] log P(Z=j|x<t)
  auto log_marginal = torch::logsumexp(log_prior + comp, -1);                   // [...]     log P(x_t|x<t)
  return -torch::where(keep, log_marginal, torch::zeros_like(log_marginal)).sum();
}

torch::Tensor marginal_nll_mean(const torch::Tensor& head_logits, const torch::Tensor& component_logp,
                                const torch::Tensor& mask) {
  const double n = mask.to(torch::kBool).sum().item<double>();
  return marginal_nll_sum(head_logits, component_logp, mask) / std::max(1.0, n);
}

WeakRule parse_weak_rule(const std::string& name) {
  if (name == "assistant_right_base_wrong") return WeakRule::assistant_right_base_wrong;
  if (name == "base_wrong") return WeakRule::base_wrong;
  throw Error("unknown weak-supervision rule '" + name + "' (use assistant_right_base_wrong or base_wrong)");
}

std::string to_string(WeakRule rule) {
  return rule == WeakRule::base_wrong ? "base_wrong" : "assistant_right_base_wrong";
}

torch::Tensor weak_labels(const torch::Tensor& base_right, const torch::Tensor& assistant_right, WeakRule rule) {
  COLM_CHECK(assistant_right.dim() == base_right.dim() + 1 &&
                 assistant_right.sizes().slice(0, base_right.dim()) == base_right.sizes(),
             "weak_labels: assistant_right " << assistant_right.sizes() << " must be base_right "
                                             << base_right.sizes() << " plus an axis of M assistants");
  auto a_right = assistant_right.to(torch::kBool);                 // [..., M]
  auto b_wrong = base_right.to(torch::kBool).logical_not();        // [...]
  auto any_right = a_right.any(-1);                                // [...]
  // First right assistant (1-based): argmax over a 0/1 int picks the first maximum.
  auto first_right = a_right.to(torch::kInt64).argmax(-1) + 1;     // [...]
  auto zero = torch::zeros_like(first_right);
  if (rule == WeakRule::assistant_right_base_wrong) {
    return torch::where(b_wrong.logical_and(any_right), first_right, zero);
  }
  auto fallback = torch::ones_like(first_right);
  return torch::where(b_wrong, torch::where(any_right, first_right, fallback), zero);
}

torch::Tensor weak_nll_sum(const torch::Tensor& head_logits, const torch::Tensor& labels, const torch::Tensor& mask,
                           double pos_weight) {
  COLM_CHECK(labels.sizes() == mask.sizes() && head_logits.dim() == labels.dim() + 1 &&
                 head_logits.sizes().slice(0, labels.dim()) == labels.sizes(),
             "weak_nll_sum: head_logits " << head_logits.sizes() << ", labels " << labels.sizes() << ", mask "
                                          << mask.sizes() << " do not line up ([..., M+1], [...], [...])");
  COLM_CHECK(pos_weight > 0, "weak_nll_sum: pos_weight must be > 0, got " << pos_weight);
  auto logp = torch::log_softmax(head_logits, -1);                       // [..., M+1]
  auto picked = logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1);       // [...]
  auto weight = torch::where(labels > 0, torch::full_like(picked, pos_weight), torch::ones_like(picked));
  auto keep = mask.to(torch::kBool);
  return -torch::where(keep, weight * picked, torch::zeros_like(picked)).sum();
}

torch::Tensor weak_supervision_loss_sum(const torch::Tensor& logits, const torch::Tensor& ids,
                                        const torch::Tensor& loss_mask, const torch::Tensor& head_logits,
                                        const torch::Tensor& labels, double pos_weight, double lm_weight) {
  COLM_CHECK(lm_weight >= 0 && lm_weight < 1, "weak_supervision_loss_sum: lm_weight must be in [0, 1), got " << lm_weight);
  const int64_t T = ids.size(1);
  auto bce = weak_nll_sum(head_logits, labels, loss_mask.slice(1, 1, T), pos_weight);
  if (lm_weight == 0) return bce;
  return lm_weight * lm_loss_sum(logits, ids, loss_mask) + (1 - lm_weight) * bce;
}

double auto_pos_weight(const torch::Tensor& labels, const torch::Tensor& mask) {
  auto keep = mask.to(torch::kBool);
  const double pos = (labels > 0).logical_and(keep).sum().item<double>();
  const double neg = (labels == 0).logical_and(keep).sum().item<double>();
  if (pos == 0 || neg == 0) return 1.0;
  return neg / pos;
}

std::string join_fingerprints(const std::vector<std::string>& fps) {
  std::string out;
  for (size_t i = 0; i < fps.size(); ++i) out += (i ? "," : "") + fps[i];
  return out;
}

void check_head_matches(const std::map<std::string, std::string>& metadata, const std::string& base_fp,
                        const std::vector<std::string>& assistant_fps, const std::string& what) {
  auto get = [&](const char* key) -> std::string {
    auto it = metadata.find(key);
    COLM_CHECK(it != metadata.end(), what << ": metadata has no '" << key
                                          << "' (not a deferral head written by colm's trainer?)");
    return it->second;
  };
  const auto base = get(kHeadBaseKey);
  COLM_CHECK(base == base_fp, what << ": base fingerprint differs: the head was trained with base " << base
                                   << ", the loaded base is " << base_fp
                                   << ". HINT: retrain the head for these experts (or load the experts it was trained with)");
  std::vector<std::string> stored;
  std::stringstream ss(get(kHeadAssistantsKey));
  for (std::string item; std::getline(ss, item, ',');) stored.push_back(item);
  COLM_CHECK(stored.size() == assistant_fps.size(), what << ": number of assistants differs: the head was trained with "
                                                          << stored.size() << ", " << assistant_fps.size()
                                                          << " are loaded");
  for (size_t j = 0; j < stored.size(); ++j) {
    COLM_CHECK(stored[j] == assistant_fps[j], what << ": assistant " << (j + 1) << " fingerprint differs: the head was"
                                                   << " trained with " << stored[j] << ", the loaded assistant is "
                                                   << assistant_fps[j]
                                                   << ". HINT: retrain the head for these experts");
  }
}

}  // namespace colm
