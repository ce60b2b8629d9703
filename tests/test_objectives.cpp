// The training losses against direct computations and finite differences (double precision): the
// marginal likelihood for M = 1 and M = 3, weak supervision vs BCE, lm vs cross_entropy, head checks.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include <torch/torch.h>

#include "method/objectives.hpp"

namespace {

torch::Tensor rand_logp(torch::IntArrayRef sizes, torch::Generator& g) {
  // Plausible log-probabilities: log of uniform(0.01, 1).
  return torch::log(torch::rand(sizes, g, torch::dtype(torch::kFloat64)) * 0.99 + 0.01);
}

// -mean_t mask_t log(sum_j softmax(h_t)_j * exp(c_tj)), written without logsumexp.
double direct_marginal(const torch::Tensor& h, const torch::Tensor& c, const torch::Tensor& mask) {
  auto prior = torch::softmax(h, -1);
  auto lik = (prior * torch::exp(c)).sum(-1);
  auto m = mask.to(torch::kFloat64);
  return (-(torch::log(lik) * m).sum() / m.sum()).item<double>();
}

}  // namespace

TEST_CASE("marginal likelihood matches a direct computation and finite differences", "[train][objectives]") {
  const int64_t M = GENERATE(1, 3);
  auto g = at::detail::createCPUGenerator(1234 + M);
  const int64_t B = 3, T = 5;
  auto h = torch::randn({B, T, M + 1}, g, torch::dtype(torch::kFloat64)).requires_grad_(true);
  auto c = rand_logp({B, T, M + 1}, g).requires_grad_(true);
  auto mask = torch::rand({B, T}, g, torch::dtype(torch::kFloat64)) > 0.3;
  mask.index_put_({0, 0}, true);

  auto loss = colm::marginal_nll_mean(h, c, mask);
  CHECK(loss.item<double>() == Approx(direct_marginal(h.detach(), c.detach(), mask)).epsilon(1e-12));

  loss.backward();
  const double eps = 1e-6;
  double max_err = 0;
  for (auto* p : {&h, &c}) {
    auto grad = p->grad().clone();
    auto flat = p->detach().view(-1);
    for (int64_t i = 0; i < flat.numel(); ++i) {
      const double orig = flat[i].item<double>();
      flat[i] = orig + eps;
      const double up = colm::marginal_nll_mean(h.detach(), c.detach(), mask).item<double>();
      flat[i] = orig - eps;
      const double down = colm::marginal_nll_mean(h.detach(), c.detach(), mask).item<double>();
      flat[i] = orig;
      const double fd = (up - down) / (2 * eps);
      max_err = std::max(max_err, std::abs(fd - grad.view(-1)[i].item<double>()));
    }
  }
  INFO("M = " << M << ", max |analytic - finite difference| = " << max_err);
  CHECK(max_err < 1e-7);

  // The head's gradient is (prior - posterior) / n at each target: EM's responsibilities.
  auto prior = torch::softmax(h.detach(), -1);
  auto post = prior * torch::exp(c.detach());
  post = post / post.sum(-1, true);
  auto n = mask.sum().item<double>();
  auto expect = (prior - post) * mask.unsqueeze(-1).to(torch::kFloat64) / n;
  CHECK(torch::allclose(h.grad(), expect, 1e-10, 1e-12));
}

TEST_CASE("with one assistant the softmax head is the paper's sigmoid", "[train][objectives]") {
  auto g = at::detail::createCPUGenerator(7);
  auto h = torch::randn({4, 2}, g, torch::dtype(torch::kFloat64));
  auto c = rand_logp({4, 2}, g);
  auto mask = torch::ones({4}, torch::kBool);
  auto d = h.select(-1, 1) - h.select(-1, 0);
  auto p_defer = torch::sigmoid(d);
  auto expect = -torch::log((1 - p_defer) * torch::exp(c.select(-1, 0)) + p_defer * torch::exp(c.select(-1, 1))).sum();
  CHECK(colm::marginal_nll_sum(h, c, mask).item<double>() == Approx(expect.item<double>()).epsilon(1e-12));
}

TEST_CASE("masked positions add nothing, even with -inf scores", "[train][objectives]") {
  auto h = torch::randn({2, 3, 3}, torch::dtype(torch::kFloat64)).requires_grad_(true);
  auto c = torch::full({2, 3, 3}, -1.0, torch::kFloat64);
  c.index_put_({1, 2}, -std::numeric_limits<double>::infinity());  // e.g. padding in a cache
  auto mask = torch::ones({2, 3}, torch::kBool);
  mask.index_put_({1, 2}, false);
  auto loss = colm::marginal_nll_sum(h, c, mask);
  loss.backward();
  CHECK(std::isfinite(loss.item<double>()));
  CHECK(loss.item<double>() == Approx(5.0));  // every component has log-likelihood -1
  CHECK(torch::isfinite(h.grad()).all().item<bool>());
  CHECK(h.grad()[1][2].abs().sum().item<double>() == 0.0);
  // An all-masked batch is a zero loss, not a division by zero.
  CHECK(colm::marginal_nll_mean(h, c, torch::zeros({2, 3}, torch::kBool)).item<double>() == 0.0);
}

