// Vocabularies that extend one another (Llama 2's 32000 ids against Code Llama's / Llemma's 32016):
// the check accepts them and says what is masked, share_vocab() cuts the wider logits to the shared
// ids, and decoding, scoring and teacher-forced log-probs then equal the narrowed computation.
// Real mismatches are still refused with the difference.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "colm/config.hpp"
#include "harness/experiment.hpp"
#include "harness/reloadable_expert.hpp"
#include "harness/runner.hpp"
#include "harness/store.hpp"
#include "colm/plugin.hpp"
#include "method/decode.hpp"
#include "method/objectives.hpp"
#include "method/scoring.hpp"
#include "method/train.hpp"
#include "model/vocab_check.hpp"
#include "plugin/registry.hpp"
#include "support.hpp"

using Catch::Contains;
using namespace colm;

namespace {

// An expert of which only the tokenizer and the output width matter (the check reads nothing else).
class TokenizerOnly : public Expert {
 public:
  TokenizerOnly(Tokenizer tokenizer, int64_t rows) : tokenizer_(std::move(tokenizer)), rows_(rows) {}
  ExpertInfo info() const override {
    ExpertInfo i;
    i.family = "fake";
    i.vocab_size = rows_;
    return i;
  }
  const Tokenizer& tokenizer() const override { return tokenizer_; }
  torch::Device device() const override { return torch::kCPU; }
  ExpertOutput forward(const torch::Tensor&, const torch::Tensor&) override { throw Error("fake"); }
  std::unique_ptr<DecodeState> new_state(int64_t) const override { throw Error("fake"); }
  ExpertOutput extend(DecodeState&, const std::vector<int64_t>&, const std::vector<std::vector<int64_t>>&) override {
    throw Error("fake");
  }
  std::vector<torch::Tensor> parameters() override { return {}; }
  void set_training(bool) override {}
  void save(const std::string&) const override { throw Error("fake"); }
  std::string fingerprint() const override { return "fake"; }

 private:
  Tokenizer tokenizer_;
  int64_t rows_;
};

// A real model with `extra` more ids than its byte tokenizer: its tokenizer has `extra` added tokens
// past id 258, and their logits are 1e4, so an unmasked argmax or softmax always lands there.
class WideExpert : public Expert {
 public:
  WideExpert(std::shared_ptr<Expert> inner, Tokenizer tokenizer, int64_t extra)
      : inner_(std::move(inner)), tokenizer_(std::move(tokenizer)), extra_(extra) {}
  ExpertInfo info() const override {
    auto i = inner_->info();
    i.vocab_size += extra_;
    return i;
  }
  const Tokenizer& tokenizer() const override { return tokenizer_; }
  torch::Device device() const override { return inner_->device(); }
  ExpertOutput forward(const torch::Tensor& ids, const torch::Tensor& mask) override { return widen(inner_->forward(ids, mask)); }
  std::unique_ptr<DecodeState> new_state(int64_t rows) const override { return inner_->new_state(rows); }
  ExpertOutput extend(DecodeState& s, const std::vector<int64_t>& rows,
                      const std::vector<std::vector<int64_t>>& tokens) override {
    return widen(inner_->extend(s, rows, tokens));
  }
  std::vector<torch::Tensor> parameters() override { return inner_->parameters(); }
  void set_training(bool t) override { inner_->set_training(t); }
  void save(const std::string& dir) const override { inner_->save(dir); }
  std::string fingerprint() const override { return "wide-" + inner_->fingerprint(); }

