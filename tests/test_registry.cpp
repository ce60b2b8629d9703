// Plugin registry: loading, every refusal reason, duplicate names, factory failures, object lifetime,
// the contract-checking proxies and the search path. Uses the test plugins in build_dir()/test-plugins.
#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "colm/api.hpp"
#include "plugin/registry.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

std::string test_plugin(const std::string& name) {
  const auto p = colm::test::build_dir() + "/test-plugins/libcolm_" + name + ".so";
  INFO("test plugin " << p << " (built by target colm_test_plugins)");
  REQUIRE(fs::is_regular_file(p));
  return p;
}

const colm::RefusedPlugin* refusal_of(const colm::Registry& r, const std::string& path) {
  for (const auto& x : r.refused()) {
    if (x.path == path) return &x;
  }
  return nullptr;
}

// Captures what the default logger writes while it lives.
struct LogCapture {
  std::ostringstream text;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(text);
  LogCapture() {
    sink->set_pattern("%v");
    spdlog::default_logger()->sinks().push_back(sink);
  }
  ~LogCapture() {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink), sinks.end());
  }
};

// Sets an environment variable for one scope.
struct EnvGuard {
  std::string name;
  std::optional<std::string> old;
  EnvGuard(const std::string& n, const std::string& value) : name(n) {
    if (const char* o = std::getenv(n.c_str())) old = o;
    ::setenv(n.c_str(), value.c_str(), 1);
  }
  ~EnvGuard() {
    if (old) {
      ::setenv(name.c_str(), old->c_str(), 1);
    } else {
      ::unsetenv(name.c_str());
    }
  }
};

}  // namespace

TEST_CASE("a good plugin loads and its objects keep working after the registry is gone", "[core][registry]") {
  const auto path = test_plugin("test_good_task");
  std::shared_ptr<colm::Task> task;
  {
    colm::Registry registry;
    REQUIRE(registry.load_file(path));
    REQUIRE(registry.loaded().size() == 1);
    CHECK(registry.refused().empty());
    const auto& p = registry.loaded()[0];
    CHECK(p.kind == colm::PluginKind::task);
    CHECK(p.name == "test_task");
    CHECK(p.version == "1.0");
    CHECK(p.path == path);
    CHECK(registry.has(colm::PluginKind::task, "test_task"));
    CHECK_FALSE(registry.has(colm::PluginKind::policy, "test_task"));
    CHECK(registry.names(colm::PluginKind::task) == std::vector<std::string>{"test_task"});
    // Loading the same file again is not a duplicate of itself.
    CHECK(registry.load_file(path));
    CHECK(registry.loaded().size() == 1);

    colm::PluginContext ctx;
    ctx.instance = "mytask";
    ctx.seed = 17;
    task = registry.create_task("test_task", colm::ConfigView(), ctx);
  }
  REQUIRE(task);
  const auto ex = task->examples("test");
  REQUIRE(ex.size() == 1);
  CHECK(ex[0].prompt == "instance=mytask");
  CHECK(ex[0].reference == "17");
  CHECK(task->score(ex[0], "17").at("accuracy") == 1.0);
  CHECK(task->primary_metric() == "accuracy");
  CHECK_THROWS_WITH(task->examples("nope"), Contains("unknown split 'nope'"));
  task.reset();  // destroys the object through the library-holding deleter
}

TEST_CASE("a plugin built for another API version is refused naming both versions", "[core][registry]") {
  const auto path = test_plugin("test_bad_api");
  LogCapture log;
  colm::Registry registry;
  CHECK_FALSE(registry.load_file(path));
  CHECK(registry.loaded().empty());
  REQUIRE(registry.refused().size() == 1);
  const std::string expected = "incompatible API version (plugin 999, core " + std::to_string(COLM_API_VERSION) + ")";
  CHECK(registry.refused()[0].path == path);
  CHECK(registry.refused()[0].reason == expected);
  CHECK_THAT(log.text.str(), Contains("[plugin] " + path + ": " + expected));
  // Never half-registered.
  CHECK(registry.names(colm::PluginKind::task).empty());
}

