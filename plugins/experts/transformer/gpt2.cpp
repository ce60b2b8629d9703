// The GPT-2 family (Hugging Face GPT2LMHeadModel): learned positions, pre-LayerNorm blocks,
// gelu_new (tanh) MLP, Conv1D weights stored [in, out], c_attn packing q,k,v, lm_head tied to wte.
#include <cmath>

#include "transformer.hpp"

namespace colm::transformer {
namespace {

struct Gpt2BlockImpl : torch::nn::Module {
  Gpt2BlockImpl(const ModelConfig& c)
      : ln_1_w(register_parameter("ln_1_weight", torch::ones({c.hidden}))),
        ln_1_b(register_parameter("ln_1_bias", torch::zeros({c.hidden}))),
        c_attn(register_module("c_attn", Linear(c.hidden, 3 * c.hidden, true))),
        attn_proj(register_module("attn_c_proj", Linear(c.hidden, c.hidden, true))),
        ln_2_w(register_parameter("ln_2_weight", torch::ones({c.hidden}))),
        ln_2_b(register_parameter("ln_2_bias", torch::zeros({c.hidden}))),
        c_fc(register_module("c_fc", Linear(c.hidden, c.d_ff, true))),
        mlp_proj(register_module("mlp_c_proj", Linear(c.d_ff, c.hidden, true))) {}

  // x: [B,T,d] -> [B,T,d]
  torch::Tensor forward(const torch::Tensor& x_in, const ModelConfig& c, const AttentionPlan& plan, int64_t layer) {
    const int64_t B = x_in.size(0), T = x_in.size(1), d = c.hidden;
    const bool drop = is_training() && c.dropout > 0;
    auto h = torch::layer_norm(x_in, {d}, ln_1_w, ln_1_b, c.norm_eps);
    auto qkv = c_attn(h).view({B, T, 3, c.n_head, c.head_dim});  // c_attn output: q | k | v
    auto q = qkv.select(2, 0).transpose(1, 2);                     // [B,H,T,hd]
    auto k = qkv.select(2, 1).transpose(1, 2);
    auto v = qkv.select(2, 2).transpose(1, 2);
    auto a = attn_proj(attend(plan, layer, q, k, v));
    if (drop) a = torch::dropout(a, c.dropout, true);
    auto x = x_in + a;
    h = torch::layer_norm(x, {d}, ln_2_w, ln_2_b, c.norm_eps);
    auto m = mlp_proj(torch::gelu(c_fc(h), "tanh"));
    if (drop) m = torch::dropout(m, c.dropout, true);
    return x + m;
  }

  torch::Tensor ln_1_w, ln_1_b;
  Linear c_attn, attn_proj;
  torch::Tensor ln_2_w, ln_2_b;
  Linear c_fc, mlp_proj;
};
TORCH_MODULE(Gpt2Block);

class Gpt2Impl : public NetworkImpl {
 public:
  explicit Gpt2Impl(const ModelConfig& c) : NetworkImpl(c) {
    wte_ = register_parameter("wte", torch::empty({c.vocab_size, c.hidden}));
    wpe_ = register_parameter("wpe", torch::empty({c.max_positions, c.hidden}));
    for (int64_t i = 0; i < c.n_layer; ++i) blocks_.push_back(register_module("h" + std::to_string(i), Gpt2Block(c)));
    ln_f_w_ = register_parameter("ln_f_weight", torch::ones({c.hidden}));
    ln_f_b_ = register_parameter("ln_f_bias", torch::zeros({c.hidden}));
  }

  torch::Tensor hidden(const torch::Tensor& ids, const torch::Tensor& positions, const AttentionPlan& plan) override {
    auto x = torch::embedding(wte_, ids) + torch::embedding(wpe_, positions);  // [B,T,d]
    if (is_training() && config_.dropout > 0) x = torch::dropout(x, config_.dropout, true);
    for (size_t i = 0; i < blocks_.size(); ++i) x = blocks_[i]->forward(x, config_, plan, static_cast<int64_t>(i));
    return torch::layer_norm(x, {config_.hidden}, ln_f_w_, ln_f_b_, config_.norm_eps);
  }

  torch::Tensor output_weight() override { return wte_; }

  std::vector<WeightSpec> weights() override {
    using I = WeightSpec::Init;
    std::vector<WeightSpec> w;
    // Hub checkpoints (e.g. the original `gpt2`) drop the `transformer.` prefix: accept both.
    auto add = [&](const std::string& name, const torch::Tensor& p, bool conv1d, I init) {
      w.push_back(WeightSpec{"transformer." + name, {name}, p, conv1d, init});
    };
    add("wte.weight", wte_, false, I::normal);
    add("wpe.weight", wpe_, false, I::normal);  // HF inits wpe like wte: N(0, 0.02)
    for (size_t i = 0; i < blocks_.size(); ++i) {
      const auto& b = blocks_[i];
      const std::string p = "h." + std::to_string(i) + ".";
      add(p + "ln_1.weight", b->ln_1_w, false, I::ones);
      add(p + "ln_1.bias", b->ln_1_b, false, I::zeros);
      add(p + "attn.c_attn.weight", b->c_attn->weight, true, I::normal);
      add(p + "attn.c_attn.bias", b->c_attn->bias, false, I::zeros);
      add(p + "attn.c_proj.weight", b->attn_proj->weight, true, I::normal_residual);
      add(p + "attn.c_proj.bias", b->attn_proj->bias, false, I::zeros);
      add(p + "ln_2.weight", b->ln_2_w, false, I::ones);
      add(p + "ln_2.bias", b->ln_2_b, false, I::zeros);
      add(p + "mlp.c_fc.weight", b->c_fc->weight, true, I::normal);
      add(p + "mlp.c_fc.bias", b->c_fc->bias, false, I::zeros);
      add(p + "mlp.c_proj.weight", b->mlp_proj->weight, true, I::normal_residual);
      add(p + "mlp.c_proj.bias", b->mlp_proj->bias, false, I::zeros);
    }
    add("ln_f.weight", ln_f_w_, false, I::ones);
    add("ln_f.bias", ln_f_b_, false, I::zeros);
    return w;
  }

  bool ignorable(const std::string& name) const override {
    // Causal-mask buffers saved by older transformers versions, and the tied head some exports keep.
    auto ends_with = [&](const std::string& s) {
      return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
    };
    return ends_with(".attn.bias") || ends_with(".attn.masked_bias") || name == "lm_head.weight";
  }

 private:
  torch::Tensor wte_, wpe_;
  std::vector<Gpt2Block> blocks_;
  torch::Tensor ln_f_w_, ln_f_b_;
};

}  // namespace

std::shared_ptr<NetworkImpl> make_gpt2(const ModelConfig& config) { return std::make_shared<Gpt2Impl>(config); }

}  // namespace colm::transformer