 private:
  ExpertOutput widen(ExpertOutput out) const {
    auto sizes = out.logits.sizes().vec();
    sizes.back() = extra_;
    out.logits = torch::cat({out.logits, torch::full(sizes, 1e4, out.logits.options())}, -1);
    return out;
  }
  std::shared_ptr<Expert> inner_;
  Tokenizer tokenizer_;
  int64_t extra_;
};

std::shared_ptr<Expert> tiny_expert(int seed) {
  const std::string toml = "family = \"gpt2\"\nn_layer = 2\nn_head = 2\nd_model = 32\nd_ff = 64\n"
                           "max_positions = 128\nvocab = \"bytes\"\ninit_seed = " + std::to_string(seed) + "\n";
  PluginContext ctx;
  ctx.instance = "expert" + std::to_string(seed);
  return default_registry().create_expert("transformer", ConfigView::from_string(toml, "test_shared_vocab"), ctx);
}

std::shared_ptr<DeferralPolicy> rules(const std::string& toml) {
  PluginContext ctx;
  ctx.instance = "policy";
  ctx.num_assistants = 1;
  return default_registry().create_policy("rules", ConfigView::from_string(toml, "test_shared_vocab"), ctx);
}

// `json` (a tokenizer.json) with `contents` appended as special added tokens from the next free id.
Tokenizer with_added_tokens(const std::string& json_text, const std::vector<std::string>& contents) {
  auto j = nlohmann::json::parse(json_text);
  const auto base = Tokenizer::from_json_string(json_text, "base").vocab_size();
  for (size_t k = 0; k < contents.size(); ++k)
    j["added_tokens"].push_back({{"id", base + int64_t(k)}, {"content", contents[k]}, {"single_word", false},
                                 {"lstrip", false}, {"rstrip", false}, {"normalized", false}, {"special", true}});
  return Tokenizer::from_json_string(j.dump(), "with added tokens");
}

// Code Llama's 16 extra ids: its infilling tokens and unused ones (contents made up past the four).
std::vector<std::string> code_llama_extras() {
  std::vector<std::string> v{"<PRE>", "<SUF>", "<MID>", "<EOT>"};
  for (int k = 0; v.size() < 16; ++k) v.push_back("<unused_" + std::to_string(k) + ">");
  return v;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const std::vector<std::string> kPrompts = {"a", "The cat sat", "12 + 30 =", "Once upon a time, there", "xyz"};

}  // namespace

TEST_CASE("Llama 2 and Llama 2 plus 16 added tokens collaborate over the 32000 shared ids",
          "[core][vocab][fixtures][shared]") {
  COLM_REQUIRE_SHARED_FIXTURE(llama_dir, "tokenizers/llama2");
  const auto llama = Tokenizer::from_file(llama_dir + "/tokenizer.json");
  REQUIRE(llama.vocab_size() == 32000);
  // Written to a file as a researcher's tokenizer.json would be.
  const std::string dir = test::temp_dir("shared-vocab");
  with_added_tokens(read_text(llama_dir + "/tokenizer.json"), code_llama_extras()).save(dir + "/tokenizer.json");
  const auto code = Tokenizer::from_file(dir + "/tokenizer.json");
  REQUIRE(code.vocab_size() == 32016);
  REQUIRE(code.fingerprint() != llama.fingerprint());

  TokenizerOnly base(llama, 32000), llemma(code, 32016);
  for (bool base_first : {true, false}) {
    INFO("base first: " << base_first);
    const auto shared = base_first ? check_vocab_compatible({{"llama2", &base}, {"llemma", &llemma}})
                                   : check_vocab_compatible({{"llemma", &llemma}, {"llama2", &base}});
    CHECK(shared.size == 32000);
    CHECK(shared.tokenizer.fingerprint() == llama.fingerprint());
    REQUIRE(shared.masked.size() == 1);
    CHECK(shared.masked[0].expert == "llemma");
    CHECK(shared.masked[0].tokenizer_ids == 16);
    CHECK(shared.masked[0].padded_rows == 0);
    CHECK_THAT(shared.summary(), Contains("collaborate over their 32000 shared ids") &&
                                     Contains("\"llemma\" 16 ids only its tokenizer has (e.g. \"<PRE>\"") &&
                                     !Contains("llama2"));
  }
  // The shared tokenizer encodes an added token's text to shared ids; the wider one to its own id.
  const auto shared = check_vocab_compatible({{"llama2", &base}, {"llemma", &llemma}});
  const std::string text = "def f(): <PRE> return 1";
  const auto wide_ids = code.encode(text, true), shared_ids = shared.tokenizer.encode(text, true);
  CHECK(std::any_of(wide_ids.begin(), wide_ids.end(), [](int64_t id) { return id >= 32000; }));
  CHECK(std::all_of(shared_ids.begin(), shared_ids.end(), [](int64_t id) { return id < 32000; }));
  CHECK(shared_ids == llama.encode(text, true));

  // A padded output layer is masked too, and said so in the same line.
  TokenizerOnly padded(llama, 32064);
  const auto three = check_vocab_compatible({{"llama2", &padded}, {"llemma", &llemma}, {"plain", &base}});
  CHECK(three.size == 32000);
  CHECK_THAT(three.summary(), Contains("\"llama2\" 64 padded output rows") && Contains("\"llemma\" 16 ids"));
}

TEST_CASE("extra ids in the BPE vocabulary itself (not added tokens) extend it too", "[core][vocab][fixtures][shared]") {
  COLM_REQUIRE_SHARED_FIXTURE(llama_dir, "tokenizers/llama2");
  auto j = nlohmann::json::parse(read_text(llama_dir + "/tokenizer.json"));
  for (int k = 0; k < 16; ++k) j["model"]["vocab"]["<extra_" + std::to_string(k) + ">"] = 32000 + k;
  const auto code = Tokenizer::from_json_string(j.dump(), "vocab-extended llama2");
  const auto llama = Tokenizer::from_file(llama_dir + "/tokenizer.json");
  REQUIRE(code.vocab_size() == 32016);
  TokenizerOnly a(llama, 32000), b(code, 32016);
  const auto shared = check_vocab_compatible({{"llama2", &a}, {"extended", &b}});
  CHECK(shared.size == 32000);
  REQUIRE(shared.masked.size() == 1);
  CHECK(shared.masked[0].tokenizer_ids == 16);
}

TEST_CASE("a larger vocabulary that changes a shared token, the normalizer, a merge or the post-processor is refused",
          "[core][vocab][fixtures][shared]") {
  COLM_REQUIRE_SHARED_FIXTURE(llama_dir, "tokenizers/llama2");
  const auto llama_text = read_text(llama_dir + "/tokenizer.json");
  const auto llama = Tokenizer::from_json_string(llama_text, "llama2");
  TokenizerOnly base(llama, 32000);
  auto refused = [&](const std::function<void(nlohmann::json&)>& edit) {
    auto j = nlohmann::json::parse(with_added_tokens(llama_text, code_llama_extras()).to_json_string());
    edit(j);
    TokenizerOnly other(Tokenizer::from_json_string(j.dump(), "edited"), 32016);
    try {
      check_vocab_compatible({{"llama2", &base}, {"other", &other}});
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  SECTION("a token below 32000 renamed") {
    const auto msg = refused([](nlohmann::json& j) {
      auto& vocab = j["model"]["vocab"];
      const auto it = std::find_if(vocab.begin(), vocab.end(), [](const nlohmann::json& id) { return id == 100; });
      const std::string old = it.key();
      vocab.erase(old);
      vocab["renamed_token"] = 100;
    });
    CHECK_THAT(msg, Contains("experts \"llama2\" and \"other\" have different tokenizers") &&
                        Contains("vocab size: llama2 32000, other 32016") &&
                        Contains("1 of the 32000 shared ids map to different tokens") && Contains("id 100:") &&
                        Contains("not one vocabulary and its extension: the tokens of ids below 32000 differ"));
  }
  SECTION("another normalizer") {
    const auto msg = refused([](nlohmann::json& j) { j["normalizer"] = nullptr; });
    CHECK_THAT(msg, Contains("not one vocabulary and its extension: the normalizer differs"));
  }
  SECTION("a merge dropped") {
    const auto msg = refused([](nlohmann::json& j) { j["model"]["merges"].erase(5); });
    CHECK_THAT(msg, Contains("the merges into ids below 32000 differ from rank 5"));
  }
  SECTION("another post-processor") {
    const auto msg = refused([](nlohmann::json& j) { j["post_processor"] = nullptr; });
    CHECK_THAT(msg, Contains("the post_processor differs"));
  }
  SECTION("the same size with one token changed is no extension") {
    auto j = nlohmann::json::parse(llama_text);
    for (auto& t : j["added_tokens"])
      if (t["content"] == "<unk>") t["special"] = false;
    TokenizerOnly other(Tokenizer::from_json_string(j.dump(), "edited"), 32000);
    CHECK_THROWS_WITH(check_vocab_compatible({{"llama2", &base}, {"other", &other}}),
                      Contains("neither extends the other"));
  }
}

TEST_CASE("share_vocab cuts a wider model's logits: decoding never emits its extra ids and equals the narrowed model",
          "[core][vocab][decode]") {
  const auto bytes = Tokenizer::byte_level();
  const auto ext = with_added_tokens(bytes.to_json_string(), {"<|x0|>", "<|x1|>", "<|x2|>", "<|x3|>", "<|x4|>"});
  REQUIRE(ext.vocab_size() == 264);
  auto inner_base = tiny_expert(11);
  auto assistant = tiny_expert(12);
  auto wide_base = std::make_shared<WideExpert>(inner_base, ext, 5);

  const auto shared = check_vocab_compatible({{"wide base", wide_base.get()}, {"assistant", assistant.get()}});
  REQUIRE(shared.size == 259);
  CHECK(shared.tokenizer.fingerprint() == bytes.fingerprint());
  const auto base = share_vocab(wide_base, shared);
  CHECK(share_vocab(assistant, shared) == assistant);  // nothing to cut
  CHECK(base->info().vocab_size == 259);
  CHECK(base->tokenizer().fingerprint() == bytes.fingerprint());
  CHECK(base->fingerprint() != wide_base->fingerprint());

  // Unwrapped, the wide base's extra ids always win its argmax: the negative control.
  {
    torch::NoGradGuard g;
    const auto ids = torch::tensor(bytes.encode("The cat", true), torch::kLong).unsqueeze(0);
    CHECK(wide_base->forward(ids, torch::Tensor()).logits[0][-1].argmax().item<int64_t>() >= 259);
    CHECK(base->forward(ids, torch::Tensor()).logits.size(-1) == 259);
  }

  DecodeOptions o;
  o.max_tokens = 12;
  o.batch_size = 2;
  o.strategy = GENERATE(as<std::string>{}, "defer", "mixture");
  const auto rule = GENERATE(as<std::string>{}, "rule = \"more_confident\"", "rule = \"random\"\np = 0.5",
                             "rule = \"base_only\"");
  INFO(o.strategy << " / " << rule);
  auto policy = rules(rule);
  const auto seeds = std::vector<uint64_t>{1, 2, 3, 4, 5};
  const auto got = collaborative_decode(*base, {assistant.get()}, *policy, kPrompts, seeds, o);
  const auto want = collaborative_decode(*inner_base, {assistant.get()}, *policy, kPrompts, seeds, o);
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    CHECK(got[i].ids == want[i].ids);
    CHECK(got[i].n_deferred == want[i].n_deferred);
    for (int64_t id : got[i].ids) CHECK(id < 259);
  }
}

TEST_CASE("scores and teacher-forced log-probs of a cut model are over the shared ids", "[core][vocab][train]") {
  const auto bytes = Tokenizer::byte_level();
  const auto ext = with_added_tokens(bytes.to_json_string(), {"<|x0|>", "<|x1|>", "<|x2|>"});
  auto inner = tiny_expert(21);
  auto other = tiny_expert(22);
  auto wide = std::make_shared<WideExpert>(inner, ext, 3);
  const auto shared = check_vocab_compatible({{"base", other.get()}, {"wide", wide.get()}});
  const auto cut = share_vocab(wide, shared);

  const auto data = make_pair_data({{"12 + 30 =", " 42"}, {"The cat", " sat on the mat"}}, shared.tokenizer, 64);
  const auto want = score_expert(*inner, data, 2);
  const auto got = score_expert(*cut, data, 2);
  CHECK(torch::allclose(got.logp(), want.logp(), 1e-5, 1e-6));
  CHECK(torch::equal(got.top1(), want.top1()));
  // Unmasked, every gold token would get about -1e4 (the extra ids take all the mass).
  const auto raw = score_expert(*wide, data, 2);
  CHECK(raw.logp().min().item<float>() < -1000);
  // Different cuts, different cache keys.
  CHECK(score_cache_key(*cut, data) != score_cache_key(*wide, data));

  // Gradients flow through the cut to the model's parameters (training the wider model as a base).
  const auto ids = torch::tensor(data.ids[1], torch::kLong).unsqueeze(0);
  const auto loss = -gold_logprobs(cut->forward(ids, torch::Tensor()).logits, ids).sum();
  loss.backward();
  bool any_grad = false;
  for (auto& p : cut->parameters()) any_grad = any_grad || (p.grad().defined() && p.grad().abs().sum().item<float>() > 0);
  CHECK(any_grad);
}

namespace {

// Base: colm's byte tokenizer (259 ids). Helper: the same plus 3 added tokens (262 output rows).
// A Co-LLM head trained on both (scores, weak init, marginal likelihood, jointly tuned base), then
// calibrated and swept with mixture and defer, with the helper alone as a baseline.
const std::string kTwoVocabs = R"([experiment]
name = "two-vocabs"
seed = 5
database = "DBPATH"
artifacts_dir = "ARTDIR"

)" + colm::test::tiny_experts() + R"(tokenizer = "TOKPATH"

[task]
plugin = "arithmetic"
train_size = 8
valid_size = 4
test_size = 4
max_tokens = 6

[train.colm]
plugin = "learned"
objective = "marginal_likelihood"
init = "weak_supervision"
finetune_base = true
init_steps = 2
steps = 3
lr = 1e-3
batch_size = 4

[calibrate]
eta = [0.3, 0.7]
policies = ["colm"]

[sweep]
policies = ["colm"]
strategies = ["defer", "mixture"]
baselines = ["base", "helper"]
batch_size = 2
)";

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t pos = text.find(from); pos != std::string::npos; pos = text.find(from, pos + to.size()))
    text.replace(pos, from.size(), to);
  return text;
}

}  // namespace

