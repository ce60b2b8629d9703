// The `rules` deferral policy: fixed decision rules and the baselines Co-LLM is compared against
// (each model alone, random deferral, confidence, entropy, more confident model, oracle). No weights.
//
// Config (one table): rule = "base_only" | "assistant_only" | "random" | "confidence" | "entropy" |
// "more_confident" | "oracle"; p (random: deferral probability); assistant (1-based index of the
// assistant that receives deferred tokens for assistant_only, random, confidence and entropy);
// choose = "fixed" | "most_confident" | "uniform": with several assistants, who receives a deferred
// token under random, confidence and entropy: the fixed `assistant` (default), the assistant that
// puts the most probability on its own top token at that position (first on ties), or one drawn
// uniformly per (example, seed, position).
//
// The decoder defers when 1 - P(Z=0) > eta. What eta means for each rule:
//   base_only, assistant_only, random, more_confident, oracle: one-hot outputs, so every eta in
//     [0, 1) gives the same decisions (eta only matters through the rule's own parameters, e.g. p).
//   confidence: 1 - P(Z=0) = 1 - max_v softmax(base)_v, so deferring when it exceeds eta means
//     "defer when the base's top-1 probability is below tau = 1 - eta".
//   entropy: 1 - P(Z=0) = H(softmax(base)) / log V, so eta is a threshold on the base's normalised
//     entropy (0: always defer unless certain, 1: never defer).
#include <cmath>
#include <cstdint>
#include <string>

#include <torch/torch.h>

#include "colm/plugin.hpp"

namespace colm {
namespace {

enum class Rule { base_only, assistant_only, random, confidence, entropy, more_confident, oracle };
enum class Choose { fixed, most_confident, uniform };

// Counter-based uniform from a row seed (SplitMix64 finaliser): the same row seed always gives the
// same number, whatever else is in the batch.
double row_uniform(uint64_t seed, uint64_t stream = 0x72616e646f6d2121ULL) {  // "random!!"
  uint64_t x = seed ^ stream;
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return static_cast<double>(x >> 11) * 0x1.0p-53;
}

class RulesPolicy final : public DeferralPolicy {
 public:
  RulesPolicy(Rule rule, int64_t num_assistants, int64_t assistant, double p, Choose choose)
      : rule_(rule), M_(num_assistants), assistant_(assistant), p_(p), choose_(choose) {}

  PolicyNeeds needs() const override {
    PolicyNeeds n;
    switch (rule_) {
      case Rule::base_only:
      case Rule::assistant_only:
      case Rule::random: break;
      case Rule::confidence:
      case Rule::entropy: n.base_logits = true; break;
      case Rule::more_confident: n.base_logits = n.assistant_logits = true; break;
      case Rule::oracle: n.base_logits = n.assistant_logits = n.gold = true; break;
    }
    if (choose_ == Choose::most_confident) n.assistant_logits = true;
    return n;
  }

