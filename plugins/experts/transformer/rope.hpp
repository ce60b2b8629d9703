// RoPE inverse frequencies with the rope_scaling of Hugging Face config.json files: none (plain
// RoPE), "linear" (positions divided by `factor`, i.e. every frequency divided by it) and "llama3"
// (Llama 3.1/3.2: long wavelengths divided by `factor`, short ones kept, a smooth blend between).
// Self-contained (no other plugin file), so that the tests compile it directly.
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

namespace colm::transformer {

struct RopeScaling {
  std::string type = "default";         // "default" (none), "linear" or "llama3"
  double factor = 1.0;                  // linear, llama3
  double low_freq_factor = 1.0;         // llama3
  double high_freq_factor = 4.0;        // llama3
  int64_t original_max_positions = 0;   // llama3: original_max_position_embeddings
  bool operator==(const RopeScaling& o) const {
    return type == o.type && factor == o.factor && low_freq_factor == o.low_freq_factor &&
           high_freq_factor == o.high_freq_factor && original_max_positions == o.original_max_positions;
  }
};

// The config.json value of "rope_scaling" (absent or null: none). Unknown types (dynamic, yarn,
// longrope, ...) and bad values are errors naming `where` and the field.
RopeScaling rope_scaling_from_hf(const nlohmann::json& value, const std::string& where);
// Back to config.json: null for none.
nlohmann::json rope_scaling_to_hf(const RopeScaling& scaling);
// inv_freq[i] = theta^(-2i/head_dim), i < head_dim/2, then scaled: [head_dim/2] float64.
torch::Tensor rope_inv_freq(double theta, int64_t head_dim, const RopeScaling& scaling);

}  // namespace colm::transformer
