#include "util/process_stats.h"

#include <fstream>
#include <string>

namespace dsv4 {

size_t resident_set_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

}  // namespace dsv4
