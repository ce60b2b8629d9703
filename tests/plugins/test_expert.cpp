// Test-only expert plugin "test_expert" (vocab 100, hidden 8, zero outputs): well-behaved, or with one
// contract violation chosen by the instance name ("bad_extend": one row too many; "bad_forward": float64).
#include <torch/torch.h>

#include "colm/plugin.hpp"

namespace colm_test {

constexpr int64_t kVocab = 100;
constexpr int64_t kHidden = 8;

class Lengths final : public colm::DecodeState {
 public:
  explicit Lengths(int64_t rows) : len_(static_cast<size_t>(rows), 0) {}
  int64_t rows() const override { return static_cast<int64_t>(len_.size()); }
  int64_t length(int64_t row) const override { return len_.at(static_cast<size_t>(row)); }
  void reset(int64_t row) override { len_.at(static_cast<size_t>(row)) = 0; }
  std::vector<int64_t> len_;
};

class TestExpert final : public colm::Expert {
 public:
  explicit TestExpert(std::string mode) : mode_(std::move(mode)) {}
  colm::ExpertInfo info() const override {
    colm::ExpertInfo i;
    i.family = "test";
    i.vocab_size = kVocab;
    i.hidden_size = kHidden;
    i.max_positions = 64;
    i.dtype = "float32";
    i.source = "test";
    return i;
  }
  const colm::Tokenizer& tokenizer() const override { throw colm::Error("test_expert has no tokenizer"); }
  torch::Device device() const override { return torch::kCPU; }
  colm::ExpertOutput forward(const torch::Tensor& ids, const torch::Tensor&) override {
    const auto dtype = mode_ == "bad_forward" ? torch::kFloat64 : torch::kFloat32;
    return {torch::zeros({ids.size(0), ids.size(1), kVocab}, dtype), torch::zeros({ids.size(0), ids.size(1), kHidden})};
  }
  std::unique_ptr<colm::DecodeState> new_state(int64_t rows) const override { return std::make_unique<Lengths>(rows); }
  colm::ExpertOutput extend(colm::DecodeState& state, const std::vector<int64_t>& rows,
                            const std::vector<std::vector<int64_t>>& tokens) override {
    auto& s = static_cast<Lengths&>(state);  // only ever given back its own states
    for (size_t i = 0; i < rows.size(); ++i) s.len_.at(static_cast<size_t>(rows[i])) += static_cast<int64_t>(tokens[i].size());
    const int64_t r = static_cast<int64_t>(rows.size()) + (mode_ == "bad_extend" ? 1 : 0);
    return {torch::zeros({r, kVocab}), torch::zeros({r, kHidden})};
  }
  std::vector<torch::Tensor> parameters() override { return {}; }
  void set_training(bool) override {}
  void save(const std::string&) const override { throw colm::Error("test_expert cannot be saved"); }
  std::string fingerprint() const override { return "test_expert:" + mode_; }

 private:
  std::string mode_;
};

std::unique_ptr<colm::Expert> make_expert(const colm::ConfigView&, const colm::PluginContext& ctx) {
  return std::make_unique<TestExpert>(ctx.instance);
}

}  // namespace colm_test

COLM_PLUGIN(expert, "test_expert", "1.0", colm_test::make_expert)
