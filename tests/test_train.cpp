// The training loop, the scoring cache and the learned policy: schedule, batching, determinism, exact
// resume (in-process and after SIGKILL of `colm train-expert`), unsupervised deferral on a constructed
// case (synthetic, and end to end with a real base and the learned head), the cache skipping the
// model on reuse, and head files refusing other experts.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <regex>

#include <torch/torch.h>

#include "colm/config.hpp"
#include "colm/safetensors.hpp"
#include "method/objectives.hpp"
#include "plugin/registry.hpp"
#include "method/scoring.hpp"
#include "support.hpp"
#include "method/train.hpp"

namespace fs = std::filesystem;

namespace {

// ------------------------------------------------------------------ a synthetic deferral problem

// Sequences whose positions are either "digits" (the assistant knows them: P_asst = 0.9, P_base = 0.05)
// or ordinary text (P_base = 0.8, P_asst = 0.1). The hidden state carries a noisy signal of which one
// it is on its first coordinate. No labels reach the head: it sees only hidden states and likelihoods.
struct Synthetic {
  static constexpr int64_t N = 32, T = 12, d = 8;
  int64_t M;
  torch::Tensor hidden;   // [N,T,d]
  torch::Tensor comp;     // [N,T,M+1] log P_j(x_t | x_<t)
  torch::Tensor is_digit; // [N,T] bool
  colm::TrainData data;

  explicit Synthetic(int64_t m) : M(m) {
    auto g = at::detail::createCPUGenerator(99);
    is_digit = torch::rand({N, T}, g) < 0.3;
    hidden = torch::randn({N, T, d}, g);
    hidden.select(-1, 0).add_(torch::where(is_digit, torch::full({N, T}, 1.5), torch::full({N, T}, -1.5)));
    comp = torch::empty({N, T, M + 1});
    comp.select(-1, 0).copy_(torch::where(is_digit, torch::full({N, T}, std::log(0.05)), torch::full({N, T}, std::log(0.8))));
    for (int64_t j = 1; j <= M; ++j) {
      // Assistant 1 is the digit expert; any others are bad everywhere.
      auto good = torch::where(is_digit, torch::full({N, T}, std::log(0.9)), torch::full({N, T}, std::log(0.1)));
      comp.select(-1, j).copy_(j == 1 ? good : torch::full({N, T}, std::log(0.01)));
    }
    for (int64_t i = 0; i < N; ++i) {
      data.ids.emplace_back(T, 0);
      data.loss_mask.emplace_back(T, 1);
      data.loss_mask.back()[0] = 0;
    }
  }
};

class SyntheticObjective : public colm::TrainObjective {
 public:
  SyntheticObjective(const Synthetic& s, uint64_t init_seed) : s_(s) {
    auto g = at::detail::createCPUGenerator(init_seed);
    w_ = (torch::rand({s.M + 1, s.d}, g) - 0.5).requires_grad_(true);
    b_ = torch::zeros({s.M + 1}).requires_grad_(true);
  }
  std::string name() const override { return "synthetic_marginal_likelihood"; }
  std::vector<torch::Tensor> parameters() override { return {w_, b_}; }
  void set_training(bool) override {}
  torch::Tensor loss_sum(const colm::Batch& batch) override {
    auto idx = torch::tensor(batch.rows, torch::kInt64);
    auto head = torch::linear(s_.hidden.index_select(0, idx), w_, b_);  // [B,T,M+1]
    // Position t's target is scored by the state at t (the synthetic data has no shift).
    return colm::marginal_nll_sum(head, s_.comp.index_select(0, idx), batch.loss_mask);
  }
  void save_artifacts(const std::string& dir) const override {
    torch::save(w_.detach(), (fs::path(dir) / "w.pt").string());
  }
  torch::Tensor p_defer() const {
    torch::NoGradGuard ng;
    return 1 - torch::softmax(torch::linear(s_.hidden, w_, b_), -1).select(-1, 0);  // [N,T]
  }
  const torch::Tensor& w() const { return w_; }

 private:
  const Synthetic& s_;
  torch::Tensor w_, b_;
};

double auc(const torch::Tensor& score, const torch::Tensor& positive, const torch::Tensor& keep) {
  auto s = score.masked_select(keep);
  auto p = positive.masked_select(keep);
  auto pos = s.masked_select(p), neg = s.masked_select(p.logical_not());
  // P(score_pos > score_neg) + 0.5 P(tie), over all pairs.
  auto diff = pos.unsqueeze(1) - neg.unsqueeze(0);
  return ((diff > 0).to(torch::kDouble).mean() + 0.5 * (diff == 0).to(torch::kDouble).mean()).item<double>();
}

colm::TrainConfig synthetic_config() {
  colm::TrainConfig c;
  c.steps = 60;
  c.batch_size = 4;
  c.grad_accum = 2;
  c.lr = 0.05;
  c.warmup = 5;
  c.weight_decay = 0.01;
  c.seed = 5;
  c.log_every_s = 1e9;
  return c;
}

}  // namespace

