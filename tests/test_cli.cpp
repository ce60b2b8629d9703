// CLI smoke tests: global options, exit codes, and `colm plugins` (listing, refused files with
// reasons, --check, --json), run as a child process through tests/support.hpp's run_command.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "colm/api.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

// The binary with a clean plugin search path (the caller's COLM_PLUGIN_PATH must not leak in).
std::string colm_cmd(const std::string& args) {
  return "env -u COLM_PLUGIN_PATH '" + colm::test::colm_binary() + "' " + args;
}

std::string test_plugin(const std::string& name) {
  const auto p = colm::test::build_dir() + "/test-plugins/libcolm_" + name + ".so";
  INFO("test plugin " << p << " (built by target colm_test_plugins)");
  REQUIRE(fs::is_regular_file(p));
  return p;
}

// stdout only: logs go to stderr, so JSON output parses.
nlohmann::json run_json(const std::string& args, int expected_rc) {
  std::string out;
  // run_command appends 2>&1; the subshell keeps stderr out of what it captures.
  const int rc = colm::test::run_command("(" + colm_cmd(args) + " 2>/dev/null)", &out);
  INFO("colm " << args << "\n" << out);
  REQUIRE(rc == expected_rc);
  return nlohmann::json::parse(out);
}

std::vector<std::string> builtin_plugin_files() {
  std::vector<std::string> files;
  if (!fs::is_directory(colm::test::plugin_dir())) return files;
  for (const auto& e : fs::directory_iterator(colm::test::plugin_dir())) {
    const auto n = e.path().filename().string();
    if (n.rfind("lib", 0) == 0 && e.path().extension() == ".so") files.push_back(e.path().string());
  }
  return files;
}

}  // namespace

TEST_CASE("colm --help lists the commands and --version the build", "[cli]") {
  std::string out;
  REQUIRE(colm::test::run_command(colm_cmd("--help"), &out) == 0);
  CHECK_THAT(out, Contains("usage: colm"));
  CHECK_THAT(out, Contains("commands:"));
  CHECK_THAT(out, Contains("plugins"));
  REQUIRE(colm::test::run_command(colm_cmd("--version"), &out) == 0);
  CHECK_THAT(out, Contains("plugin API " + std::to_string(COLM_API_VERSION)));
  CHECK_THAT(out, Contains(std::string("torch ") + colm::core_build_info().torch_version));
}

TEST_CASE("unknown commands and options exit with status 2", "[cli]") {
  std::string out;
  CHECK(colm::test::run_command(colm_cmd("no-such-command"), &out) == 2);
  CHECK_THAT(out, Contains("unknown command 'no-such-command'"));
  CHECK(colm::test::run_command(colm_cmd("--no-such-option"), &out) == 2);
  CHECK(colm::test::run_command(colm_cmd(""), &out) == 2);  // no command: help, and a failure status
  CHECK(colm::test::run_command(colm_cmd("plugins --no-such-option"), &out) == 2);
  CHECK_THAT(out, Contains("colm plugins"));
}

TEST_CASE("colm plugins lists every built-in plugin file", "[cli][plugins]") {
  const auto files = builtin_plugin_files();
  std::string out;
  REQUIRE(colm::test::run_command(colm_cmd("plugins"), &out) == 0);
  CHECK_THAT(out, Contains("loaded ("));
  CHECK_THAT(out, Contains("refused ("));
  // The binary names files by its canonical location (/proc/self/exe), so compare canonical paths.
  for (const auto& f : files) CHECK_THAT(out, Contains(fs::weakly_canonical(f).string()));

  const auto j = run_json("plugins --json", 0);
  REQUIRE(j["loaded"].is_array());
  REQUIRE(j["refused"].is_array());
  std::set<std::string> seen;
  for (const auto& p : j["loaded"]) {
    seen.insert(fs::weakly_canonical(p["path"].get<std::string>()).string());
    CHECK_FALSE(p["name"].get<std::string>().empty());
    CHECK((p["kind"] == "expert" || p["kind"] == "policy" || p["kind"] == "task"));
  }
  for (const auto& p : j["refused"]) {
    seen.insert(fs::weakly_canonical(p["path"].get<std::string>()).string());
    CHECK_FALSE(p["reason"].get<std::string>().empty());
  }
  for (const auto& f : files) CHECK(seen.count(fs::weakly_canonical(f).string()) == 1);
  CHECK(j["loaded"].size() + j["refused"].size() >= files.size());
}