TEST_CASE("refusal reasons: missing symbol, unknown kind, foreign fingerprint", "[core][registry]") {
  colm::Registry registry;
  const auto no_factory = test_plugin("test_no_factory");
  const auto bad_kind = test_plugin("test_bad_kind");
  const auto bad_fp = test_plugin("test_bad_fingerprint");
  CHECK_FALSE(registry.load_file(no_factory));
  CHECK_FALSE(registry.load_file(bad_kind));
  CHECK_FALSE(registry.load_file(bad_fp));
  REQUIRE(refusal_of(registry, no_factory));
  CHECK_THAT(refusal_of(registry, no_factory)->reason, Contains("missing colm_plugin_factory"));
  CHECK_THAT(refusal_of(registry, no_factory)->reason, !Contains("colm_plugin_info"));
  REQUIRE(refusal_of(registry, bad_kind));
  CHECK_THAT(refusal_of(registry, bad_kind)->reason, Contains("unknown plugin kind 7"));
  REQUIRE(refusal_of(registry, bad_fp));
  const auto core = colm::core_build_info();
  const auto& reason = refusal_of(registry, bad_fp)->reason;
  CHECK_THAT(reason, Contains(std::string("compiler (plugin othercc-1, core ") + core.compiler + ")"));
  CHECK_THAT(reason, Contains(std::string("Torch version (plugin 0.0.1-test, core ") + core.torch_version + ")"));
  CHECK_THAT(reason, !Contains("C++11 ABI"));  // only the fields that differ are named
  CHECK(registry.loaded().empty());
}

TEST_CASE("files that are not libraries are refused with a reason and the rest still load", "[core][registry]") {
  const auto dir = colm::test::temp_dir("colm-registry");
  const auto junk = dir + "/libcolm_junk.so";
  {
    // Longer than an ELF header, so dlopen reads it and rejects the magic (a short file is "too short").
    std::ofstream out(junk);
    for (int i = 0; i < 64; ++i) out << "this is a text file, not a shared library\n";
  }
  const auto good = dir + "/libcolm_zgood.so";
  fs::copy_file(test_plugin("test_good_task"), good);
  // A real plugin cut after 4 KiB: valid ELF headers whose segments run past the end of the file
  // (dlopen would SIGBUS on it; the registry must refuse it first).
  const auto truncated = dir + "/libcolm_truncated.so";
  {
    std::ifstream in(good, std::ios::binary);
    std::string head(4096, '\0');
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    std::ofstream(truncated, std::ios::binary).write(head.data(), in.gcount());
  }
  // A directory and a dangling symlink named like plugins: neither is a regular file. (These are
  // also the "cannot read" cases that work when the tests run as root, where chmod 000 does not
  // stop reading.)
  fs::create_directory(dir + "/libcolm_dir.so");
  fs::create_symlink(dir + "/nowhere.so", dir + "/libcolm_dangling.so");
  fs::create_directory(dir + "/ignored");  // names that are not lib*.so are not candidates
  std::ofstream(dir + "/README.txt") << "not a candidate\n";

  colm::Registry registry;
  registry.scan({dir, dir + "/missing-directory"});
  REQUIRE(registry.loaded().size() == 1);
  CHECK(registry.loaded()[0].path == good);
  CHECK(registry.refused().size() == 4);
  REQUIRE(refusal_of(registry, truncated));
  CHECK_THAT(refusal_of(registry, truncated)->reason, Contains("not a loadable shared library: truncated ELF file: "));
  CHECK_THAT(refusal_of(registry, truncated)->reason, Contains("but the file has 4096 bytes"));
  REQUIRE(refusal_of(registry, junk));
  CHECK_THAT(refusal_of(registry, junk)->reason, Contains("not a loadable shared library"));
  CHECK_THAT(refusal_of(registry, junk)->reason, Contains("invalid ELF header"));  // dlerror's words
  REQUIRE(refusal_of(registry, dir + "/libcolm_dir.so"));
  CHECK_THAT(refusal_of(registry, dir + "/libcolm_dir.so")->reason, Contains("not a regular file: a directory"));
  REQUIRE(refusal_of(registry, dir + "/libcolm_dangling.so"));
  CHECK_THAT(refusal_of(registry, dir + "/libcolm_dangling.so")->reason, Contains("dangling symbolic link"));
  CHECK_FALSE(registry.load_file(dir + "/libcolm_absent.so"));
  CHECK_THAT(refusal_of(registry, dir + "/libcolm_absent.so")->reason, Contains("no such file"));
}

namespace {

// Runs fn on a thread that has dropped CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from its effective
// and permitted sets, and returns whether the drop worked. Root reads through mode 000 only by those
// two capabilities; access(2), which the registry uses, checks a real-uid-0 caller against its
// *permitted* set, so both sets must lose them. Linux capabilities belong to a thread (the raw
// capset syscall changes only the caller), so the test process keeps its own. This is the root a
// hardened service or a container runs as (systemd CapabilityBoundingSet=, docker --cap-drop): file
// modes apply to it, and an unreadable plugin must be refused there as well as for a normal user.
bool on_thread_without_dac_override(const std::function<void()>& fn) {
  bool dropped = false;
  std::thread t([&] {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
    if (::syscall(SYS_capget, &header, data) != 0) return;
    for (int cap : {CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH}) {
      data[CAP_TO_INDEX(cap)].effective &= ~CAP_TO_MASK(cap);
      data[CAP_TO_INDEX(cap)].permitted &= ~CAP_TO_MASK(cap);
      data[CAP_TO_INDEX(cap)].inheritable &= ~CAP_TO_MASK(cap);
    }
    if (::syscall(SYS_capset, &header, data) != 0) return;
    dropped = true;
    fn();
  });
  t.join();
  return dropped;
}

}  // namespace

