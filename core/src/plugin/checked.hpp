// Contract-checking proxies: core-side wrappers around every Expert and DeferralPolicy a plugin
// creates. They forward each call and validate the tensors that come back (shape, dtype, device,
// and for policies finite rows summing to 1); a violation is a colm::Error naming plugin and method.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "colm/expert.hpp"
#include "colm/policy.hpp"

namespace colm {

// Row sums of DeferralPolicy::probs must be within this of 1.
constexpr double kProbsSumTolerance = 1e-4;

class CheckedExpert final : public Expert {
 public:
  CheckedExpert(std::unique_ptr<Expert> inner, std::string plugin_name);
  ~CheckedExpert() override;

  ExpertInfo info() const override;
  const Tokenizer& tokenizer() const override;
  torch::Device device() const override;
  ExpertOutput forward(const torch::Tensor& ids, const torch::Tensor& mask) override;
  // DecodeState objects are the plugin's own and pass through unchanged.
  std::unique_ptr<DecodeState> new_state(int64_t rows) const override;
  ExpertOutput extend(DecodeState& state, const std::vector<int64_t>& rows,
                      const std::vector<std::vector<int64_t>>& tokens) override;
  std::vector<torch::Tensor> parameters() override;
  void set_training(bool training) override;
  void save(const std::string& dir) const override;
  std::string fingerprint() const override;

  Expert& inner() { return *inner_; }

 private:
  std::unique_ptr<Expert> inner_;
  std::string name_;
};

class CheckedPolicy final : public DeferralPolicy {
 public:
  // num_assistants: M, so probs() must return [R, M+1].
  CheckedPolicy(std::unique_ptr<DeferralPolicy> inner, std::string plugin_name, int64_t num_assistants);
  ~CheckedPolicy() override;

  PolicyNeeds needs() const override;
  torch::Tensor probs(const PolicyInput& input) override;
  bool trainable() const override;
  torch::Tensor head_logits(const torch::Tensor& hidden) override;
  std::vector<torch::Tensor> parameters() override;
  void save(const std::string& path, const std::map<std::string, std::string>& metadata) const override;
  std::map<std::string, std::string> load(const std::string& path) override;

  DeferralPolicy& inner() { return *inner_; }

 private:
  std::unique_ptr<DeferralPolicy> inner_;
  std::string name_;
  int64_t num_assistants_;
};

std::unique_ptr<Expert> make_checked_expert(std::unique_ptr<Expert> inner, const std::string& plugin_name);
std::unique_ptr<DeferralPolicy> make_checked_policy(std::unique_ptr<DeferralPolicy> inner,
                                                    const std::string& plugin_name, int64_t num_assistants);

// The number of rows R a PolicyInput describes (from the first defined field), or -1 when none is.
int64_t policy_input_rows(const PolicyInput& input);

}  // namespace colm
