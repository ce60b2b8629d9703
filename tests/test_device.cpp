// The tests that can use a device: COLM_TEST_DEVICE (default "cpu"; scripts/gpu-smoke.sh sets
// cuda:0) is where the models run. On any device: logits match the CPU float32 model (bf16 within a
// looser bound), incremental decoding matches full forwards there, collaborative decoding emits what
// its models' own logits say, and a few training steps lower the loss with the weights kept there.
#include <catch2/catch.hpp>

#include <cstdlib>

#include <torch/torch.h>

#include "colm/config.hpp"
#include "colm/plugin.hpp"
#include "method/decode.hpp"
#include "method/objectives.hpp"
#include "plugin/registry.hpp"
#include "support.hpp"

using namespace colm;

namespace {

std::string test_device() {
  const char* d = std::getenv("COLM_TEST_DEVICE");
  return d && *d ? d : "cpu";
}

std::shared_ptr<Expert> fixture_on(const std::string& fixture, const std::string& device, const std::string& dtype) {
  const std::string toml = "checkpoint = \"" + test::fixture(fixture) + "\"\ndtype = \"" + dtype + "\"\n";
  PluginContext ctx;
  ctx.instance = fixture + "@" + device;
  ctx.device = device;
  return default_registry().create_expert("transformer", ConfigView::from_string(toml, "test_device"), ctx);
}

std::shared_ptr<Expert> tiny_on(int seed, const std::string& device, const std::string& family = "llama") {
  const std::string toml = "family = \"" + family + "\"\nn_layer = 2\nn_head = 4\nd_model = 64\nd_ff = 128\n"
                           "max_positions = 256\nvocab = \"bytes\"\ninit_seed = " + std::to_string(seed) + "\n";
  PluginContext ctx;
  ctx.instance = "tiny" + std::to_string(seed);
  ctx.device = device;
  return default_registry().create_expert("transformer", ConfigView::from_string(toml, "test_device"), ctx);
}

bool on(const torch::Tensor& t, const std::string& device) {
  const torch::Device d(device);
  return t.device().type() == d.type() && (!d.has_index() || t.device().index() == d.index());
}

}  // namespace

TEST_CASE("fixture models on the test device give the CPU float32 logits", "[device]") {
  const auto device = test_device();
  INFO("COLM_TEST_DEVICE=" << device);
  const auto fixture = GENERATE(as<std::string>{}, "models/gpt2-tiny", "models/llama-tiny-gqa");
  INFO(fixture);
  torch::NoGradGuard g;
  const auto ids = torch::tensor(std::vector<int64_t>{1, 17, 42, 99, 3, 250, 7, 8}, torch::kLong).unsqueeze(0);
  const auto cpu = fixture_on(fixture, "cpu", "float32")->forward(ids, torch::Tensor()).logits;  // [1,T,V]
  for (const std::string dtype : {"float32", "bfloat16"}) {
    INFO(dtype);
    auto model = fixture_on(fixture, device, dtype);
    CHECK(model->device().type() == torch::Device(device).type());
    const auto out = model->forward(ids.to(model->device()), torch::Tensor());
    CHECK(on(out.logits, device));
    CHECK(on(out.hidden, device));
    const double diff = (out.logits.cpu() - cpu).abs().max().item<double>();
    const double scale = cpu.abs().max().item<double>();
    INFO("max |logit difference| " << diff << " (largest logit " << scale << ")");
    CHECK(diff <= (dtype == "float32" ? 1e-3 : 5e-2) * std::max(1.0, scale));
  }
}

TEST_CASE("on the test device, incremental decoding equals full forwards and Co-LLM emits its models' argmax",
          "[device][decode]") {
  const auto device = test_device();
  INFO("COLM_TEST_DEVICE=" << device);
  torch::NoGradGuard g;
  auto base = tiny_on(1, device), assistant = tiny_on(2, device, "gpt2");
  PluginContext pctx;
  pctx.num_assistants = 1;
  auto policy = default_registry().create_policy("rules", ConfigView::from_string("rule = \"random\"\np = 0.5", "t"), pctx);
  DecodeOptions o;
  o.max_tokens = 10;
  o.batch_size = 3;
  const std::vector<std::string> prompts = {"12 + 30 =", "The cat", "Once upon a time"};
  const auto results = collaborative_decode(*base, {assistant.get()}, *policy, prompts, {1, 2, 3}, o);
  REQUIRE(results.size() == prompts.size());
  int64_t deferred = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto ctx = base->tokenizer().encode(prompts[i], true);
    const auto& r = results[i];
    REQUIRE(r.trace.size() == r.ids.size());
    for (size_t t = 0; t < r.ids.size(); ++t) {
      Expert& who = r.trace[t].source == 0 ? *base : *assistant;
      deferred += r.trace[t].source != 0;
      const auto ids = torch::tensor(ctx, torch::kLong).unsqueeze(0).to(who.device());
      const auto logits = who.forward(ids, torch::Tensor()).logits[0][-1].narrow(0, 0, 259);
      CHECK(on(logits, device));
      CHECK(logits.argmax().item<int64_t>() == r.ids[t]);
      ctx.push_back(r.ids[t]);
    }
  }
  CHECK(deferred > 0);
}

TEST_CASE("a few training steps on the test device lower the loss and keep the weights there", "[device][train]") {
  const auto device = test_device();
  INFO("COLM_TEST_DEVICE=" << device);
  auto model = tiny_on(3, device);
  model->set_training(true);
  auto params = model->parameters();
  for (const auto& p : params) CHECK(on(p, device));
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(3e-3));
  const auto ids = torch::tensor(model->tokenizer().encode("12 + 30 = 42. 12 + 30 = 42. 12 + 30 = 42.", true), torch::kLong)
                       .unsqueeze(0)
                       .to(model->device());
  const auto mask = torch::ones_like(ids);
  std::vector<double> losses;
  for (int step = 0; step < 20; ++step) {
    opt.zero_grad();
    const auto loss = lm_loss_sum(model->forward(ids, torch::Tensor()).logits, ids, mask);
    loss.backward();
    opt.step();
    losses.push_back(loss.item<double>());
  }
  INFO("loss " << losses.front() << " -> " << losses.back());
  CHECK(losses.back() < 0.5 * losses.front());
  for (const auto& p : model->parameters()) CHECK(on(p, device));
}
