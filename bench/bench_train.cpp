// Training-step throughput of Co-LLM's marginal likelihood (assistant scores cached) against plain lm
// fine-tuning of the same base, as a ratio (target <= 1.10), and the one-off cost of scoring.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include <unistd.h>

#include <torch/torch.h>

#include "colm/config.hpp"
#include "colm/runtime.hpp"
#include "plugin/registry.hpp"
#include "method/scoring.hpp"
#include "method/train.hpp"

namespace fs = std::filesystem;

namespace {

std::shared_ptr<colm::Expert> make_expert(int64_t seed) {
  colm::PluginContext ctx;
  ctx.seed = static_cast<uint64_t>(seed);
  const std::string toml = "family = \"gpt2\"\nvocab = \"bytes\"\nn_layer = 4\nn_head = 4\nd_model = 128\n"
                           "d_ff = 512\nmax_positions = 128\ninit_seed = " + std::to_string(seed) + "\n";
  return colm::default_registry().create_expert("transformer", colm::ConfigView::from_string(toml), ctx);
}

double steps_per_second(colm::TrainObjective& obj, const colm::TrainData& data, const colm::TrainConfig& base_cfg,
                        int64_t steps) {
  auto c = base_cfg;
  c.steps = steps;
  auto r = colm::train(obj, data, nullptr, c);
  return static_cast<double>(r.steps) / r.seconds;
}

}  // namespace

int main() {
  colm::init_runtime("warn");
  auto base = make_expert(1);
  auto assistant = make_expert(2);
  std::vector<std::pair<std::string, std::string>> pairs;
  for (int i = 0; i < 256; ++i) {
    pairs.emplace_back("Question " + std::to_string(i) + ": what is " + std::to_string(i * 7 % 97) + " plus " +
                           std::to_string(i * 13 % 89) + "?",
                       " The answer is " + std::to_string(i * 7 % 97 + i * 13 % 89) + ", computed step by step.");
  }
  auto data = colm::make_pair_data(pairs, base->tokenizer(), 96);
  colm::TrainConfig cfg;
  cfg.batch_size = 16;
  cfg.lr = 1e-4;
  cfg.log_every_s = 1e9;
  cfg.label = "bench";

  const auto cache = fs::temp_directory_path() / ("colm-bench-train-" + std::to_string(::getpid()));
  colm::ScoreCacheInfo info;
  auto table = colm::cached_scores(*assistant, data, cache.string(), cfg.batch_size, &info);
  const double scoring_s = info.seconds;

  colm::PluginContext pctx;
  pctx.num_assistants = 1;
  pctx.base_hidden_size = base->info().hidden_size;
  auto policy = colm::default_registry().create_policy("learned", colm::ConfigView(), pctx);
  colm::LmObjective lm(*base);
  colm::DeferralObjective ml(*base, *policy, {&table}, {}, "marginal_likelihood", true,
                             colm::WeakRule::assistant_right_base_wrong, 1.0, {});

  const int64_t steps = 20;
  steps_per_second(lm, data, cfg, 3);  // warm-up (allocator, caches)
  steps_per_second(ml, data, cfg, 3);
  double lm_best = 0, ml_best = 0;
  for (int rep = 0; rep < 3; ++rep) {  // interleaved repetitions, best of each: robust to a noisy host
    lm_best = std::max(lm_best, steps_per_second(lm, data, cfg, steps));
    ml_best = std::max(ml_best, steps_per_second(ml, data, cfg, steps));
  }
  const double tokens_per_step = static_cast<double>(data.target_tokens()) / static_cast<double>(data.size()) *
                                 static_cast<double>(cfg.batch_size);
  const double epoch_steps = static_cast<double>(data.size()) / static_cast<double>(cfg.batch_size);
  const double epoch_s = epoch_steps / ml_best;
  std::printf("bench_train: base/assistant gpt2 4x128 (%.2fM params), %zu sequences, batch %lld, %d threads\n",
              static_cast<double>(base->info().num_parameters) / 1e6, data.size(),
              static_cast<long long>(cfg.batch_size), colm::torch_threads());
  std::printf("  lm fine-tuning:          %8.0f target tok/s (%.2f steps/s)\n", lm_best * tokens_per_step, lm_best);
  std::printf("  marginal likelihood:     %8.0f target tok/s (%.2f steps/s)\n", ml_best * tokens_per_step, ml_best);
  std::printf("  step time ratio ml / lm: %8.3f  (target <= 1.10)\n", lm_best / ml_best);
  std::printf("  scoring (one-off):       %8.3f s = %.2f x one marginal-likelihood epoch (%.3f s)\n", scoring_s,
              scoring_s / epoch_s, epoch_s);
  std::error_code ec;
  fs::remove_all(cache, ec);
  return 0;
}