  torch::Tensor probs(const PolicyInput& in) override {
    const int64_t R = static_cast<int64_t>(in.row_seeds.size());
    switch (rule_) {
      case Rule::base_only: return one_hot(torch::zeros({R}, torch::kLong));
      case Rule::assistant_only: return one_hot(torch::full({R}, assistant_, torch::kLong));
      case Rule::random: {
        // Defer with probability p, decided per (example, seed, position), to the chosen assistant.
        const auto to = receiver(in, R);
        auto who = torch::zeros({R}, torch::kLong);
        for (int64_t r = 0; r < R; ++r)
          if (row_uniform(in.row_seeds[r]) < p_) who[r] = to[r];
        return one_hot(who);
      }
      case Rule::confidence: {
        // P(defer) = 1 - max softmax(base): the base defers where it is unsure of its top token.
        const auto top = torch::softmax(base_logits(in, R), 1).amax(1);  // [R]
        return split(top, receiver(in, R));
      }
      case Rule::entropy: {
        // P(defer) = H(softmax(base)) / log V: normalised entropy, 0 for a certain base, 1 for uniform.
        const auto logits = base_logits(in, R);
        const auto logp = torch::log_softmax(logits, 1);                               // [R, V]
        const auto h = -(logp.exp() * logp).nan_to_num(0.0).sum(1);                    // [R]
        const double log_v = std::log(static_cast<double>(std::max<int64_t>(2, logits.size(1))));
        return split(1 - (h / log_v).clamp(0, 1), receiver(in, R));
      }
      case Rule::more_confident: {
        // Whichever model puts the most probability on its own top token emits (ties: the base).
        std::vector<torch::Tensor> tops{torch::softmax(base_logits(in, R), 1).amax(1)};
        for (int64_t j = 0; j < M_; ++j) tops.push_back(torch::softmax(assistant_logits(in, j, R), 1).amax(1));
        return one_hot(torch::stack(tops, 1).argmax(1));  // first maximum wins: the base on ties
      }
      case Rule::oracle: {
        // Defer where an assistant's argmax is the gold token and the base's is not (to the first such
        // assistant): the upper bound of top-1 deferral, usable only with teacher forcing.
        COLM_CHECK(in.gold.defined() && in.gold.dim() == 1 && in.gold.size(0) == R,
                   "[rules] the oracle rule needs the gold next tokens [" << R << "] (teacher-forced analysis)");
        const auto gold = in.gold.to(torch::kCPU, torch::kLong);
        const auto base_right = base_logits(in, R).argmax(1).to(torch::kCPU) == gold;
        auto who = torch::zeros({R}, torch::kLong);
        for (int64_t j = M_ - 1; j >= 0; --j) {  // backwards so the first right assistant wins
          const auto right = assistant_logits(in, j, R).argmax(1).to(torch::kCPU) == gold;
          who.masked_fill_(right.logical_and(base_right.logical_not()), j + 1);
        }
        return one_hot(who);
      }
    }
    throw Error("[rules] unhandled rule");
  }

 private:
  torch::Tensor one_hot(const torch::Tensor& who) const {  // who: [R] in 0..M -> [R, M+1]
    return torch::one_hot(who.to(torch::kCPU, torch::kLong), M_ + 1).to(torch::kFloat32);
  }

  // Who receives row r's deferred token (1-based), by `choose`.   -> [R] int64 on the CPU
  torch::Tensor receiver(const PolicyInput& in, int64_t R) const {
    switch (choose_) {
      case Choose::fixed: return torch::full({R}, assistant_, torch::kLong);
      case Choose::most_confident: {
        std::vector<torch::Tensor> tops;
        for (int64_t j = 0; j < M_; ++j) tops.push_back(torch::softmax(assistant_logits(in, j, R), 1).amax(1));
        return torch::stack(tops, 1).argmax(1).to(torch::kLong) + 1;  // first maximum wins
      }
      case Choose::uniform: {
        // Its own stream ("assistnt"), so the draw of whom is independent of the draw of whether.
        auto to = torch::empty({R}, torch::kLong);
        for (int64_t r = 0; r < R; ++r)
          to[r] = 1 + std::min<int64_t>(M_ - 1, int64_t(row_uniform(in.row_seeds[r], 0x6173736973746e74ULL) * double(M_)));
        return to;
      }
    }
    throw Error("[rules] unhandled choice of assistant");
  }

  // P(Z=0) = keep, the rest on the receiving assistant.   keep: [R], to: [R] in 1..M -> [R, M+1]
  torch::Tensor split(const torch::Tensor& keep, const torch::Tensor& to) const {
    const auto k = keep.to(torch::kCPU, torch::kFloat32).clamp(0, 1);
    auto out = torch::zeros({k.size(0), M_ + 1}, torch::kFloat32);
    out.select(1, 0).copy_(k);
    out.scatter_(1, to.to(torch::kCPU, torch::kLong).unsqueeze(1), (1 - k).unsqueeze(1));
    return out;
  }

