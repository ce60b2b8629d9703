// Implementation of the test helpers in support.hpp.
#include "support.hpp"

#include "colm/error.hpp"
#include "harness/experiment.hpp"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <stdexcept>
#include <random>
#include <vector>

namespace fs = std::filesystem;

namespace colm::test {

std::string build_dir() {
  if (const char* e = std::getenv("COLM_BUILD_DIR")) return e;
  return COLM_TEST_BUILD_DIR;
}
std::string source_dir() {
  if (const char* e = std::getenv("COLM_SOURCE_DIR")) return e;
  return COLM_TEST_SOURCE_DIR;
}
std::string plugin_dir() { return build_dir() + "/plugins"; }
std::string colm_binary() { return build_dir() + "/bin/colm"; }

std::optional<std::string> shared_dir() {
  if (const char* e = std::getenv("COLM_SHARED_DIR"); e && *e) {
    if (fs::is_directory(e)) return std::string(e);
    return std::nullopt;  // set but absent: behave as a clone without ../shared
  }
  auto p = fs::path(source_dir()).parent_path() / "shared";
  if (fs::is_directory(p / "fixtures")) return p.string();
  return std::nullopt;
}

std::optional<std::string> shared_fixture(const std::string& rel) {
  const auto shared = shared_dir();
  if (!shared) return std::nullopt;
  const auto p = fs::path(*shared) / "fixtures" / rel;
  if (!fs::exists(p)) return std::nullopt;
  return p.string();
}

namespace {
// root/rel in the repository, else ../shared/<shared_sub>/rel; throws when in neither.
std::string repo_or_shared(const std::string& root, const std::string& shared_sub, const std::string& rel) {
  const auto here = fs::path(source_dir()) / root / rel;
  if (fs::exists(here)) return here.string();
  if (const auto shared = shared_dir()) {
    const auto there = fs::path(*shared) / shared_sub / rel;
    if (fs::exists(there)) return there.string();
  }
  throw std::runtime_error(here.string() + " is missing (and not in ../shared/" + shared_sub +
                           " either): the repository ships it; restore it with git checkout");
}
}  // namespace

std::string fixture(const std::string& rel) { return repo_or_shared("tests/fixtures", "fixtures", rel); }
std::string dataset(const std::string& rel) { return repo_or_shared("datasets", "datasets", rel); }

void print_skip(const std::string& reason) {
  std::cout << "COLM-SKIP: " << reason << std::endl;
}

namespace {
struct TempDirs {
  std::vector<fs::path> dirs;
  ~TempDirs() {
    std::error_code ec;
    for (auto& d : dirs) fs::remove_all(d, ec);
  }
};
TempDirs& temp_dirs() {
  static TempDirs t;
  return t;
}
}  // namespace

std::string temp_dir(const std::string& prefix) {
  std::random_device rd;
  for (int attempt = 0; attempt < 100; ++attempt) {
    auto p = fs::temp_directory_path() / (prefix + "-" + std::to_string(rd()));
    if (fs::create_directory(p)) {
      temp_dirs().dirs.push_back(p);
      return p.string();
    }
  }
  throw std::runtime_error("cannot create a temporary directory");
}

int run_command(const std::string& command, std::string* out) {
  std::string full = command + " 2>&1";
  FILE* pipe = popen(full.c_str(), "r");
  if (!pipe) return -1;
  std::array<char, 4096> buf{};
  std::string text;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) text.append(buf.data(), n);
  int status = pclose(pipe);
  if (out) *out = text;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

std::string tiny_experts() {
  return R"([experts.base]
plugin = "transformer"
role = "base"
family = "gpt2"
n_layer = 1
n_head = 2
d_model = 16
d_ff = 32
max_positions = 256
init_seed = 1

[experts.helper]
plugin = "transformer"
role = "assistant"
family = "gpt2"
n_layer = 1
n_head = 2
d_model = 16
d_ff = 32
max_positions = 256
init_seed = 2
)";
}

std::string experiment_config_error(const std::string& toml_path) {
  try {
    parse_experiment_file(toml_path);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace colm::test
