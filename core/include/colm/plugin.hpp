// What a plugin's source includes to export itself: the per-kind factory signatures, the context
// core passes to factories, and COLM_PLUGIN(kind, name, version, factory).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>

#include <torch/version.h>

#include "colm/api.hpp"
#include "colm/config.hpp"
#include "colm/expert.hpp"
#include "colm/policy.hpp"
#include "colm/task.hpp"

namespace colm {

// Facts core knows when it creates a plugin object.
struct PluginContext {
  std::string instance;          // the object's name in the experiment, e.g. "base"
  uint64_t seed = 0;             // experiment seed (plugins derive their own streams from it)
  std::string device = "cpu";    // "cpu" or "cuda[:N]"
  std::string work_dir;          // where the plugin may cache files (may be empty)
  // For policies: the experts they will decide between.
  int64_t num_assistants = 1;
  int64_t base_hidden_size = 0;
  int64_t vocab_size = 0;
};

using ExpertFactory = std::unique_ptr<Expert>(const ConfigView& config, const PluginContext& context);
using PolicyFactory = std::unique_ptr<DeferralPolicy>(const ConfigView& config, const PluginContext& context);
using TaskFactory = std::unique_ptr<Task>(const ConfigView& config, const PluginContext& context);
using PluginInfoFunction = const PluginInfo*();

template <PluginKind K> struct FactoryOf;
template <> struct FactoryOf<PluginKind::expert> { using type = ExpertFactory; };
template <> struct FactoryOf<PluginKind::policy> { using type = PolicyFactory; };
template <> struct FactoryOf<PluginKind::task> { using type = TaskFactory; };

}  // namespace colm

// COLM_PLUGIN(expert|policy|task, "name", "version", factory_function)
// Exports colm_plugin_info and colm_plugin_factory with Boost.DLL aliases. Nothing runs at load.
#define COLM_PLUGIN(KIND, NAME, VERSION, FACTORY)                                             \
  namespace colm_plugin_export_ {                                                             \
  inline const ::colm::PluginInfo* info() {                                                   \
    static const ::colm::PluginInfo kInfo{COLM_PLUGIN_API_VERSION, ::colm::PluginKind::KIND,  \
                                          NAME, VERSION, COLM_COMPILER_ID, COLM_CXX11_ABI,    \
                                          TORCH_VERSION};                                     \
    return &kInfo;                                                                            \
  }                                                                                           \
  }                                                                                           \
  static_assert(std::is_same<decltype(FACTORY),                                               \
                             ::colm::FactoryOf<::colm::PluginKind::KIND>::type>::value,       \
                "COLM_PLUGIN: the factory's signature does not match the plugin kind");       \
  BOOST_DLL_ALIAS(colm_plugin_export_::info, colm_plugin_info)                                \
  BOOST_DLL_ALIAS(FACTORY, colm_plugin_factory)