TEST_CASE("learning rate warms up linearly then decays to the floor", "[train]") {
  colm::TrainConfig c;
  c.steps = 110;
  c.warmup = 10;
  c.lr = 1.0;
  CHECK(colm::learning_rate_at(c, 0) == Approx(0.1));
  CHECK(colm::learning_rate_at(c, 9) == Approx(1.0));
  CHECK(colm::learning_rate_at(c, 60) == Approx(0.5));
  CHECK(colm::learning_rate_at(c, 109) == Approx(0.01));
  c.schedule = "cosine";
  CHECK(colm::learning_rate_at(c, 60) == Approx(0.5));
  CHECK(colm::learning_rate_at(c, 35) == Approx(0.5 * (1 + std::cos(M_PI * 0.25))));
  c.schedule = "triangle";
  CHECK_THROWS_WITH(colm::validate(c), Catch::Contains("schedule"));
}

TEST_CASE("batches are right-padded with loss masks on targets only", "[train]") {
  colm::TrainData d;
  d.ids = {{5, 6, 7}, {8, 9}};
  d.loss_mask = {{0, 0, 1}, {0, 1}};
  auto b = colm::make_batch(d, {1, 0}, 258, torch::kCPU);
  CHECK(torch::equal(b.ids, torch::tensor({8, 9, 258, 5, 6, 7}, torch::kInt64).view({2, 3})));
  CHECK(torch::equal(b.attn_mask, torch::tensor({1, 1, 0, 1, 1, 1}, torch::kInt64).view({2, 3})));
  CHECK(torch::equal(b.loss_mask, torch::tensor({false, true, false, false, false, true}).view({2, 3})));
  CHECK(b.target_tokens == 2);
  d.loss_mask[0][0] = 1;
  CHECK_THROWS_WITH(d.validate(), Catch::Contains("position 0"));
}

TEST_CASE("training twice with the same seed gives bit-identical weights", "[train]") {
  Synthetic s(1);
  SyntheticObjective a(s, 1), b(s, 1);
  auto ra = colm::train(a, s.data, nullptr, synthetic_config());
  auto rb = colm::train(b, s.data, nullptr, synthetic_config());
  CHECK(torch::equal(a.w(), b.w()));
  CHECK(ra.train_loss == rb.train_loss);
  SyntheticObjective c(s, 1);
  auto cfg = synthetic_config();
  cfg.seed = 6;  // another data order
  colm::train(c, s.data, nullptr, cfg);
  CHECK_FALSE(torch::equal(a.w(), c.w()));
}

TEST_CASE("marginal likelihood learns to defer on the assistant's positions without labels", "[train]") {
  const int64_t M = GENERATE(1, 3);
  Synthetic s(M);
  SyntheticObjective obj(s, 2);
  auto cfg = synthetic_config();
  cfg.steps = 150;
  auto before = auc(obj.p_defer(), s.is_digit, torch::ones_like(s.is_digit));
  auto r = colm::train(obj, s.data, &s.data, cfg);
  auto after = auc(obj.p_defer(), s.is_digit, torch::ones_like(s.is_digit));
  INFO("M = " << M << ": AUC " << before << " -> " << after << ", valid loss " << r.valid_loss);
  CHECK(after >= 0.95);
  CHECK(r.valid_history.size() == 1);
}

TEST_CASE("an interrupted run resumes from its checkpoint and ends bit-identical", "[train]") {
  Synthetic s(2);
  auto cfg = synthetic_config();
  cfg.steps = 23;
  cfg.checkpoint_every = 5;

  SyntheticObjective full(s, 3);
  auto r_full = colm::train(full, s.data, nullptr, cfg);

  cfg.checkpoint_dir = colm::test::temp_dir("colm-train-resume");
  SyntheticObjective first(s, 3);
  struct Interrupt {};
  CHECK_THROWS_AS(colm::train(first, s.data, nullptr, cfg, [](int64_t step, double) {
                    if (step == 13) throw Interrupt{};
                  }),
                  Interrupt);
  CHECK(colm::last_checkpoint_step(cfg.checkpoint_dir) == 10);

  SyntheticObjective second(s, 777);  // different init: everything must come from the checkpoint
  auto r = colm::train(second, s.data, nullptr, cfg);
  CHECK(r.resumed_from == 10);
  CHECK(r.steps == 23);
  CHECK(r.train_loss == r_full.train_loss);
  CHECK(torch::equal(second.w(), full.w()));
  CHECK(colm::last_checkpoint_step(cfg.checkpoint_dir) == 23);
  CHECK(fs::exists(fs::path(r.checkpoint) / "artifacts" / "w.pt"));

  // Another run's checkpoints are refused, not silently mixed in.
  auto other = cfg;
  other.lr = 0.01;
  SyntheticObjective third(s, 3);
  CHECK_THROWS_WITH(colm::train(third, s.data, nullptr, other), Catch::Contains("belongs to another run"));
}