TEST_CASE("an experiment whose assistant has 3 more ids trains, calibrates and decodes over the 259 shared ids",
          "[core][vocab][runner]") {
  const auto dir = test::temp_dir("shared-vocab-run");
  const auto bytes = Tokenizer::byte_level();
  with_added_tokens(bytes.to_json_string(), {"<|x0|>", "<|x1|>", "<|x2|>"}).save(dir + "/ext.json");
  const auto toml = dir + "/exp.toml";
  std::ofstream(toml) << replace_all(replace_all(replace_all(kTwoVocabs, "DBPATH", dir + "/results.db"), "ARTDIR",
                                                 dir + "/artifacts"),
                                     "TOKPATH", dir + "/ext.json");
  const auto spec = parse_experiment_file(toml);
  auto loaded = load_experiment(spec, default_registry(), {});
  CHECK(loaded.vocab.size == 259);
  REQUIRE(loaded.vocab.masked.size() == 1);
  CHECK(loaded.vocab.masked[0].expert == "helper");
  CHECK(loaded.vocab.masked[0].tokenizer_ids == 3);
  CHECK(loaded.experts.at("helper")->info().vocab_size == 259);
  CHECK(loaded.expert_info.at("helper").vocab_size == 259);
  CHECK(loaded.experts.at("helper")->tokenizer().fingerprint() == bytes.fingerprint());

  const auto runs = expand_runs(spec, loaded);
  RunnerOptions o;
  // The train stage releases the assistant once its scores are cached; decoding loads it again.
  o.stage = "train";
  run_experiment(spec, loaded, runs, default_registry(), o);
  const auto helper = std::dynamic_pointer_cast<ReloadableExpert>(loaded.experts.at("helper"));
  REQUIRE(helper);
  CHECK_FALSE(helper->resident());
  CHECK(helper->info().vocab_size == 259);
  CHECK(std::dynamic_pointer_cast<ReloadableExpert>(loaded.experts.at("base")) == nullptr);  // the base stays
  o.stage = "all";
  const auto summary = run_experiment(spec, loaded, runs, default_registry(), o);
  CHECK(helper->resident());
  CHECK(helper->reloads() == 1);
  CHECK(loaded.experts.at("helper")->info().vocab_size == 259);
  CHECK(summary.runs_failed == 0);
  CHECK(summary.runs_done == int64_t(runs.size()));
  auto store = ResultsStore::open(dir + "/results.db");
  int64_t tokens = 0;
  for (const auto& r : store.runs("two-vocabs")) {
    INFO(r.policy << " " << r.strategy << " " << r.error);
    CHECK(r.status == "done");
    for (const auto& e : store.examples(r.id, true))
      for (const auto& t : e.tokens) {
        CHECK(t.token_id < 259);
        ++tokens;
      }
  }
  CHECK(tokens > 0);
}

