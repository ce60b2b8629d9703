// The collaborative decoder and the `rules` policies, on tiny random transformers made by the
// registry: references are plain full-prefix forwards, so every cache and batching shortcut is checked.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <set>

#include <torch/torch.h>

#include "colm/config.hpp"
#include "colm/forwarding_expert.hpp"
#include "colm/plugin.hpp"
#include "method/decode.hpp"
#include "plugin/registry.hpp"

using namespace colm;

namespace {

std::shared_ptr<Expert> tiny_expert(int seed, int d_model = 32, int n_layer = 2) {
  const std::string toml = "family = \"gpt2\"\nn_layer = " + std::to_string(n_layer) +
                           "\nn_head = 2\nd_model = " + std::to_string(d_model) + "\nd_ff = " +
                           std::to_string(2 * d_model) + "\nmax_positions = 128\nvocab = \"bytes\"\ninit_seed = " +
                           std::to_string(seed) + "\n";
  PluginContext ctx;
  ctx.instance = "expert" + std::to_string(seed);
  return default_registry().create_expert("transformer", ConfigView::from_string(toml, "test_decode"), ctx);
}

std::shared_ptr<DeferralPolicy> rules(const std::string& toml, int64_t num_assistants = 1) {
  PluginContext ctx;
  ctx.instance = "policy";
  ctx.num_assistants = num_assistants;
  return default_registry().create_policy("rules", ConfigView::from_string(toml, "test_decode"), ctx);
}

// Five prompts of different lengths.
const std::vector<std::string> kPrompts = {"a", "The cat sat", "12 + 30 =", "Once upon a time, there", "xyz"};

torch::Tensor last_logits(Expert& e, const std::vector<int64_t>& context) {
  torch::NoGradGuard g;
  const auto ids = torch::tensor(context, torch::kLong).unsqueeze(0);
  return e.forward(ids, torch::Tensor()).logits[0][-1].narrow(0, 0, e.tokenizer().vocab_size());  // [V]
}

// The reference: greedy decoding by a full forward over the whole prefix at every step.
std::vector<int64_t> reference_greedy(Expert& e, const std::string& prompt, int64_t max_tokens) {
  auto ctx = e.tokenizer().encode(prompt, true);
  std::vector<int64_t> out;
  const auto eos = e.tokenizer().eos_id();
  while (static_cast<int64_t>(out.size()) < max_tokens) {
    const int64_t tok = last_logits(e, ctx).argmax().item<int64_t>();
    out.push_back(tok);
    ctx.push_back(tok);
    if (eos && tok == *eos) break;
  }
  return out;
}

std::vector<uint64_t> seeds_for(size_t n) {
  std::vector<uint64_t> s;
  for (size_t i = 0; i < n; ++i) s.push_back(1000 + 17 * i);
  return s;
}

// A threshold eta that makes `policy` defer about half of the base's own tokens: the median of
// P(defer) = 1 - P(Z=0) along the base's greedy decoding (eta = 1 never defers).
double median_threshold(Expert& base, Expert& assistant, DeferralPolicy& policy, const DecodeOptions& o) {
  DecodeOptions never = o;
  never.threshold = 1.0;
  std::vector<float> p;
  for (const auto& r : collaborative_decode(base, {&assistant}, policy, kPrompts, {}, never)) {
    CHECK(r.n_deferred == 0);
    for (const auto& t : r.trace) p.push_back(1 - t.probs[0]);
  }
  std::sort(p.begin(), p.end());
  return p[p.size() / 2];
}

}  // namespace

TEST_CASE("base_only and assistant_only reproduce each model's own greedy decoding", "[decode]") {
  auto base = tiny_expert(1);
  auto assistant = tiny_expert(2, 48);
  const int64_t batch = GENERATE(1, 5);
  DecodeOptions o;
  o.max_tokens = 12;
  o.batch_size = batch;
  o.threshold = 0.5;

  auto base_only = rules("rule = \"base_only\"");
  auto assistant_only = rules("rule = \"assistant_only\"");
  const auto rb = collaborative_decode(*base, {assistant.get()}, *base_only, kPrompts, seeds_for(kPrompts.size()), o);
  const auto ra = collaborative_decode(*base, {assistant.get()}, *assistant_only, kPrompts, seeds_for(kPrompts.size()), o);
  REQUIRE(rb.size() == kPrompts.size());
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    INFO("batch " << batch << ", prompt " << i);
    CHECK(rb[i].ids == reference_greedy(*base, kPrompts[i], o.max_tokens));
    CHECK(rb[i].n_deferred == 0);
    CHECK(ra[i].ids == reference_greedy(*assistant, kPrompts[i], o.max_tokens));
    CHECK(ra[i].n_deferred == static_cast<int64_t>(ra[i].ids.size()));
  }
}