// ------------------------------------------------------------------ with real (tiny) experts

namespace {

const char* kTinyGpt2 = R"(family = "gpt2"
n_layer = 2
n_head = 2
d_model = 32
d_ff = 64
max_positions = 64
vocab = "bytes"
)";

std::shared_ptr<colm::Expert> tiny_expert(int64_t seed) {
  colm::PluginContext ctx;
  ctx.instance = "tiny";
  ctx.seed = static_cast<uint64_t>(seed);
  auto cfg = colm::ConfigView::from_string(std::string(kTinyGpt2) + "init_seed = " + std::to_string(seed) + "\n");
  return colm::default_registry().create_expert("transformer", cfg, ctx);
}

// Forwards to another expert and counts teacher-forced forward calls.
class CountingExpert : public colm::Expert {
 public:
  explicit CountingExpert(colm::Expert& inner) : inner_(inner) {}
  colm::ExpertInfo info() const override { return inner_.info(); }
  const colm::Tokenizer& tokenizer() const override { return inner_.tokenizer(); }
  torch::Device device() const override { return inner_.device(); }
  colm::ExpertOutput forward(const torch::Tensor& ids, const torch::Tensor& mask) override {
    ++forwards;
    return inner_.forward(ids, mask);
  }
  std::unique_ptr<colm::DecodeState> new_state(int64_t rows) const override { return inner_.new_state(rows); }
  colm::ExpertOutput extend(colm::DecodeState& st, const std::vector<int64_t>& rows,
                            const std::vector<std::vector<int64_t>>& tokens) override {
    return inner_.extend(st, rows, tokens);
  }
  std::vector<torch::Tensor> parameters() override { return inner_.parameters(); }
  void set_training(bool t) override { inner_.set_training(t); }
  void save(const std::string& dir) const override { inner_.save(dir); }
  std::string fingerprint() const override { return inner_.fingerprint(); }
  int forwards = 0;

 private:
  colm::Expert& inner_;
};

// "a=12+30 -> 42" style pairs: the digits are what an arithmetic assistant would know.
std::vector<std::pair<std::string, std::string>> tiny_pairs(int n) {
  std::vector<std::pair<std::string, std::string>> out;
  for (int i = 0; i < n; ++i) {
    const int a = (i * 7) % 50, b = (i * 13) % 50;
    out.emplace_back("Q: " + std::to_string(a) + "+" + std::to_string(b) + "?", " A: " + std::to_string(a + b) + ".");
  }
  return out;
}

}  // namespace

TEST_CASE("pair data masks the prompt and adds BOS/EOS; text data is chunked", "[train][data]") {
  auto tok = colm::Tokenizer::byte_level();
  auto d = colm::make_pair_data({{"ab", "cd"}}, tok, 64);
  REQUIRE(d.size() == 1);
  CHECK(d.ids[0] == std::vector<int64_t>{256, 'a', 'b', 'c', 'd', 257});
  CHECK(d.loss_mask[0] == std::vector<uint8_t>{0, 0, 0, 1, 1, 1});
  CHECK(colm::make_pair_data({{"abcdef", "g"}}, tok, 4).size() == 0);  // target beyond max_len: dropped
  auto dir = colm::test::temp_dir("colm-train-text");
  std::ofstream(dir + "/a.txt") << "hello world";
  auto t = colm::make_text_data({dir + "/a.txt"}, tok, 5);
  CHECK(t.size() == 3);  // 13 tokens with BOS and EOS -> 5 + 5 + 3
  CHECK(t.target_tokens() == 10);
  CHECK_THROWS_WITH(colm::make_text_data({dir + "/missing.txt"}, tok, 5), Catch::Contains("missing.txt"));
}

