// The `transformer` expert against independent reference logits (llm.c, llama2.c), KV-cached extend
// against the full forward, save/load round trips, bad checkpoints and deterministic fresh init.
#include <catch2/catch.hpp>

#include <malloc.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "colm/config.hpp"
#include "colm/expert.hpp"
#include "colm/hash.hpp"
#include "colm/plugin.hpp"
#include "colm/safetensors.hpp"
#include "plugin/registry.hpp"
#include "support.hpp"

namespace fs = std::filesystem;

namespace {

std::shared_ptr<colm::Expert> make_expert(const std::string& toml, uint64_t seed = 0) {
  colm::PluginContext ctx;
  ctx.instance = "test";
  ctx.seed = seed;
  return colm::default_registry().create_expert("transformer", colm::ConfigView::from_string(toml), ctx);
}

std::shared_ptr<colm::Expert> load_dir(const std::string& dir, const std::string& extra = "") {
  return make_expert("checkpoint = '" + dir + "'\n" + extra);
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in);
  return nlohmann::json::parse(in);
}

torch::Tensor ids_tensor(const std::vector<int64_t>& ids) {
  return torch::tensor(ids, torch::kLong).view({1, static_cast<int64_t>(ids.size())});
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

const char* kFreshGpt2 = "family = 'gpt2'\nn_layer = 2\nn_head = 4\nd_model = 32\nmax_positions = 64\n";
const char* kFreshLlama = "family = 'llama'\nn_layer = 2\nn_head = 4\nn_kv_head = 2\nd_model = 32\nd_ff = 48\nmax_positions = 64\n";

}  // namespace

TEST_CASE("transformer reproduces the reference logits of every model fixture", "[expert][transformer]") {
  const std::string name = GENERATE(as<std::string>{}, "gpt2-tiny", "llama-tiny-gqa", "llama-tiny-gqa-bf16-sharded", "stories260k");
  const auto dir = colm::test::fixture("models/" + name);
  const auto expected = read_json(dir + "/expected.json");
  const auto ids = expected["input_ids"].get<std::vector<int64_t>>();
  const double tol = expected["tolerance_abs"].get<double>();
  auto expert = load_dir(dir);
  const auto T = static_cast<int64_t>(ids.size());
  auto out = expert->forward(ids_tensor(ids), torch::Tensor());
  const auto V = expert->info().vocab_size;
  REQUIRE(out.logits.sizes() == torch::IntArrayRef({1, T, V}));
  REQUIRE(out.hidden.sizes() == torch::IntArrayRef({1, T, expert->info().hidden_size}));
  auto last_ref = torch::tensor(expected["logits_last"].get<std::vector<double>>(), torch::kFloat64);
  std::vector<double> first8;
  for (const auto& row : expected["logits_all_first8"]) for (double x : row) first8.push_back(x);
  auto first8_ref = torch::tensor(first8, torch::kFloat64).view({T, 8});
  const double d_last = max_diff(out.logits[0][T - 1], last_ref);
  const double d_first8 = max_diff(out.logits[0].narrow(1, 0, 8), first8_ref);
  std::cout << "[transformer] " << name << ": max |diff| logits_last " << d_last << ", logits_all_first8 " << d_first8
            << " (tolerance " << tol << ")\n";
  CHECK(d_last <= tol);
  CHECK(d_first8 <= tol);
  auto argmax = out.logits[0].argmax(-1);
  const auto argmax_ref = expected["argmax_all"].get<std::vector<int64_t>>();
  for (int64_t t = 0; t < T; ++t) CHECK(argmax[t].item<int64_t>() == argmax_ref[static_cast<size_t>(t)]);
}

TEST_CASE("transformer in bfloat16 stays within the fixture's bf16 tolerance", "[expert][transformer]") {
  const auto dir = colm::test::fixture("models/llama-tiny-gqa-bf16-sharded");
  const auto expected = read_json(dir + "/expected.json");
  const auto ids = expected["input_ids"].get<std::vector<int64_t>>();
  auto expert = load_dir(dir, "dtype = 'bfloat16'");
  CHECK(expert->info().dtype == "bfloat16");
  auto out = expert->forward(ids_tensor(ids), torch::Tensor());
  CHECK(out.logits.scalar_type() == torch::kFloat32);
  auto ref = torch::tensor(expected["logits_last"].get<std::vector<double>>(), torch::kFloat64);
  const double d = max_diff(out.logits[0][-1], ref);
  std::cout << "[transformer] llama-tiny-gqa-bf16-sharded computed in bf16: max |diff| logits_last " << d << "\n";
  CHECK(d <= expected["tolerance_abs_if_compute_in_bf16"].get<double>());
}

