// Weights by checkpoint name for every family: loading from a colm::Checkpoint with shape checks,
// deterministic GPT-2-style init for fresh models, and the tensors in checkpoint layout for saving.
#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>

#include <ATen/CPUGeneratorImpl.h>
#include <spdlog/spdlog.h>

#include "transformer.hpp"

namespace colm::transformer {
namespace {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

std::vector<int64_t> stored_shape(const WeightSpec& spec) {
  std::vector<int64_t> s(spec.param.sizes().begin(), spec.param.sizes().end());
  if (spec.conv1d) std::reverse(s.begin(), s.end());
  return s;
}

}  // namespace

std::vector<std::string> load_weights(NetworkImpl& net, const Checkpoint& checkpoint, torch::Dtype dtype) {
  torch::NoGradGuard no_grad;
  std::set<std::string> used;
  std::vector<std::string> sources;
  for (const auto& spec : net.weights()) {
    std::string found;
    if (checkpoint.has(spec.name)) {
      found = spec.name;
    } else {
      for (const auto& alias : spec.aliases) {
        if (checkpoint.has(alias)) {
          found = alias;
          break;
        }
      }
    }
    const auto expected = stored_shape(spec);
    if (found.empty()) {
      std::ostringstream os;
      os << "checkpoint " << checkpoint.dir() << ": missing tensor '" << spec.name << "'";
      for (const auto& a : spec.aliases) os << " (or '" << a << "')";
      os << ", expected shape " << shape_str(expected) << " for this " << to_string(net.config().family)
         << " model (see its config.json)";
      throw Error(os.str());
    }
    const auto& entry = checkpoint.entry(found);
    COLM_CHECK(entry.shape == expected, "checkpoint " << checkpoint.dir() << ": tensor '" << found << "' has shape "
                                                      << shape_str(entry.shape) << ", expected " << shape_str(expected)
                                                      << (spec.conv1d ? " (GPT-2 Conv1D layout [in, out])" : "")
                                                      << " from config.json");
    // The parameter takes the mapped tensor itself (no copy when the file stores it at `dtype`) and
    // frees the placeholder the module was built with, which was never written. GPT-2's Conv1D
    // weights are transposed into the nn.Linear layout piece by piece, the file's pages released
    // behind: a transposed view would cost bf16 gemv about 2x at decode time.
    auto t = spec.conv1d ? checkpoint.load_transposed(found, dtype) : checkpoint.map(found, dtype);
    auto param = spec.param;  // the module's parameter itself (same TensorImpl)
    param.set_data(t);
    used.insert(found);
    sources.push_back(found);
  }
  std::vector<std::string> extra;
  for (const auto& name : checkpoint.names()) {
    if (!used.count(name) && !net.ignorable(name)) extra.push_back(name);
  }
  if (!extra.empty()) {
    std::string list;
    for (size_t i = 0; i < extra.size() && i < 5; ++i) list += (i ? ", " : "") + extra[i];
    if (extra.size() > 5) list += ", ...";
    spdlog::warn("[transformer] {}: ignoring {} tensor(s) that are not part of the {} model: {}", checkpoint.dir(),
                 extra.size(), to_string(net.config().family), list);
  }
  return sources;
}

void init_weights(NetworkImpl& net, uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const double std = 0.02;
  const double residual_std = std / std::sqrt(2.0 * static_cast<double>(net.config().n_layer));
  for (const auto& spec : net.weights()) {
    auto param = spec.param;
    switch (spec.init) {
      case WeightSpec::Init::normal:
      case WeightSpec::Init::normal_residual: {
        const double s = spec.init == WeightSpec::Init::normal ? std : residual_std;
        // Drawn in float32 on the CPU whatever the compute dtype/device: the same seed gives the
        // same model everywhere.
        auto draw = at::normal(0.0, s, param.sizes(), gen, torch::TensorOptions().dtype(torch::kFloat32));
        param.copy_(draw);
        break;
      }
      case WeightSpec::Init::ones: param.fill_(1.0); break;
      case WeightSpec::Init::zeros: param.zero_(); break;
    }
  }
}

std::vector<std::pair<std::string, torch::Tensor>> checkpoint_tensors(NetworkImpl& net) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& spec : net.weights()) {
    auto t = spec.param.detach();
    if (spec.conv1d) t = t.t();
    out.emplace_back(spec.name, t.to(torch::kCPU).contiguous());
  }
  return out;
}

}  // namespace colm::transformer