TEST_CASE("a dry run compares checkpoints it does not load by their tokenizer.json, with the same rules",
          "[core][vocab]") {
  const auto dir = test::temp_dir("shared-vocab-dry");
  const auto bytes = Tokenizer::byte_level();
  with_added_tokens(bytes.to_json_string(), {"<|x0|>", "<|x1|>"}).save(dir + "/ext.json");
  auto j = nlohmann::json::parse(bytes.to_json_string());
  for (auto& t : j["added_tokens"])
    if (t["content"] == "<|pad|>") t["content"] = "<|padding|>";
  with_added_tokens(j.dump(), {"<|x0|>", "<|x1|>"}).save(dir + "/bad.json");
  auto save_fresh = [&](const std::string& name, const std::string& tokenizer_line) {
    const std::string toml = "family = \"gpt2\"\nn_layer = 1\nn_head = 2\nd_model = 16\nd_ff = 32\n"
                             "max_positions = 64\ninit_seed = 1\n" + tokenizer_line;
    PluginContext ctx;
    ctx.instance = name;
    default_registry().create_expert("transformer", ConfigView::from_string(toml, name), ctx)->save(dir + "/" + name);
  };
  save_fresh("base", "vocab = \"bytes\"\n");
  save_fresh("ext", "tokenizer = \"" + dir + "/ext.json\"\n");
  save_fresh("bad", "tokenizer = \"" + dir + "/bad.json\"\n");
  auto experiment = [&](const std::string& helper) {
    const auto path = dir + "/exp-" + helper + ".toml";
    std::ofstream(path) << "[experiment]\nname = \"dry\"\ndatabase = \"" << dir << "/r.db\"\n\n"
                        << "[experts.base]\nplugin = \"transformer\"\nrole = \"base\"\ncheckpoint = \"" << dir
                        << "/base\"\n\n[experts.helper]\nplugin = \"transformer\"\nrole = \"assistant\"\ncheckpoint = \""
                        << dir << "/" << helper << "\"\n\n[task]\nplugin = \"arithmetic\"\ntrain_size = 4\n"
                        << "valid_size = 2\ntest_size = 2\n\n[policies.conf]\nplugin = \"rules\"\nrule = \"confidence\"\n\n"
                        << "[sweep]\npolicies = [\"conf\"]\neta = [0.5]\n";
    return parse_experiment_file(path);
  };
  LoadOptions o;
  o.dry_run = true;
  o.dry_run_max_checkpoint_bytes = 0;  // load nothing: compare tokenizer.json files
  const auto ok = experiment("ext");
  const auto loaded = load_experiment(ok, default_registry(), o);
  CHECK(loaded.experts.empty());
  CHECK(loaded.vocab.size == 0);  // nothing loaded, nothing cut
  const auto bad = experiment("bad");
  CHECK_THROWS_WITH(load_experiment(bad, default_registry(), o),
                    Contains("vocabulary of assistant 'helper'") && Contains("neither extends the other") &&
                        Contains("the added tokens with ids below 259 differ"));
  // Loaded for real, the same pair is refused with the full difference.
  CHECK_THROWS_WITH(load_experiment(bad, default_registry(), {}),
                    Contains("assistant 'helper' cannot share token ids") && Contains("\"<|pad|>\" (id 258) only in base"));
  CHECK(load_experiment(ok, default_registry(), {}).vocab.size == 259);
}