TEST_CASE("batched greedy collaborative decoding equals decoding each example alone", "[decode]") {
  auto base = tiny_expert(1);
  auto assistant = tiny_expert(2, 48);
  auto policy = rules("rule = \"confidence\"");
  DecodeOptions o;
  o.max_tokens = 16;
  o.batch_size = 5;
  o.threshold = median_threshold(*base, *assistant, *policy, o);  // a mix of both models
  const auto seeds = seeds_for(kPrompts.size());
  const auto together = collaborative_decode(*base, {assistant.get()}, *policy, kPrompts, seeds, o);
  int64_t deferred = 0, total = 0;
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    DecodeOptions one = o;
    one.batch_size = 1;
    const auto alone = collaborative_decode(*base, {assistant.get()}, *policy, {kPrompts[i]}, {seeds[i]}, one);
    INFO("prompt " << i);
    CHECK(alone[0].ids == together[i].ids);
    CHECK(alone[0].output == together[i].output);
    for (size_t t = 0; t < alone[0].trace.size() && t < together[i].trace.size(); ++t)
      CHECK(alone[0].trace[t].source == together[i].trace[t].source);
    deferred += together[i].n_deferred;
    total += static_cast<int64_t>(together[i].ids.size());
  }
  // The threshold was chosen so that both models emit tokens; otherwise the test proves little.
  CHECK(deferred > 0);
  CHECK(deferred < total);
}

namespace {

// A policy that asks for the assistants' logits only at chosen steps, records what it got, and
// defers row 0 at one step (so the assistant's cache catches up on a subset of rows, then on all).
class InstrumentedPolicy final : public DeferralPolicy {
 public:
  std::set<int64_t> look_at{3, 7};
  int64_t defer_row0_at = 5;
  std::map<int64_t, torch::Tensor> seen;  // step -> assistant logits [A, V]
  int64_t step = 0;

  PolicyNeeds needs() const override {
    PolicyNeeds n;
    n.assistant_logits = look_at.count(step) > 0;
    return n;
  }
  torch::Tensor probs(const PolicyInput& in) override {
    const int64_t R = static_cast<int64_t>(in.row_seeds.size());
    if (look_at.count(step)) {
      REQUIRE(in.assistant_logits.size() == 1);
      seen[step] = in.assistant_logits[0].clone();
    } else {
      CHECK(in.assistant_logits.empty());  // not asked for: not computed
    }
    auto z = torch::zeros({R, 2});
    z.select(1, 0).fill_(1);
    if (step == defer_row0_at) z[0] = torch::tensor({0.f, 1.f});
    ++step;
    return z;
  }
};

}  // namespace

TEST_CASE("an assistant's lazily caught-up logits equal a full forward over the same context", "[decode]") {
  auto base = tiny_expert(1);
  auto assistant = tiny_expert(2, 48);
  InstrumentedPolicy policy;
  DecodeOptions o;
  o.max_tokens = 10;
  o.batch_size = 5;
  const auto res = collaborative_decode(*base, {assistant.get()}, policy, kPrompts, seeds_for(kPrompts.size()), o);
  REQUIRE(policy.seen.size() == 2);
  for (const auto& [k, logits] : policy.seen) {
    // Rows active at step k are the examples that generated more than k tokens, in order.
    int64_t a = 0;
    for (size_t i = 0; i < kPrompts.size(); ++i) {
      if (static_cast<int64_t>(res[i].ids.size()) <= k) continue;
      auto ctx = assistant->tokenizer().encode(kPrompts[i], true);
      ctx.insert(ctx.end(), res[i].ids.begin(), res[i].ids.begin() + k);
      const auto ref = last_logits(*assistant, ctx);
      const double diff = (logits[a] - ref).abs().max().item<double>();
      INFO("step " << k << ", prompt " << i << ": max |cached - full| = " << diff);
      CHECK(diff < 1e-4);
      ++a;
    }
    CHECK(a == logits.size(0));
  }
  // The row deferred at step 5 took the assistant's greedy token there.
  if (res[0].ids.size() > 5) {
    CHECK(res[0].trace[5].source == 1);
    auto ctx = assistant->tokenizer().encode(kPrompts[0], true);
    ctx.insert(ctx.end(), res[0].ids.begin(), res[0].ids.begin() + 5);
    CHECK(res[0].ids[5] == last_logits(*assistant, ctx).argmax().item<int64_t>());
  }
}

