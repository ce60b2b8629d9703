// Example out-of-tree expert plugin "bigram": a neural bigram language model (token embedding ->
// LayerNorm -> output layer) with every part of the Expert contract: teacher-forced forward,
// incremental decoding state, training (parameters, train/eval), HF-style checkpoints and a content
// fingerprint. It includes colm's public headers only; decoding, training and results are colm's.
//
// Config ([experts.NAME] keys besides core's plugin/role/train):
//   checkpoint     a directory this plugin's save() wrote (what colm loads back after lm training)
//   d_model        embedding and hidden size of a fresh model (32)
//   max_positions  longest context accepted (1024); the model itself looks at the newest token only
//   tokenizer      a Hugging Face tokenizer.json; default: colm's byte-level tokenizer (259 ids)
//   init_seed      seed of a fresh model's random init (the experiment seed)
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "colm/hash.hpp"
#include "colm/plugin.hpp"
#include "colm/safetensors.hpp"

namespace bigram {

namespace fs = std::filesystem;

constexpr const char* kModelType = "colm_bigram";  // config.json "model_type" of our checkpoints
constexpr double kInitStd = 0.02;

// Torch and JSON failures become colm::Error: no exception type defined outside core crosses the
// plugin boundary (core cannot catch a type it does not know the layout of).
template <class F>
auto guarded(const char* what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const colm::Error&) {
    throw;  // ConfigError included: it already names the TOML key and its location
  } catch (const c10::Error& e) {
    throw colm::Error(std::string("[bigram] ") + what + ": " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw colm::Error(std::string("[bigram] ") + what + ": " + e.what());
  }
}

// hidden = LayerNorm(E[x_t]); logits = W hidden + b: the next token depends on the current one only.
struct BigramNetImpl : torch::nn::Module {
  BigramNetImpl(int64_t vocab, int64_t dim)
      : embed(register_module("embed", torch::nn::Embedding(vocab, dim))),
        norm(register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})))),
        out(register_module("out", torch::nn::Linear(dim, vocab))) {}

  torch::Tensor hidden(const torch::Tensor& ids) { return norm(embed(ids)); }  // [...] int64 -> [..., d]

  torch::nn::Embedding embed;
  torch::nn::LayerNorm norm;
  torch::nn::Linear out;
};
TORCH_MODULE(BigramNet);

// States this expert created and that are still alive, so extend() can refuse a foreign
// DecodeState without dynamic_cast (type identity is not reliable across plugin libraries).
struct LiveStates {
  std::mutex mutex;
  std::set<const colm::DecodeState*> states;
};

// A bigram model needs no cache: the logits depend on the newest token alone. The state only
// counts each row's tokens (for length() and the max_positions limit).
class BigramState final : public colm::DecodeState {
 public:
  BigramState(int64_t rows, std::shared_ptr<LiveStates> live)
      : lengths_(static_cast<size_t>(rows), 0), live_(std::move(live)) {
    std::lock_guard<std::mutex> lock(live_->mutex);
    live_->states.insert(this);
  }
  ~BigramState() override {
    std::lock_guard<std::mutex> lock(live_->mutex);
    live_->states.erase(this);
  }
  int64_t rows() const override { return static_cast<int64_t>(lengths_.size()); }
  int64_t length(int64_t row) const override {
    COLM_CHECK(row >= 0 && row < rows(), "[bigram] DecodeState::length: row " << row << " out of range [0, " << rows() << ")");
    return lengths_[static_cast<size_t>(row)];
  }
  void reset(int64_t row) override {
    COLM_CHECK(row >= 0 && row < rows(), "[bigram] DecodeState::reset: row " << row << " out of range [0, " << rows() << ")");
    lengths_[static_cast<size_t>(row)] = 0;
  }

  std::vector<int64_t> lengths_;

 private:
  std::shared_ptr<LiveStates> live_;
};

