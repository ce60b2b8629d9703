// Architecture descriptions: Hugging Face config.json <-> ModelConfig for the gpt2 and llama
// families (mistral and qwen2 are llama-shaped). The plugin's own keys are read in expert.cpp.
#include <cmath>

#include "transformer.hpp"

namespace colm::transformer {
namespace {

// A required integer field; `where` names the config file.
int64_t need_int(const nlohmann::json& j, const std::string& key, const std::string& where) {
  auto it = j.find(key);
  COLM_CHECK(it != j.end() && !it->is_null(), where << ": missing field '" << key << "'");
  COLM_CHECK(it->is_number_integer(), where << ": field '" << key << "' must be an integer, got " << it->dump());
  return it->get<int64_t>();
}

int64_t opt_int(const nlohmann::json& j, const std::string& key, int64_t def, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  COLM_CHECK(it->is_number_integer(), where << ": field '" << key << "' must be an integer, got " << it->dump());
  return it->get<int64_t>();
}

double opt_double(const nlohmann::json& j, const std::string& key, double def, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  COLM_CHECK(it->is_number(), where << ": field '" << key << "' must be a number, got " << it->dump());
  return it->get<double>();
}

bool opt_bool(const nlohmann::json& j, const std::string& key, bool def, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  COLM_CHECK(it->is_boolean(), where << ": field '" << key << "' must be true or false, got " << it->dump());
  return it->get<bool>();
}

// bos/eos ids may be an int or a list (some configs list several eos ids); the first one is kept.
std::optional<int64_t> opt_token(const nlohmann::json& j, const std::string& key) {
  auto it = j.find(key);
  if (it == j.end()) return std::nullopt;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_array() && !it->empty() && (*it)[0].is_number_integer()) return (*it)[0].get<int64_t>();
  return std::nullopt;
}

}  // namespace

const char* to_string(Family family) { return family == Family::gpt2 ? "gpt2" : "llama"; }

std::string dtype_name(torch::Dtype dtype) {
  if (dtype == torch::kFloat32) return "float32";
  if (dtype == torch::kBFloat16) return "bfloat16";
  if (dtype == torch::kFloat16) return "float16";
  return std::string(c10::toString(dtype));
}

void ModelConfig::validate(const std::string& where) const {
  COLM_CHECK(vocab_size > 0, where << ": vocab_size must be positive, got " << vocab_size);
  COLM_CHECK(hidden > 0, where << ": hidden size must be positive, got " << hidden);
  COLM_CHECK(n_layer > 0, where << ": number of layers must be positive, got " << n_layer);
  COLM_CHECK(n_head > 0, where << ": number of attention heads must be positive, got " << n_head);
  COLM_CHECK(n_kv_head > 0 && n_head % n_kv_head == 0,
             where << ": key/value heads (" << n_kv_head << ") must divide the attention heads (" << n_head << ")");
  COLM_CHECK(head_dim > 0, where << ": head_dim must be positive, got " << head_dim);
  if (family == Family::gpt2) {
    COLM_CHECK(hidden % n_head == 0, where << ": n_embd (" << hidden << ") must be a multiple of n_head (" << n_head << ")");
  } else {
    COLM_CHECK(head_dim % 2 == 0, where << ": head_dim must be even for RoPE, got " << head_dim);
    COLM_CHECK(rope_theta > 0, where << ": rope_theta must be positive, got " << rope_theta);
  }
  COLM_CHECK(d_ff > 0, where << ": feed-forward size must be positive, got " << d_ff);
  COLM_CHECK(max_positions > 0, where << ": max positions must be positive, got " << max_positions);
  COLM_CHECK(norm_eps > 0, where << ": norm epsilon must be positive, got " << norm_eps);
  COLM_CHECK(dropout >= 0 && dropout < 1, where << ": dropout must be in [0, 1), got " << dropout);
}