TEST_CASE("lm training lowers the loss and writes an HF checkpoint", "[train][expert]") {
  auto expert = tiny_expert(1);
  auto tok = expert->tokenizer();
  auto data = colm::make_pair_data(tiny_pairs(24), tok, 48);
  colm::LmObjective obj(*expert);
  const double before = colm::evaluate(obj, data, 8);
  colm::TrainConfig c;
  c.steps = 40;
  c.batch_size = 8;
  c.lr = 3e-3;
  c.warmup = 4;
  c.checkpoint_dir = colm::test::temp_dir("colm-train-lm");
  c.log_every_s = 1e9;
  auto r = colm::train(obj, data, &data, c);
  INFO("loss " << before << " -> " << r.valid_loss);
  CHECK(r.valid_loss < before - 0.5);
  const auto model = fs::path(r.checkpoint) / "artifacts" / "model";
  CHECK(fs::exists(model / "config.json"));
  CHECK(fs::exists(model / "model.safetensors"));
  // The saved checkpoint loads back through the registry and scores the same.
  colm::PluginContext ctx;
  auto reloaded = colm::default_registry().create_expert(
      "transformer", colm::ConfigView::from_string("checkpoint = \"" + model.string() + "\"\n"), ctx);
  colm::LmObjective obj2(*reloaded);
  CHECK(colm::evaluate(obj2, data, 8) == Approx(r.valid_loss).epsilon(1e-5));
}

TEST_CASE("assistant scores are computed once and then read from the cache", "[train][score]") {
  auto inner = tiny_expert(2);
  CountingExpert counting(*inner);
  auto data = colm::make_pair_data(tiny_pairs(10), inner->tokenizer(), 48);
  const auto dir = colm::test::temp_dir("colm-score-cache");
  colm::ScoreCacheInfo i1, i2;
  auto t1 = colm::cached_scores(counting, data, dir, 4, &i1);
  const int after_first = counting.forwards;
  CHECK(after_first == 3);  // ceil(10 / 4) batches
  CHECK_FALSE(i1.hit);
  auto t2 = colm::cached_scores(counting, data, dir, 4, &i2);
  CHECK(counting.forwards == after_first);  // the model did not run again
  CHECK(i2.hit);
  CHECK(i2.path == i1.path);
  CHECK(torch::equal(t1.logp(), t2.logp()));
  CHECK(torch::equal(t1.top1(), t2.top1()));
  // The cached values are the model's: log P(gold) from a direct forward of one sequence.
  auto ids = torch::tensor(data.ids[3], torch::kInt64).unsqueeze(0);
  torch::NoGradGuard ng;
  auto direct = colm::gold_logprobs(inner->forward(ids, {}).logits, ids)[0];
  auto [lp, top] = t1.rows({3}, ids.size(1));
  CHECK(torch::allclose(lp[0].slice(0, 1), direct, 1e-5, 1e-5));
  // Other data -> another key.
  auto other = colm::make_pair_data(tiny_pairs(11), inner->tokenizer(), 48);
  CHECK(colm::score_cache_key(counting, other) != colm::score_cache_key(counting, data));
}