class BigramExpert final : public colm::Expert {
 public:
  BigramExpert(const colm::ConfigView& cfg, const colm::PluginContext& ctx) : live_(std::make_shared<LiveStates>()) {
    const auto checkpoint = cfg.get_string(
        "checkpoint", "", "directory written by this plugin's save() (config.json, model.safetensors, tokenizer.json); "
                          "empty: a fresh model");
    device_ = torch::Device(ctx.device.empty() ? "cpu" : ctx.device);
    COLM_CHECK(!device_.is_cuda() || torch::cuda::is_available(),
               "[bigram] device '" << ctx.device << "' requested but no CUDA device is usable");
    if (checkpoint.empty()) {
      build_fresh(cfg, ctx);
    } else {
      for (const char* key : {"d_model", "max_positions", "tokenizer", "init_seed"}) {
        if (cfg.has(key)) cfg.fail(key, "describes a fresh model and cannot be combined with 'checkpoint'");
      }
      load_checkpoint(checkpoint);
    }
    net_->to(device_);
    net_->eval();
  }

  colm::ExpertInfo info() const override {
    colm::ExpertInfo i;
    i.family = "bigram";
    i.vocab_size = vocab_size_;
    i.hidden_size = hidden_size_;
    i.max_positions = max_positions_;
    for (const auto& p : net_->parameters()) i.num_parameters += p.numel();
    i.dtype = "float32";
    i.source = source_;
    return i;
  }

  const colm::Tokenizer& tokenizer() const override { return tokenizer_; }
  torch::Device device() const override { return device_; }

  // ids [B,T] int64 -> logits [B,T,V], hidden [B,T,d], float32 on device(), autograd-capable.
  // The mask is not needed: position t reads token t only, so right padding never reaches a real
  // position (the trainer masks the padded positions' losses).
  colm::ExpertOutput forward(const torch::Tensor& ids, const torch::Tensor& /*mask*/) override {
    return guarded("forward", [&] {
      COLM_CHECK(ids.defined() && ids.dim() == 2 && ids.scalar_type() == torch::kLong,
                 "[bigram] forward: ids must be a [B,T] int64 tensor");
      COLM_CHECK(ids.size(1) <= max_positions_,
                 "[bigram] forward: " << ids.size(1) << " tokens exceed max_positions " << max_positions_);
      check_ids(ids);
      auto hidden = net_->hidden(ids.to(device_));  // [B,T,d]
      auto logits = net_->out(hidden);              // [B,T,V]
      return colm::ExpertOutput{logits, hidden};
    });
  }

  std::unique_ptr<colm::DecodeState> new_state(int64_t rows) const override {
    COLM_CHECK(rows > 0, "[bigram] new_state: rows must be positive, got " << rows);
    return std::make_unique<BigramState>(rows, live_);
  }