  static torch::Tensor base_logits(const PolicyInput& in, int64_t R) {
    COLM_CHECK(in.base_logits.defined() && in.base_logits.dim() == 2 && in.base_logits.size(0) == R,
               "[rules] expected base logits [" << R << ", V] from the decoder");
    return in.base_logits.to(torch::kCPU, torch::kFloat32);
  }

  torch::Tensor assistant_logits(const PolicyInput& in, int64_t j, int64_t R) const {
    COLM_CHECK(static_cast<int64_t>(in.assistant_logits.size()) == M_,
               "[rules] expected the logits of " << M_ << " assistants, got " << in.assistant_logits.size());
    const auto& l = in.assistant_logits[static_cast<size_t>(j)];
    COLM_CHECK(l.defined() && l.dim() == 2 && l.size(0) == R,
               "[rules] expected logits [" << R << ", V] for assistant " << j + 1);
    return l.to(torch::kCPU, torch::kFloat32);
  }

  Rule rule_;
  int64_t M_;
  int64_t assistant_;  // 1-based
  double p_;
  Choose choose_;
};

Rule parse_rule(const ConfigView& config, const std::string& name) {
  if (name == "base_only") return Rule::base_only;
  if (name == "assistant_only") return Rule::assistant_only;
  if (name == "random") return Rule::random;
  if (name == "confidence") return Rule::confidence;
  if (name == "entropy") return Rule::entropy;
  if (name == "more_confident") return Rule::more_confident;
  if (name == "oracle") return Rule::oracle;
  config.fail("rule", "unknown rule '" + name +
                          "' (expected base_only, assistant_only, random, confidence, entropy, more_confident or oracle)");
}

}  // namespace

std::unique_ptr<DeferralPolicy> make_rules_policy(const ConfigView& config, const PluginContext& ctx) {
  const std::string name = config.require_string(
      "rule", "base_only | assistant_only | random | confidence | entropy | more_confident | oracle");
  const Rule rule = parse_rule(config, name);
  const double p = config.get_double("p", 0.5, "random rule: probability of deferring a token");
  const int64_t assistant = config.get_int(
      "assistant", 1, "1-based assistant that receives deferred tokens (assistant_only, random, confidence, entropy)");
  const std::string choose = config.get_string(
      "choose", "fixed",
      "random, confidence, entropy: who receives a deferred token: fixed (`assistant`), most_confident or uniform");
  if (choose != "fixed" && choose != "most_confident" && choose != "uniform")
    config.fail("choose", "unknown choice '" + choose + "' (expected fixed, most_confident or uniform)");
  if (choose != "fixed" && rule != Rule::random && rule != Rule::confidence && rule != Rule::entropy)
    config.fail("choose", "only the random, confidence and entropy rules defer to a chosen assistant");
  if (choose != "fixed" && config.has("assistant"))
    config.fail("assistant", "a fixed assistant contradicts choose = \"" + choose + "\"");
  if (ctx.num_assistants < 1) throw Error("[rules] policy '" + ctx.instance + "' needs at least one assistant");
  if (!(p >= 0 && p <= 1)) config.fail("p", "must be a probability in [0, 1], got " + std::to_string(p));
  if (assistant < 1 || assistant > ctx.num_assistants)
    config.fail("assistant", "must be in 1.." + std::to_string(ctx.num_assistants) + ", got " + std::to_string(assistant));
  const Choose c = choose == "most_confident" ? Choose::most_confident : choose == "uniform" ? Choose::uniform : Choose::fixed;
  return std::make_unique<RulesPolicy>(rule, ctx.num_assistants, assistant, p, c);
}

}  // namespace colm

COLM_PLUGIN(policy, "rules", "1.0.0", colm::make_rules_policy)