TEST_CASE("a corrupt library in --plugin-dir is refused with a reason while the others load", "[cli][plugins]") {
  const auto dir = colm::test::temp_dir("colm-cli");
  const auto good = test_plugin("test_good_task");
  fs::copy_file(good, dir + "/libcolm_good.so");
  // The first 4 KiB of a real plugin: a valid ELF header with its sections cut off.
  {
    std::ifstream in(good, std::ios::binary);
    std::string head(4096, '\0');
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    std::ofstream(dir + "/libcolm_corrupt.so", std::ios::binary).write(head.data(), in.gcount());
  }
  const auto j = run_json("--plugin-dir '" + dir + "' plugins --json", 0);
  bool good_loaded = false;
  for (const auto& p : j["loaded"]) {
    if (p["path"] == dir + "/libcolm_good.so") {
      good_loaded = true;
      CHECK(p["name"] == "test_task");
      CHECK(p["kind"] == "task");
      CHECK(p["version"] == "1.0");
    }
  }
  CHECK(good_loaded);
  bool corrupt_refused = false;
  for (const auto& p : j["refused"]) {
    if (p["path"] == dir + "/libcolm_corrupt.so") {
      corrupt_refused = true;
      CHECK_THAT(p["reason"].get<std::string>(), Contains("not a loadable shared library: truncated ELF file"));
    }
  }
  CHECK(corrupt_refused);
  CHECK(std::find(j["dirs"].begin(), j["dirs"].end(), dir) != j["dirs"].end());

  // The text listing says the same, with the reason on the refused file's line.
  std::string out;
  REQUIRE(colm::test::run_command(colm_cmd("--plugin-dir '" + dir + "' plugins"), &out) == 0);
  CHECK_THAT(out, Contains(dir + "/libcolm_corrupt.so: not a loadable shared library"));
  CHECK_THAT(out, Contains(dir + "/libcolm_good.so"));
}

TEST_CASE("colm plugins --check accepts a good file and explains a refused one", "[cli][plugins]") {
  std::string out;
  const auto good = test_plugin("test_good_task");
  REQUIRE(colm::test::run_command(colm_cmd("plugins --check '" + good + "'"), &out) == 0);
  CHECK_THAT(out, Contains(good + ": accepted"));
  CHECK_THAT(out, Contains("API version"));
  CHECK_THAT(out, Contains("fingerprint"));
  CHECK_THAT(out, Contains("factory"));
  CHECK_THAT(out, Contains("not checked"));

  const auto bad_api = test_plugin("test_bad_api");
  REQUIRE(colm::test::run_command(colm_cmd("plugins --check '" + bad_api + "'"), &out) == 1);
  CHECK_THAT(out, Contains("refused: incompatible API version (plugin 999, core " + std::to_string(COLM_API_VERSION) + ")"));

  const auto no_factory = test_plugin("test_no_factory");
  REQUIRE(colm::test::run_command(colm_cmd("plugins --check '" + no_factory + "'"), &out) == 1);
  CHECK_THAT(out, Contains("missing colm_plugin_factory"));

  const auto j = run_json("plugins --check '" + test_plugin("test_bad_fingerprint") + "' --json", 1);
  CHECK(j["accepted"] == false);
  CHECK_THAT(j["reason"].get<std::string>(), Contains("Torch version (plugin 0.0.1-test"));
  CHECK(j["checks"].back()["check"] == "fingerprint");
  CHECK(j["checks"].back()["ok"] == false);
  CHECK(j["plugin"]["name"] == "test_bad_fingerprint");

  const auto jg = run_json("plugins --json --check '" + good + "'", 0);
  CHECK(jg["accepted"] == true);
  CHECK(jg["plugin"]["kind"] == "task");
  CHECK(jg["plugin"]["name"] == "test_task");
  CHECK(jg["core"]["api_version"] == COLM_API_VERSION);

  // --config calls the factory: a throwing one is reported (exit 1), a working one creates its object,
  // and keys the plugin does not read are named.
  const auto cfg_dir = colm::test::temp_dir("colm-cli-check");
  std::ofstream(cfg_dir + "/empty.toml") << "";
  std::ofstream(cfg_dir + "/typo.toml") << "rule = \"confidence\"\nrulez = 1\n";
  std::ofstream(cfg_dir + "/rules.toml") << "rule = \"confidence\"\n";
  REQUIRE(colm::test::run_command(
              colm_cmd("plugins --check '" + test_plugin("test_throwing") + "' --config " + cfg_dir + "/empty.toml"),
              &out) == 1);
  CHECK_THAT(out, Contains("factory         FAILED"));
  CHECK_THAT(out, Contains("deliberate failure in test_throwing"));
  const auto rules = colm::test::build_dir() + "/plugins/libcolm_policy_rules.so";
  REQUIRE(colm::test::run_command(colm_cmd("plugins --check '" + rules + "' --config " + cfg_dir + "/rules.toml"),
                                  &out) == 0);
  CHECK_THAT(out, Contains("factory         ok      created a policy"));
  REQUIRE(colm::test::run_command(colm_cmd("plugins --check '" + rules + "' --config " + cfg_dir + "/typo.toml"),
                                  &out) == 1);
  CHECK_THAT(out, Contains("rulez"));
  REQUIRE(colm::test::run_command(colm_cmd("plugins --config " + cfg_dir + "/rules.toml"), &out) == 2);

  REQUIRE(colm::test::run_command(colm_cmd("plugins --check /nonexistent/libcolm_x.so"), &out) == 1);
  CHECK_THAT(out, Contains("no such file"));
  REQUIRE(colm::test::run_command(colm_cmd("plugins --help"), &out) == 0);
  CHECK_THAT(out, Contains("--check"));
}
