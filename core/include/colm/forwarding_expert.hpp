// An Expert that hands every call to another one: wrappers (a test that changes some logits, a
// benchmark that masks EOS) derive from it and override only what they change. DecodeState objects
// are the inner expert's and pass through.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "colm/expert.hpp"

namespace colm {

class ForwardingExpert : public Expert {
 public:
  explicit ForwardingExpert(std::shared_ptr<Expert> inner) : inner_(std::move(inner)) {}
  ExpertInfo info() const override { return inner_->info(); }
  const Tokenizer& tokenizer() const override { return inner_->tokenizer(); }
  torch::Device device() const override { return inner_->device(); }
  ExpertOutput forward(const torch::Tensor& ids, const torch::Tensor& mask) override { return inner_->forward(ids, mask); }
  std::unique_ptr<DecodeState> new_state(int64_t rows) const override { return inner_->new_state(rows); }
  ExpertOutput extend(DecodeState& state, const std::vector<int64_t>& rows,
                      const std::vector<std::vector<int64_t>>& tokens) override {
    return inner_->extend(state, rows, tokens);
  }
  std::vector<torch::Tensor> parameters() override { return inner_->parameters(); }
  void set_training(bool training) override { inner_->set_training(training); }
  void save(const std::string& dir) const override { inner_->save(dir); }
  std::string fingerprint() const override { return inner_->fingerprint(); }

 protected:
  Expert& inner() const { return *inner_; }

 private:
  std::shared_ptr<Expert> inner_;
};

}  // namespace colm
