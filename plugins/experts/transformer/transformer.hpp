// Shared internals of the `transformer` expert plugin: the architecture description, the linear
// layer, attention with a per-row KV cache, and the interface each family file (gpt2, llama) fills.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "colm/config.hpp"
#include "colm/error.hpp"
#include "colm/safetensors.hpp"
#include "rope.hpp"

namespace colm::transformer {

constexpr const char* kPluginVersion = "0.1.0";

enum class Family { gpt2, llama };
const char* to_string(Family family);

// Architecture of one model, whatever its source (a config.json or the plugin's own keys).
struct ModelConfig {
  Family family = Family::gpt2;
  std::string model_type = "gpt2";   // as written in config.json: gpt2, llama, mistral, qwen2
  int64_t vocab_size = 0;            // rows of the output layer
  int64_t hidden = 0;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_kv_head = 0;             // == n_head for gpt2
  int64_t head_dim = 0;
  int64_t d_ff = 0;
  int64_t max_positions = 0;
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;       // llama family only
  RopeScaling rope_scaling;          // llama family only: config.json's rope_scaling (linear, llama3)
  bool tie_embeddings = true;
  bool attention_bias = false;       // llama family: q/k/v projections carry biases (qwen2)
  std::optional<int64_t> bos_id, eos_id;
  double dropout = 0.0;              // training only; never saved as part of the identity

  void validate(const std::string& where) const;
};

// Reads a Hugging Face config.json (model_type gpt2, llama, mistral, qwen2). `where` names the file.
ModelConfig config_from_hf(const nlohmann::json& json, const std::string& where);
// The Hugging Face config.json of a model (field names of its family).
nlohmann::json config_to_hf(const ModelConfig& config, torch::Dtype dtype);

std::string dtype_name(torch::Dtype dtype);  // "float32", "bfloat16"

// nn.Linear with weight [out, in]. A single input row goes through addmv (BLAS gemv), which
// streams the weight about twice as fast as addmm does on this platform (DESIGN.md section 7).
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in, int64_t out, bool bias);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;  // [out, in]
  torch::Tensor bias;    // [out] or undefined
};
TORCH_MODULE(Linear);

// y = x W^T for x [..., in] with the same gemv fast path (used by the tied output layer).
torch::Tensor linear_rows(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);
// y = x2 W^T + b for 2-48 rows x2 [R, in], float32 on the CPU without autograd, by a kernel that
// streams the weight once for all rows (skinny.cpp); an undefined tensor when it does not apply.
torch::Tensor skinny_linear(const torch::Tensor& x2, const torch::Tensor& weight, const torch::Tensor& bias);
// The instruction set the kernel uses on this CPU, and the kernel with a chosen one (tests run the
// AVX2 path on AVX-512 machines too); undefined where the CPU lacks it.
enum class SkinnyIsa { none, avx2, avx512 };
SkinnyIsa skinny_isa();
torch::Tensor skinny_linear(const torch::Tensor& x2, const torch::Tensor& weight, const torch::Tensor& bias,
                            SkinnyIsa isa);

// Per-layer key/value buffers [rows, kv_heads, capacity, head_dim] that grow by doubling.
struct KvCache {
  int64_t rows = 0;
  int64_t capacity = 0;
  std::vector<torch::Tensor> k, v;
  // Makes room for `needed` positions per row, keeping what is there.
  void reserve(int64_t needed, const ModelConfig& config, torch::Dtype dtype, torch::Device device);
};

// How attention sees keys and values in one call: the whole sequence (teacher-forced forward) or
// the KV cache of the rows being extended (new keys written at each row's own offset first).
struct AttentionPlan {
  torch::Tensor bias;          // additive mask [B,1,T,L] in the compute dtype (0 or a large negative)
  double dropout = 0.0;        // attention-probability dropout (training only)
  bool training = false;
  KvCache* cache = nullptr;    // extend mode when set
  torch::Tensor write_index;   // flat rows x kv_heads x capacity index of each new [R,Hkv,T] entry
  int64_t key_length = 0;      // L: keys attended over (cache mode)
  int64_t row_begin = -1;      // >= 0 when the rows are one ascending run: views instead of copies
  torch::Tensor row_index;     // [R] cache rows otherwise
};

// q [B,H,T,hd], k and v [B,Hkv,T,hd] for the new tokens -> [B,T,H*hd]. Query head h reads kv head
// h / (H / Hkv) (grouped-query attention, Hugging Face's repeat_kv order).
torch::Tensor attend(const AttentionPlan& plan, int64_t layer, const torch::Tensor& q, const torch::Tensor& k,
                     const torch::Tensor& v);

// One weight as the checkpoint names it, the parameter it fills and how a fresh model draws it.
struct WeightSpec {
  enum class Init { normal, normal_residual, ones, zeros };
  std::string name;                   // Hugging Face name written by save()
  std::vector<std::string> aliases;   // other names accepted when loading
  torch::Tensor param;
  bool conv1d = false;                // stored [in, out] (GPT-2 Conv1D): the transpose of param
  Init init = Init::normal;
};

// A family's network. hidden() returns the final-norm hidden states for ids at the given positions,
// with attention going through `plan`; logits come from output_weight().
class NetworkImpl : public torch::nn::Module {
 public:
  explicit NetworkImpl(ModelConfig config) : config_(std::move(config)) {}
  const ModelConfig& config() const { return config_; }
  // ids, positions: [B,T] int64 -> [B,T,d]
  virtual torch::Tensor hidden(const torch::Tensor& ids, const torch::Tensor& positions,
                               const AttentionPlan& plan) = 0;
  virtual torch::Tensor output_weight() = 0;  // [V,d]
  // Every tensor of the checkpoint format, in a fixed order (loading, saving, init, fingerprint).
  virtual std::vector<WeightSpec> weights() = 0;
  // Checkpoint names that carry no weights (buffers such as GPT-2's attn.bias); skipped silently.
  virtual bool ignorable(const std::string& name) const = 0;

 protected:
  ModelConfig config_;
};

std::shared_ptr<NetworkImpl> make_gpt2(const ModelConfig& config);
std::shared_ptr<NetworkImpl> make_llama(const ModelConfig& config);
std::shared_ptr<NetworkImpl> make_network(const ModelConfig& config);

// Makes the network's parameters the checkpoint's tensors at `dtype` (Checkpoint::map: the file's
// memory-mapped bytes where it stores them at `dtype`, converted otherwise; GPT-2 Conv1D weights
// transposed from the stored [in, out] layout into a copy, the file's pages released). The
// placeholders the network was built with are dropped unwritten, so loading costs the weights'
// bytes once. A missing or misshaped tensor is a colm::Error naming it with the expected and actual
// shapes. Returns the checkpoint name each of weights() came from, in that order.
std::vector<std::string> load_weights(NetworkImpl& net, const Checkpoint& checkpoint, torch::Dtype dtype);
// GPT-2-style random init: N(0, 0.02), residual projections N(0, 0.02/sqrt(2 n_layer)), norms 1,
// biases 0, drawn on the CPU in weights() order from one generator: deterministic for a seed.
void init_weights(NetworkImpl& net, uint64_t seed);
// The tensors in checkpoint layout (CPU, contiguous), for save_safetensors.
std::vector<std::pair<std::string, torch::Tensor>> checkpoint_tensors(NetworkImpl& net);

}  // namespace colm::transformer