TEST_CASE("sampling is deterministic per example seed and independent of batch composition", "[decode]") {
  auto base = tiny_expert(1);
  auto assistant = tiny_expert(2, 48);
  auto policy = rules("rule = \"random\"\np = 0.3");
  DecodeOptions o;
  o.sample = true;
  o.temperature = 1.0;
  o.top_p = 0.9;
  o.max_tokens = 12;
  o.seed = 7;
  o.batch_size = 5;
  const auto seeds = seeds_for(kPrompts.size());
  const auto first = collaborative_decode(*base, {assistant.get()}, *policy, kPrompts, seeds, o);
  const auto again = collaborative_decode(*base, {assistant.get()}, *policy, kPrompts, seeds, o);
  // The same examples in another order and another batch size: each keeps its tokens.
  std::vector<std::string> reversed(kPrompts.rbegin(), kPrompts.rend());
  std::vector<uint64_t> reversed_seeds(seeds.rbegin(), seeds.rend());
  DecodeOptions o2 = o;
  o2.batch_size = 2;
  const auto shuffled = collaborative_decode(*base, {assistant.get()}, *policy, reversed, reversed_seeds, o2);
  DecodeOptions o3 = o;
  o3.seed = 8;
  const auto other_seed = collaborative_decode(*base, {assistant.get()}, *policy, kPrompts, seeds, o3);
  const auto greedy = collaborative_decode(*base, {assistant.get()}, *policy, kPrompts, seeds, [&] {
    DecodeOptions g = o;
    g.sample = false;
    return g;
  }());
  int differ_seed = 0, differ_greedy = 0;
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    INFO("prompt " << i);
    CHECK(first[i].ids == again[i].ids);
    CHECK(first[i].ids == shuffled[kPrompts.size() - 1 - i].ids);
    differ_seed += first[i].ids != other_seed[i].ids;
    differ_greedy += first[i].ids != greedy[i].ids;
  }
  CHECK(differ_seed > 0);
  CHECK(differ_greedy > 0);
}

TEST_CASE("stop strings and max_tokens end a row", "[decode]") {
  auto base = tiny_expert(1);
  auto assistant = tiny_expert(2, 48);
  auto policy = rules("rule = \"base_only\"");
  DecodeOptions o;
  o.max_tokens = 20;
  o.batch_size = 5;
  const auto seeds = seeds_for(kPrompts.size());
  const auto free_run = collaborative_decode(*base, {assistant.get()}, *policy, kPrompts, seeds, o);
  for (const auto& r : free_run) {
    CHECK(static_cast<int64_t>(r.ids.size()) <= o.max_tokens);
    CHECK((r.stop_reason == "max_tokens" || r.stop_reason == "eos"));
    if (r.stop_reason == "max_tokens") CHECK(static_cast<int64_t>(r.ids.size()) == o.max_tokens);
  }
  // Stop at a string the model is known to produce: two bytes from the middle of example 1's output.
  const std::string& text = free_run[1].output;
  REQUIRE(text.size() >= 8);
  const std::string stop = text.substr(4, 2);
  DecodeOptions s = o;
  s.stop = {stop, "never-produced-stop-string"};
  const auto stopped = collaborative_decode(*base, {assistant.get()}, *policy, kPrompts, seeds, s);
  CHECK(stopped[1].stop_reason == "stop");
  CHECK(stopped[1].output == text.substr(0, text.find(stop)));
  // The row stopped at the first token whose text completes the stop string.
  const auto& ids1 = stopped[1].ids;
  CHECK(base->tokenizer().decode(ids1).find(stop) != std::string::npos);
  CHECK(base->tokenizer().decode({ids1.begin(), ids1.end() - 1}).find(stop) == std::string::npos);
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    // Stopping early never changes the tokens before the stop.
    REQUIRE(stopped[i].ids.size() <= free_run[i].ids.size());
    CHECK(std::equal(stopped[i].ids.begin(), stopped[i].ids.end(), free_run[i].ids.begin()));
    if (stopped[i].stop_reason == "stop") CHECK(stopped[i].output.find(stop) == std::string::npos);
  }
}

