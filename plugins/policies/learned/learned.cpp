// The `learned` deferral policy (and, built from the same source, the `weak` baseline): Co-LLM's
// deferral head, one linear layer hidden_size -> M+1 on the base's final hidden state,
//   P(Z_t = j | x_<t) = softmax(W h_t + b)_j,   j = 0 the base, 1..M the assistants.
// With M = 1 this is exactly the paper's sigmoid: P(defer) = sigmoid((w_1 - w_0)·h + b_1 - b_0); the
// extra row only over-parameterises it. Training (marginal likelihood, weak supervision) is core's
// (core/src/train.cpp); this file holds the head, its probabilities and its file format.
//
// Config: head = a trained head (.safetensors) to load (optional; otherwise a fresh random head),
// init_seed = seed of the fresh head (default: the experiment seed).
#include <cmath>
#include <map>
#include <string>

#include <torch/torch.h>

#include "colm/plugin.hpp"
#include "colm/safetensors.hpp"

#ifndef COLM_LEARNED_NAME
#define COLM_LEARNED_NAME "learned"
#endif
#ifndef COLM_LEARNED_OBJECTIVE
#define COLM_LEARNED_OBJECTIVE "marginal_likelihood"
#endif

namespace colm {
namespace {

constexpr const char* kWeight = "head.weight";  // [M+1, d]
constexpr const char* kBias = "head.bias";      // [M+1]

class LearnedPolicy final : public DeferralPolicy {
 public:
  LearnedPolicy(int64_t num_assistants, int64_t hidden_size, uint64_t seed, torch::Device device)
      : M_(num_assistants), d_(hidden_size) {
    // nn.Linear's default range, drawn from the policy's own generator (never the global one).
    auto gen = at::detail::createCPUGenerator(seed);
    const double k = 1.0 / std::sqrt(static_cast<double>(d_));
    weight_ = (torch::rand({M_ + 1, d_}, gen, torch::kFloat32) * (2 * k) - k).to(device).requires_grad_(true);
    bias_ = (torch::rand({M_ + 1}, gen, torch::kFloat32) * (2 * k) - k).to(device).requires_grad_(true);
  }

  PolicyNeeds needs() const override {
    PolicyNeeds n;
    n.base_hidden = true;
    return n;
  }

  torch::Tensor probs(const PolicyInput& in) override {
    COLM_CHECK(in.base_hidden.defined(), COLM_LEARNED_NAME " policy: needs the base's hidden state, none was given");
    COLM_CHECK(in.base_hidden.dim() == 2, COLM_LEARNED_NAME " policy: base_hidden must be [R,d], got "
                                              << in.base_hidden.sizes());
    torch::NoGradGuard no_grad;
    return torch::softmax(head_logits(in.base_hidden), -1).to(torch::kFloat32);  // [R, M+1]
  }

  bool trainable() const override { return true; }

  torch::Tensor head_logits(const torch::Tensor& hidden) override {
    COLM_CHECK(hidden.defined() && hidden.dim() >= 1 && hidden.size(-1) == d_,
               COLM_LEARNED_NAME " policy: hidden states must be [..., " << d_ << "], got "
                                 << (hidden.defined() ? hidden.sizes() : c10::IntArrayRef{}));
    return torch::linear(hidden.to(weight_.scalar_type()), weight_, bias_);  // [..., M+1]
  }

  std::vector<torch::Tensor> parameters() override { return {weight_, bias_}; }

  void save(const std::string& path, const std::map<std::string, std::string>& metadata) const override {
    auto md = metadata;
    md["format"] = "colm-deferral-head";
    md["policy"] = COLM_LEARNED_NAME;
    md["num_assistants"] = std::to_string(M_);
    md["hidden_size"] = std::to_string(d_);
    if (!md.count("objective")) md["objective"] = COLM_LEARNED_OBJECTIVE;
    save_safetensors(path, {{kWeight, weight_.detach().cpu()}, {kBias, bias_.detach().cpu()}}, md);
  }

  std::map<std::string, std::string> load(const std::string& path) override {
    auto file = SafetensorsFile::open(path);
    const auto& md = file->header().metadata;
    auto expect = [&](const char* key, int64_t value) {
      auto it = md.find(key);
      if (it == md.end()) return;
      COLM_CHECK(it->second == std::to_string(value), path << ": the head was trained for " << key << " = " << it->second
                                                           << ", this policy has " << value);
    };
    expect("num_assistants", M_);
    expect("hidden_size", d_);
    for (const char* name : {kWeight, kBias}) {
      COLM_CHECK(file->has(name), path << ": no tensor '" << name << "' (not a deferral head file?)");
    }
    auto w = file->load(kWeight, torch::kFloat32);
    auto b = file->load(kBias, torch::kFloat32);
    COLM_CHECK(w.sizes() == weight_.sizes(), path << ": '" << kWeight << "' has shape " << w.sizes() << ", expected "
                                                  << weight_.sizes() << " (M+1 = " << M_ + 1 << ", hidden " << d_ << ")");
    COLM_CHECK(b.sizes() == bias_.sizes(), path << ": '" << kBias << "' has shape " << b.sizes() << ", expected "
                                                << bias_.sizes());
    torch::NoGradGuard no_grad;
    weight_.copy_(w);
    bias_.copy_(b);
    return md;
  }

 private:
  int64_t M_, d_;
  torch::Tensor weight_, bias_;
};

std::unique_ptr<DeferralPolicy> make_learned(const ConfigView& cfg, const PluginContext& ctx) {
  const auto head = cfg.get_string("head", "", "trained deferral head (.safetensors) to load; empty: a fresh head");
  const auto seed = cfg.get_int("init_seed", static_cast<int64_t>(ctx.seed), "seed of a fresh head's random init");
  if (ctx.num_assistants < 1) cfg.fail("", "needs at least one assistant, got " + std::to_string(ctx.num_assistants));
  if (ctx.base_hidden_size < 1)
    cfg.fail("", "the base's hidden size is unknown (PluginContext.base_hidden_size = " +
                     std::to_string(ctx.base_hidden_size) + ")");
  const torch::Device device(ctx.device.empty() ? "cpu" : ctx.device);
  auto policy = std::make_unique<LearnedPolicy>(ctx.num_assistants, ctx.base_hidden_size, static_cast<uint64_t>(seed), device);
  if (!head.empty()) policy->load(head);
  return policy;
}

}  // namespace
}  // namespace colm

COLM_PLUGIN(policy, COLM_LEARNED_NAME, "1.0", colm::make_learned)