TEST_CASE("stories260k greedy decoding through extend reproduces the reference continuation", "[expert][transformer]") {
  const auto dir = colm::test::fixture("models/stories260k");
  const auto ref = read_json(dir + "/expected.json")["input_ids"].get<std::vector<int64_t>>();
  auto expert = load_dir(dir);
  CHECK_FALSE(expert->tokenizer().valid());  // the fixture ships no tokenizer: ids only
  auto state = expert->new_state(1);
  std::vector<int64_t> seq = {1};
  auto out = expert->extend(*state, {0}, {{1}});
  for (int step = 0; step < 31; ++step) {
    const int64_t next = out.logits[0].argmax().item<int64_t>();
    seq.push_back(next);
    if (step + 1 < 31) out = expert->extend(*state, {0}, {{next}});
  }
  CHECK(seq == ref);
  CHECK(state->length(0) == 31);
}

TEST_CASE("KV-cached extend over ragged batches equals the full forward at every position", "[expert][transformer]") {
  const std::string name = GENERATE(as<std::string>{}, "gpt2-tiny", "llama-tiny-gqa");
  auto expert = load_dir(colm::test::fixture("models/" + name));
  const int64_t V = expert->info().vocab_size;
  std::mt19937_64 rng(7);
  auto draw = [&](size_t n) {
    std::vector<int64_t> v(n);
    for (auto& x : v) x = static_cast<int64_t>(rng() % static_cast<uint64_t>(V));
    return v;
  };
  std::vector<std::vector<int64_t>> seqs(3);
  auto state = expert->new_state(3);
  // Calls: (rows, tokens per row). Prefill with different lengths, then ragged chunks of 1-3 tokens,
  // rows skipped and listed out of order (the non-contiguous cache path).
  const std::vector<std::vector<std::pair<int64_t, size_t>>> calls = {
      {{0, 5}, {1, 2}, {2, 7}}, {{0, 1}, {1, 3}, {2, 2}}, {{2, 1}, {0, 2}}, {{1, 1}},
      {{0, 1}, {1, 1}, {2, 1}}, {{1, 2}, {2, 3}},         {{2, 1}, {0, 3}, {1, 1}}};
  double worst = 0;
  for (const auto& call : calls) {
    std::vector<int64_t> rows;
    std::vector<std::vector<int64_t>> toks;
    for (const auto& [r, n] : call) {
      rows.push_back(r);
      toks.push_back(draw(n));
      auto& s = seqs[static_cast<size_t>(r)];
      s.insert(s.end(), toks.back().begin(), toks.back().end());
    }
    auto out = expert->extend(*state, rows, toks);
    REQUIRE(out.logits.sizes() == torch::IntArrayRef({static_cast<int64_t>(rows.size()), V}));
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto& s = seqs[static_cast<size_t>(rows[i])];
      CHECK(state->length(rows[i]) == static_cast<int64_t>(s.size()));
      auto full = expert->forward(ids_tensor(s), torch::Tensor());
      const double dl = max_diff(out.logits[static_cast<int64_t>(i)], full.logits[0][-1]);
      const double dh = max_diff(out.hidden[static_cast<int64_t>(i)], full.hidden[0][-1]);
      worst = std::max({worst, dl, dh});
      CHECK(dl <= 1e-4);
      CHECK(dh <= 1e-4);
    }
  }
  std::cout << "[transformer] " << name << ": extend vs forward max |diff| " << worst << "\n";
}

