// `colm plugins`: lists the loaded plugins and the refused files with their reasons;
// `colm plugins --check FILE` says whether one file would be accepted and why (exit 0 / 1).
#include <filesystem>
#include <iostream>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "cli.hpp"
#include "colm/api.hpp"
#include "colm/config.hpp"
#include "colm/error.hpp"
#include "plugin/registry.hpp"

namespace colm::cli {

namespace {

namespace po = boost::program_options;

constexpr const char* kFactoryNote =
    "not checked: give --config FILE (the plugin's table as TOML; may be empty) to call the factory";

// With --config: creates one object through the file's factory (in a registry holding only that file),
// with the given table as its configuration. Returns "" when it works, else what went wrong.
struct FactoryCheck {
  bool ran = false;
  bool ok = false;
  std::string detail;
};

FactoryCheck call_factory(const std::string& path, const PluginInspection& r, const std::string& config_path,
                          int64_t hidden, int64_t assistants) {
  FactoryCheck out;
  if (config_path.empty() || !r.accepted) return out;
  out.ran = true;
  try {
    Registry one;
    COLM_CHECK(one.load_file(path), "the file was refused when loaded");
    auto cfg = ConfigView::from_file(config_path);
    PluginContext ctx;
    ctx.instance = "check";
    ctx.num_assistants = assistants;
    ctx.base_hidden_size = hidden;
    ctx.vocab_size = 259;
    const auto kind = static_cast<PluginKind>(r.kind);
    std::string what;
    if (kind == PluginKind::expert) {
      auto e = one.create_expert(r.name, cfg, ctx);
      const auto info = e->info();
      what = "created an expert: " + std::to_string(info.num_parameters) + " parameters, vocabulary " +
             std::to_string(info.vocab_size) + ", hidden size " + std::to_string(info.hidden_size);
    } else if (kind == PluginKind::policy) {
      one.create_policy(r.name, cfg, ctx);
      what = "created a policy for " + std::to_string(assistants) + " assistant(s), hidden size " + std::to_string(hidden);
    } else {
      auto task = one.create_task(r.name, cfg, ctx);
      std::string splits;
      for (const auto& s : task->splits()) splits += (splits.empty() ? "" : ", ") + s;
      what = "created a task with splits " + splits;
    }
    cfg.check_all_read();
    out.ok = true;
    out.detail = what;
  } catch (const std::exception& e) {
    out.detail = e.what();
  }
  return out;
}

int check_one(const std::string& path, bool json, const GlobalOptions& global, const std::string& config_path,
              int64_t hidden, int64_t assistants) {
  const auto r = Registry::inspect(path);
  const auto factory = call_factory(path, r, config_path, hidden, assistants);
  const auto core = core_build_info();
  // A second file with the same kind and name in the search path decides which one wins a scan.
  std::string shadow;
  if (r.accepted) {
    // The other files' own refusals are not what was asked about: keep them out of the log.
    const auto level = spdlog::get_level();
    spdlog::set_level(spdlog::level::err);
    Registry others;
    others.scan(Registry::default_dirs(global.plugin_dirs, global.argv0));
    spdlog::set_level(level);
    const auto kind = static_cast<PluginKind>(r.kind);
    const auto other = others.path_of(kind, r.name);
    std::error_code ec1, ec2;
    if (!other.empty() && std::filesystem::weakly_canonical(other, ec1) != std::filesystem::weakly_canonical(path, ec2)) {
      shadow = std::string("another ") + to_string(kind) + " plugin named '" + r.name + "' is loaded from " + other +
               " by the plugin search path; a scan keeps the first one found";
    }
  }
  if (json) {
    nlohmann::json j;
    j["path"] = r.path;
    j["accepted"] = r.accepted;
    j["reason"] = r.reason;
    j["checks"] = nlohmann::json::array();
    for (const auto& c : r.checks) j["checks"].push_back({{"check", c.name}, {"ok", c.ok}, {"detail", c.detail}});
    if (factory.ran) j["factory"] = {{"ok", factory.ok}, {"detail", factory.detail}};
    else j["factory"] = kFactoryNote;
    j["core"] = {{"api_version", core.api_version}, {"compiler", core.compiler}, {"cxx11_abi", core.cxx11_abi},
                 {"torch_version", core.torch_version}};
    if (r.info_read) {
      j["plugin"] = {{"api_version", r.api_version},
                     {"kind", r.kind >= 1 && r.kind <= 3 ? to_string(static_cast<PluginKind>(r.kind)) : "unknown"},
                     {"name", r.name},
                     {"version", r.version},
                     {"compiler", r.compiler},
                     {"cxx11_abi", r.cxx11_abi},
                     {"torch_version", r.torch_version}};
    } else if (r.api_version != 0) {
      j["plugin"] = {{"api_version", r.api_version}};
    }
    if (!shadow.empty()) j["note"] = shadow;
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << r.path << ": " << (r.accepted ? "accepted" : "refused: " + r.reason) << "\n";
    for (const auto& c : r.checks) {
      std::cout << "  " << c.name << std::string(c.name.size() < 16 ? 16 - c.name.size() : 1, ' ')
                << (c.ok ? "ok      " : "FAILED  ") << c.detail << "\n";
    }
    if (factory.ran) std::cout << "  factory         " << (factory.ok ? "ok      " : "FAILED  ") << factory.detail << "\n";
    else if (r.accepted) std::cout << "  factory         " << kFactoryNote << "\n";
    if (!shadow.empty()) std::cout << "  note: " << shadow << "\n";
  }
  return r.accepted && (!factory.ran || factory.ok) ? 0 : 1;
}

int list_all(bool json, const GlobalOptions& global) {
  const auto dirs = Registry::default_dirs(global.plugin_dirs, global.argv0);
  Registry registry;
  registry.scan(dirs);
  if (json) {
    nlohmann::json j;
    j["dirs"] = dirs;
    j["loaded"] = nlohmann::json::array();
    for (const auto& p : registry.loaded()) {
      j["loaded"].push_back({{"kind", to_string(p.kind)}, {"name", p.name}, {"version", p.version}, {"path", p.path}});
    }
    j["refused"] = nlohmann::json::array();
    for (const auto& p : registry.refused()) j["refused"].push_back({{"path", p.path}, {"reason", p.reason}});
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::cout << "plugin directories (in search order):\n";
  if (dirs.empty()) std::cout << "  (none exist; use --plugin-dir or COLM_PLUGIN_PATH)\n";
  for (const auto& d : dirs) std::cout << "  " << d << "\n";
  std::cout << "\nloaded (" << registry.loaded().size() << "):\n";
  size_t wname = 4, wver = 7;
  for (const auto& p : registry.loaded()) {
    wname = std::max(wname, p.name.size());
    wver = std::max(wver, p.version.size());
  }
  for (const auto& p : registry.loaded()) {
    const std::string kind = to_string(p.kind);
    std::cout << "  " << kind << std::string(8 - kind.size(), ' ') << p.name << std::string(wname + 2 - p.name.size(), ' ')
              << p.version << std::string(wver + 2 - p.version.size(), ' ') << p.path << "\n";
  }
  std::cout << "\nrefused (" << registry.refused().size() << "):\n";
  for (const auto& p : registry.refused()) std::cout << "  " << p.path << ": " << p.reason << "\n";
  return 0;
}

int run_plugins(const std::vector<std::string>& args, const GlobalOptions& global) {
  po::options_description desc(
      "usage: colm plugins [--check FILE [--config TOML]] [--json]\n\n"
      "Lists every plugin found in the plugin directories (next to the binary, COLM_PLUGIN_PATH,\n"
      "--plugin-dir) and every file that was refused, with the reason. With --check, inspects one\n"
      "file: exit status 0 when it would be accepted, 1 when refused. With --config as well, also calls\n"
      "its factory with that table (as an experiment would) and reports whether it throws and whether\n"
      "every key was read.\n\noptions");
  std::string check, config;
  int64_t hidden = 16, assistants = 1;
  desc.add_options()("help,h", "this help")("check", po::value<std::string>(&check)->value_name("FILE"),
                                            "inspect one plugin file (API version, build fingerprint, symbols)")(
      "config", po::value<std::string>(&config)->value_name("TOML"),
      "with --check: call the factory with this TOML file as the plugin's table")(
      "hidden-size", po::value<int64_t>(&hidden)->default_value(16), "with --config, policies: the base's hidden size")(
      "assistants", po::value<int64_t>(&assistants)->default_value(1), "with --config, policies: number of assistants")(
      "json", "machine-readable output");
  po::variables_map vm;
  if (const auto rc = parse_options("plugins", args, desc, vm)) return *rc;
  const bool json = vm.count("json") > 0;
  if (vm.count("config") && !vm.count("check")) {
    std::cerr << "colm plugins: --config needs --check FILE (see colm plugins --help)\n";
    return 2;
  }
  if (vm.count("check")) return check_one(check, json, global, config, hidden, assistants);
  return list_all(json, global);
}

const RegisterCommand kRegister("plugins", "list loaded and refused plugins; --check FILE inspects one", run_plugins);

}  // namespace

}  // namespace colm::cli
