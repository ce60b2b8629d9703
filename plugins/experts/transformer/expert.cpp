// The `transformer` expert: options, construction (HF checkpoint or fresh init), teacher-forced
// forward and KV-cached extend, save and fingerprint. Family details live in gpt2.cpp / llama.cpp.
#include <algorithm>
#include <atomic>
#include <filesystem>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>

#include <spdlog/spdlog.h>

#include "colm/plugin.hpp"
#include "save.hpp"
#include "transformer.hpp"

namespace colm::transformer {
namespace {

// Additive mask value: finite so a query with no visible key (an all-padding row) stays NaN-free.
constexpr double kMasked = -1e30;

// Torch failures become colm::Error (no exception type from inside a plugin crosses the boundary).
template <class F>
auto guarded(const char* what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    throw Error(std::string("[transformer] ") + what + ": " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw Error(std::string("[transformer] ") + what + ": " + e.what());
  }
}

// States this expert created and that are still alive: extend() refuses any other DecodeState
// without needing dynamic_cast across the plugin boundary.
struct LiveStates {
  std::mutex mutex;
  std::set<const DecodeState*> states;
};

class TransformerState : public DecodeState {
 public:
  TransformerState(int64_t rows, std::shared_ptr<LiveStates> live) : lengths_(static_cast<size_t>(rows), 0), live_(std::move(live)) {
    cache_.rows = rows;
    std::lock_guard<std::mutex> lock(live_->mutex);
    live_->states.insert(this);
  }
  ~TransformerState() override {
    std::lock_guard<std::mutex> lock(live_->mutex);
    live_->states.erase(this);
  }
  int64_t rows() const override { return static_cast<int64_t>(lengths_.size()); }
  int64_t length(int64_t row) const override {
    COLM_CHECK(row >= 0 && row < rows(), "[transformer] DecodeState::length: row " << row << " out of range [0, " << rows() << ")");
    return lengths_[static_cast<size_t>(row)];
  }
  // The row's cache entries stay where they are: extend() masks every key past a row's length, and
  // overwrites them as the new sequence grows.
  void reset(int64_t row) override {
    COLM_CHECK(row >= 0 && row < rows(), "[transformer] DecodeState::reset: row " << row << " out of range [0, " << rows() << ")");
    lengths_[static_cast<size_t>(row)] = 0;
  }

  std::vector<int64_t> lengths_;
  KvCache cache_;

 private:
  std::shared_ptr<LiveStates> live_;
};

torch::Device parse_device(const ConfigView& cfg, const std::string& name) {
  if (name == "cpu") return torch::kCPU;
  if (name == "cuda" || name.rfind("cuda:", 0) == 0) {
    if (!torch::cuda::is_available()) {
      cfg.fail("device", "'" + name + "' requested but no CUDA device is usable (torch::cuda::is_available() is false); use \"cpu\"");
    }
    return torch::Device(name);
  }
  cfg.fail("device", "unknown device '" + name + "' (use \"cpu\", \"cuda\" or \"cuda:N\")");
}

torch::Dtype parse_dtype(const ConfigView& cfg, const std::string& name) {
  if (name == "float32") return torch::kFloat32;
  if (name == "bfloat16") return torch::kBFloat16;
  cfg.fail("dtype", "unknown dtype '" + name + "' (use \"float32\" or \"bfloat16\")");
}

// Keys that describe a fresh architecture; meaningless next to `checkpoint`.
const std::vector<std::string> kFreshKeys = {"family", "n_layer", "n_head", "n_kv_head", "d_model", "d_ff",
                                             "max_positions", "rope_theta", "norm_eps", "vocab", "vocab_size",
                                             "tie_embeddings", "init_seed"};

class TransformerExpert : public Expert {
 public:
  TransformerExpert(const ConfigView& cfg, const PluginContext& ctx) : live_(std::make_shared<LiveStates>()) {
    const auto checkpoint = cfg.get_string(
        "checkpoint", "", "Hugging Face checkpoint directory (config.json + safetensors); empty: a fresh model from 'family' etc.");
    dtype_ = parse_dtype(cfg, cfg.get_string("dtype", "float32", "compute dtype: \"float32\" or \"bfloat16\""));
    device_ = parse_device(cfg, cfg.get_string("device", ctx.device.empty() ? "cpu" : ctx.device,
                                               "\"cpu\", \"cuda\" or \"cuda:N\""));
    const auto tokenizer_path = cfg.get_string(
        "tokenizer", "", "tokenizer.json; default <checkpoint>/tokenizer.json when present (fresh models: see 'vocab')");
    const double dropout = cfg.get_double("dropout", 0.0, "dropout on embeddings, attention and residual branches while training");

    if (!checkpoint.empty()) {
      for (const auto& key : kFreshKeys) {
        if (cfg.has(key)) cfg.fail(key, "describes a fresh model and cannot be combined with 'checkpoint' (the checkpoint's config.json decides)");
      }
      load_checkpoint(checkpoint, tokenizer_path);
    } else {
      build_fresh(cfg, ctx, tokenizer_path);
    }
    config_.dropout = dropout;
    config_.validate(source_);
    net_->to(device_);
    if (checkpoint_ && device_ != torch::kCPU) {
      // The parameters are copies on the device now: the file's pages they were read from can go.
      for (const auto& name : sources_) checkpoint_->release(name);
    }
    net_->eval();
    for (const auto& p : net_->parameters()) num_parameters_ += p.numel();
    spdlog::info("[transformer] {} model from {}: {} parameters, {} layers, d={}, vocab {}, {} on {}",
                 to_string(config_.family), source_, num_parameters_, config_.n_layer, config_.hidden,
                 config_.vocab_size, dtype_name(dtype_), device_.str());
  }

