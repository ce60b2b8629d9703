// Installing colm and building plugins out of tree: `cmake --install` of the build tree into a
// temporary prefix, each examples/plugins project configured and built against that prefix alone,
// then the installed colm loads the three plugins and runs a tiny experiment that uses all of them.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "colm/api.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

struct ExamplePlugin {
  std::string folder;  // examples/plugins/<folder>
  std::string file;    // what colm_add_plugin builds into <build>/plugins
  std::string kind, name;
};

const std::vector<ExamplePlugin> kExamples = {
    {"bigram_expert", "libcolm_expert_bigram.so", "expert", "bigram"},
    {"disagree_policy", "libcolm_policy_disagree.so", "policy", "disagree"},
    {"csv_task", "libcolm_task_csv_qa.so", "task", "csv_qa"},
};

// Paths come from temp_dir() and the build: no single quotes in them.
std::string q(const std::string& s) { return "'" + s + "'"; }

bool on_path(const std::string& tool) { return colm::test::run_command("command -v " + tool + " >/dev/null") == 0; }

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string canonical(const std::string& p) { return fs::weakly_canonical(p).string(); }

}  // namespace

TEST_CASE("an installed colm builds the example plugins out of tree and runs an experiment with all three",
          "[install][plugins]") {
  if (!on_path("cmake")) COLM_SKIP("cmake is not on PATH (needed to install colm and to build examples/plugins against it)");
  const auto tmp = colm::test::temp_dir("colm-install");
  const auto prefix = tmp + "/prefix";

  // 1. Install the build tree.
  std::string out;
  int rc = colm::test::run_command("cmake --install " + q(colm::test::build_dir()) + " --prefix " + q(prefix), &out);
  {
    INFO("cmake --install:\n" << out);
    REQUIRE(rc == 0);
  }
  const auto colm_bin = prefix + "/bin/colm";
  REQUIRE(fs::is_regular_file(colm_bin));
  const auto plugin_dir = prefix + "/lib/colm/plugins";  // registry.cpp: <exe dir>/../lib/colm/plugins
  CHECK(fs::is_regular_file(plugin_dir + "/libcolm_transformer.so"));
  CHECK(fs::is_regular_file(plugin_dir + "/libcolm_policy_rules.so"));
  CHECK_FALSE(fs::exists(plugin_dir + "/libcolm_test_good_task.so"));  // test plugins stay in the build

  // The public headers and the generated version.hpp, nothing from core/src.
  std::set<std::string> expected{"version.hpp"}, installed;
  for (const auto& e : fs::directory_iterator(colm::test::source_dir() + "/core/include/colm"))
    if (e.path().extension() == ".hpp") expected.insert(e.path().filename().string());
  for (const auto& e : fs::directory_iterator(prefix + "/include/colm")) installed.insert(e.path().filename().string());
  CHECK(installed == expected);

  // The CMake package, under whatever CMAKE_INSTALL_LIBDIR is.
  std::string config;
  for (const auto& e : fs::recursive_directory_iterator(prefix))
    if (e.path().filename() == "colmConfig.cmake") config = e.path().string();
  REQUIRE_FALSE(config.empty());
  for (const char* f : {"colmConfigVersion.cmake", "colmTargets.cmake", "ColmPlugin.cmake"})
    CHECK(fs::is_regular_file(fs::path(config).parent_path() / f));

  // The installed binary runs, with its own libcolm_core (RPATH), not the build tree's.
  rc = colm::test::run_command("env -u COLM_PLUGIN_PATH " + q(colm_bin) + " --version", &out);
  {
    INFO("colm --version:\n" << out);
    REQUIRE(rc == 0);
    CHECK_THAT(out, Contains("plugin API " + std::to_string(COLM_API_VERSION)));
  }
  if (on_path("ldd")) {
    REQUIRE(colm::test::run_command("ldd " + q(colm_bin), &out) == 0);
    std::istringstream lines(out);
    std::string line, core_line;
    while (std::getline(lines, line))
      if (line.find("libcolm_core.so") != std::string::npos) core_line = line;
    INFO("ldd: " << out);
    CHECK_THAT(core_line, Contains(prefix));
  }

  // 2. Configure and build each example against the prefix only (no package registry, no build tree).
  const std::string generator = on_path("ninja") ? " -G Ninja" : "";
  std::vector<std::string> dirs;
  std::string parallel;
  for (const auto& ex : kExamples) {
    const auto build = tmp + "/build-" + ex.folder;
    dirs.push_back(build + "/plugins");
    rc = colm::test::run_command("env -u colm_DIR -u colm_ROOT cmake -S " +
                                     q(colm::test::source_dir() + "/examples/plugins/" + ex.folder) + " -B " + q(build) +
                                     generator + " -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH=" + q(prefix) +
                                     " -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF",
                                 &out);
    INFO("configuring " << ex.folder << ":\n" << out);
    REQUIRE(rc == 0);
    // find_package(colm) found the package in the prefix.
    const auto cache = read_file(build + "/CMakeCache.txt");
    const auto at = cache.find("colm_DIR:PATH=");
    REQUIRE(at != std::string::npos);
    const auto colm_dir = cache.substr(at + 14, cache.find('\n', at) - at - 14);
    CHECK(canonical(colm_dir) == canonical(fs::path(config).parent_path().string()));
    // Built side by side: the three compilations of the torch headers dominate this test's time.
    parallel += "(cmake --build " + q(build) + " >" + q(build + ".log") + " 2>&1; echo $? >" + q(build + ".rc") + ") & ";
  }
  colm::test::run_command(parallel + "wait");
  for (const auto& ex : kExamples) {
    const auto build = tmp + "/build-" + ex.folder;
    INFO("building " << ex.folder << ":\n" << read_file(build + ".log"));
    REQUIRE(read_file(build + ".rc") == "0\n");
    REQUIRE(fs::is_regular_file(build + "/plugins/" + ex.file));  // colm_add_plugin's default output dir
  }
  std::string plugin_dirs;
  for (const auto& d : dirs) plugin_dirs += " --plugin-dir " + q(d);
  const auto run_colm = "env -u COLM_PLUGIN_PATH " + q(colm_bin) + plugin_dirs + " ";

  // 3. `colm plugins` lists the built-in plugins from the prefix and the three examples, refuses nothing.
  rc = colm::test::run_command("(" + run_colm + "plugins --json 2>/dev/null)", &out);
  INFO("colm plugins --json:\n" << out);
  REQUIRE(rc == 0);
  const auto listing = nlohmann::json::parse(out);
  std::map<std::string, std::string> loaded;  // "kind/name" -> path
  for (const auto& p : listing["loaded"])
    loaded[p["kind"].get<std::string>() + "/" + p["name"].get<std::string>()] = p["path"].get<std::string>();
  REQUIRE(loaded.count("expert/transformer"));
  CHECK(loaded["expert/transformer"] == canonical(plugin_dir + "/libcolm_transformer.so"));
  for (size_t i = 0; i < kExamples.size(); ++i) {
    const auto key = kExamples[i].kind + "/" + kExamples[i].name;
    REQUIRE(loaded.count(key));
    CHECK(canonical(loaded[key]) == canonical(dirs[i] + "/" + kExamples[i].file));
  }
  CHECK(listing["refused"].empty());
  for (size_t i = 0; i < kExamples.size(); ++i) {
    const auto file = dirs[i] + "/" + kExamples[i].file;
    rc = colm::test::run_command(run_colm + "plugins --check " + q(file), &out);
    INFO(out);
    CHECK(rc == 0);
    CHECK_THAT(out, Contains(file + ": accepted"));
  }
  // The installed binary explains a refusal just as the build tree's does.
  const auto bad_api = colm::test::build_dir() + "/test-plugins/libcolm_test_bad_api.so";
  if (fs::is_regular_file(bad_api)) {
    rc = colm::test::run_command(run_colm + "plugins --check " + q(bad_api), &out);
    INFO(out);
    CHECK(rc == 1);
    CHECK_THAT(out, Contains("incompatible API version (plugin 999, core " + std::to_string(COLM_API_VERSION) + ")"));
  }

  // 4. The example experiment (transformer base, bigram assistant lm-trained by colm, csv_qa task,
  // disagree policy), its database and artifacts redirected into the temporary directory.
  const auto db = tmp + "/results.db";
  const auto run = "cd " + q(colm::test::source_dir()) + " && " + run_colm + "run examples/plugins/experiment.toml" +
                   " --set experiment.database=" + q(db) + " --set experiment.artifacts_dir=" + q(tmp + "/artifacts");
  rc = colm::test::run_command(run, &out);
  {
    INFO("colm run:\n" << out);
    REQUIRE(rc == 0);
    CHECK_THAT(out, Contains("3 runs done, 0 already finished, 0 failed"));
  }
  // Out-of-tree plugins are fingerprinted like built-in ones: a second run finds everything done.
  rc = colm::test::run_command(run, &out);
  {
    INFO("colm run again:\n" << out);
    REQUIRE(rc == 0);
    CHECK_THAT(out, Contains("0 runs done, 3 already finished, 0 failed"));
  }

  rc = colm::test::run_command("(" + run_colm + "report " + q(db) + " --format json 2>/dev/null)", &out);
  INFO("colm report --format json:\n" << out);
  REQUIRE(rc == 0);
  const auto report = nlohmann::json::parse(out);
  std::set<std::string> policies;
  for (const auto& r : report["runs"]) {
    policies.insert(r["policy"].get<std::string>());
    CHECK(r["experiment"] == "example-plugins");
    CHECK(r["split"] == "test");
    REQUIRE(r["metrics"].contains("exact_match"));
    const double em = r["metrics"]["exact_match"]["value"].get<double>();
    CHECK(em >= 0.0);
    CHECK(em <= 1.0);
    if (r["policy"] == "unsure") {
      CHECK(r["metrics"].contains("deferral_rate"));
    }
  }
  const std::set<std::string> expected_runs{"unsure", "base", "bigram"};
  CHECK(policies == expected_runs);
}
