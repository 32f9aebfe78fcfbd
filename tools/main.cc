// dsv4: DeepSeek-V4 inference engine command line. Dispatches to the registered subcommands.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "command.h"

namespace dsv4::cli {

std::map<std::string, Command>& command_registry() {
  static std::map<std::string, Command> registry;
  return registry;
}

static void print_usage(FILE* out) {
  std::fprintf(out,
               "dsv4 — DeepSeek-V4 inference engine (official checkpoints, read in place)\n\n"
               "usage: dsv4 <command> [options]   (dsv4 <command> --help for its flags)\n\n"
               "commands:\n");
  for (const auto& [name, cmd] : command_registry()) {
    std::fprintf(out, "  %-12s %s\n", name.c_str(), cmd.summary.c_str());
  }
}

}  // namespace dsv4::cli

int main(int argc, char** argv) {
  using namespace dsv4::cli;
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    print_usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  auto it = command_registry().find(argv[1]);
  if (it == command_registry().end()) {
    std::fprintf(stderr, "dsv4: unknown command '%s'\n\n", argv[1]);
    print_usage(stderr);
    return 2;
  }
  try {
    return it->second.run(argc - 1, argv + 1);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsv4 %s: error: %s\n", argv[1], e.what());
    return 1;
  }
}
