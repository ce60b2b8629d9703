// Helpers shared by the tests: where the build, the sources, the plugins, the fixtures and ../shared
// are, and how a test that cannot run says so (CTest then reports it as skipped, with the reason).
#pragma once
#include <optional>
#include <string>

namespace colm::test {

std::string build_dir();        // the CMake build tree
std::string source_dir();       // the repository root
std::string plugin_dir();       // build_dir()/plugins
std::string colm_binary();      // build_dir()/bin/colm
// ../shared next to the repository root (fixtures, datasets), or nullopt when absent.
// COLM_SHARED_DIR overrides the location; set to a path that does not exist, it simulates a clone
// without ../shared (e.g. COLM_SHARED_DIR=/nonexistent ctest ...).
std::optional<std::string> shared_dir();
// A fixture (path relative to a fixtures folder, e.g. "models/gpt2-tiny"): tests/fixtures first,
// then ../shared/fixtures. Throws (failing the test, not skipping it) when it is in neither: the
// repository ships every fixture but the Llama 2 tokenizer, which shared_fixture() looks up.
std::string fixture(const std::string& rel);
// A fixture that only ../shared has (the Llama 2 tokenizer), or nullopt.
std::optional<std::string> shared_fixture(const std::string& rel);
// A data set file or folder (e.g. "gsm8k/test.jsonl"): datasets/ first, then ../shared/datasets;
// throws when it is in neither.
std::string dataset(const std::string& rel);
// A fresh empty directory under the system temp dir, removed when the process exits.
std::string temp_dir(const std::string& prefix = "colm-test");
// Runs a shell command; returns its exit code and fills out with stdout+stderr.
int run_command(const std::string& command, std::string* out = nullptr);
// The ConfigError message of parsing an experiment file (parse_experiment_file), or "" when it parses.
std::string experiment_config_error(const std::string& toml_path);
// The two tiny fresh experts of the experiment tests, as TOML tables: [experts.base] (init_seed 1)
// and [experts.helper] (role assistant, init_seed 2), GPT-2-shaped, 1 layer, d_model 16, byte vocab.
std::string tiny_experts();
// Prints the skip marker line "COLM-SKIP: <reason>" on stdout. cmake/ColmTesting.cmake gives every
// discovered test SKIP_REGULAR_EXPRESSION "COLM-SKIP: ", so CTest counts the test as skipped and
// scripts/test.sh lists the reason. Use COLM_SKIP, which also returns from the test case.
void print_skip(const std::string& reason);

}  // namespace colm::test

// Skips the current test case, with its reason, and returns from it. Catch2 2.x has no SKIP():
// the marker line is how CTest learns of it. Use it at the top of a TEST_CASE, before any SECTION
// or GENERATE, so that a skip never hides checks that did run.
#define COLM_SKIP(reason)                \
  do {                                   \
    ::colm::test::print_skip(reason);    \
    return;                              \
  } while (0)

// Skips a test that needs ../shared when it is absent; `var` is then ../shared's path.
#define COLM_REQUIRE_SHARED(var)                                                             \
  auto var##_opt = ::colm::test::shared_dir();                                               \
  if (!var##_opt) COLM_SKIP("../shared (fixtures and datasets) is not next to the repository"); \
  const std::string var = *var##_opt

// Skips a test whose fixture only ../shared has; `var` is then the fixture's path.
#define COLM_REQUIRE_SHARED_FIXTURE(var, rel)                                                   \
  auto var##_opt = ::colm::test::shared_fixture(rel);                                           \
  if (!var##_opt) COLM_SKIP(std::string("needs ../shared/fixtures/") + (rel) +                   \
                            " (not redistributable, so not in tests/fixtures)");                \
  const std::string var = *var##_opt
