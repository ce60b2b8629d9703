// The CLI's command table: each core/app/cmd_*.cpp registers one `colm <command>` with its help.
// main() dispatches; commands parse their own options with Boost.program_options.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace colm::cli {

struct GlobalOptions {
  std::string log_level = "info";
  std::vector<std::string> plugin_dirs;  // --plugin-dir (repeatable)
  std::string argv0;                     // path of the running binary (plugins are found next to it)
};

// args: the command's own arguments (after the command name). Returns the process exit code.
using CommandFn = std::function<int(const std::vector<std::string>& args, const GlobalOptions& global)>;

struct Command {
  std::string name;
  std::string summary;  // one line for `colm --help`
  CommandFn run;
};

std::map<std::string, Command>& commands();

struct RegisterCommand {
  RegisterCommand(const std::string& name, const std::string& summary, CommandFn fn) {
    commands()[name] = Command{name, summary, std::move(fn)};
  }
};

}  // namespace colm::cli
