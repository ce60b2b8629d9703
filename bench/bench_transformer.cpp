// Throughput of the `transformer` expert on a GPT-2-small-shaped model (124M parameters, random
// weights, vocab 50257): prefill and KV-cached decode tokens/s at batch 1 and 8, and cached vs recompute.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <numeric>
#include <string>

#include <torch/torch.h>

#include "colm/config.hpp"
#include "colm/plugin.hpp"
#include "colm/runtime.hpp"
#include "plugin/registry.hpp"

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::vector<int64_t> tokens(int64_t n, int64_t offset) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = (offset * 7919 + i * 104729) % 50000;
  return v;
}

// Prefill `rows` prompts of `len` tokens in one extend call; returns tokens/s.
double prefill_rate(colm::Expert& e, int64_t rows, int64_t len) {
  auto state = e.new_state(rows);
  std::vector<int64_t> r(static_cast<size_t>(rows));
  std::iota(r.begin(), r.end(), 0);
  std::vector<std::vector<int64_t>> toks;
  for (int64_t i = 0; i < rows; ++i) toks.push_back(tokens(len, i));
  auto t0 = Clock::now();
  e.extend(*state, r, toks);
  return static_cast<double>(rows * len) / seconds_since(t0);
}

// After a `prompt`-token prefill, `steps` single-token steps for all rows; returns seconds per step.
double decode_step_seconds(colm::Expert& e, int64_t rows, int64_t prompt, int64_t steps) {
  auto state = e.new_state(rows);
  std::vector<int64_t> r(static_cast<size_t>(rows));
  std::iota(r.begin(), r.end(), 0);
  std::vector<std::vector<int64_t>> toks;
  for (int64_t i = 0; i < rows; ++i) toks.push_back(tokens(prompt, i));
  auto out = e.extend(*state, r, toks);
  auto next = [&] {
    std::vector<std::vector<int64_t>> step;
    auto am = out.logits.argmax(-1);
    for (int64_t i = 0; i < rows; ++i) step.push_back({am[i].item<int64_t>()});
    return step;
  };
  out = e.extend(*state, r, next());  // warm-up step (first cache growth, allocator)
  auto t0 = Clock::now();
  for (int64_t s = 0; s < steps; ++s) out = e.extend(*state, r, next());
  return seconds_since(t0) / static_cast<double>(steps);
}

}  // namespace

int main(int argc, char** argv) {
  // `bench_transformer steps`: only the decode-step lines (the quick check of issue 15's target).
  const bool steps_only = argc > 1 && std::string(argv[1]) == "steps";
  colm::init_runtime("warn");
  std::printf("bench_transformer: GPT-2-small shape (12 layers, d=768, 12 heads, ffn 3072, vocab 50257), float32, "
              "random weights, %d torch threads\n", colm::torch_threads());
  colm::PluginContext ctx;
  ctx.seed = 1;
  const auto cfg = colm::ConfigView::from_string(
      "family = 'gpt2'\nn_layer = 12\nn_head = 12\nd_model = 768\nd_ff = 3072\nmax_positions = 1024\n"
      "vocab = 'bytes'\nvocab_size = 50257\n");
  auto expert = colm::default_registry().create_expert("transformer", cfg, ctx);
  std::printf("parameters: %lld\n", static_cast<long long>(expert->info().num_parameters));
  torch::NoGradGuard no_grad;

  prefill_rate(*expert, 1, 16);  // warm-up
  if (!steps_only) {
    std::printf("prefill  batch 1, 128 tokens: %8.1f tokens/s\n", prefill_rate(*expert, 1, 128));
    std::printf("prefill  batch 8, 128 tokens: %8.1f tokens/s\n", prefill_rate(*expert, 8, 128));
  }
  // Decode steps after a 32-token prompt per row, at each batch size, side by side. Target (issue 15):
  // a batch-8 step costs at most 1.6x a batch-1 step (ggml's gpt-2-batched: about 2.4x here).
  std::printf("decode steps after a 32-token prompt per row (24 timed steps each, after one warm-up step):\n");
  double s1 = 0;
  // `bench_transformer steps N...`: those batch sizes only (1 first when given, for the ratios).
  std::vector<int64_t> batches;
  for (int i = 2; i < argc; ++i) batches.push_back(std::atoll(argv[i]));
  if (batches.empty()) batches = {1, 4, 8, 16};
  for (const int64_t batch : batches) {
    const double s = decode_step_seconds(*expert, batch, 32, 24);
    if (batch == 1) s1 = s;
    std::printf("decode batch %lld: %.2f ms/step = %.1f tokens/s", static_cast<long long>(batch), 1e3 * s,
                static_cast<double>(batch) / s);
    if (s1 > 0) std::printf(", %.2fx the batch-1 step", s / s1);
    if (batch == 8 && s1 > 0) std::printf(" (target <= 1.6x: %s)", s / s1 <= 1.6 ? "met" : "NOT met");
    std::printf("\n");
  }

  if (steps_only) return 0;

  // Cached: a 16-token prompt, then 256 generated tokens at batch 1, measured in full.
  const int64_t prompt = 16, generated = 256;
  auto state = expert->new_state(1);
  auto t0 = Clock::now();
  auto out = expert->extend(*state, {0}, {tokens(prompt, 3)});
  for (int64_t s = 1; s < generated; ++s) out = expert->extend(*state, {0}, {{out.logits[0].argmax().item<int64_t>()}});
  const double cached = seconds_since(t0);

  // Recompute: step s runs forward() over the whole prefix (prompt + s tokens). Running all 256
  // forwards takes minutes here, so 9 prefix lengths are timed and the rest linearly interpolated.
  std::vector<int64_t> lengths;
  for (int64_t l = prompt; l <= prompt + generated - 1; l += 30) lengths.push_back(l);
  if (lengths.back() != prompt + generated - 1) lengths.push_back(prompt + generated - 1);
  std::vector<double> times;
  for (auto l : lengths) {
    auto ids = torch::tensor(tokens(l, 3), torch::kLong).view({1, l});
    auto t1 = Clock::now();
    expert->forward(ids, torch::Tensor());
    times.push_back(seconds_since(t1));
  }
  double recompute = 0;
  for (int64_t l = prompt; l < prompt + generated; ++l) {
    size_t k = 0;
    while (k + 2 < lengths.size() && lengths[k + 1] < l) ++k;
    const double f = static_cast<double>(l - lengths[k]) / static_cast<double>(lengths[k + 1] - lengths[k]);
    recompute += times[k] + f * (times[k + 1] - times[k]);
  }
  std::printf("256 generated tokens at batch 1 after a 16-token prompt:\n");
  std::printf("  KV-cached extend (measured):                  %7.2f s\n", cached);
  std::printf("  recompute the prefix with forward() (estimated from %zu timed lengths %lld..%lld, interpolated): %7.2f s\n",
              lengths.size(), static_cast<long long>(lengths.front()), static_cast<long long>(lengths.back()), recompute);
  std::printf("  speed-up of KV caching: %.1fx\n", recompute / cached);
  return 0;
}