TEST_CASE("an unreadable file is refused as not readable", "[core][registry]") {
  const auto dir = colm::test::temp_dir("colm-registry");
  const auto path = dir + "/libcolm_locked.so";
  fs::copy_file(test_plugin("test_good_task"), path);
  REQUIRE(::chmod(path.c_str(), 0) == 0);
  // As a normal user mode 000 is enough; as root the check runs where root obeys file modes.
  std::optional<colm::RefusedPlugin> refusal;
  bool loaded = true;
  const bool dropped = on_thread_without_dac_override([&] {
    colm::Registry registry;
    loaded = registry.load_file(path);
    if (const auto* r = refusal_of(registry, path)) refusal = *r;
  });
  REQUIRE(dropped);
  CHECK_FALSE(loaded);
  REQUIRE(refusal);
  CHECK_THAT(refusal->reason, Contains("not readable"));
  CHECK_THAT(refusal->reason, Contains("Permission denied"));
  // The same file with its mode back loads: the refusal was about readability alone.
  REQUIRE(::chmod(path.c_str(), 0644) == 0);
  colm::Registry registry;
  CHECK(registry.load_file(path));
}

TEST_CASE("a throwing factory becomes a colm::Error naming the plugin and its file", "[core][registry]") {
  const auto path = test_plugin("test_throwing");
  colm::Registry registry;
  REQUIRE(registry.load_file(path));
  try {
    registry.create_task("test_throwing", colm::ConfigView(), colm::PluginContext{});
    FAIL("the factory should have thrown");
  } catch (const colm::Error& e) {
    CHECK(std::string(e.what()) ==
          "[plugin] test_throwing (" + path + "): factory failed: deliberate failure in test_throwing");
  }
}

TEST_CASE("an unknown plugin name lists the available ones", "[core][registry]") {
  colm::Registry registry;
  CHECK_THROWS_WITH(registry.create_task("test_task", colm::ConfigView(), {}), Contains("no task plugins are loaded"));
  REQUIRE(registry.load_file(test_plugin("test_good_task")));
  REQUIRE(registry.load_file(test_plugin("test_throwing")));
  CHECK_THROWS_WITH(registry.create_task("nope", colm::ConfigView(), {}),
                    Contains("unknown task plugin 'nope'; available: test_task, test_throwing"));
  CHECK_THROWS_AS(registry.create_expert("test_task", colm::ConfigView(), {}), colm::Error);
}

TEST_CASE("of two plugins with the same kind and name the first wins", "[core][registry]") {
  const auto first = test_plugin("test_good_task");
  const auto second = test_plugin("test_good_task_copy");
  colm::Registry registry;
  registry.scan({colm::test::build_dir() + "/test-plugins"});
  REQUIRE(registry.has(colm::PluginKind::task, "test_task"));
  CHECK(registry.path_of(colm::PluginKind::task, "test_task") == first);
  REQUIRE(refusal_of(registry, second));
  CHECK(refusal_of(registry, second)->reason == "duplicate task plugin 'test_task': already loaded from " + first);
  // Every good test plugin loaded; every bad one refused.
  CHECK(registry.has(colm::PluginKind::policy, "test_policy"));
  CHECK(registry.has(colm::PluginKind::expert, "test_expert"));
  CHECK(registry.has(colm::PluginKind::task, "test_throwing"));
  CHECK(refusal_of(registry, test_plugin("test_bad_api")));
  CHECK(refusal_of(registry, test_plugin("test_no_factory")));
}