  ExpertInfo info() const override {
    ExpertInfo i;
    i.family = to_string(config_.family);
    i.vocab_size = config_.vocab_size;
    i.hidden_size = config_.hidden;
    i.max_positions = config_.max_positions;
    i.num_parameters = num_parameters_;
    i.dtype = dtype_name(dtype_);
    i.source = source_;
    return i;
  }

  const Tokenizer& tokenizer() const override { return tokenizer_; }
  torch::Device device() const override { return device_; }

  ExpertOutput forward(const torch::Tensor& ids, const torch::Tensor& mask) override {
    return guarded("forward", [&] {
      COLM_CHECK(ids.defined() && ids.dim() == 2 && ids.scalar_type() == torch::kLong,
                 "[transformer] forward: ids must be a [B,T] int64 tensor, got "
                     << (ids.defined() ? std::string(c10::toString(ids.scalar_type())) + " " + shape(ids) : "undefined"));
      const int64_t B = ids.size(0), T = ids.size(1);
      COLM_CHECK(B > 0 && T > 0, "[transformer] forward: empty batch " << shape(ids));
      COLM_CHECK(T <= config_.max_positions, "[transformer] forward: " << T << " tokens exceed the model's max_positions "
                                                                        << config_.max_positions);
      check_ids(ids, "forward");
      auto dev_ids = ids.to(device_);
      auto positions = torch::arange(T, torch::TensorOptions().dtype(torch::kLong).device(device_)).unsqueeze(0).expand({B, T});
      auto opts = torch::TensorOptions().dtype(dtype_).device(device_);
      // causal: [1,1,T,T], query i sees keys j <= i; right padding also hides padded keys: [B,1,T,T]
      auto bias = torch::full({T, T}, kMasked, opts).triu(1).view({1, 1, T, T});
      if (mask.defined()) {
        COLM_CHECK(mask.dim() == 2 && mask.size(0) == B && mask.size(1) == T,
                   "[transformer] forward: mask must be [B,T] = [" << B << ", " << T << "], got " << shape(mask));
        auto padded = mask.to(device_).eq(0).view({B, 1, 1, T});
        bias = bias.expand({B, 1, T, T}).masked_fill(padded, kMasked);
      }
      AttentionPlan plan;
      plan.bias = bias;
      plan.training = net_->is_training();
      plan.dropout = config_.dropout;
      auto hidden = net_->hidden(dev_ids, positions, plan);      // [B,T,d]
      auto logits = linear_rows(hidden, net_->output_weight(), {});  // [B,T,V]
      return ExpertOutput{logits.to(torch::kFloat32), hidden.to(torch::kFloat32)};
    });
  }

  std::unique_ptr<DecodeState> new_state(int64_t rows) const override {
    COLM_CHECK(rows > 0, "[transformer] new_state: rows must be positive, got " << rows);
    return std::make_unique<TransformerState>(rows, live_);
  }