TEST_CASE("the learned head trains jointly with the base and refuses other experts on load", "[train][policy]") {
  auto base = tiny_expert(3);
  auto assistant = tiny_expert(4);
  colm::PluginContext ctx;
  ctx.num_assistants = 1;
  ctx.base_hidden_size = base->info().hidden_size;
  ctx.seed = 1;
  auto policy = colm::default_registry().create_policy("learned", colm::ConfigView(), ctx);
  REQUIRE(policy->trainable());
  CHECK(policy->needs().base_hidden);

  auto data = colm::make_pair_data(tiny_pairs(16), base->tokenizer(), 48);
  colm::TrainConfig c;
  c.steps = 6;
  c.batch_size = 8;
  c.lr = 1e-3;
  c.log_every_s = 1e9;
  colm::DeferralSpec spec;
  spec.init = "weak";
  spec.init_steps = 4;
  const auto out = colm::test::temp_dir("colm-deferral");
  std::shared_ptr<colm::Expert> tuned;  // the fine-tuned base, reloaded as a decoder would load it
  auto reload = [&](const std::string& dir) {
    colm::PluginContext ectx;
    tuned = colm::default_registry().create_expert(
        "transformer", colm::ConfigView::from_string("checkpoint = \"" + dir + "\"\n"), ectx);
    return tuned->fingerprint();
  };
  auto r = colm::train_deferral(*base, {assistant.get()}, *policy, data, &data, c, spec, out, out + "/cache", reload);
  CHECK(r.init.steps == 4);
  CHECK(r.main.steps == 6);
  CHECK(std::isfinite(r.main.valid_loss));
  CHECK(fs::exists(r.head_path));
  CHECK(fs::exists(fs::path(r.base_dir) / "model.safetensors"));

  // probs(): rows sum to one.
  colm::PolicyInput in;
  in.base_hidden = torch::randn({3, base->info().hidden_size});
  auto p = policy->probs(in);
  CHECK(p.sizes() == torch::IntArrayRef{3, 2});
  CHECK(torch::allclose(p.sum(-1), torch::ones({3})));

  // Reload into a fresh policy: same probabilities; metadata names the experts.
  auto loaded = colm::default_registry().create_policy(
      "learned", colm::ConfigView::from_string("head = \"" + r.head_path + "\"\n"), ctx);
  CHECK(torch::equal(loaded->probs(in), p));
  auto meta = loaded->load(r.head_path);
  CHECK(meta.at("objective") == "marginal_likelihood");
  REQUIRE(tuned);
  CHECK_NOTHROW(colm::check_head_matches(meta, tuned->fingerprint(), {assistant->fingerprint()}));
  CHECK_THROWS_WITH(colm::check_head_matches(meta, tuned->fingerprint(), {base->fingerprint()}, r.head_path),
                    Catch::Contains("assistant 1 fingerprint differs"));
  // The untuned base is not the one this head was trained with.
  CHECK_THROWS_WITH(colm::check_head_matches(meta, base->fingerprint(), {assistant->fingerprint()}),
                    Catch::Contains("base fingerprint differs"));
  // A head for another number of assistants is refused by shape.
  ctx.num_assistants = 2;
  CHECK_THROWS_WITH(colm::default_registry().create_policy(
                        "learned", colm::ConfigView::from_string("head = \"" + r.head_path + "\"\n"), ctx),
                    Catch::Contains("num_assistants"));
}

TEST_CASE("colm train-expert killed with SIGKILL resumes and ends at the same loss", "[train][cli]") {
  const auto dir = colm::test::temp_dir("colm-train-kill");
  {
    std::ofstream f(dir + "/text.txt");
    for (int i = 0; i < 60; ++i) f << "The quick brown fox " << i << " jumps over the lazy dog " << i * 7 << ".\n";
  }
  const std::string common = colm::test::colm_binary() + " train-expert --text " + dir +
                             "/text.txt --n-layer 2 --n-head 2 --d-model 32 --d-ff 64 --max-len 32 --steps 150 "
                             "--batch-size 4 --lr 3e-3 --warmup 10 --checkpoint-every 10 --seed 3 --threads 1 ";
  std::string out_full, out_a, out_b;
  REQUIRE(colm::test::run_command(common + "--out " + dir + "/full", &out_full) == 0);
  // Kill the second run with SIGKILL as soon as its first checkpoint exists.
  const std::string killed = "(" + common + "--out " + dir + "/killed > " + dir + "/a.log 2>&1 & pid=$!; " +
                             "while [ ! -f " + dir + "/killed/train_state/latest ] && kill -0 $pid 2>/dev/null; do sleep 0.02; done; " +
                             "kill -KILL $pid; wait $pid; echo exit=$?)";
  colm::test::run_command(killed, &out_a);
  INFO(out_a);
  CHECK(out_a.find("exit=137") != std::string::npos);
  REQUIRE(colm::test::run_command(common + "--out " + dir + "/killed", &out_b) == 0);
  INFO(out_b);
  std::smatch m;
  REQUIRE(std::regex_search(out_b, m, std::regex("resuming from step (\\d+)")));
  const int resumed = std::stoi(m[1]);
  CHECK(resumed > 0);
  CHECK(resumed < 150);
  auto final_loss = [](const std::string& log) {
    std::smatch mm;
    REQUIRE(std::regex_search(log, mm, std::regex("\"train_loss\":([-0-9.eE+]+)")));
    return mm[1].str();
  };
  CHECK(final_loss(out_b) == final_loss(out_full));
  CHECK(fs::exists(dir + "/killed/model.safetensors"));
}

// ------------------------------------------------------------------ deferral training end to end