ModelConfig config_from_hf(const nlohmann::json& j, const std::string& where) {
  COLM_CHECK(j.is_object(), where << ": not a JSON object");
  auto mt = j.find("model_type");
  COLM_CHECK(mt != j.end() && mt->is_string(), where << ": missing string field 'model_type'");
  ModelConfig c;
  c.model_type = mt->get<std::string>();
  c.bos_id = opt_token(j, "bos_token_id");
  c.eos_id = opt_token(j, "eos_token_id");
  if (c.model_type == "gpt2") {
    c.family = Family::gpt2;
    c.vocab_size = need_int(j, "vocab_size", where);
    c.hidden = need_int(j, "n_embd", where);
    c.n_layer = need_int(j, "n_layer", where);
    c.n_head = need_int(j, "n_head", where);
    c.n_kv_head = c.n_head;
    c.head_dim = c.n_head > 0 ? c.hidden / c.n_head : 0;
    c.d_ff = opt_int(j, "n_inner", 4 * c.hidden, where);
    c.max_positions = need_int(j, "n_positions", where);
    c.norm_eps = opt_double(j, "layer_norm_epsilon", 1e-5, where);
    c.tie_embeddings = true;  // GPT2LMHeadModel always ties lm_head to wte
    const std::string act = j.value("activation_function", std::string("gelu_new"));
    COLM_CHECK(act == "gelu_new" || act == "gelu_pytorch_tanh",
               where << ": activation_function '" << act << "' is not supported (gelu_new only)");
    COLM_CHECK(!opt_bool(j, "scale_attn_by_inverse_layer_idx", false, where),
               where << ": scale_attn_by_inverse_layer_idx = true is not supported");
    COLM_CHECK(opt_bool(j, "scale_attn_weights", true, where), where << ": scale_attn_weights = false is not supported");
  } else if (c.model_type == "llama" || c.model_type == "mistral" || c.model_type == "qwen2") {
    c.family = Family::llama;
    c.vocab_size = need_int(j, "vocab_size", where);
    c.hidden = need_int(j, "hidden_size", where);
    c.n_layer = need_int(j, "num_hidden_layers", where);
    c.n_head = need_int(j, "num_attention_heads", where);
    c.n_kv_head = opt_int(j, "num_key_value_heads", c.n_head, where);
    c.head_dim = opt_int(j, "head_dim", c.n_head > 0 ? c.hidden / c.n_head : 0, where);
    c.d_ff = need_int(j, "intermediate_size", where);
    c.max_positions = need_int(j, "max_position_embeddings", where);
    c.norm_eps = opt_double(j, "rms_norm_eps", 1e-6, where);
    c.rope_theta = opt_double(j, "rope_theta", 10000.0, where);
    c.tie_embeddings = opt_bool(j, "tie_word_embeddings", false, where);
    // qwen2 has q/k/v biases without saying so in older configs; the loader also looks at the tensors.
    c.attention_bias = opt_bool(j, "attention_bias", c.model_type == "qwen2", where);
    COLM_CHECK(!opt_bool(j, "mlp_bias", false, where), where << ": mlp_bias = true is not supported");
    const std::string act = j.value("hidden_act", std::string("silu"));
    COLM_CHECK(act == "silu", where << ": hidden_act '" << act << "' is not supported (silu only)");
    if (const auto rs = j.find("rope_scaling"); rs != j.end()) c.rope_scaling = rope_scaling_from_hf(*rs, where);
    // Sliding-window attention is not implemented: limiting the context to the window keeps every
    // answer exact instead of silently wrong past it.
    const bool sliding = c.model_type == "mistral" ? true : opt_bool(j, "use_sliding_window", false, where);
    const int64_t window = opt_int(j, "sliding_window", 0, where);
    if (sliding && window > 0 && window < c.max_positions) c.max_positions = window;
  } else {
    throw Error(where + ": model_type '" + c.model_type + "' is not supported (gpt2, llama, mistral, qwen2)");
  }
  c.validate(where);
  return c;
}

nlohmann::json config_to_hf(const ModelConfig& c, torch::Dtype dtype) {
  nlohmann::json j;
  if (c.family == Family::gpt2) {
    j["architectures"] = {"GPT2LMHeadModel"};
    j["model_type"] = "gpt2";
    j["vocab_size"] = c.vocab_size;
    j["n_embd"] = c.hidden;
    j["n_layer"] = c.n_layer;
    j["n_head"] = c.n_head;
    j["n_inner"] = c.d_ff;
    j["n_positions"] = c.max_positions;
    j["n_ctx"] = c.max_positions;
    j["layer_norm_epsilon"] = c.norm_eps;
    j["activation_function"] = "gelu_new";
    j["tie_word_embeddings"] = true;
  } else {
    const std::string mt = c.model_type;
    j["architectures"] = {mt == "mistral" ? "MistralForCausalLM" : mt == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"};
    j["model_type"] = mt;
    j["vocab_size"] = c.vocab_size;
    j["hidden_size"] = c.hidden;
    j["intermediate_size"] = c.d_ff;
    j["num_hidden_layers"] = c.n_layer;
    j["num_attention_heads"] = c.n_head;
    j["num_key_value_heads"] = c.n_kv_head;
    j["head_dim"] = c.head_dim;
    j["hidden_act"] = "silu";
    j["max_position_embeddings"] = c.max_positions;
    j["rms_norm_eps"] = c.norm_eps;
    j["rope_theta"] = c.rope_theta;
    j["rope_scaling"] = rope_scaling_to_hf(c.rope_scaling);
    j["tie_word_embeddings"] = c.tie_embeddings;
    j["attention_bias"] = c.attention_bias;
    j["mlp_bias"] = false;
    if (mt != "llama") j["use_sliding_window"] = false;
  }
  if (c.bos_id) j["bos_token_id"] = *c.bos_id;
  if (c.eos_id) j["eos_token_id"] = *c.eos_id;
  j["torch_dtype"] = dtype_name(dtype);
  return j;
}

std::shared_ptr<NetworkImpl> make_network(const ModelConfig& config) {
  return config.family == Family::gpt2 ? make_gpt2(config) : make_llama(config);
}

}  // namespace colm::transformer