TEST_CASE("two assistants: assistant_only picks the configured one, more_confident consults all", "[decode]") {
  auto base = tiny_expert(1);
  auto a1 = tiny_expert(2, 48);
  auto a2 = tiny_expert(3, 32, 1);
  DecodeOptions o;
  o.max_tokens = 10;
  o.batch_size = 5;
  const auto seeds = seeds_for(kPrompts.size());
  auto second = rules("rule = \"assistant_only\"\nassistant = 2", 2);
  const auto r2 = collaborative_decode(*base, {a1.get(), a2.get()}, *second, kPrompts, seeds, o);
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    CHECK(r2[i].ids == reference_greedy(*a2, kPrompts[i], o.max_tokens));
    for (const auto& t : r2[i].trace) CHECK(t.source == 2);
  }

  auto confident = rules("rule = \"more_confident\"", 2);
  const auto rc = collaborative_decode(*base, {a1.get(), a2.get()}, *confident, kPrompts, seeds, o);
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    auto ctx = base->tokenizer().encode(kPrompts[i], true);
    for (size_t t = 0; t < rc[i].ids.size(); ++t) {
      const auto& tr = rc[i].trace[t];
      // Reference: each model's top-1 probability on the same context; the most confident emits.
      std::vector<double> top;
      std::vector<int64_t> arg;
      for (Expert* e : {base.get(), a1.get(), a2.get()}) {
        const auto l = last_logits(*e, ctx);
        top.push_back(torch::softmax(l, 0).max().item<double>());
        arg.push_back(l.argmax().item<int64_t>());
      }
      const int want = static_cast<int>(std::max_element(top.begin(), top.end()) - top.begin());
      INFO("prompt " << i << ", token " << t);
      CHECK(tr.source == want);
      CHECK(tr.top1 == arg);
      CHECK(tr.id == arg[want]);
      ctx.push_back(rc[i].ids[t]);
    }
  }
}

// Logits [R, V] whose softmax puts `top` on token `at` of each row and spreads the rest evenly.
torch::Tensor peaked(const std::vector<double>& top, int64_t V = 8, int64_t at = 0) {
  auto p = torch::empty({int64_t(top.size()), V}, torch::kFloat32);
  for (int64_t r = 0; r < int64_t(top.size()); ++r) {
    p[r].fill_((1 - top[size_t(r)]) / double(V - 1));
    p[r][at] = top[size_t(r)];
  }
  return p.log();
}