namespace {

// A constructed assistant over the base's byte vocabulary that is right exactly where the base cannot
// be: it reads the gold next token (teacher forcing hands it the whole sequence) and gives a digit
// all its mass, and any other token none (its mass goes to the next id). An untrained base is
// equally unsure everywhere, so the marginal likelihood can only rise by deferring on digits and
// staying with the base elsewhere. Scoring is all it supports.
class DigitOracleExpert : public colm::Expert {
 public:
  explicit DigitOracleExpert(const colm::Expert& base) : info_(base.info()), tokenizer_(base.tokenizer()) {
    info_.source = "digit-oracle";
    info_.num_parameters = 0;
  }
  colm::ExpertInfo info() const override { return info_; }
  const colm::Tokenizer& tokenizer() const override { return tokenizer_; }
  torch::Device device() const override { return torch::kCPU; }
  colm::ExpertOutput forward(const torch::Tensor& ids, const torch::Tensor&) override {
    const int64_t B = ids.size(0), T = ids.size(1), V = info_.vocab_size;
    auto logits = torch::zeros({B, T, V});                                    // [B,T,V]
    auto next = ids.narrow(1, 1, T - 1);                                       // [B,T-1] gold of positions 0..T-2
    auto digit = (next >= '0').logical_and(next <= '9');
    auto put = torch::where(digit, next, (next + 1) % V);                      // where the mass goes
    logits.narrow(1, 0, T - 1).scatter_(2, put.unsqueeze(-1), 40.0);
    return {logits, torch::zeros({B, T, 1})};
  }
  std::unique_ptr<colm::DecodeState> new_state(int64_t) const override { throw colm::Error("scoring only"); }
  colm::ExpertOutput extend(colm::DecodeState&, const std::vector<int64_t>&,
                            const std::vector<std::vector<int64_t>>&) override {
    throw colm::Error("scoring only");
  }
  std::vector<torch::Tensor> parameters() override { return {}; }
  void set_training(bool) override {}
  void save(const std::string&) const override { throw colm::Error("scoring only"); }
  std::string fingerprint() const override { return "digit-oracle-" + tokenizer_.fingerprint(); }

 private:
  colm::ExpertInfo info_;
  colm::Tokenizer tokenizer_;
};

// Digits appear only right after '=' (so the base's state at '=' can tell the head what comes next).
std::vector<std::pair<std::string, std::string>> digit_pairs(int n) {
  std::vector<std::pair<std::string, std::string>> out;
  for (int i = 0; i < n; ++i)
    out.emplace_back("Q: item " + std::string(1, char('a' + i % 26)),
                     " A=" + std::to_string(i % 10) + " B=" + std::to_string((i * 7 + 3) % 10) + ".");
  return out;
}

std::vector<torch::Tensor> snapshot(colm::Expert& e) {
  std::vector<torch::Tensor> out;
  for (const auto& p : e.parameters()) out.push_back(p.detach().clone());
  return out;
}

bool same_weights(colm::Expert& e, const std::vector<torch::Tensor>& before) {
  const auto now = e.parameters();
  if (now.size() != before.size()) return false;
  for (size_t i = 0; i < now.size(); ++i)
    if (!torch::equal(now[i].detach(), before[i])) return false;
  return true;
}

// Mean P(defer) of the head over target positions whose gold token is / is not a digit.
std::pair<double, double> defer_on_digits(colm::Expert& base, colm::DeferralPolicy& policy, const colm::TrainData& data) {
  torch::NoGradGuard ng;
  base.set_training(false);
  double on_digit = 0, off_digit = 0;
  int64_t n_digit = 0, n_other = 0;
  for (size_t i = 0; i < data.size(); ++i) {
    const auto& ids = data.ids[i];
    auto ids_t = torch::tensor(ids, torch::kInt64).unsqueeze(0);
    colm::PolicyInput in;
    in.base_hidden = base.forward(ids_t, {}).hidden[0];                       // [T,d]
    const auto p_defer = 1 - policy.probs(in).select(1, 0);                   // [T]: decides token t+1
    for (size_t t = 1; t < ids.size(); ++t) {
      if (!data.loss_mask[i][t]) continue;
      const double p = p_defer[static_cast<int64_t>(t) - 1].item<double>();
      if (ids[t] >= '0' && ids[t] <= '9') on_digit += p, ++n_digit;
      else off_digit += p, ++n_other;
    }
  }
  REQUIRE(n_digit > 0);
  REQUIRE(n_other > 0);
  return {on_digit / double(n_digit), off_digit / double(n_other)};
}

}  // namespace

