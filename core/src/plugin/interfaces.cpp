// Out-of-line destructors and optional-method defaults of the plugin interfaces, the error types
// and the core's build fingerprint: these live in core so every plugin shares one vtable anchor.
#include <torch/version.h>

#include "colm/api.hpp"
#include "colm/expert.hpp"
#include "colm/policy.hpp"
#include "colm/task.hpp"

namespace colm {

Error::Error(const std::string& what) : std::runtime_error(what) {}
Error::~Error() = default;
ConfigError::ConfigError(const std::string& what) : Error(what) {}
ConfigError::~ConfigError() = default;

const char* to_string(PluginKind kind) {
  switch (kind) {
    case PluginKind::expert: return "expert";
    case PluginKind::policy: return "policy";
    case PluginKind::task: return "task";
  }
  return "unknown";
}

PluginInfo core_build_info() {
  return PluginInfo{COLM_API_VERSION, PluginKind::expert, "colm", COLM_VERSION_STRING,
                    COLM_COMPILER_ID, COLM_CXX11_ABI, TORCH_VERSION};
}

DecodeState::~DecodeState() = default;
Expert::~Expert() = default;
Task::~Task() = default;
DeferralPolicy::~DeferralPolicy() = default;

bool DeferralPolicy::trainable() const { return false; }
torch::Tensor DeferralPolicy::head_logits(const torch::Tensor&) {
  throw Error("this policy is not trainable: it has no deferral head");
}
std::vector<torch::Tensor> DeferralPolicy::parameters() { return {}; }
void DeferralPolicy::save(const std::string&, const std::map<std::string, std::string>&) const {
  throw Error("this policy has no weights to save");
}
std::map<std::string, std::string> DeferralPolicy::load(const std::string&) {
  throw Error("this policy has no weights to load");
}

}  // namespace colm

#include "colm/hash.hpp"

namespace colm {

std::string Task::fingerprint() {
  Hasher h;
  for (const auto& split : splits()) {
    h.add(split);
    for (const auto& e : examples(split)) h.add(e.id).add(e.prompt).add(e.reference).add(e.target);
  }
  const auto g = generation();
  h.add(g.max_tokens);
  for (const auto& s : g.stop) h.add(s);
  return h.hex();
}

}  // namespace colm