TEST_CASE("rules with several assistants: each defers to the assistant its definition names", "[decode][rules]") {
  // Three rows, three assistants. Base top-1 probabilities: 0.9 (sure), 0.3 and 0.2 (unsure).
  // Assistants' top-1 probabilities per row: the most confident is assistant 3 in row 0 (0.7),
  // assistant 2 in row 1 (0.8) and assistant 1 in row 2 (0.95).
  PolicyInput in;
  in.base_logits = peaked({0.9, 0.3, 0.2});
  in.assistant_logits = {peaked({0.2, 0.3, 0.95}), peaked({0.4, 0.8, 0.5}), peaked({0.7, 0.6, 0.1})};
  in.row_seeds = {11, 12, 13};
  const std::vector<int64_t> most_confident_assistant = {3, 2, 1};
  auto who = [](const torch::Tensor& probs) {  // argmax over {base, assistants} per row
    std::vector<int64_t> out;
    for (int64_t r = 0; r < probs.size(0); ++r) out.push_back(probs[r].argmax().item<int64_t>());
    return out;
  };
  for (const std::string rule : {"confidence", "entropy"}) {
    INFO("rule " << rule);
    auto most = rules("rule = \"" + rule + "\"\nchoose = \"most_confident\"", 3);
    CHECK(most->needs().assistant_logits);
    const auto pm = most->probs(in);
    REQUIRE(pm.sizes() == torch::IntArrayRef({3, 4}));
    CHECK(torch::allclose(pm.sum(1), torch::ones({3})));
    if (rule == "confidence")  // P(defer) = 1 - the base's top-1 probability
      CHECK(torch::allclose(pm.select(1, 0), torch::tensor({0.9f, 0.3f, 0.2f}), 1e-4, 1e-5));
    for (int64_t r = 0; r < 3; ++r) {
      INFO("row " << r);
      const int64_t want = most_confident_assistant[size_t(r)];
      CHECK(pm[r][want].item<double>() == Approx(1 - pm[r][0].item<double>()));
      for (int64_t j = 1; j <= 3; ++j)
        if (j != want) CHECK(pm[r][j].item<double>() == 0.0);
    }
    // A fixed assistant k: the same P(Z=0), all of the rest on k, no assistant logits needed.
    for (int64_t k = 1; k <= 3; ++k) {
      auto fixed = rules("rule = \"" + rule + "\"\nassistant = " + std::to_string(k), 3);
      CHECK_FALSE(fixed->needs().assistant_logits);
      const auto pf = fixed->probs(in);
      CHECK(torch::allclose(pf.select(1, 0), pm.select(1, 0)));
      CHECK(torch::allclose(pf.select(1, k), 1 - pm.select(1, 0)));
    }
  }
  // more_confident over all four models: the sure base keeps row 0; rows 1 and 2 go to the most
  // confident assistant (0.8 and 0.95 beat the base's 0.3 and 0.2).
  CHECK(who(rules("rule = \"more_confident\"", 3)->probs(in)) == std::vector<int64_t>{0, 2, 1});
  // Random at p = 1 defers every token; with choose = "uniform" to each assistant about equally often,
  // the same assistant for the same row seed, and independently of the seed's deferral draw.
  auto uniform = rules("rule = \"random\"\np = 1\nchoose = \"uniform\"", 3);
  PolicyInput many;
  for (uint64_t i = 0; i < 3000; ++i) many.row_seeds.push_back(i * 7919 + 3);
  const auto pu = uniform->probs(many);
  const auto receivers = pu.argmax(1);
  for (int64_t j = 1; j <= 3; ++j) {
    const double share = (receivers == j).sum().item<double>() / 3000.0;
    INFO("assistant " << j << " receives " << share);
    CHECK(share > 0.29);
    CHECK(share < 0.38);
  }
  CHECK((receivers == 0).sum().item<int64_t>() == 0);
  CHECK(torch::equal(uniform->probs(many), pu));
  // At p = 0.5, whom is drawn independently of whether: among deferred rows the split stays even.
  auto half = rules("rule = \"random\"\np = 0.5\nchoose = \"uniform\"", 3);
  const auto ph = half->probs(many).argmax(1);
  const double deferred = (ph > 0).sum().item<double>();
  CHECK(deferred > 1350);
  CHECK(deferred < 1650);
  for (int64_t j = 1; j <= 3; ++j) CHECK((ph == j).sum().item<double>() / deferred > 0.27);
  // A fixed assistant (default 1) receives every deferred token.
  auto to2 = rules("rule = \"random\"\np = 1\nassistant = 2", 3);
  CHECK(((to2->probs(many).argmax(1)) == 2).all().item<bool>());
  // Contradictions and misuse are refused.
  CHECK_THROWS_WITH(rules("rule = \"confidence\"\nchoose = \"most_confident\"\nassistant = 2", 3),
                    Catch::Matchers::Contains("contradicts"));
  CHECK_THROWS_WITH(rules("rule = \"more_confident\"\nchoose = \"uniform\"", 3),
                    Catch::Matchers::Contains("only the random, confidence and entropy"));
  CHECK_THROWS_WITH(rules("rule = \"entropy\"\nchoose = \"loudest\"", 3),
                    Catch::Matchers::Contains("fixed, most_confident or uniform"));
}

TEST_CASE("the mixture strategy with a one-hot policy reduces to that model's greedy decoding", "[decode]") {
  auto base = tiny_expert(1);
  auto a1 = tiny_expert(2, 48);
  auto a2 = tiny_expert(3, 32, 1);
  DecodeOptions o;
  o.max_tokens = 8;
  o.batch_size = 3;
  o.strategy = "mixture";
  const auto seeds = seeds_for(kPrompts.size());
  auto base_only = rules("rule = \"base_only\"", 2);
  auto second = rules("rule = \"assistant_only\"\nassistant = 2", 2);
  const auto rb = collaborative_decode(*base, {a1.get(), a2.get()}, *base_only, kPrompts, seeds, o);
  const auto ra = collaborative_decode(*base, {a1.get(), a2.get()}, *second, kPrompts, seeds, o);
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    CHECK(rb[i].ids == reference_greedy(*base, kPrompts[i], o.max_tokens));
    CHECK(ra[i].ids == reference_greedy(*a2, kPrompts[i], o.max_tokens));
    for (const auto& t : rb[i].trace) CHECK(t.top1[2] >= 0);  // mixture consults every model
  }
}

TEST_CASE("the random rule defers close to p of the tokens", "[decode][rules]") {
  auto base = tiny_expert(1);
  auto assistant = tiny_expert(2, 48);
  const double p = 0.3;
  auto policy = rules("rule = \"random\"\np = 0.3");
  DecodeOptions o;
  o.max_tokens = 64;
  o.batch_size = 8;
  std::vector<std::string> prompts;
  for (int i = 0; i < 8; ++i) prompts.push_back("prompt number " + std::to_string(i));
  const auto res = collaborative_decode(*base, {assistant.get()}, *policy, prompts, seeds_for(prompts.size()), o);
  int64_t deferred = 0, total = 0;
  for (const auto& r : res) {
    deferred += r.n_deferred;
    total += static_cast<int64_t>(r.ids.size());
  }
  REQUIRE(total >= 100);
  const double rate = static_cast<double>(deferred) / static_cast<double>(total);
  INFO("deferral rate " << rate << " over " << total << " tokens");
  CHECK(std::abs(rate - p) < 4 * std::sqrt(p * (1 - p) / static_cast<double>(total)));
}

