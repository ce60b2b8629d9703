// Test-only task plugin "test_throwing": a valid plugin whose factory always throws a
// std::runtime_error, to test that the registry turns it into a colm::Error naming the plugin.
#include <stdexcept>

#include "colm/plugin.hpp"

namespace colm_test {

std::unique_ptr<colm::Task> make_throwing(const colm::ConfigView&, const colm::PluginContext&) {
  throw std::runtime_error("deliberate failure in test_throwing");
}

}  // namespace colm_test

COLM_PLUGIN(task, "test_throwing", "1.0", colm_test::make_throwing)
