// The transformer plugin's few-rows linear kernel (skinny.cpp): equal to BLAS's product to float
// rounding for every row count it takes and for sizes that leave vector tails; a row's result is
// bit for bit the same whichever rows share its call (what continuous batching relies on); and it
// declines what it does not handle, so the caller falls back to BLAS.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "support.hpp"
#include "transformer.hpp"

using colm::transformer::skinny_isa;
using colm::transformer::skinny_linear;
using colm::transformer::SkinnyIsa;

TEST_CASE("the skinny kernel equals addmm and a row's result does not depend on its batch", "[transformer][skinny]") {
  torch::NoGradGuard no_grad;
  torch::manual_seed(3);
  if (skinny_isa() == SkinnyIsa::none)
    COLM_SKIP("this CPU has neither AVX-512 nor AVX2+FMA: the kernel is off and BLAS does the work");
  // Every path this CPU can run: on an AVX-512 machine the AVX2 one too.
  std::vector<SkinnyIsa> isas{skinny_isa()};
  if (skinny_isa() == SkinnyIsa::avx512) isas.push_back(SkinnyIsa::avx2);
  for (const auto isa : isas) {
    for (const int64_t in : {5, 16, 37, 768}) {
      for (const int64_t out : {1, 3, 64, 129}) {
        const auto w = torch::randn({out, in});
        const auto b = torch::randn({out});
        const auto x = torch::randn({48, in});
        const auto all = skinny_linear(x, w, b, isa);  // [48, out]
        REQUIRE(all.defined());
        const auto ref = torch::addmm(b, x, w.t());
        INFO("isa " << int(isa) << ", in " << in << ", out " << out);
        CHECK((all - ref).abs().max().item<double>() <= 1e-5 * (1 + ref.abs().max().item<double>()));
        const auto plain = torch::mm(x, w.t());  // without a bias
        CHECK((skinny_linear(x, w, torch::Tensor(), isa) - plain).abs().max().item<double>() <=
              1e-5 * (1 + plain.abs().max().item<double>()));
        for (const int64_t rows : {2, 3, 7, 8, 9, 15, 16, 17, 33, 47}) {
          // The rows [start, start + rows) alone, each in another place of its call than above.
          const int64_t start = 48 - rows;
          const auto part = skinny_linear(x.narrow(0, start, rows), w, b, isa);
          REQUIRE(part.defined());
          CHECK(torch::equal(part, all.narrow(0, start, rows)));
        }
      }
    }
  }
}

TEST_CASE("the skinny kernel declines what BLAS should do", "[transformer][skinny]") {
  torch::NoGradGuard no_grad;
  const auto w = torch::randn({8, 32});
  CHECK_FALSE(skinny_linear(torch::randn({1, 32}), w, torch::Tensor()).defined());   // one row: gemv
  CHECK(skinny_linear(torch::randn({48, 32}), w, torch::Tensor()).defined());
  CHECK_FALSE(skinny_linear(torch::randn({49, 32}), w, torch::Tensor()).defined());  // many rows: gemm
  CHECK_FALSE(skinny_linear(torch::randn({4, 32}, torch::kBFloat16), w.to(torch::kBFloat16), torch::Tensor()).defined());
  CHECK_FALSE(skinny_linear(torch::randn({4, 32}), torch::randn({32, 8}).t(), torch::Tensor()).defined());  // strided
  {
    torch::AutoGradMode grad(true);
    const auto trainable = torch::randn({8, 32}).requires_grad_();
    CHECK_FALSE(skinny_linear(torch::randn({4, 32}), trainable, torch::Tensor()).defined());  // autograd needs ATen ops
  }
}
