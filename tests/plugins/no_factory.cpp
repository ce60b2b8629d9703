// Test-only plugin that exports colm_plugin_info but no colm_plugin_factory (written by hand
// instead of COLM_PLUGIN), so the registry must refuse it for the missing symbol.
#include "colm/api.hpp"

namespace colm_test {

const colm::PluginInfo* info() {
  static const colm::PluginInfo kInfo{COLM_PLUGIN_API_VERSION, colm::PluginKind::task, "test_no_factory", "1.0",
                                      COLM_COMPILER_ID, COLM_CXX11_ABI, "unused"};
  return &kInfo;
}

}  // namespace colm_test

BOOST_DLL_ALIAS(colm_test::info, colm_plugin_info)
