// Safetensors reader and writer and HF checkpoint directories (config.json + model.safetensors, or
// shards through model.safetensors.index.json). Every header field is validated before use.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "colm/error.hpp"
#include "colm/safetensors_header.hpp"  // TensorEntry, SafetensorsHeader, parse_safetensors_header

namespace colm {

// One memory-mapped .safetensors file. The mapping is private and copy-on-write: a tensor that
// aliases it may be written in place (training), and the writes never reach the file. Files are
// replaced by rename (save_safetensors), which leaves a mapping of the old file intact; a file
// truncated or rewritten in place under a live mapping is not supported (as with any mmap loader).
class COLM_VISIBLE SafetensorsFile : public std::enable_shared_from_this<SafetensorsFile> {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  const SafetensorsHeader& header() const;
  const std::string& path() const;
  bool has(const std::string& name) const;
  // A copy of the tensor converted to `dtype` (F16/BF16 upcast exactly).
  torch::Tensor load(const std::string& name, torch::Dtype dtype = torch::kFloat32) const;
  // A copy of a matrix stored [rows, cols] as a contiguous [cols, rows] tensor at `dtype`, converted
  // and transposed piece by piece (GPT-2's Conv1D weights into the nn.Linear layout).
  torch::Tensor load_transposed(const std::string& name, torch::Dtype dtype) const;
  // The tensor at `dtype` with no second copy of its bytes: when the file stores it at `dtype` at an
  // offset aligned for the element type, the result aliases the mapping (its pages are read from the
  // file as they are touched, and the mapping lives as long as the tensor does); otherwise it is
  // converted piece by piece into a new tensor. Either way the result is contiguous in the file's shape.
  torch::Tensor map(const std::string& name, torch::Dtype dtype) const;
  // The tensor's values at `dtype` as contiguous bytes, in pieces of at most a few MB: the file's own
  // bytes when stored at `dtype`, converted piece by piece otherwise. Nothing is copied whole.
  void stream(const std::string& name, torch::Dtype dtype,
              const std::function<void(const void* data, size_t bytes)>& sink) const;
  // Whether a live tensor from map() aliases the tensor's bytes.
  bool aliased(const std::string& name) const;
  // Drops the tensor's pages from this process's resident memory (they stay in the page cache) unless a
  // live tensor aliases them. load(), load_transposed(), stream() and a converting map() release
  // what they read this way, piece by piece.
  void release(const std::string& name) const;

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
  // SafetensorsFile::load_transposed, map, stream, aliased and release for the file holding `name`.
  torch::Tensor load_transposed(const std::string& name, torch::Dtype dtype) const;
  torch::Tensor map(const std::string& name, torch::Dtype dtype) const;
  void stream(const std::string& name, torch::Dtype dtype,
              const std::function<void(const void* data, size_t bytes)>& sink) const;
  bool aliased(const std::string& name) const;
  void release(const std::string& name) const;
  // Dtype the weights are stored in ("F32", "BF16", ... ; "mixed" when they differ).
  std::string stored_dtype() const;

 private:
  std::string dir_;
  nlohmann::json config_;
  std::map<std::string, std::shared_ptr<SafetensorsFile>> where_;  // tensor -> file
};

}  // namespace colm
