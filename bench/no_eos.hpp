// Random weights emit EOS now and then; a benchmark's runs must each generate exactly the asked
// number of tokens, so this wrapper masks EOS in every output.
#pragma once
#include <limits>
#include <memory>

#include "colm/forwarding_expert.hpp"

namespace colm::bench {

class NoEos final : public ForwardingExpert {
 public:
  explicit NoEos(std::shared_ptr<Expert> inner) : ForwardingExpert(inner), eos_(*inner->tokenizer().eos_id()) {}
  ExpertOutput forward(const torch::Tensor& ids, const torch::Tensor& mask) override {
    return mask_eos(ForwardingExpert::forward(ids, mask));
  }
  ExpertOutput extend(DecodeState& s, const std::vector<int64_t>& rows,
                      const std::vector<std::vector<int64_t>>& tokens) override {
    return mask_eos(ForwardingExpert::extend(s, rows, tokens));
  }

 private:
  ExpertOutput mask_eos(ExpertOutput out) const {
    out.logits.select(-1, eos_).fill_(-std::numeric_limits<float>::infinity());
    return out;
  }
  int64_t eos_;
};

}  // namespace colm::bench
