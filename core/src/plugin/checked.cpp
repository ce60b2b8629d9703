// Contract-checking proxies for plugin-made Experts and DeferralPolicies (see checked.hpp).
// The checks read shapes, dtypes and devices only, except probs(), whose values are checked too.
#include "plugin/checked.hpp"

#include <cmath>
#include <iomanip>
#include <sstream>

#include <torch/torch.h>

namespace colm {

namespace {

constexpr int64_t kAny = -1;  // a dimension the contract does not fix

std::string dims_str(const std::vector<int64_t>& dims) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) os << ", ";
    if (dims[i] == kAny) {
      os << "*";
    } else {
      os << dims[i];
    }
  }
  os << "]";
  return os.str();
}

std::string dtype_str(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::Float: return "float32";
    case c10::ScalarType::Double: return "float64";
    case c10::ScalarType::Half: return "float16";
    case c10::ScalarType::BFloat16: return "bfloat16";
    case c10::ScalarType::Long: return "int64";
    case c10::ScalarType::Int: return "int32";
    case c10::ScalarType::Bool: return "bool";
    default: return c10::toString(t);
  }
}

[[noreturn]] void broke(const std::string& plugin, const std::string& method, const std::string& what) {
  throw Error("[plugin] " + plugin + ": " + method + " broke its contract: " + what);
}

bool same_device(const torch::Device& a, const torch::Device& b) {
  // "cuda" and "cuda:0" name the same device when one side leaves the index unset.
  if (a.type() != b.type()) return false;
  return !a.has_index() || !b.has_index() || a.index() == b.index();
}

// Checks a float32 tensor of the expected shape (kAny dims are free) on the expected device.
void expect_tensor(const std::string& plugin, const std::string& method, const std::string& what,
                   const torch::Tensor& t, const std::vector<int64_t>& expected, const torch::Device* device) {
  if (!t.defined()) broke(plugin, method, what + " is undefined (expected a float32 tensor " + dims_str(expected) + ")");
  const auto sizes = t.sizes().vec();
  bool ok = sizes.size() == expected.size();
  for (size_t i = 0; ok && i < sizes.size(); ++i) ok = expected[i] == kAny || expected[i] == sizes[i];
  if (!ok) {
    // Print the expectation with the actual values filled in where the contract leaves a dimension free.
    auto shown = expected;
    for (size_t i = 0; i < shown.size() && i < sizes.size(); ++i) {
      if (shown[i] == kAny) shown[i] = sizes[i];
    }
    broke(plugin, method, what + " shape " + dims_str(sizes) + " expected " + dims_str(shown));
  }
  if (t.scalar_type() != torch::kFloat32) {
    broke(plugin, method, what + " dtype " + dtype_str(t.scalar_type()) + " expected float32");
  }
  if (device && !same_device(t.device(), *device)) {
    broke(plugin, method, what + " on device " + t.device().str() + " expected " + device->str());
  }
}

int64_t or_any(int64_t v) { return v > 0 ? v : kAny; }

}  // namespace

// ---------------------------------------------------------------- CheckedExpert

CheckedExpert::CheckedExpert(std::unique_ptr<Expert> inner, std::string plugin_name)
    : inner_(std::move(inner)), name_(std::move(plugin_name)) {}
CheckedExpert::~CheckedExpert() = default;

ExpertInfo CheckedExpert::info() const { return inner_->info(); }
const Tokenizer& CheckedExpert::tokenizer() const { return inner_->tokenizer(); }
torch::Device CheckedExpert::device() const { return inner_->device(); }

ExpertOutput CheckedExpert::forward(const torch::Tensor& ids, const torch::Tensor& mask) {
  auto out = inner_->forward(ids, mask);
  const auto info = inner_->info();
  const auto dev = inner_->device();
  const int64_t b = ids.defined() && ids.dim() == 2 ? ids.size(0) : kAny;
  const int64_t t = ids.defined() && ids.dim() == 2 ? ids.size(1) : kAny;
  expect_tensor(name_, "Expert::forward", "logits", out.logits, {b, t, or_any(info.vocab_size)}, &dev);
  expect_tensor(name_, "Expert::forward", "hidden", out.hidden, {b, t, or_any(info.hidden_size)}, &dev);
  return out;
}

std::unique_ptr<DecodeState> CheckedExpert::new_state(int64_t rows) const { return inner_->new_state(rows); }

ExpertOutput CheckedExpert::extend(DecodeState& state, const std::vector<int64_t>& rows,
                                   const std::vector<std::vector<int64_t>>& tokens) {
  auto out = inner_->extend(state, rows, tokens);
  const auto info = inner_->info();
  const auto dev = inner_->device();
  const auto r = static_cast<int64_t>(rows.size());
  expect_tensor(name_, "Expert::extend", "logits", out.logits, {r, or_any(info.vocab_size)}, &dev);
  expect_tensor(name_, "Expert::extend", "hidden", out.hidden, {r, or_any(info.hidden_size)}, &dev);
  return out;
}

std::vector<torch::Tensor> CheckedExpert::parameters() { return inner_->parameters(); }
void CheckedExpert::set_training(bool training) { inner_->set_training(training); }
void CheckedExpert::save(const std::string& dir) const { inner_->save(dir); }
std::string CheckedExpert::fingerprint() const { return inner_->fingerprint(); }

