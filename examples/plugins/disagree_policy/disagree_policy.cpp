// Example out-of-tree deferral policy "disagree": the base keeps a token unless an assistant's top-1
// token differs from the base's AND the base is unsure (its top-1 probability is below tau); then
// the most confident of the disagreeing assistants emits it. A fixed rule: nothing to train.
//
// Config ([policies.NAME] keys besides core's plugin):
//   tau   defer only where the base's top-1 probability is below tau, in (0, 1] (0.5)
// The output is one-hot, so every eta in [0, 1) gives the same decisions: tau is the knob.
#include <string>

#include "colm/plugin.hpp"  // brings <torch/types.h>: tensors and ATen operations, no torch::nn

namespace disagree {

class DisagreePolicy final : public colm::DeferralPolicy {
 public:
  DisagreePolicy(double tau, int64_t num_assistants) : tau_(tau), m_(num_assistants) {}

  // The decoder computes only what a policy declares: here the base's and every assistant's logits.
  colm::PolicyNeeds needs() const override {
    colm::PolicyNeeds n;
    n.base_logits = true;
    n.assistant_logits = true;
    return n;
  }

  // -> [R, M+1] float32, one-hot: column 0 (the base) or 1..M (the assistant that emits).
  torch::Tensor probs(const colm::PolicyInput& in) override {
    try {
      COLM_CHECK(in.base_logits.defined() && in.base_logits.dim() == 2, "[disagree] expected the base's logits [R, V]");
      COLM_CHECK(static_cast<int64_t>(in.assistant_logits.size()) == m_,
                 "[disagree] expected the logits of " << m_ << " assistants, got " << in.assistant_logits.size());
      const int64_t R = in.base_logits.size(0);
      const auto base = torch::softmax(in.base_logits.to(torch::kCPU, torch::kFloat32), 1).max(1);
      const auto& base_p = std::get<0>(base);    // [R] the base's top-1 probability
      const auto& base_top = std::get<1>(base);  // [R] its top-1 token
      auto who = torch::zeros({R}, torch::kLong);                    // [R] 0 = base
      auto best = torch::full({R}, -1.0, torch::kFloat32);           // [R] confidence of `who`
      for (int64_t j = 0; j < m_; ++j) {
        const auto& logits = in.assistant_logits[static_cast<size_t>(j)];
        COLM_CHECK(logits.defined() && logits.dim() == 2 && logits.size(0) == R,
                   "[disagree] expected assistant " << j + 1 << "'s logits [" << R << ", V]");
        const auto top = torch::softmax(logits.to(torch::kCPU, torch::kFloat32), 1).max(1);
        const auto& p = std::get<0>(top);
        // Among the assistants whose top-1 differs from the base's, the most confident wins.
        const auto better = std::get<1>(top).ne(base_top).logical_and(p.gt(best));
        who.masked_fill_(better, j + 1);
        best = torch::where(better, p, best);
      }
      who.masked_fill_(base_p.ge(tau_), 0);  // a confident base keeps the token
      return torch::one_hot(who, m_ + 1).to(torch::kFloat32);
    } catch (const colm::Error&) {
      throw;
    } catch (const std::exception& e) {
      // Torch errors become colm::Error: no exception type from outside core crosses the boundary.
      throw colm::Error(std::string("[disagree] probs: ") + e.what());
    }
  }

 private:
  double tau_;
  int64_t m_;
};

std::unique_ptr<colm::DeferralPolicy> make_disagree(const colm::ConfigView& config, const colm::PluginContext& ctx) {
  const double tau = config.get_double(
      "tau", 0.5, "defer only where the base's top-1 probability is below tau, in (0, 1] (1: wherever they disagree)");
  if (!(tau > 0.0 && tau <= 1.0)) config.fail("tau", "must be in (0, 1], got " + std::to_string(tau));
  if (ctx.num_assistants < 1) config.fail("", "policy '" + ctx.instance + "' needs at least one assistant");
  return std::make_unique<DisagreePolicy>(tau, ctx.num_assistants);
}

}  // namespace disagree

COLM_PLUGIN(policy, "disagree", "1.0.0", disagree::make_disagree)