TEST_CASE("the trace's sources and probabilities are consistent with the output", "[decode]") {
  auto base = tiny_expert(1);
  auto assistant = tiny_expert(2, 48);
  const std::string rule = GENERATE(std::string("confidence"), std::string("entropy"));
  auto policy = rules("rule = \"" + rule + "\"");
  DecodeOptions o;
  o.max_tokens = 12;
  o.batch_size = 5;
  o.threshold = median_threshold(*base, *assistant, *policy, o);
  const auto res = collaborative_decode(*base, {assistant.get()}, *policy, kPrompts, seeds_for(kPrompts.size()), o);
  int64_t all_deferred = 0, all_tokens = 0;
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    const auto& r = res[i];
    REQUIRE(r.trace.size() == r.ids.size());
    int64_t deferred = 0;
    std::vector<int64_t> kept;
    auto ctx = base->tokenizer().encode(kPrompts[i], true);
    for (size_t t = 0; t < r.ids.size(); ++t) {
      const auto& tr = r.trace[t];
      INFO(rule << ", prompt " << i << ", token " << t);
      CHECK(tr.id == r.ids[t]);
      REQUIRE(tr.probs.size() == 2);
      CHECK(tr.probs[0] + tr.probs[1] == Approx(1.0).margin(1e-5));
      CHECK(tr.source == (1 - tr.probs[0] > o.threshold ? 1 : 0));
      CHECK(tr.top1[tr.source] == tr.id);  // greedy: the emitting model's argmax
      deferred += tr.source != 0;
      // The policy saw the base's distribution on the true context.
      const auto pb = torch::softmax(last_logits(*base, ctx), 0);
      const double expect = rule == "confidence"
                                ? pb.max().item<double>()
                                : 1 - (-(pb * pb.log()).sum().item<double>() / std::log(pb.size(0)));
      CHECK(tr.probs[0] == Approx(expect).margin(1e-4));
      ctx.push_back(tr.id);
    }
    CHECK(r.n_deferred == deferred);
    all_deferred += deferred;
    all_tokens += static_cast<int64_t>(r.ids.size());
    if (r.stop_reason != "eos") CHECK(r.output == base->tokenizer().decode(r.ids));
  }
  CHECK(all_deferred > 0);  // both models emitted tokens, so both branches were checked
  CHECK(all_deferred < all_tokens);
}

TEST_CASE("teacher-forced analysis: the oracle defers exactly where only the assistant is right", "[decode][rules]") {
  auto base = tiny_expert(1);
  auto assistant = tiny_expert(2, 48);
  auto oracle = rules("rule = \"oracle\"");
  // Targets that the assistant is right on: its own greedy continuation, so the oracle has work.
  const auto prompt = base->tokenizer().encode("Once upon a time", true);
  const auto target = reference_greedy(*assistant, "Once upon a time", 12);
  const auto tf = teacher_forced_trace(*base, {assistant.get()}, *oracle, prompt, target);
  REQUIRE(tf.probs.sizes() == torch::IntArrayRef({static_cast<int64_t>(target.size()), 2}));
  int64_t deferred = 0;
  auto ctx = prompt;
  for (size_t t = 0; t < target.size(); ++t) {
    const int64_t b = last_logits(*base, ctx).argmax().item<int64_t>();
    const int64_t a = last_logits(*assistant, ctx).argmax().item<int64_t>();
    CHECK(tf.top1[t][0].item<int64_t>() == b);
    CHECK(tf.top1[t][1].item<int64_t>() == a);
    const bool want = a == target[t] && b != target[t];
    CHECK(tf.probs[t][1].item<float>() == (want ? 1.f : 0.f));
    deferred += want;
    ctx.push_back(target[t]);
  }
  CHECK(deferred > 0);
  // Generation has no gold token: the decoder refuses the oracle instead of guessing.
  DecodeOptions o;
  o.max_tokens = 4;
  CHECK_THROWS_AS(collaborative_decode(*base, {assistant.get()}, *oracle, {"x"}, {}, o), Error);
}

