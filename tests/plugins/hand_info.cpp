// Test-only plugins with a hand-written colm_plugin_info: built twice, once claiming an unknown
// kind (COLM_TEST_BAD_KIND) and once with a foreign build fingerprint (COLM_TEST_BAD_FINGERPRINT).
#include <torch/version.h>

#include "colm/plugin.hpp"

namespace colm_test {

const colm::PluginInfo* info() {
#if defined(COLM_TEST_BAD_KIND)
  static const colm::PluginInfo kInfo{COLM_PLUGIN_API_VERSION, static_cast<colm::PluginKind>(7), "test_bad_kind",
                                      "1.0", COLM_COMPILER_ID, COLM_CXX11_ABI, TORCH_VERSION};
#elif defined(COLM_TEST_BAD_FINGERPRINT)
  static const colm::PluginInfo kInfo{COLM_PLUGIN_API_VERSION, colm::PluginKind::task, "test_bad_fingerprint", "1.0",
                                      "othercc-1", COLM_CXX11_ABI, "0.0.1-test"};
#else
#error "define COLM_TEST_BAD_KIND or COLM_TEST_BAD_FINGERPRINT"
#endif
  return &kInfo;
}

// Never called: both plugins are refused before the factory is looked at.
std::unique_ptr<colm::Task> make(const colm::ConfigView&, const colm::PluginContext&) { return nullptr; }

}  // namespace colm_test

BOOST_DLL_ALIAS(colm_test::info, colm_plugin_info)
BOOST_DLL_ALIAS(colm_test::make, colm_plugin_factory)