TEST_CASE("a right-padded batch gives each row the logits of its unpadded forward", "[expert][transformer]") {
  auto expert = load_dir(colm::test::fixture("models/llama-tiny-gqa"));
  const std::vector<std::vector<int64_t>> seqs = {{1, 5, 9, 200, 7}, {1, 33}, {4, 4, 4, 4}};
  auto ids = torch::zeros({3, 5}, torch::kLong);
  auto mask = torch::zeros({3, 5}, torch::kLong);
  for (int64_t b = 0; b < 3; ++b) {
    for (size_t t = 0; t < seqs[b].size(); ++t) {
      ids[b][static_cast<int64_t>(t)] = seqs[b][t];
      mask[b][static_cast<int64_t>(t)] = 1;
    }
  }
  auto batched = expert->forward(ids, mask);
  for (int64_t b = 0; b < 3; ++b) {
    const auto n = static_cast<int64_t>(seqs[b].size());
    auto single = expert->forward(ids_tensor(seqs[b]), torch::Tensor());
    CHECK(max_diff(batched.logits[b].narrow(0, 0, n), single.logits[0]) <= 1e-4);
  }
  CHECK_FALSE(torch::isnan(batched.logits).any().item<bool>());
}

TEST_CASE("save then load reproduces identical logits and fingerprint", "[expert][transformer]") {
  const std::string which = GENERATE(as<std::string>{}, "gpt2-tiny", "llama-tiny-gqa-bf16-sharded", "fresh-gpt2", "fresh-llama");
  std::shared_ptr<colm::Expert> a;
  if (which == "fresh-gpt2") {
    a = make_expert(kFreshGpt2, 11);
  } else if (which == "fresh-llama") {
    a = make_expert(kFreshLlama, 11);
  } else {
    a = load_dir(colm::test::fixture("models/" + which));
  }
  const auto dir = colm::test::temp_dir("colm-transformer-save") + "/model";
  a->save(dir);
  CHECK(fs::exists(dir + "/config.json"));
  CHECK(fs::exists(dir + "/model.safetensors"));
  CHECK(fs::exists(dir + "/tokenizer.json") == a->tokenizer().valid());
  auto b = load_dir(dir);
  std::vector<int64_t> ids = {1, 2, 3, 40, 50, 6, 7, 100, 9};
  auto la = a->forward(ids_tensor(ids), torch::Tensor()).logits;
  auto lb = b->forward(ids_tensor(ids), torch::Tensor()).logits;
  CHECK(torch::equal(la, lb));
  CHECK(a->fingerprint() == b->fingerprint());
  CHECK(a->info().family == b->info().family);
  CHECK(a->info().num_parameters == b->info().num_parameters);
  if (a->tokenizer().valid()) CHECK(a->tokenizer().fingerprint() == b->tokenizer().fingerprint());
  const auto cfg = read_json(dir + "/config.json");
  CHECK(cfg["torch_dtype"] == "float32");
  CHECK(cfg.contains("architectures"));
}

TEST_CASE("a loaded model's fingerprint, streamed from its files, equals the one from its parameters", "[expert][transformer]") {
  const std::string which = GENERATE(as<std::string>{}, "gpt2-tiny", "llama-tiny-gqa-bf16-sharded");
  const std::string dtype = GENERATE(as<std::string>{}, "float32", "bfloat16");
  INFO(which << " as " << dtype);
  const auto dir = colm::test::fixture("models/" + which);
  auto from_file = load_dir(dir, "dtype = '" + dtype + "'");
  auto from_params = load_dir(dir, "dtype = '" + dtype + "'");
  from_params->parameters();  // handed out: the fingerprint no longer trusts the file
  CHECK(from_file->fingerprint() == from_params->fingerprint());
  // The dtype is part of the identity: the same file loaded at the other dtype is another model.
  const std::string other = dtype == "float32" ? "bfloat16" : "float32";
  CHECK(load_dir(dir, "dtype = '" + other + "'")->fingerprint() != from_file->fingerprint());
}

