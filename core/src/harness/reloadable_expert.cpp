// ReloadableExpert (see reloadable_expert.hpp): release() drops the weights, the next use loads them.
#include "harness/reloadable_expert.hpp"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

namespace colm {

ReloadableExpert::ReloadableExpert(std::string name, std::shared_ptr<Expert> loaded, Loader loader)
    : name_(std::move(name)), model_(std::move(loaded)), loader_(std::move(loader)) {
  COLM_CHECK(model_ != nullptr, "[runner] ReloadableExpert '" << name_ << "': no expert");
  COLM_CHECK(static_cast<bool>(loader_), "[runner] ReloadableExpert '" << name_ << "': no loader");
  info_ = model_->info();
  tokenizer_ = model_->tokenizer();
  device_ = model_->device();
  fingerprint_ = model_->fingerprint();
}

void ReloadableExpert::release() {
  if (!model_) return;
  spdlog::info("[runner] expert '{}' released (its weights are not needed until decoding)", name_);
  model_.reset();
}

Expert& ReloadableExpert::model() const {
  if (!model_) {
    spdlog::info("[runner] loading expert '{}' again", name_);
    auto fresh = loader_();
    COLM_CHECK(fresh != nullptr && fresh->fingerprint() == fingerprint_,
               "[runner] expert '" << name_ << "' loaded again is not the model it was (fingerprint "
                                   << (fresh ? fresh->fingerprint() : std::string("none")) << ", expected "
                                   << fingerprint_ << "): did its checkpoint change during the run?");
    fresh->set_training(training_);
    model_ = std::move(fresh);
    ++reloads_;
  }
  return *model_;
}

ExpertOutput ReloadableExpert::forward(const torch::Tensor& ids, const torch::Tensor& mask) {
  return model().forward(ids, mask);
}

std::unique_ptr<DecodeState> ReloadableExpert::new_state(int64_t rows) const { return model().new_state(rows); }

ExpertOutput ReloadableExpert::extend(DecodeState& state, const std::vector<int64_t>& rows,
                                      const std::vector<std::vector<int64_t>>& tokens) {
  return model().extend(state, rows, tokens);
}

std::vector<torch::Tensor> ReloadableExpert::parameters() { return model().parameters(); }

void ReloadableExpert::set_training(bool training) {
  training_ = training;
  if (model_) model_->set_training(training);
}

void ReloadableExpert::save(const std::string& dir) const { model().save(dir); }

}  // namespace colm
