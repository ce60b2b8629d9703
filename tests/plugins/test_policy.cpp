// Test-only policy plugin "test_policy": uniform probabilities, or a chosen contract violation
// selected by the instance name ("wrong_shape", "nan", "unnormalised", "float64"; anything else is good).
#include <limits>

#include <torch/torch.h>

#include "colm/plugin.hpp"

namespace colm_test {

class TestPolicy final : public colm::DeferralPolicy {
 public:
  TestPolicy(std::string mode, int64_t m) : mode_(std::move(mode)), m_(m) {}
  colm::PolicyNeeds needs() const override { return colm::PolicyNeeds{true, false, false, false}; }
  torch::Tensor probs(const colm::PolicyInput& input) override {
    const int64_t r = input.base_hidden.size(0);
    if (mode_ == "wrong_shape") return torch::full({r, m_ + 2}, 1.0 / static_cast<double>(m_ + 2));
    auto p = torch::full({r, m_ + 1}, 1.0 / static_cast<double>(m_ + 1));
    if (mode_ == "nan") p[r - 1][0] = std::numeric_limits<float>::quiet_NaN();
    if (mode_ == "unnormalised") p[r - 1][0] += 0.5;
    if (mode_ == "float64") p = p.to(torch::kFloat64);
    return p;
  }

 private:
  std::string mode_;
  int64_t m_;
};

std::unique_ptr<colm::DeferralPolicy> make_policy(const colm::ConfigView&, const colm::PluginContext& ctx) {
  return std::make_unique<TestPolicy>(ctx.instance, ctx.num_assistants);
}

}  // namespace colm_test

COLM_PLUGIN(policy, "test_policy", "1.0", colm_test::make_policy)