  ExpertOutput extend(DecodeState& state_in, const std::vector<int64_t>& rows,
                      const std::vector<std::vector<int64_t>>& tokens) override {
    return guarded("extend", [&] {
      torch::NoGradGuard no_grad;
      {
        std::lock_guard<std::mutex> lock(live_->mutex);
        COLM_CHECK(live_->states.count(&state_in), "[transformer] extend: the DecodeState was not created by this expert");
      }
      auto& state = static_cast<TransformerState&>(state_in);
      const int64_t R = static_cast<int64_t>(rows.size());
      COLM_CHECK(R > 0 && tokens.size() == rows.size(),
                 "[transformer] extend: " << rows.size() << " rows but " << tokens.size() << " token lists");
      std::vector<int64_t> past(rows.size()), count(rows.size());
      std::vector<char> seen(static_cast<size_t>(state.rows()), 0);
      int64_t Tn = 0, L = 0, max_past = 0;
      for (size_t i = 0; i < rows.size(); ++i) {
        const int64_t r = rows[i];
        COLM_CHECK(r >= 0 && r < state.rows(), "[transformer] extend: row " << r << " out of range [0, " << state.rows() << ")");
        COLM_CHECK(!seen[static_cast<size_t>(r)], "[transformer] extend: row " << r << " listed twice");
        seen[static_cast<size_t>(r)] = 1;
        COLM_CHECK(!tokens[i].empty(), "[transformer] extend: no tokens for row " << r);
        for (auto t : tokens[i]) {
          COLM_CHECK(t >= 0 && t < config_.vocab_size,
                     "[transformer] extend: token id " << t << " (row " << r << ") outside the vocabulary [0, " << config_.vocab_size << ")");
        }
        past[i] = state.lengths_[static_cast<size_t>(r)];
        count[i] = static_cast<int64_t>(tokens[i].size());
        COLM_CHECK(past[i] + count[i] <= config_.max_positions,
                   "[transformer] extend: row " << r << " would hold " << past[i] + count[i]
                                                << " tokens, more than the model's max_positions " << config_.max_positions);
        Tn = std::max(Tn, count[i]);
        L = std::max(L, past[i] + count[i]);
        max_past = std::max(max_past, past[i]);
      }
      auto& cache = state.cache_;
      // Padded positions are written too (masked, and overwritten by the row's next tokens).
      cache.reserve(max_past + Tn, config_, dtype_, device_);

      const int64_t Hkv = config_.n_kv_head, cap = cache.capacity;
      std::vector<int64_t> ids(static_cast<size_t>(R * Tn), 0), pos(static_cast<size_t>(R * Tn));
      std::vector<int64_t> write(static_cast<size_t>(R * Hkv * Tn)), last(rows.size());
      bool run = true;  // rows form one ascending run -> cache views instead of copies
      for (int64_t i = 0; i < R; ++i) {
        const auto ui = static_cast<size_t>(i);
        if (i > 0 && rows[ui] != rows[ui - 1] + 1) run = false;
        for (int64_t t = 0; t < Tn; ++t) {
          const auto at = static_cast<size_t>(i * Tn + t);
          if (t < count[ui]) ids[at] = tokens[ui][static_cast<size_t>(t)];
          pos[at] = std::min(past[ui] + t, config_.max_positions - 1);
        }
        for (int64_t h = 0; h < Hkv; ++h) {
          for (int64_t t = 0; t < Tn; ++t) {
            write[static_cast<size_t>((i * Hkv + h) * Tn + t)] = (rows[ui] * Hkv + h) * cap + past[ui] + t;
          }
        }
        last[ui] = count[ui] - 1;
      }
      auto lopts = torch::TensorOptions().dtype(torch::kLong);
      auto to_dev = [&](const std::vector<int64_t>& v, std::vector<int64_t> sizes) {
        return torch::from_blob(const_cast<int64_t*>(v.data()), sizes, lopts).clone().to(device_);
      };
      AttentionPlan plan;
      plan.cache = &cache;
      plan.key_length = L;
      plan.write_index = to_dev(write, {R * Hkv * Tn});
      if (run) {
        plan.row_begin = rows[0];
      } else {
        plan.row_index = to_dev(rows, {R});
      }
      // Every row sees exactly keys [0, L) when each adds one token to the same length: no mask.
      const bool uniform = Tn == 1 && std::all_of(past.begin(), past.end(), [&](int64_t p) { return p + 1 == L; });
      if (!uniform) {
        auto P = to_dev(past, {R, 1, 1});
        auto N = to_dev(count, {R, 1, 1});
        auto dl = torch::TensorOptions().dtype(torch::kLong).device(device_);
        auto q = torch::arange(Tn, dl).view({1, Tn, 1});
        auto k = torch::arange(L, dl).view({1, 1, L});
        auto visible = (k <= P + q).logical_and(k < P + N);  // [R,Tn,L]
        plan.bias = torch::zeros({R, 1, Tn, L}, torch::TensorOptions().dtype(dtype_).device(device_))
                        .masked_fill(visible.logical_not().unsqueeze(1), kMasked);
      }
      auto hidden = net_->hidden(to_dev(ids, {R, Tn}), to_dev(pos, {R, Tn}), plan);  // [R,Tn,d]
      torch::Tensor h_last;                                                           // [R,d]
      if (Tn == 1) {
        h_last = hidden.select(1, 0);
      } else {
        auto ar = torch::arange(R, torch::TensorOptions().dtype(torch::kLong).device(device_));
        h_last = hidden.index({ar, to_dev(last, {R})});
      }
      auto logits = linear_rows(h_last, net_->output_weight(), {});  // [R,V]
      for (size_t i = 0; i < rows.size(); ++i) state.lengths_[static_cast<size_t>(rows[i])] += count[i];
      return ExpertOutput{logits.to(torch::kFloat32), h_last.to(torch::kFloat32)};
    });
  }