TEST_CASE("a loaded model aliases its file: in-place writes stay in the process", "[expert][transformer]") {
  const auto dir = colm::test::temp_dir("colm-transformer-alias") + "/model";
  fs::copy(colm::test::fixture("models/gpt2-tiny"), dir, fs::copy_options::recursive);
  const auto file_hash = colm::sha1_file(dir + "/model.safetensors");
  std::vector<int64_t> ids = {1, 2, 3, 40, 50, 6, 7, 100, 9};
  auto a = load_dir(dir);
  const auto fingerprint = a->fingerprint();
  const auto logits = a->forward(ids_tensor(ids), torch::Tensor()).logits;
  {
    torch::NoGradGuard no_grad;
    for (auto& p : a->parameters()) p.mul_(0.5);  // what an optimiser step does: copy-on-write pages
  }
  CHECK_FALSE(torch::equal(a->forward(ids_tensor(ids), torch::Tensor()).logits, logits));
  CHECK(colm::sha1_file(dir + "/model.safetensors") == file_hash);
  auto b = load_dir(dir);
  CHECK(torch::equal(b->forward(ids_tensor(ids), torch::Tensor()).logits, logits));
  CHECK(b->fingerprint() == fingerprint);
  // The changed model's fingerprint comes from its parameters, not from the file it was loaded from.
  auto c = load_dir(dir);
  {
    torch::NoGradGuard no_grad;
    c->parameters()[0].add_(1.0);
  }
  CHECK(c->fingerprint() != fingerprint);
}

namespace {
// A field of /proc/self/status ("VmRSS", "VmHWM") in bytes.
double status_bytes(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0) return std::atof(line.c_str() + key.size() + 1) * 1024.0;
  return -1;
}
// Resets VmHWM to the current VmRSS (Linux >= 4.0); false where that is not possible. Free heap
// memory goes back to the system first, so that what a measurement allocates cannot hide in it.
bool reset_peak_rss() {
  malloc_trim(0);
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}
}  // namespace

TEST_CASE("loading and decoding cost the weights' bytes once, at the dtype asked for", "[expert][transformer]") {
  if (!reset_peak_rss() || status_bytes("VmHWM") < 0) COLM_SKIP("cannot reset the peak resident set (/proc/self/clear_refs)");
  // A 55 MB f32 checkpoint: large next to what a forward pass allocates.
  const auto dir = colm::test::temp_dir("colm-transformer-rss") + "/model";
  make_expert("family = 'gpt2'\nn_layer = 6\nn_head = 6\nd_model = 384\nd_ff = 1536\nmax_positions = 128\n"
              "vocab_size = 8192\n", 3)->save(dir);
  const double file = static_cast<double>(fs::file_size(dir + "/model.safetensors"));
  REQUIRE(file > 50e6);
  for (const std::string dtype : {"float32", "bfloat16"}) {
    const double weights = dtype == "float32" ? file : file / 2;
    REQUIRE(reset_peak_rss());
    const double before = status_bytes("VmRSS");
    {
      auto e = load_dir(dir, "dtype = '" + dtype + "'");
      auto state = e->new_state(1);
      e->extend(*state, {0}, {{1, 2, 3, 4, 5, 6, 7, 8}});
      for (int64_t t = 0; t < 4; ++t) e->extend(*state, {0}, {{9 + t}});
      e->fingerprint();
    }
    const double peak = status_bytes("VmHWM") - before;
    std::cout << "[transformer] load + decode + fingerprint as " << dtype << ": peak +" << peak / 1e6 << " MB for "
              << weights / 1e6 << " MB of weights (" << peak / weights << "x)\n";
    // 1.15x the weights, plus 16 MB for one conversion piece, the activations and the allocator.
    CHECK(peak <= 1.15 * weights + 16e6);
  }
}

TEST_CASE("a missing or misshaped tensor is an error naming it and both shapes", "[expert][transformer]") {
  const auto src = colm::test::fixture("models/gpt2-tiny");
  auto ckpt = colm::Checkpoint::open(src);
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& n : ckpt.names()) tensors.emplace_back(n, ckpt.load(n));
  const auto root = colm::test::temp_dir("colm-transformer-bad");

  SECTION("missing") {
    auto dir = root + "/missing";
    fs::create_directories(dir);
    fs::copy_file(src + "/config.json", dir + "/config.json");
    auto kept = tensors;
    kept.erase(std::remove_if(kept.begin(), kept.end(), [](const auto& p) { return p.first == "transformer.h.1.mlp.c_fc.weight"; }),
               kept.end());
    colm::save_safetensors(dir + "/model.safetensors", kept);
    CHECK_THROWS_WITH(load_dir(dir), Catch::Contains("transformer.h.1.mlp.c_fc.weight") && Catch::Contains("[64, 256]"));
  }
  SECTION("misshaped") {
    auto dir = root + "/misshaped";
    fs::create_directories(dir);
    fs::copy_file(src + "/config.json", dir + "/config.json");
    auto bad = tensors;
    for (auto& [n, t] : bad) {
      if (n == "transformer.h.0.attn.c_attn.weight") t = t.t().contiguous();  // [192, 64]: read as nn.Linear
    }
    colm::save_safetensors(dir + "/model.safetensors", bad);
    CHECK_THROWS_WITH(load_dir(dir), Catch::Contains("transformer.h.0.attn.c_attn.weight") && Catch::Contains("[192, 64]") &&
                                         Catch::Contains("[64, 192]"));
  }
  SECTION("no checkpoint at all") { CHECK_THROWS_AS(load_dir(root + "/does-not-exist"), colm::Error); }
}