TEST_CASE("marginal-likelihood training end to end: the loss falls, the head learns to defer, finetune_base decides "
          "whether the base changes",
          "[train][policy]") {
  const bool finetune = GENERATE(false, true);
  auto base = tiny_expert(5);
  DigitOracleExpert assistant(*base);
  colm::PluginContext ctx;
  ctx.num_assistants = 1;
  ctx.base_hidden_size = base->info().hidden_size;
  ctx.seed = 3;
  auto policy = colm::default_registry().create_policy("learned", colm::ConfigView(), ctx);
  auto data = colm::make_pair_data(digit_pairs(24), base->tokenizer(), 48);

  // The objective the stage trains, over the assistant's scores: its loss before and after.
  const auto scores = colm::score_expert(assistant, data, 8);
  colm::DeferralObjective objective(*base, *policy, {&scores}, {&scores}, "marginal_likelihood", finetune,
                                    colm::WeakRule::assistant_right_base_wrong, 0, {});
  const double loss_before = colm::evaluate(objective, data, 8);
  const auto [digit_before, other_before] = defer_on_digits(*base, *policy, data);
  const auto weights_before = snapshot(*base);

  colm::TrainConfig c;
  c.steps = 80;
  c.batch_size = 8;
  c.lr = 1e-2;
  c.log_every_s = 1e9;
  colm::DeferralSpec spec;
  spec.objective = "marginal_likelihood";
  spec.finetune_base = finetune ? "full" : "none";
  const auto out = colm::test::temp_dir("colm-deferral-e2e");
  auto r = colm::train_deferral(*base, {&assistant}, *policy, data, &data, c, spec, out, out + "/cache");
  CHECK(r.main.steps == 80);

  const double loss_after = colm::evaluate(objective, data, 8);
  const auto [digit_after, other_after] = defer_on_digits(*base, *policy, data);
  INFO("finetune_base " << finetune << ": loss " << loss_before << " -> " << loss_after << " (stage's valid loss "
                        << r.main.valid_loss << "); P(defer) on digits " << digit_before << " -> " << digit_after
                        << ", elsewhere " << other_before << " -> " << other_after);
  CHECK(loss_after < loss_before - 0.3);
  CHECK(r.main.valid_loss == Approx(loss_after).epsilon(1e-4));
  // The head defers on the digits, which only the assistant knows, and keeps the rest for the base.
  CHECK(digit_after > 0.9);
  CHECK(other_after < 0.1);
  if (finetune) {
    CHECK_FALSE(same_weights(*base, weights_before));
    CHECK(fs::exists(fs::path(r.base_dir) / "model.safetensors"));
    // Fine-tuning lets the base learn the text itself: the loss falls below a frozen base's floor,
    // log V per non-digit token times their share.
    CHECK(loss_after < 4.0);
  } else {
    CHECK(same_weights(*base, weights_before));
    CHECK(r.base_dir.empty());
  }
}

TEST_CASE("bf16 training through f32 master weights tracks f32 training where plain bf16 AdamW does not",
          "[train][precision]") {
  // The same model in f32 and in bf16, from the same (bf16-representable) weights, 100 AdamW steps at
  // lr 2e-5 on the same data. With weights of magnitude about 0.02 (bf16 spacing about 1.2e-4), a
  // plain bf16 update of about 2e-5 rounds away; through f32 masters the updates accumulate.
  auto make = [](const std::string& dtype) {
    colm::PluginContext ctx;
    ctx.instance = "precision";
    return colm::default_registry().create_expert(
        "transformer",
        colm::ConfigView::from_string("family = \"gpt2\"\nn_layer = 1\nn_head = 2\nd_model = 32\nd_ff = 64\n"
                                      "max_positions = 64\nvocab = \"bytes\"\ninit_seed = 4\ndtype = \"" + dtype + "\"\n"),
        ctx);
  };
  auto f32 = make("float32");
  auto mixed = make("bfloat16");
  auto plain = make("bfloat16");
  {
    torch::NoGradGuard g;
    auto p32 = f32->parameters(), pm = mixed->parameters(), pp = plain->parameters();
    REQUIRE(p32.size() == pm.size());
    REQUIRE(pm.front().scalar_type() == torch::kBFloat16);
    for (size_t i = 0; i < p32.size(); ++i) {
      p32[i].copy_(pm[i].to(torch::kFloat32));  // the f32 run starts from the bf16 values exactly
      pp[i].copy_(pm[i]);
    }
  }
  const auto w0 = [&] {
    std::vector<torch::Tensor> w;
    for (const auto& p : f32->parameters()) w.push_back(p.detach().clone());
    return w;
  }();
  const auto data = colm::make_pair_data(tiny_pairs(16), f32->tokenizer(), 48);
  auto run = [&](colm::Expert& e, bool master) {
    colm::LmObjective obj(e);
    colm::TrainConfig c;
    c.steps = 100;
    c.batch_size = 8;
    c.lr = 2e-5;
    c.schedule = "constant";
    c.f32_master = master;
    c.log_every_s = 1e9;
    colm::train(obj, data, nullptr, c);
  };
  run(*f32, true);
  run(*mixed, true);
  run(*plain, false);
  // Each run's update (final - initial weights), all parameters together, against the f32 run's.
  auto update = [&](colm::Expert& e) {
    std::vector<torch::Tensor> d;
    const auto ps = e.parameters();
    for (size_t i = 0; i < ps.size(); ++i) d.push_back((ps[i].detach().to(torch::kFloat32) - w0[i]).flatten());
    return torch::cat(d);
  };
  const auto u32 = update(*f32), umixed = update(*mixed), uplain = update(*plain);
  const double n32 = u32.norm().item<double>();
  REQUIRE(n32 > 0);
  const double err_mixed = (umixed - u32).norm().item<double>() / n32;
  const double err_plain = (uplain - u32).norm().item<double>() / n32;
  INFO("relative update error: f32 masters " << err_mixed << ", plain bf16 " << err_plain);
  // The stated tolerance: within 25% of the f32 run's update (bf16 forward and backward add noise);
  // plain bf16 AdamW loses most of the update.
  CHECK(err_mixed < 0.25);
  CHECK(err_plain > 0.5);
  // The bf16 model really stayed bf16.
  CHECK(mixed->parameters().front().scalar_type() == torch::kBFloat16);
}

