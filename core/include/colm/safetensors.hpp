// Safetensors reader and writer and HF checkpoint directories (config.json + model.safetensors, or
// shards through model.safetensors.index.json). Every header field is validated before use.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "colm/error.hpp"
#include "colm/safetensors_header.hpp"  // TensorEntry, SafetensorsHeader, parse_safetensors_header

namespace colm {

// One memory-mapped .safetensors file.
class COLM_VISIBLE SafetensorsFile {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  const SafetensorsHeader& header() const;
  const std::string& path() const;
  bool has(const std::string& name) const;
  // A copy of the tensor converted to `dtype` (F16/BF16 upcast exactly).
  torch::Tensor load(const std::string& name, torch::Dtype dtype = torch::kFloat32) const;

  struct Impl;

 private:
  SafetensorsFile();
  std::unique_ptr<Impl> impl_;
};

// Writes tensors (any order; stored sorted by name, 8-byte aligned header) atomically (tmp + rename).
COLM_VISIBLE void save_safetensors(const std::string& path,
                                   const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                                   const std::map<std::string, std::string>& metadata = {});

// A Hugging Face checkpoint directory.
class COLM_VISIBLE Checkpoint {
 public:
  // Reads config.json and model.safetensors or model.safetensors.index.json (+ shards).
  static Checkpoint open(const std::string& dir);
  const std::string& dir() const { return dir_; }
  const nlohmann::json& config() const { return config_; }
  bool has(const std::string& name) const;
  std::vector<std::string> names() const;
  const TensorEntry& entry(const std::string& name) const;
  torch::Tensor load(const std::string& name, torch::Dtype dtype = torch::kFloat32) const;
  // Dtype the weights are stored in ("F32", "BF16", ... ; "mixed" when they differ).
  std::string stored_dtype() const;

 private:
  std::string dir_;
  nlohmann::json config_;
  std::map<std::string, std::shared_ptr<SafetensorsFile>> where_;  // tensor -> file
};

}  // namespace colm