TEST_CASE("the policy contract proxy catches wrong shapes, dtypes and values", "[core][registry][contract]") {
  colm::Registry registry;
  REQUIRE(registry.load_file(test_plugin("test_policy")));
  colm::PluginContext ctx;
  ctx.num_assistants = 2;
  colm::PolicyInput input;
  input.base_hidden = torch::zeros({3, 8});
  auto make = [&](const std::string& mode) {
    ctx.instance = mode;
    return registry.create_policy("test_policy", colm::ConfigView(), ctx);
  };
  const auto good = make("good")->probs(input);
  CHECK(good.sizes() == torch::IntArrayRef({3, 3}));
  CHECK(make("good")->needs().base_hidden);

  const std::string prefix = "[plugin] test_policy: DeferralPolicy::probs broke its contract: ";
  CHECK_THROWS_WITH(make("wrong_shape")->probs(input), prefix + "probs shape [3, 4] expected [3, 3]");
  CHECK_THROWS_WITH(make("float64")->probs(input), prefix + "probs dtype float64 expected float32");
  CHECK_THROWS_WITH(make("nan")->probs(input), Contains(prefix + "probs row 2 is not finite"));
  CHECK_THROWS_WITH(make("unnormalised")->probs(input), Contains(prefix + "probs row 2 sums to 1.5"));
  CHECK_FALSE(make("good")->trainable());
  CHECK_THROWS_WITH(make("good")->head_logits(torch::zeros({3, 8})), Contains("not trainable"));
}

TEST_CASE("the expert contract proxy names the plugin, method and shapes", "[core][registry][contract]") {
  colm::Registry registry;
  REQUIRE(registry.load_file(test_plugin("test_expert")));
  colm::PluginContext ctx;
  ctx.instance = "good";
  auto good = registry.create_expert("test_expert", colm::ConfigView(), ctx);
  auto state = good->new_state(2);
  const auto out = good->extend(*state, {0, 1}, {{1, 2}, {3}});
  CHECK(out.logits.sizes() == torch::IntArrayRef({2, 100}));
  CHECK(state->length(0) == 2);  // the plugin's own DecodeState, passed through
  CHECK(state->length(1) == 1);
  const auto fw = good->forward(torch::zeros({2, 5}, torch::kLong), torch::Tensor());
  CHECK(fw.hidden.sizes() == torch::IntArrayRef({2, 5, 8}));
  CHECK(good->info().vocab_size == 100);
  CHECK(good->fingerprint() == "test_expert:good");

  ctx.instance = "bad_extend";
  auto bad = registry.create_expert("test_expert", colm::ConfigView(), ctx);
  auto bad_state = bad->new_state(2);
  CHECK_THROWS_WITH(bad->extend(*bad_state, {0, 1}, {{1}, {2}}),
                    "[plugin] test_expert: Expert::extend broke its contract: logits shape [3, 100] expected [2, 100]");
  ctx.instance = "bad_forward";
  auto bad_fw = registry.create_expert("test_expert", colm::ConfigView(), ctx);
  CHECK_THROWS_WITH(bad_fw->forward(torch::zeros({1, 4}, torch::kLong), torch::Tensor()),
                    "[plugin] test_expert: Expert::forward broke its contract: logits dtype float64 expected float32");
}

TEST_CASE("default_dirs: next to the binary, then COLM_PLUGIN_PATH, then --plugin-dir", "[core][registry]") {
  const auto a = colm::test::temp_dir("colm-registry");
  const auto b = colm::test::temp_dir("colm-registry");
  const auto c = colm::test::temp_dir("colm-registry");
  fs::copy_file(test_plugin("test_good_task"), b + "/libcolm_mine.so");
  EnvGuard env("COLM_PLUGIN_PATH", a + ":" + a + "/does-not-exist::" + b);
  // The test binary lives in build/bin, so build/plugins is "next to the binary".
  const auto bin = colm::test::build_dir() + "/bin/test_registry";
  const auto dirs = colm::Registry::default_dirs({c, b + "/", a}, bin);
  std::vector<std::string> expected;
  if (fs::is_directory(colm::test::plugin_dir())) {
    expected.push_back(fs::weakly_canonical(colm::test::plugin_dir()).string());
  }
  expected.insert(expected.end(), {a, b, c});  // missing skipped, duplicates (b/, a) dropped
  CHECK(dirs == expected);

  colm::Registry registry;
  registry.scan(colm::Registry::default_dirs({}));
  CHECK(registry.path_of(colm::PluginKind::task, "test_task") == b + "/libcolm_mine.so");
}

TEST_CASE("default_registry is one registry, scanned once", "[core][registry]") {
  // It finds every built-in plugin file the build has produced so far (counted first: a sibling
  // build may add files, never remove them).
  size_t files = 0;
  if (fs::is_directory(colm::test::plugin_dir())) {
    for (const auto& e : fs::directory_iterator(colm::test::plugin_dir())) {
      const auto n = e.path().filename().string();
      if (n.rfind("lib", 0) == 0 && e.path().extension() == ".so") ++files;
    }
  }
  auto& r1 = colm::default_registry();
  auto& r2 = colm::default_registry();
  CHECK(&r1 == &r2);
  CHECK(r1.loaded().size() + r1.refused().size() >= files);
}
