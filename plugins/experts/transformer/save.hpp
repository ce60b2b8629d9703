// Saving a transformer as an HF checkpoint directory and fingerprinting it by content.
// The Expert class (expert.cpp) decides when; these functions only know the network and tokenizer.
#pragma once
#include <string>

#include "colm/tokenizer.hpp"
#include "transformer.hpp"

namespace colm::transformer {

// config.json (HF field names of the family), model.safetensors (HF names/layouts), tokenizer.json
// when the tokenizer is valid.
void save_checkpoint(const std::string& dir, NetworkImpl& net, torch::Dtype dtype, const Tokenizer& tokenizer);

// SHA-1 over the HF config, every tensor's name, dtype, shape and raw bytes, and the tokenizer's
// fingerprint.
std::string model_fingerprint(NetworkImpl& net, torch::Dtype dtype, const Tokenizer& tokenizer);

}  // namespace colm::transformer
