// An expert a stage can release and a later stage gets back: the runner drops the assistants' weights
// once their scores are cached for joint training, and decoding loads them again on first use.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "colm/expert.hpp"

namespace colm {

// Holds a loaded expert and the recipe to load it again. info(), tokenizer(), device() and
// fingerprint() are answered from the first instance and never load anything, so a score cache can
// be looked up with the weights released. forward(), extend(), new_state(), parameters() and save()
// load the model again when it was released (logged once per reload). set_training() is remembered
// and applied to a reload. release() must not be called while a DecodeState of it is in use.
class ReloadableExpert : public Expert {
 public:
  using Loader = std::function<std::shared_ptr<Expert>()>;
  ReloadableExpert(std::string name, std::shared_ptr<Expert> loaded, Loader loader);

  void release();
  bool resident() const { return model_ != nullptr; }
  int64_t reloads() const { return reloads_; }

  ExpertInfo info() const override { return info_; }
  const Tokenizer& tokenizer() const override { return tokenizer_; }
  torch::Device device() const override { return device_; }
  ExpertOutput forward(const torch::Tensor& ids, const torch::Tensor& mask) override;
  std::unique_ptr<DecodeState> new_state(int64_t rows) const override;
  ExpertOutput extend(DecodeState& state, const std::vector<int64_t>& rows,
                      const std::vector<std::vector<int64_t>>& tokens) override;
  std::vector<torch::Tensor> parameters() override;
  void set_training(bool training) override;
  void save(const std::string& dir) const override;
  std::string fingerprint() const override { return fingerprint_; }

 private:
  Expert& model() const;  // loads it again when released

  std::string name_;
  mutable std::shared_ptr<Expert> model_;
  Loader loader_;
  ExpertInfo info_;
  Tokenizer tokenizer_;
  torch::Device device_ = torch::kCPU;
  std::string fingerprint_;
  bool training_ = false;
  mutable int64_t reloads_ = 0;
};

}  // namespace colm