  // Appends tokens[i] to row rows[i]; returns logits [R,V] and hidden [R,d] at each row's last new
  // token. Every argument is checked before the state changes, so a refused call leaves it intact.
  colm::ExpertOutput extend(colm::DecodeState& state_in, const std::vector<int64_t>& rows,
                            const std::vector<std::vector<int64_t>>& tokens) override {
    return guarded("extend", [&] {
      torch::NoGradGuard no_grad;
      {
        std::lock_guard<std::mutex> lock(live_->mutex);
        COLM_CHECK(live_->states.count(&state_in), "[bigram] extend: the DecodeState was not created by this expert");
      }
      auto& state = static_cast<BigramState&>(state_in);
      COLM_CHECK(!rows.empty() && rows.size() == tokens.size(),
                 "[bigram] extend: " << rows.size() << " rows but " << tokens.size() << " token lists");
      std::vector<int64_t> newest(rows.size());
      std::vector<char> seen(static_cast<size_t>(state.rows()), 0);
      for (size_t i = 0; i < rows.size(); ++i) {
        const int64_t r = rows[i];
        COLM_CHECK(r >= 0 && r < state.rows(), "[bigram] extend: row " << r << " out of range [0, " << state.rows() << ")");
        COLM_CHECK(!seen[static_cast<size_t>(r)], "[bigram] extend: row " << r << " listed twice");
        seen[static_cast<size_t>(r)] = 1;
        COLM_CHECK(!tokens[i].empty(), "[bigram] extend: no tokens for row " << r);
        for (const int64_t t : tokens[i]) {
          COLM_CHECK(t >= 0 && t < vocab_size_,
                     "[bigram] extend: token id " << t << " (row " << r << ") outside [0, " << vocab_size_ << ")");
        }
        const int64_t total = state.lengths_[static_cast<size_t>(r)] + static_cast<int64_t>(tokens[i].size());
        COLM_CHECK(total <= max_positions_,
                   "[bigram] extend: row " << r << " would hold " << total << " tokens, more than max_positions " << max_positions_);
        newest[i] = tokens[i].back();
      }
      for (size_t i = 0; i < rows.size(); ++i) {
        state.lengths_[static_cast<size_t>(rows[i])] += static_cast<int64_t>(tokens[i].size());
      }
      const auto R = static_cast<int64_t>(rows.size());
      auto ids = torch::from_blob(newest.data(), {R}, torch::kLong).clone().to(device_);  // [R]
      auto hidden = net_->hidden(ids);                                                     // [R,d]
      return colm::ExpertOutput{net_->out(hidden), hidden};                                // [R,V], [R,d]
    });
  }

  std::vector<torch::Tensor> parameters() override { return net_->parameters(); }
  void set_training(bool training) override { net_->train(training); }

