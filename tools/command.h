// The `dsv4` command line is a set of subcommands; each lives in its own tools/cmd_*.cc file and
// registers itself with DSV4_COMMAND. tools/ is linked straight into the executable (not a
// library), so the static registrars are never dropped by the linker.
#pragma once

#include <functional>
#include <map>
#include <string>

namespace dsv4::cli {

// argv[0] is the subcommand name; returns the process exit code.
using CommandFn = std::function<int(int argc, char** argv)>;

struct Command {
  std::string summary;
  CommandFn run;
};

std::map<std::string, Command>& command_registry();

struct CommandRegistrar {
  CommandRegistrar(const char* name, const char* summary, CommandFn fn) {
    command_registry()[name] = Command{summary, std::move(fn)};
  }
};

}  // namespace dsv4::cli

#define DSV4_CONCAT_INNER(a, b) a##b
#define DSV4_CONCAT(a, b) DSV4_CONCAT_INNER(a, b)
#define DSV4_COMMAND(name, summary, fn) \
  static ::dsv4::cli::CommandRegistrar DSV4_CONCAT(dsv4_command_, __LINE__)(name, summary, fn)