  std::vector<torch::Tensor> parameters() override {
    weights_handed_out_ = true;  // whoever asked may change them: the file no longer describes them
    return net_->parameters();
  }
  void set_training(bool training) override {
    if (training) weights_handed_out_ = true;
    net_->train(training);
  }

  void save(const std::string& dir) const override {
    guarded("save", [&] { save_checkpoint(dir, *net_, dtype_, tokenizer_); });
  }

  // Computed once: trainers change the weights in place, so they save and reload the expert (a new
  // object, a new fingerprint) before its fingerprint keys anything. A loaded model's weights are
  // hashed from the checkpoint's bytes, streamed, as long as nothing may have changed them since.
  std::string fingerprint() const override {
    std::call_once(fingerprint_once_, [&] {
      fingerprint_ = guarded("fingerprint", [&] {
        const bool from_file = checkpoint_ && !weights_handed_out_;
        return model_fingerprint(*net_, dtype_, tokenizer_, from_file ? &*checkpoint_ : nullptr, sources_);
      });
    });
    return fingerprint_;
  }

 private:
  static std::string shape(const torch::Tensor& t) {
    std::ostringstream os;
    os << t.sizes();
    return os.str();
  }

  void check_ids(const torch::Tensor& ids, const char* what) const {
    if (ids.numel() == 0) return;
    const auto lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    COLM_CHECK(lo >= 0 && hi < config_.vocab_size, "[transformer] " << what << ": token ids range over [" << lo << ", " << hi
                                                                    << "], outside the vocabulary [0, " << config_.vocab_size << ")");
  }

  void load_checkpoint(const std::string& dir, const std::string& tokenizer_path) {
    // Kept for the model's lifetime: the parameters alias its memory-mapped files where the dtype
    // matches, and the fingerprint streams its bytes.
    checkpoint_ = Checkpoint::open(dir);
    const auto& ckpt = *checkpoint_;
    config_ = config_from_hf(ckpt.config(), dir + "/config.json");
    // Qwen2 has q/k/v biases whether or not its config says so: the tensors decide.
    if (config_.family == Family::llama && ckpt.has("model.layers.0.self_attn.q_proj.bias")) config_.attention_bias = true;
    net_ = make_network(config_);
    sources_ = load_weights(*net_, ckpt, dtype_);
    net_->to(dtype_);  // the buffers (RoPE tables); the parameters are at dtype_ already
    source_ = dir;
    std::string tok = tokenizer_path;
    if (tok.empty() && std::filesystem::exists(std::filesystem::path(dir) / "tokenizer.json")) tok = dir + "/tokenizer.json";
    if (!tok.empty()) tokenizer_ = Tokenizer::from_file(tok);
    check_tokenizer(tok);
  }

