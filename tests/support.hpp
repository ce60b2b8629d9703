// Helpers shared by the tests: where the build, the sources, the plugins and ../shared are.
#pragma once
#include <optional>
#include <string>

namespace colm::test {

std::string build_dir();        // the CMake build tree
std::string source_dir();       // the repository root
std::string plugin_dir();       // build_dir()/plugins
std::string colm_binary();      // build_dir()/bin/colm
// ../shared next to the repository root (fixtures, datasets), or nullopt when absent.
std::optional<std::string> shared_dir();
// A fresh empty directory under the system temp dir, removed when the process exits.
std::string temp_dir(const std::string& prefix = "colm-test");
// Runs a shell command; returns its exit code and fills out with stdout+stderr.
int run_command(const std::string& command, std::string* out = nullptr);

}  // namespace colm::test

// Skips (with the reason printed) a test that needs ../shared when it is absent.
#define COLM_REQUIRE_SHARED(var)                                                         \
  auto var##_opt = ::colm::test::shared_dir();                                           \
  if (!var##_opt) {                                                                      \
    WARN("skipped: ../shared (fixtures and datasets) is not next to the repository");    \
    return;                                                                              \
  }                                                                                      \
  const std::string var = *var##_opt