namespace {

// The pair-data contract on a real tokenizer: [BOS] + encode(prompt + target) (+ EOS), loss on the
// joint tokens after the prompt's, and those decode to the target (no stray "▁" at its start).
void check_joint_tokenization(const colm::Tokenizer& tok) {
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"Question: Ava has 3 apples and gets 4 more. How many now?\nAnswer:", " Ava has 3 + 4 = 7 apples.\n#### 7"},
      {"The capital of France is", " Paris."},
      {"Once upon a", " time, there was a cat"},
      {"x =", " 12"}};
  const auto d = colm::make_pair_data(pairs, tok, 256, true, true);
  REQUIRE(d.size() == pairs.size());
  for (size_t i = 0; i < pairs.size(); ++i) {
    const auto& [prompt, target] = pairs[i];
    INFO("pair " << i << ": " << prompt << " | " << target);
    const auto joint = tok.encode(prompt + target);
    std::vector<int64_t> want;
    if (tok.bos_id()) want.push_back(*tok.bos_id());
    want.insert(want.end(), joint.begin(), joint.end());
    if (tok.eos_id()) want.push_back(*tok.eos_id());
    CHECK(d.ids[i] == want);
    // The target tokens: the joint tokenization after the prompt's.
    std::vector<int64_t> targets;
    for (size_t t = 0; t < d.ids[i].size(); ++t)
      if (d.loss_mask[i][t] && !(tok.eos_id() && t + 1 == d.ids[i].size())) targets.push_back(d.ids[i][t]);
    const size_t k = colm::prompt_token_count(tok, prompt, joint);
    CHECK(targets == std::vector<int64_t>(joint.begin() + long(k), joint.end()));
    CHECK(tok.decode(std::vector<int64_t>(joint.begin(), joint.begin() + long(k))) == tok.decode(tok.encode(prompt)));
    // Here every boundary falls between tokens, so the targets read, after the prompt, exactly as the
    // target's text (decoded in context: SentencePiece decoders drop a leading space of a whole text).
    const auto whole = tok.decode(joint), before = tok.decode(std::vector<int64_t>(joint.begin(), joint.begin() + long(k)));
    REQUIRE(whole.compare(0, before.size(), before) == 0);
    CHECK(whole.substr(before.size()) == target);
  }
}

}  // namespace

TEST_CASE("pair data tokenises prompt + target in one pass and masks from the prompt's tokens", "[train][data]") {
  SECTION("gpt2 (byte-level BPE)") {
    check_joint_tokenization(colm::Tokenizer::from_file(colm::test::fixture("tokenizers/gpt2/tokenizer.json")));
  }
  SECTION("mistral (SentencePiece BPE, as Llama 2)") {
    const auto tok = colm::Tokenizer::from_file(colm::test::fixture("tokenizers/mistral/tokenizer.json"));
    check_joint_tokenization(tok);
    // The old way put a stray "▁" at the target's start: tokenised alone, " Paris." is not the tail
    // of the joint tokenization.
    const auto alone = tok.encode(" Paris.");
    const auto joint = tok.encode(std::string("The capital of France is") + " Paris.");
    CHECK_FALSE(std::equal(alone.rbegin(), alone.rend(), joint.rbegin()));
  }
  SECTION("llama2") {
    COLM_REQUIRE_SHARED_FIXTURE(dir, "tokenizers/llama2");
    check_joint_tokenization(colm::Tokenizer::from_file(dir + "/tokenizer.json"));
  }
}
