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

// SHA-1 over the HF config, every tensor's name, dtype, shape and raw bytes (checkpoint layout, at
// `dtype`), and the tokenizer's fingerprint. With `checkpoint`, the bytes are streamed from the file
// the weights were loaded from (`sources`: load_weights' result), converted piece by piece when the
// file stores another dtype; without, from the parameters, one tensor at a time. Both give the same
// fingerprint for the same values, and no copy of the model is made either way.
std::string model_fingerprint(NetworkImpl& net, torch::Dtype dtype, const Tokenizer& tokenizer,
                              const Checkpoint* checkpoint = nullptr, const std::vector<std::string>& sources = {});

}  // namespace colm::transformer