// ---------------------------------------------------------------- CheckedPolicy

int64_t policy_input_rows(const PolicyInput& input) {
  if (input.base_hidden.defined() && input.base_hidden.dim() >= 1) return input.base_hidden.size(0);
  if (input.base_logits.defined() && input.base_logits.dim() >= 1) return input.base_logits.size(0);
  for (const auto& a : input.assistant_logits) {
    if (a.defined() && a.dim() >= 1) return a.size(0);
  }
  if (input.gold.defined() && input.gold.dim() >= 1) return input.gold.size(0);
  if (!input.row_seeds.empty()) return static_cast<int64_t>(input.row_seeds.size());
  return kAny;
}

CheckedPolicy::CheckedPolicy(std::unique_ptr<DeferralPolicy> inner, std::string plugin_name, int64_t num_assistants)
    : inner_(std::move(inner)), name_(std::move(plugin_name)), num_assistants_(num_assistants) {}
CheckedPolicy::~CheckedPolicy() = default;

PolicyNeeds CheckedPolicy::needs() const { return inner_->needs(); }

torch::Tensor CheckedPolicy::probs(const PolicyInput& input) {
  const std::string method = "DeferralPolicy::probs";
  auto p = inner_->probs(input);
  const int64_t r = policy_input_rows(input);
  expect_tensor(name_, method, "probs", p, {r, num_assistants_ + 1}, nullptr);
  if (p.numel() == 0) return p;
  torch::NoGradGuard no_grad;
  const auto q = p.detach();
  auto fmt_row = [&](int64_t row) {
    std::ostringstream os;
    os << "[";
    auto cpu = q[row].to(torch::kCPU);
    for (int64_t j = 0; j < cpu.size(0); ++j) os << (j ? ", " : "") << cpu[j].item<float>();
    os << "]";
    return os.str();
  };
  const auto finite_rows = torch::isfinite(q).all(1);
  if (!finite_rows.all().item<bool>()) {
    const int64_t row = (~finite_rows).nonzero()[0][0].item<int64_t>();
    broke(name_, method, "probs row " + std::to_string(row) + " is not finite: " + fmt_row(row));
  }
  const auto min_rows = std::get<0>(q.min(1));
  if (min_rows.min().item<double>() < -kProbsSumTolerance) {
    const int64_t row = min_rows.argmin().item<int64_t>();
    broke(name_, method, "probs row " + std::to_string(row) + " has a negative entry: " + fmt_row(row));
  }
  const auto err = (q.to(torch::kFloat64).sum(1) - 1.0).abs();
  if (err.max().item<double>() > kProbsSumTolerance) {
    const int64_t row = err.argmax().item<int64_t>();
    std::ostringstream os;
    os << std::setprecision(8) << q[row].to(torch::kFloat64).sum().item<double>();
    broke(name_, method, "probs row " + std::to_string(row) + " sums to " + os.str() + " (expected 1 within 1e-4): " +
                             fmt_row(row));
  }
  return p;
}

bool CheckedPolicy::trainable() const { return inner_->trainable(); }

torch::Tensor CheckedPolicy::head_logits(const torch::Tensor& hidden) {
  auto out = inner_->head_logits(hidden);
  const std::string method = "DeferralPolicy::head_logits";
  if (!out.defined()) broke(name_, method, "the result is undefined");
  // hidden [..., d] -> [..., M+1]: same leading dimensions.
  std::vector<int64_t> expected;
  if (hidden.defined() && hidden.dim() >= 1) {
    expected = hidden.sizes().vec();
    expected.back() = num_assistants_ + 1;
  } else {
    expected.assign(std::max<int64_t>(out.dim(), 1), kAny);
    expected.back() = num_assistants_ + 1;
  }
  const auto sizes = out.sizes().vec();
  if (sizes != expected) {
    bool ok = sizes.size() == expected.size();
    for (size_t i = 0; ok && i < sizes.size(); ++i) ok = expected[i] == kAny || expected[i] == sizes[i];
    if (!ok) broke(name_, method, "logits shape " + dims_str(sizes) + " expected " + dims_str(expected));
  }
  if (!out.is_floating_point()) broke(name_, method, "logits dtype " + dtype_str(out.scalar_type()) + " is not floating point");
  return out;
}

std::vector<torch::Tensor> CheckedPolicy::parameters() { return inner_->parameters(); }
void CheckedPolicy::save(const std::string& path, const std::map<std::string, std::string>& metadata) const {
  inner_->save(path, metadata);
}
std::map<std::string, std::string> CheckedPolicy::load(const std::string& path) { return inner_->load(path); }

// ---------------------------------------------------------------- factories

std::unique_ptr<Expert> make_checked_expert(std::unique_ptr<Expert> inner, const std::string& plugin_name) {
  return std::make_unique<CheckedExpert>(std::move(inner), plugin_name);
}

std::unique_ptr<DeferralPolicy> make_checked_policy(std::unique_ptr<DeferralPolicy> inner,
                                                    const std::string& plugin_name, int64_t num_assistants) {
  return std::make_unique<CheckedPolicy>(std::move(inner), plugin_name, num_assistants);
}

}  // namespace colm
