// colm's entry point: global options (--help, --version, --log-level, --plugin-dir), then one
// command from the table in cli.hpp; --log-level and --plugin-dir may also follow the command.
// Each command lives in its own cmd_*.cpp.
#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "cli.hpp"
#include "colm/api.hpp"
#include "colm/runtime.hpp"

namespace colm::cli {

std::map<std::string, Command>& commands() {
  static auto* table = new std::map<std::string, Command>();  // never destroyed: used by static ctors
  return *table;
}

}  // namespace colm::cli

namespace {

void print_help() {
  std::cout << "colm " << COLM_VERSION_STRING
            << " - token-level collaborative decoding with several language models (Co-LLM)\n\n"
               "usage: colm [global options] <command> [command options]\n"
               "(--log-level and --plugin-dir may also come after the command)\n\n"
               "global options:\n"
               "  -h, --help               this help; `colm <command> --help` for a command's own\n"
               "  --version                print the version, API version and build fingerprint\n"
               "  --log-level LEVEL        trace, debug, info, warn, error, off (default: info)\n"
               "  --plugin-dir DIR         also load plugins from DIR (repeatable; see also\n"
               "                           COLM_PLUGIN_PATH, a ':'-separated list)\n\n"
               "commands:\n";
  for (const auto& [name, cmd] : colm::cli::commands()) {
    std::cout << "  " << name << std::string(name.size() < 12 ? 12 - name.size() : 1, ' ') << cmd.summary << "\n";
  }
}

// A global option that takes a value, at args[i] (as "--opt VALUE" or "--opt=VALUE"): stores it in
// `global`, advances i past it and returns true; returns false for anything else. Sets rc = 2 when
// the value is missing.
bool take_global_option(const std::vector<std::string>& args, size_t& i, colm::cli::GlobalOptions& global, int& rc) {
  const auto& a = args[i];
  for (const std::string name : {"--log-level", "--plugin-dir"}) {
    std::string value;
    if (a == name) {
      if (i + 1 >= args.size()) {
        std::cerr << "colm: " << a << " needs a value\n";
        rc = 2;
        return true;
      }
      value = args[++i];
    } else if (a.rfind(name + "=", 0) == 0) {
      value = a.substr(name.size() + 1);
    } else {
      continue;
    }
    if (name == "--log-level") global.log_level = value;
    else global.plugin_dirs.push_back(value);
    return true;
  }
  return false;
}

// OpenMP threads (Torch's intra-op pool, OpenBLAS) that finish a parallel region spin-wait for the
// next one by default. Next to another process on the same cores (a second shard, a build) the
// spinning starves both (measured: two shards 7.3x slower than one process). The OpenMP runtime reads
// its wait policy when it is loaded, before main(): set PASSIVE and start again, once. A policy the
// user set wins.
void set_openmp_wait_policy(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY")) return;
  ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  ::execv("/proc/self/exe", argv);  // returns only on failure: go on with the default policy
}

}  // namespace

int main(int argc, char** argv) {
  set_openmp_wait_policy(argv);
  colm::cli::GlobalOptions global;
  global.argv0 = argv[0];
  std::vector<std::string> args(argv + 1, argv + argc);
  size_t i = 0;
  int rc = 0;
  for (; i < args.size(); ++i) {
    const auto& a = args[i];
    if (a == "-h" || a == "--help") {
      print_help();
      return 0;
    } else if (a == "--version") {
      const auto info = colm::core_build_info();
      std::cout << "colm " << info.version << " (plugin API " << info.api_version << ", " << info.compiler
                << ", cxx11 abi " << info.cxx11_abi << ", torch " << info.torch_version << ")\n";
      return 0;
    } else if (take_global_option(args, i, global, rc)) {
      if (rc != 0) return rc;
    } else if (!a.empty() && a[0] == '-') {
      std::cerr << "colm: unknown option '" << a << "' (see colm --help)\n";
      return 2;
    } else {
      break;
    }
  }
  if (i >= args.size()) {
    print_help();
    return 2;
  }
  const auto& table = colm::cli::commands();
  auto it = table.find(args[i]);
  if (it == table.end()) {
    std::cerr << "colm: unknown command '" << args[i] << "' (see colm --help)\n";
    return 2;
  }
  // Global options may also follow the command (`colm plugins --plugin-dir X`): take them out of
  // the command's arguments. No command declares an option of the same name, and everything after
  // a bare "--" is left to the command.
  std::vector<std::string> rest;
  for (size_t k = i + 1; k < args.size(); ++k) {
    if (args[k] == "--") {
      rest.insert(rest.end(), args.begin() + static_cast<long>(k), args.end());
      break;
    }
    if (take_global_option(args, k, global, rc)) {
      if (rc != 0) return rc;
    } else {
      rest.push_back(args[k]);
    }
  }
  try {
    colm::init_runtime(global.log_level);
  } catch (const std::exception& e) {
    std::cerr << "colm: " << e.what() << "\n";
    return 2;
  }
  try {
    return it->second.run(rest, global);
  } catch (const colm::ConfigError& e) {
    spdlog::error("{}", e.what());
    return 2;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
}