  void save(const std::string& dir) const override {
    guarded("save", [&] {
      fs::create_directories(dir);
      std::vector<std::pair<std::string, torch::Tensor>> tensors;
      for (const auto& p : net_->named_parameters()) {
        tensors.emplace_back(p.key(), p.value().detach().to(torch::kCPU).contiguous());
      }
      colm::save_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, {{"format", "pt"}});
      const auto config_path = (fs::path(dir) / "config.json").string();
      std::ofstream out(config_path);
      COLM_CHECK(out, "[bigram] cannot write " << config_path);
      out << config_json().dump(2) << "\n";
      COLM_CHECK(out.good(), "[bigram] error writing " << config_path);
      tokenizer_.save((fs::path(dir) / "tokenizer.json").string());
    });
  }

  // Identity of architecture, weights and tokenizer. Computed on every call (the model is small);
  // colm saves and reloads a trained expert before its fingerprint keys anything.
  std::string fingerprint() const override {
    return guarded("fingerprint", [&] {
      colm::Hasher h;
      h.add(std::string(kModelType)).add(config_json().dump());
      for (const auto& p : net_->named_parameters()) {
        const auto t = p.value().detach().to(torch::kCPU).contiguous();
        const std::string bytes(static_cast<const char*>(t.data_ptr()), static_cast<size_t>(t.numel()) * t.element_size());
        h.add(p.key()).add(colm::sha1_hex(bytes));
      }
      h.add(tokenizer_.fingerprint());
      return h.hex();
    });
  }

 private:
  nlohmann::json config_json() const {
    return {{"model_type", kModelType},
            {"architectures", nlohmann::json::array({"ColmBigram"})},
            {"vocab_size", vocab_size_},
            {"hidden_size", hidden_size_},
            {"max_position_embeddings", max_positions_},
            {"torch_dtype", "float32"}};
  }

  void build_fresh(const colm::ConfigView& cfg, const colm::PluginContext& ctx) {
    hidden_size_ = cfg.get_int("d_model", 32, "embedding and hidden size");
    max_positions_ = cfg.get_int("max_positions", 1024, "longest context accepted (the model reads the newest token only)");
    const auto tokenizer_path = cfg.get_string("tokenizer", "", "Hugging Face tokenizer.json; empty: colm's byte-level tokenizer");
    const auto seed = cfg.get_int("init_seed", static_cast<int64_t>(ctx.seed), "seed of the random init");
    if (hidden_size_ < 1) cfg.fail("d_model", "must be >= 1, got " + std::to_string(hidden_size_));
    if (max_positions_ < 2) cfg.fail("max_positions", "must be >= 2, got " + std::to_string(max_positions_));
    if (tokenizer_path.empty()) {
      tokenizer_ = colm::Tokenizer::byte_level();
    } else {
      try {
        tokenizer_ = colm::Tokenizer::from_file(tokenizer_path);
      } catch (const colm::Error& e) {
        cfg.fail("tokenizer", e.what());
      }
    }
    vocab_size_ = tokenizer_.vocab_size();
    net_ = BigramNet(vocab_size_, hidden_size_);
    // Drawn from the model's own generator: the global torch RNG is not ours to move.
    torch::NoGradGuard no_grad;
    auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(seed));
    net_->embed->weight.copy_(torch::randn({vocab_size_, hidden_size_}, gen, torch::kFloat32) * kInitStd);
    net_->out->weight.copy_(torch::randn({vocab_size_, hidden_size_}, gen, torch::kFloat32) * kInitStd);
    net_->out->bias.zero_();
    source_ = "init:" + std::to_string(seed);
  }

  void load_checkpoint(const std::string& dir) {
    auto ckpt = colm::Checkpoint::open(dir);  // validates config.json and every tensor header
    const auto& c = ckpt.config();
    const auto type = c.value("model_type", std::string());
    COLM_CHECK(type == kModelType, "[bigram] " << dir << "/config.json: model_type '" << type << "' is not '"
                                               << kModelType << "' (a checkpoint of another model family?)");
    vocab_size_ = c.at("vocab_size").get<int64_t>();
    hidden_size_ = c.at("hidden_size").get<int64_t>();
    max_positions_ = c.value("max_position_embeddings", int64_t{1024});
    const auto tok = fs::path(dir) / "tokenizer.json";
    COLM_CHECK(fs::exists(tok), "[bigram] " << dir << ": no tokenizer.json");
    tokenizer_ = colm::Tokenizer::from_file(tok.string());
    COLM_CHECK(tokenizer_.vocab_size() <= vocab_size_, "[bigram] " << dir << ": the tokenizer has " << tokenizer_.vocab_size()
                                                                    << " ids but the model " << vocab_size_ << " output rows");
    net_ = BigramNet(vocab_size_, hidden_size_);
    torch::NoGradGuard no_grad;
    for (auto& p : net_->named_parameters()) {
      COLM_CHECK(ckpt.has(p.key()), "[bigram] " << dir << ": no tensor '" << p.key() << "'");
      const auto t = ckpt.load(p.key(), torch::kFloat32);
      COLM_CHECK(t.sizes() == p.value().sizes(), "[bigram] " << dir << ": '" << p.key() << "' has shape " << t.sizes()
                                                             << ", expected " << p.value().sizes());
      p.value().copy_(t);
    }
    source_ = dir;
  }

  void check_ids(const torch::Tensor& ids) const {
    if (ids.numel() == 0) return;
    const auto lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    COLM_CHECK(lo >= 0 && hi < vocab_size_,
               "[bigram] token ids range over [" << lo << ", " << hi << "], outside [0, " << vocab_size_ << ")");
  }

  BigramNet net_{nullptr};
  colm::Tokenizer tokenizer_;
  torch::Device device_ = torch::kCPU;
  int64_t vocab_size_ = 0, hidden_size_ = 0, max_positions_ = 0;
  std::string source_;
  std::shared_ptr<LiveStates> live_;
};

std::unique_ptr<colm::Expert> make_bigram(const colm::ConfigView& config, const colm::PluginContext& context) {
  return guarded("create", [&]() -> std::unique_ptr<colm::Expert> { return std::make_unique<BigramExpert>(config, context); });
}

}  // namespace bigram

COLM_PLUGIN(expert, "bigram", "1.0.0", bigram::make_bigram)