TEST_CASE("bad options and bad policy outputs are clear errors", "[decode]") {
  auto base = tiny_expert(1);
  auto assistant = tiny_expert(2, 48);
  auto policy = rules("rule = \"base_only\"");
  DecodeOptions o;
  o.strategy = "vote";
  CHECK_THROWS_WITH(collaborative_decode(*base, {assistant.get()}, *policy, {"x"}, {}, o),
                    Catch::Contains("unknown strategy 'vote'"));
  // A policy built for one assistant used with two returns [R, 2] where [R, 3] is expected.
  DecodeOptions ok;
  ok.max_tokens = 2;
  CHECK_THROWS_WITH(collaborative_decode(*base, {assistant.get(), assistant.get()}, *policy, {"x"}, {}, ok),
                    Catch::Contains("expected [1, 3]"));
  CHECK_THROWS_WITH(rules("rule = \"sometimes\""), Catch::Contains("unknown rule 'sometimes'"));
  CHECK_THROWS_WITH(rules("rule = \"random\"\np = 1.5"), Catch::Contains("[0, 1]"));
  CHECK_THROWS_WITH(rules("rule = \"assistant_only\"\nassistant = 3", 2), Catch::Contains("1..2"));
}

namespace {

// A wrapper that ends some sequences early: EOS gets the highest logit whenever a row's length
// (prompt + generated) is a multiple of `every`. A function of the row's own tokens only, so a row
// ends at the same place whatever shares its batch: EOS lands in the middle of batches.
class EarlyEos final : public ForwardingExpert {
 public:
  EarlyEos(std::shared_ptr<Expert> inner, int64_t every)
      : ForwardingExpert(inner), every_(every), eos_(*inner->tokenizer().eos_id()) {}
  ExpertOutput extend(DecodeState& s, const std::vector<int64_t>& rows,
                      const std::vector<std::vector<int64_t>>& tokens) override {
    auto out = ForwardingExpert::extend(s, rows, tokens);
    for (size_t i = 0; i < rows.size(); ++i)
      if (s.length(rows[i]) % every_ == 0) out.logits[static_cast<int64_t>(i)][eos_] = 1e4f;
    return out;
  }

 private:
  int64_t every_, eos_;
};

const std::vector<std::string> kMixedPrompts = {"a",   "The cat sat on the mat and", "12 + 30 =", "Once upon a time, there",
                                                "xyz", "Q: 7 * 6? A:",              "hello",     "In the beginning"};

}  // namespace

TEST_CASE("continuous batching: a freed row takes the next example; outputs equal batch-1 decoding",
          "[decode][continuous]") {
  auto base = std::make_shared<EarlyEos>(tiny_expert(1), 13);
  auto assistant = tiny_expert(2, 48);
  auto policy = rules("rule = \"confidence\"");
  DecodeOptions o;
  o.max_tokens = 16;
  o.batch_size = 3;
  o.threshold = median_threshold(*base, *assistant, *policy, o);
  const auto seeds = seeds_for(kMixedPrompts.size());
  // Which example each generated token belonged to, in generation order.
  std::vector<int64_t> order;
  std::vector<int64_t> finished;
  DecodeOptions watched = o;
  watched.on_token = [&](int64_t ex, const TokenTrace&, const std::vector<int64_t>&) { order.push_back(ex); };
  watched.on_result = [&](int64_t ex, const DecodeResult& r) {
    CHECK(!r.stop_reason.empty());
    finished.push_back(ex);
  };
  const auto together = collaborative_decode(*base, {assistant.get()}, *policy, kMixedPrompts, seeds, watched);
  int64_t deferred = 0, total = 0, eos = 0;
  std::set<size_t> lengths;
  for (size_t i = 0; i < kMixedPrompts.size(); ++i) {
    DecodeOptions one = o;
    one.batch_size = 1;
    const auto alone = collaborative_decode(*base, {assistant.get()}, *policy, {kMixedPrompts[i]}, {seeds[i]}, one);
    INFO("prompt " << i);
    CHECK(alone[0].ids == together[i].ids);
    CHECK(alone[0].output == together[i].output);
    CHECK(alone[0].stop_reason == together[i].stop_reason);
    CHECK(alone[0].n_deferred == together[i].n_deferred);
    for (size_t t = 0; t < alone[0].trace.size() && t < together[i].trace.size(); ++t) {
      CHECK(alone[0].trace[t].source == together[i].trace[t].source);
      // Probabilities to rounding: batched matrix products may round differently from one row's.
      const auto& pa = alone[0].trace[t].probs;
      const auto& pt = together[i].trace[t].probs;
      REQUIRE(pa.size() == pt.size());
      for (size_t j = 0; j < pa.size(); ++j) CHECK(std::abs(pa[j] - pt[j]) < 1e-4f);
    }
    deferred += together[i].n_deferred;
    total += static_cast<int64_t>(together[i].ids.size());
    eos += together[i].stop_reason == "eos";
    lengths.insert(together[i].ids.size());
  }
  // The test means something only with both models emitting, rows ending by EOS mid-batch and
  // outputs of several lengths.
  CHECK(deferred > 0);
  CHECK(deferred < total);
  CHECK(eos >= 2);
  CHECK(lengths.size() >= 3);
  // Every example reported once, as it finished.
  std::vector<int64_t> sorted = finished;
  std::sort(sorted.begin(), sorted.end());
  CHECK(sorted == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7});
  // No waiting for a batch's longest row: example 3 (the first one not in the first three rows)
  // started before the longest of examples 0..2 finished.
  const auto first3 = std::find(order.begin(), order.end(), 3) - order.begin();
  int64_t last_of_first_rows = 0;
  for (size_t k = 0; k < order.size(); ++k)
    if (order[k] < 3) last_of_first_rows = static_cast<int64_t>(k);
  CHECK(first3 < last_of_first_rows);
}