TEST_CASE("marginal likelihood rejects mismatched shapes", "[train][objectives]") {
  auto h = torch::zeros({2, 3, 2});
  CHECK_THROWS_WITH(colm::marginal_nll_sum(h, torch::zeros({2, 3, 3}), torch::ones({2, 3})),
                    Catch::Contains("same shape"));
  CHECK_THROWS_WITH(colm::marginal_nll_sum(h, torch::zeros({2, 3, 2}), torch::ones({3, 2})),
                    Catch::Contains("mask"));
}

TEST_CASE("lm loss is cross-entropy over target positions only", "[train][objectives]") {
  auto g = at::detail::createCPUGenerator(3);
  auto logits = torch::randn({2, 6, 11}, g, torch::dtype(torch::kFloat64));
  auto ids = torch::randint(0, 11, {2, 6}, g, torch::dtype(torch::kInt64));
  auto mask = torch::tensor({0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1}, torch::kUInt8).view({2, 6});
  double expect = 0;
  for (int b = 0; b < 2; ++b) {
    for (int t = 1; t < 6; ++t) {
      if (mask[b][t].item<int>() == 0) continue;
      expect -= torch::log_softmax(logits[b][t - 1], -1)[ids[b][t].item<int64_t>()].item<double>();
    }
  }
  CHECK(colm::lm_loss_sum(logits, ids, mask).item<double>() == Approx(expect).epsilon(1e-12));
  auto top1 = colm::gold_is_top1(logits, ids);
  CHECK(top1.sizes() == torch::IntArrayRef{2, 5});
  CHECK(torch::equal(top1, logits.slice(1, 0, 5).argmax(-1) == ids.slice(1, 1, 6)));
}

TEST_CASE("weak-supervision labels follow the documented rules", "[train][objectives]") {
  // 4 positions x 2 assistants.
  auto base_right = torch::tensor({true, false, false, false});
  auto asst_right = torch::tensor({true, true, false, true, false, false, true, true}).view({4, 2});
  using colm::WeakRule;
  auto a = colm::weak_labels(base_right, asst_right, WeakRule::assistant_right_base_wrong);
  CHECK(torch::equal(a, torch::tensor({0, 2, 0, 1}, torch::kInt64)));
  auto b = colm::weak_labels(base_right, asst_right, WeakRule::base_wrong);
  CHECK(torch::equal(b, torch::tensor({0, 2, 1, 1}, torch::kInt64)));
  CHECK(colm::parse_weak_rule("base_wrong") == WeakRule::base_wrong);
  CHECK_THROWS_WITH(colm::parse_weak_rule("oracle"), Catch::Contains("assistant_right_base_wrong"));
  CHECK(colm::auto_pos_weight(a, torch::ones({4}, torch::kBool)) == Approx(1.0));
  CHECK(colm::auto_pos_weight(torch::tensor({0, 0, 0, 1}, torch::kInt64), torch::ones({4}, torch::kBool)) ==
        Approx(3.0));
}

TEST_CASE("weak supervision with one assistant is BCE with pos_weight", "[train][objectives]") {
  auto g = at::detail::createCPUGenerator(11);
  auto h = torch::randn({10, 2}, g, torch::dtype(torch::kFloat64));
  auto labels = torch::randint(0, 2, {10}, g, torch::dtype(torch::kInt64));
  auto mask = torch::ones({10}, torch::kBool);
  const double pw = 2.5;
  auto bce = torch::binary_cross_entropy_with_logits(h.select(-1, 1) - h.select(-1, 0), labels.to(torch::kFloat64),
                                                     {}, torch::full({1}, pw, torch::kFloat64),
                                                     at::Reduction::Sum);
  CHECK(colm::weak_nll_sum(h, labels, mask, pw).item<double>() == Approx(bce.item<double>()).epsilon(1e-12));
}

TEST_CASE("a head trained for other experts is refused with the differing fingerprint named", "[train][objectives]") {
  std::map<std::string, std::string> meta{{colm::kHeadBaseKey, "b1"}, {colm::kHeadAssistantsKey, "a1,a2"}};
  CHECK_NOTHROW(colm::check_head_matches(meta, "b1", {"a1", "a2"}));
  CHECK_THROWS_WITH(colm::check_head_matches(meta, "b2", {"a1", "a2"}, "h.safetensors"),
                    Catch::Contains("h.safetensors: base fingerprint differs") && Catch::Contains("b2"));
  CHECK_THROWS_WITH(colm::check_head_matches(meta, "b1", {"a1", "a3"}), Catch::Contains("assistant 2 fingerprint"));
  CHECK_THROWS_WITH(colm::check_head_matches(meta, "b1", {"a1"}), Catch::Contains("number of assistants"));
  CHECK_THROWS_WITH(colm::check_head_matches({}, "b1", {"a1"}), Catch::Contains("base_fingerprint"));
}