TEST_CASE("a fresh byte-level model is deterministic for a seed", "[expert][transformer]") {
  const std::string arch = GENERATE(as<std::string>{}, kFreshGpt2, kFreshLlama);
  auto a = make_expert(arch + "init_seed = 5\n");
  auto b = make_expert(arch + "init_seed = 5\n");
  auto c = make_expert(arch + "init_seed = 6\n");
  CHECK(a->info().vocab_size == 259);
  CHECK(a->tokenizer().valid());
  CHECK(a->tokenizer().vocab_size() == 259);
  CHECK(a->info().source == "init:5");
  auto ids = ids_tensor(a->tokenizer().encode("hello, world"));
  auto la = a->forward(ids, torch::Tensor()).logits;
  CHECK(torch::equal(la, b->forward(ids, torch::Tensor()).logits));
  CHECK_FALSE(torch::equal(la, c->forward(ids, torch::Tensor()).logits));
  CHECK(a->fingerprint() == b->fingerprint());
  CHECK(a->fingerprint() != c->fingerprint());
  // The seed defaults to the experiment seed of the plugin context.
  CHECK(make_expert(arch, 5)->fingerprint() == a->fingerprint());
}

TEST_CASE("forward is differentiable and dropout only acts in training", "[expert][transformer]") {
  auto e = make_expert(std::string(kFreshLlama) + "dropout = 0.5\n");
  auto ids = ids_tensor({1, 2, 3, 4, 5});
  auto eval1 = e->forward(ids, torch::Tensor()).logits;
  CHECK(torch::equal(eval1, e->forward(ids, torch::Tensor()).logits));
  e->set_training(true);
  auto out = e->forward(ids, torch::Tensor());
  CHECK_FALSE(torch::equal(out.logits, eval1));
  out.logits.logsumexp(-1).sum().backward();
  int64_t with_grad = 0;
  for (auto& p : e->parameters()) with_grad += p.grad().defined() ? 1 : 0;
  CHECK(with_grad == static_cast<int64_t>(e->parameters().size()));
  e->set_training(false);
}

TEST_CASE("the transformer expert refuses what it cannot do with a clear error", "[expert][transformer]") {
  auto e = make_expert(kFreshGpt2);
  const auto P = e->info().max_positions;
  CHECK_THROWS_WITH(e->forward(torch::zeros({1, P + 1}, torch::kLong), torch::Tensor()), Catch::Contains("max_positions"));
  auto state = e->new_state(2);
  e->extend(*state, {0}, {std::vector<int64_t>(static_cast<size_t>(P - 1), 3)});
  e->extend(*state, {0}, {{4}});
  CHECK_THROWS_WITH(e->extend(*state, {0}, {{5}}), Catch::Contains("max_positions"));
  CHECK_THROWS_WITH(e->extend(*state, {1}, {{999}}), Catch::Contains("vocabulary"));
  CHECK_THROWS_WITH(e->extend(*state, {1, 1}, {{1}, {2}}), Catch::Contains("twice"));
  CHECK_THROWS_WITH(e->extend(*state, {1}, {{}}), Catch::Contains("no tokens"));
  auto other = make_expert(kFreshGpt2);
  auto foreign = other->new_state(1);
  CHECK_THROWS_WITH(e->extend(*foreign, {0}, {{1}}), Catch::Contains("not created by this expert"));
  CHECK_THROWS_AS(make_expert("family = 'gpt2'\ndevice = 'tpu'\n"), colm::Error);
  CHECK_THROWS_AS(make_expert("family = 'bert'\n"), colm::Error);
  CHECK_THROWS_AS(make_expert("checkpoint = '/nonexistent'\nn_layer = 3\n"), colm::Error);
}