TEST_CASE("continuous batching: combinations and sampling keep each example's tokens", "[decode][continuous]") {
  auto base = std::make_shared<EarlyEos>(tiny_expert(1), 11);
  auto amateur = tiny_expert(3);
  DecodeOptions o;
  o.max_tokens = 12;
  o.batch_size = 3;
  const auto seeds = seeds_for(kMixedPrompts.size());
  CombineOptions c{"contrastive", 0.1, 0.5};
  const auto together = combined_decode({base.get(), amateur.get()}, c, kMixedPrompts, seeds, o);
  auto policy = rules("rule = \"random\"\np = 0.3");
  auto assistant = tiny_expert(2, 48);
  DecodeOptions s = o;
  s.sample = true;
  s.top_p = 0.9;
  s.seed = 5;
  const auto sampled = collaborative_decode(*base, {assistant.get()}, *policy, kMixedPrompts, seeds, s);
  for (size_t i = 0; i < kMixedPrompts.size(); ++i) {
    INFO("prompt " << i);
    DecodeOptions one = o;
    one.batch_size = 1;
    CHECK(combined_decode({base.get(), amateur.get()}, c, {kMixedPrompts[i]}, {seeds[i]}, one)[0].ids == together[i].ids);
    DecodeOptions s1 = s;
    s1.batch_size = 1;
    CHECK(collaborative_decode(*base, {assistant.get()}, *policy, {kMixedPrompts[i]}, {seeds[i]}, s1)[0].ids ==
          sampled[i].ids);
  }
}

TEST_CASE("batched teacher-forced traces equal each example's own trace", "[decode][analysis]") {
  auto base = tiny_expert(1);
  auto assistant = tiny_expert(2, 48);
  auto confidence = rules("rule = \"confidence\"");
  auto random = rules("rule = \"random\"\np = 0.5");
  std::vector<TeacherForcedExample> inputs;
  for (size_t i = 0; i < kMixedPrompts.size(); ++i) {
    // Targets of different lengths: the assistant's continuation, cut at 3..10 tokens.
    auto target = reference_greedy(*assistant, kMixedPrompts[i], 3 + static_cast<int64_t>(i));
    inputs.push_back({base->tokenizer().encode(kMixedPrompts[i], true), target, 100 + i});
  }
  for (auto* policy : {confidence.get(), random.get()}) {
    const auto batched = teacher_forced_traces(*base, {assistant.get()}, *policy, inputs, 3);
    REQUIRE(batched.size() == inputs.size());
    for (size_t i = 0; i < inputs.size(); ++i) {
      INFO("example " << i);
      const auto alone = teacher_forced_trace(*base, {assistant.get()}, *policy, inputs[i].prompt_ids,
                                              inputs[i].target_ids, inputs[i].seed);
      REQUIRE(batched[i].probs.sizes() == alone.probs.sizes());
      CHECK((batched[i].probs - alone.probs).abs().max().item<float>() < 1e-5f);
      CHECK(torch::equal(batched[i].top1, alone.top1));
      CHECK(torch::equal(batched[i].gold, alone.gold));
    }
  }
  CHECK_THROWS_WITH(teacher_forced_traces(*base, {assistant.get()}, *confidence, inputs, 0),
                    Catch::Contains("batch_size must be >= 1"));
}
