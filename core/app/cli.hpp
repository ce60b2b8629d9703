// The CLI's command table: each core/app/cmd_*.cpp registers one `colm <command>` with its help.
// main() dispatches; commands parse their own options with Boost.program_options.
#pragma once
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

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

// Parses a command's arguments into vm with `options` (and `positional`). Returns the exit code to
// return at once (0 after printing `help` for --help; 2 on a malformed command line, with
// "colm COMMAND: problem (see colm COMMAND --help)" on stderr), or nothing to go on.
inline std::optional<int> parse_options(const std::string& command, const std::vector<std::string>& args,
                                        const boost::program_options::options_description& options,
                                        boost::program_options::variables_map& vm,
                                        const boost::program_options::positional_options_description* positional = nullptr,
                                        const boost::program_options::options_description* help = nullptr) {
  namespace po = boost::program_options;
  try {
    po::command_line_parser parser(args);
    parser.options(options);
    if (positional) parser.positional(*positional);
    po::store(parser.run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "colm " << command << ": " << e.what() << " (see colm " << command << " --help)\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << (help ? *help : options) << "\n";
    return 0;
  }
  return std::nullopt;
}

struct RegisterCommand {
  RegisterCommand(const std::string& name, const std::string& summary, CommandFn fn) {
    commands()[name] = Command{name, summary, std::move(fn)};
  }
};

}  // namespace colm::cli
