// Implementation of the test helpers in support.hpp.
#include "support.hpp"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
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
  if (const char* e = std::getenv("COLM_SHARED_DIR")) {
    if (fs::is_directory(e)) return std::string(e);
  }
  auto p = fs::path(source_dir()).parent_path() / "shared";
  if (fs::is_directory(p / "fixtures")) return p.string();
  return std::nullopt;
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

}  // namespace colm::test