  void build_fresh(const ConfigView& cfg, const PluginContext& ctx, const std::string& tokenizer_path) {
    const auto family = cfg.get_string("family", "", "architecture of a fresh model: \"gpt2\" or \"llama\"");
    if (family.empty()) cfg.fail("family", "set 'checkpoint' to load a model, or 'family' (\"gpt2\" or \"llama\") to build a fresh one");
    if (family != "gpt2" && family != "llama") cfg.fail("family", "unknown family '" + family + "' (use \"gpt2\" or \"llama\")");
    ModelConfig c;
    c.family = family == "gpt2" ? Family::gpt2 : Family::llama;
    c.model_type = family;
    c.n_layer = cfg.get_int("n_layer", 2, "number of transformer blocks");
    c.n_head = cfg.get_int("n_head", 4, "attention heads");
    c.n_kv_head = cfg.get_int("n_kv_head", c.n_head, "key/value heads (llama; grouped-query attention when < n_head)");
    if (c.family == Family::gpt2 && c.n_kv_head != c.n_head) cfg.fail("n_kv_head", "gpt2 has one key/value head per attention head");
    c.hidden = cfg.get_int("d_model", 128, "hidden size");
    c.d_ff = cfg.get_int("d_ff", 4 * c.hidden, "feed-forward size");
    c.max_positions = cfg.get_int("max_positions", 512, "longest context");
    c.rope_theta = cfg.get_double("rope_theta", 10000.0, "RoPE base (llama)");
    c.norm_eps = cfg.get_double("norm_eps", 1e-5, "LayerNorm / RMSNorm epsilon");
    c.tie_embeddings = cfg.get_bool("tie_embeddings", true, "share the output layer with the token embeddings");
    if (c.family == Family::gpt2 && !c.tie_embeddings) cfg.fail("tie_embeddings", "gpt2 always ties its output layer to wte");
    c.head_dim = c.n_head > 0 ? c.hidden / c.n_head : 0;
    if (c.n_head > 0 && c.hidden % c.n_head != 0) cfg.fail("n_head", "d_model must be a multiple of n_head");
    const auto vocab = cfg.get_string("vocab", tokenizer_path.empty() ? "bytes" : "tokenizer",
                                      "\"bytes\": colm's byte-level tokenizer (259 ids); \"tokenizer\": the file in 'tokenizer'");
    if (vocab == "bytes") {
      if (!tokenizer_path.empty()) cfg.fail("vocab", "\"bytes\" contradicts 'tokenizer'; drop one of them");
      tokenizer_ = Tokenizer::byte_level();
    } else if (vocab == "tokenizer") {
      if (tokenizer_path.empty()) cfg.fail("tokenizer", "vocab = \"tokenizer\" needs the path of a tokenizer.json here");
      tokenizer_ = Tokenizer::from_file(tokenizer_path);
    } else {
      cfg.fail("vocab", "unknown vocabulary '" + vocab + "' (use \"bytes\" or \"tokenizer\")");
    }
    c.vocab_size = cfg.get_int("vocab_size", tokenizer_.vocab_size(),
                               "output rows (default: the tokenizer's size; larger pads the vocabulary)");
    c.bos_id = tokenizer_.bos_id();
    c.eos_id = tokenizer_.eos_id();
    const auto seed = static_cast<uint64_t>(cfg.get_int("init_seed", static_cast<int64_t>(ctx.seed), "seed of the random init"));
    config_ = c;
    config_.validate("fresh " + family + " model (" + cfg.where() + ")");
    net_ = make_network(config_);
    init_weights(*net_, seed);  // float32 draws, then converted: the same seed gives the same model
    net_->to(dtype_);
    source_ = "init:" + std::to_string(seed);
    check_tokenizer(tokenizer_path.empty() ? "byte-level tokenizer" : tokenizer_path);
  }

  void check_tokenizer(const std::string& what) const {
    if (!tokenizer_.valid()) return;
    COLM_CHECK(tokenizer_.vocab_size() <= config_.vocab_size,
               "[transformer] " << what << ": the tokenizer has " << tokenizer_.vocab_size()
                                << " ids but the model's output layer only " << config_.vocab_size);
  }

  ModelConfig config_;
  std::shared_ptr<NetworkImpl> net_;
  Tokenizer tokenizer_;
  torch::Device device_ = torch::kCPU;
  torch::Dtype dtype_ = torch::kFloat32;
  std::string source_;
  int64_t num_parameters_ = 0;
  std::shared_ptr<LiveStates> live_;
  std::optional<Checkpoint> checkpoint_;  // the files a loaded model's weights come from
  std::vector<std::string> sources_;      // checkpoint name of each of net_->weights()
  std::atomic<bool> weights_handed_out_{false};
  mutable std::once_flag fingerprint_once_;
  mutable std::string fingerprint_;
};

}  // namespace

std::unique_ptr<Expert> create_transformer(const ConfigView& config, const PluginContext& context) {
  return guarded("create", [&]() -> std::unique_ptr<Expert> { return std::make_unique<TransformerExpert>(config, context); });
}

}  // namespace colm::transformer

COLM_PLUGIN(expert, "transformer", colm::transformer::kPluginVersion, colm::transformer::create_transformer)
