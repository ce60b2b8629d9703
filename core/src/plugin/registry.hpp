// The plugin registry: finds plugin libraries, checks API version and build fingerprint, refuses
// bad files with a reason, and creates objects that keep their library loaded.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "colm/config.hpp"
#include "colm/plugin.hpp"

namespace colm {

struct LoadedPlugin {
  PluginKind kind;
  std::string name;
  std::string version;
  std::string path;
};

struct RefusedPlugin {
  std::string path;
  std::string reason;  // e.g. "incompatible API version (plugin 2, core 1)"
};

// One check of Registry::inspect, in the order they run (file, shared library, symbols, API version,
// fingerprint, kind, name). Inspection stops at the first failing check.
struct PluginCheck {
  std::string name;    // "file", "shared library", "symbols", "API version", "fingerprint", "kind", "name"
  bool ok = false;
  std::string detail;  // what was found (both sides for version and fingerprint)
};

// Everything one file says about itself, for `colm plugins --check` and for load_file().
struct PluginInspection {
  std::string path;
  bool accepted = false;          // every check passed (duplicates are judged by a Registry, not here)
  std::string reason;             // why refused; empty when accepted
  std::vector<PluginCheck> checks;
  bool info_read = false;         // the fields below were read from colm_plugin_info
  int api_version = 0;
  int kind = 0;                   // raw value of PluginKind (may be out of range when refused)
  std::string name, version, compiler, torch_version;
  int cxx11_abi = -1;
};

class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Directories searched by default: the build/install plugin dir next to the running binary
  // (<exe dir>/../plugins and <exe dir>/../lib/colm/plugins), then COLM_PLUGIN_PATH (':'-separated),
  // then `extra` (--plugin-dir). `argv0` locates the binary; empty means /proc/self/exe.
  static std::vector<std::string> default_dirs(const std::vector<std::string>& extra, const std::string& argv0 = "");

  // Loads every lib*.so in the directories (non-recursive; missing directories are skipped with a
  // debug log). Refused files are recorded and logged as warnings; the rest load.
  void scan(const std::vector<std::string>& dirs);
  // Loads one file; returns true when accepted (else it is in refused()). A file this registry
  // already accepted (same canonical path) is accepted again without a second entry.
  bool load_file(const std::string& path);
  // Runs every check of load_file on one file without registering it. The library stays loaded
  // (libraries are never unloaded, see registry.cpp).
  static PluginInspection inspect(const std::string& path);

  const std::vector<LoadedPlugin>& loaded() const;
  const std::vector<RefusedPlugin>& refused() const;
  bool has(PluginKind kind, const std::string& name) const;
  // Names of the loaded plugins of one kind (for "unknown plugin, available: ..." messages).
  std::vector<std::string> names(PluginKind kind) const;

  // Path of the library a loaded plugin came from ("" when not loaded).
  std::string path_of(PluginKind kind, const std::string& name) const;

  // Create objects. An unknown name is a colm::Error listing the available ones; a throwing
  // factory becomes a colm::Error naming the plugin. The returned objects keep the library loaded.
  // Experts and policies come wrapped in a contract-checking proxy (checked.hpp): a tensor of the
  // wrong shape, dtype or device is a colm::Error naming the plugin and the method.
  std::shared_ptr<Expert> create_expert(const std::string& name, const ConfigView& config, const PluginContext& ctx) const;
  std::shared_ptr<DeferralPolicy> create_policy(const std::string& name, const ConfigView& config, const PluginContext& ctx) const;
  std::shared_ptr<Task> create_task(const std::string& name, const ConfigView& config, const PluginContext& ctx) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// A registry that has scanned the default directories (for tests, benchmarks and simple tools).
// Scanned once, on first use (thread-safe); never destroyed.
Registry& default_registry();

}  // namespace colm
