// The Llama family (also Mistral and Qwen2 checkpoints): RMSNorm, rotate_half RoPE with rope_theta (and rope_scaling),
// SwiGLU MLP, grouped-query attention, optional q/k/v biases, tied or separate lm_head.
#include <cmath>

#include "transformer.hpp"

namespace colm::transformer {
namespace {

// HF LlamaRMSNorm: normalise in float32, scale in the compute dtype.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  auto xf = x.to(torch::kFloat32);
  auto n = xf * torch::rsqrt(xf.pow(2).mean(-1, true) + eps);
  return weight * n.to(x.scalar_type());
}

// Hugging Face's RoPE pairs dimension i with i + hd/2 (weights converted from Meta's interleaved
// layout are permuted to match; the fixtures catch the interleaved variant).
torch::Tensor rotate_half(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

struct LlamaLayerImpl : torch::nn::Module {
  explicit LlamaLayerImpl(const ModelConfig& c)
      : input_norm(register_parameter("input_layernorm", torch::ones({c.hidden}))),
        q_proj(register_module("q_proj", Linear(c.hidden, c.n_head * c.head_dim, c.attention_bias))),
        k_proj(register_module("k_proj", Linear(c.hidden, c.n_kv_head * c.head_dim, c.attention_bias))),
        v_proj(register_module("v_proj", Linear(c.hidden, c.n_kv_head * c.head_dim, c.attention_bias))),
        o_proj(register_module("o_proj", Linear(c.n_head * c.head_dim, c.hidden, false))),
        post_norm(register_parameter("post_attention_layernorm", torch::ones({c.hidden}))),
        gate_proj(register_module("gate_proj", Linear(c.hidden, c.d_ff, false))),
        up_proj(register_module("up_proj", Linear(c.hidden, c.d_ff, false))),
        down_proj(register_module("down_proj", Linear(c.d_ff, c.hidden, false))) {}

  // x: [B,T,d]; cos, sin: [B,1,T,hd] -> [B,T,d]
  torch::Tensor forward(const torch::Tensor& x_in, const torch::Tensor& cos, const torch::Tensor& sin,
                        const ModelConfig& c, const AttentionPlan& plan, int64_t layer) {
    const int64_t B = x_in.size(0), T = x_in.size(1);
    const bool drop = is_training() && c.dropout > 0;
    auto h = rms_norm(x_in, input_norm, c.norm_eps);
    auto q = q_proj(h).view({B, T, c.n_head, c.head_dim}).transpose(1, 2);     // [B,H,T,hd]
    auto k = k_proj(h).view({B, T, c.n_kv_head, c.head_dim}).transpose(1, 2);  // [B,Hkv,T,hd]
    auto v = v_proj(h).view({B, T, c.n_kv_head, c.head_dim}).transpose(1, 2);
    q = q * cos + rotate_half(q) * sin;
    k = k * cos + rotate_half(k) * sin;
    auto a = o_proj(attend(plan, layer, q, k, v));
    if (drop) a = torch::dropout(a, c.dropout, true);
    auto x = x_in + a;
    h = rms_norm(x, post_norm, c.norm_eps);
    auto m = down_proj(torch::silu(gate_proj(h)) * up_proj(h));
    if (drop) m = torch::dropout(m, c.dropout, true);
    return x + m;
  }

  torch::Tensor input_norm;
  Linear q_proj, k_proj, v_proj, o_proj;
  torch::Tensor post_norm;
  Linear gate_proj, up_proj, down_proj;
};
TORCH_MODULE(LlamaLayer);

class LlamaImpl : public NetworkImpl {
 public:
  explicit LlamaImpl(const ModelConfig& c) : NetworkImpl(c) {
    embed_ = register_parameter("embed_tokens", torch::empty({c.vocab_size, c.hidden}));
    for (int64_t i = 0; i < c.n_layer; ++i) layers_.push_back(register_module("layer" + std::to_string(i), LlamaLayer(c)));
    norm_ = register_parameter("norm", torch::ones({c.hidden}));
    lm_head_ = c.tie_embeddings ? embed_ : register_parameter("lm_head", torch::empty({c.vocab_size, c.hidden}));
    // cos/sin for every position, computed in double then rounded once; buffers follow .to(device).
    auto inv_freq = rope_inv_freq(c.rope_theta, c.head_dim, c.rope_scaling);  // rope.hpp: scaling included
    auto angles = torch::outer(torch::arange(c.max_positions, torch::kFloat64), inv_freq);  // [P, hd/2]
    auto emb = torch::cat({angles, angles}, -1);                                             // [P, hd]
    cos_ = register_buffer("rope_cos", emb.cos().to(torch::kFloat32));
    sin_ = register_buffer("rope_sin", emb.sin().to(torch::kFloat32));
  }

  torch::Tensor hidden(const torch::Tensor& ids, const torch::Tensor& positions, const AttentionPlan& plan) override {
    auto x = torch::embedding(embed_, ids);  // [B,T,d]
    auto cos = torch::embedding(cos_, positions).unsqueeze(1).to(x.scalar_type());  // [B,1,T,hd]
    auto sin = torch::embedding(sin_, positions).unsqueeze(1).to(x.scalar_type());
    if (is_training() && config_.dropout > 0) x = torch::dropout(x, config_.dropout, true);
    for (size_t i = 0; i < layers_.size(); ++i) {
      x = layers_[i]->forward(x, cos, sin, config_, plan, static_cast<int64_t>(i));
    }
    return rms_norm(x, norm_, config_.norm_eps);
  }

  torch::Tensor output_weight() override { return lm_head_; }

  std::vector<WeightSpec> weights() override {
    using I = WeightSpec::Init;
    std::vector<WeightSpec> w;
    auto add = [&](const std::string& name, const torch::Tensor& p, I init) {
      w.push_back(WeightSpec{name, {}, p, false, init});
    };
    add("model.embed_tokens.weight", embed_, I::normal);
    for (size_t i = 0; i < layers_.size(); ++i) {
      const auto& l = layers_[i];
      const std::string p = "model.layers." + std::to_string(i) + ".";
      add(p + "input_layernorm.weight", l->input_norm, I::ones);
      add(p + "self_attn.q_proj.weight", l->q_proj->weight, I::normal);
      add(p + "self_attn.k_proj.weight", l->k_proj->weight, I::normal);
      add(p + "self_attn.v_proj.weight", l->v_proj->weight, I::normal);
      if (config_.attention_bias) {
        add(p + "self_attn.q_proj.bias", l->q_proj->bias, I::zeros);
        add(p + "self_attn.k_proj.bias", l->k_proj->bias, I::zeros);
        add(p + "self_attn.v_proj.bias", l->v_proj->bias, I::zeros);
      }
      add(p + "self_attn.o_proj.weight", l->o_proj->weight, I::normal_residual);
      add(p + "post_attention_layernorm.weight", l->post_norm, I::ones);
      add(p + "mlp.gate_proj.weight", l->gate_proj->weight, I::normal);
      add(p + "mlp.up_proj.weight", l->up_proj->weight, I::normal);
      add(p + "mlp.down_proj.weight", l->down_proj->weight, I::normal_residual);
    }
    add("model.norm.weight", norm_, I::ones);
    if (!config_.tie_embeddings) add("lm_head.weight", lm_head_, I::normal);
    return w;
  }

  bool ignorable(const std::string& name) const override {
    // Old exports keep RoPE's inv_freq buffer; tied checkpoints sometimes still carry lm_head.
    const std::string tail = "rotary_emb.inv_freq";
    if (name.size() >= tail.size() && name.compare(name.size() - tail.size(), tail.size(), tail) == 0) return true;
    return config_.tie_embeddings && name == "lm_head.weight";
  }

 private:
  torch::Tensor embed_;
  std::vector<LlamaLayer> layers_;
  torch::Tensor norm_, lm_head_;
  torch::Tensor cos_, sin_;
};

}  // namespace

std::shared_ptr<NetworkImpl> make_llama(const ModelConfig& config) { return std::make_shared<LlamaImpl>(config); }

}  // namespace colm::transformer