TEST_CASE("colm generate runs a base with an assistant whose vocabulary extends it, and refuses a mismatch",
          "[core][vocab][cli]") {
  const auto dir = test::temp_dir("shared-vocab-cli");
  const auto bytes = Tokenizer::byte_level();
  with_added_tokens(bytes.to_json_string(), {"<|x0|>", "<|x1|>", "<|x2|>"}).save(dir + "/ext.json");
  auto j = nlohmann::json::parse(bytes.to_json_string());
  j["normalizer"] = {{"type", "NFC"}};
  with_added_tokens(j.dump(), {"<|x0|>"}).save(dir + "/bad.json");
  auto save_fresh = [&](const std::string& name, int seed, const std::string& tokenizer_line) {
    const std::string toml = "family = \"gpt2\"\nn_layer = 1\nn_head = 2\nd_model = 16\nd_ff = 32\n"
                             "max_positions = 64\ninit_seed = " + std::to_string(seed) + "\n" + tokenizer_line;
    PluginContext ctx;
    ctx.instance = name;
    default_registry().create_expert("transformer", ConfigView::from_string(toml, name), ctx)->save(dir + "/" + name);
  };
  save_fresh("base", 1, "vocab = \"bytes\"\n");
  save_fresh("ext", 2, "tokenizer = \"" + dir + "/ext.json\"\n");
  save_fresh("bad", 3, "tokenizer = \"" + dir + "/bad.json\"\n");
  const auto colm = "env -u COLM_PLUGIN_PATH '" + test::colm_binary() + "' --log-level info generate --base '" + dir;
  for (const std::string base_first : {"base' --assistant '" + dir + "/ext'", "ext' --assistant '" + dir + "/base'"}) {
    std::string out;
    INFO(base_first);
    CHECK(test::run_command(colm + "/" + base_first + " --policy more_confident --prompt 'ab' --max-tokens 6", &out) == 0);
    INFO(out);
    CHECK_THAT(out, Contains("[vocab] the experts collaborate over their 259 shared ids") &&
                        Contains("3 ids only its tokenizer has (e.g. \"<|x0|>\"") && Contains("-- deferred"));
  }
  std::string out;
  CHECK(test::run_command(colm + "/base' --assistant '" + dir + "/bad' --policy base_only --prompt 'ab' --max-tokens 6", &out) != 0);
  CHECK_THAT(out, Contains("have different tokenizers") && Contains("not one vocabulary and its extension: the normalizer differs"));
}
