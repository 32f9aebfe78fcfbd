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

MappedResidency file_mapping_residency(const std::string& dir) {
  MappedResidency r;
  std::ifstream in("/proc/self/smaps");
  const std::string prefix = dir.empty() || dir.back() == '/' ? dir : dir + "/";
  std::string line;
  bool inside = false;
  // A mapping starts with "start-end perms offset dev inode [path]"; its fields ("Rss:   12 kB")
  // follow. Field names have no spaces before their colon, mapping lines have no colon there.
  while (std::getline(in, line)) {
    const size_t colon = line.find(':');
    const size_t space = line.find(' ');
    if (colon == std::string::npos || (space != std::string::npos && space < colon)) {
      const size_t slash = line.find('/');
      inside = slash != std::string::npos && line.compare(slash, prefix.size(), prefix) == 0;
      continue;
    }
    if (!inside) continue;
    auto kib = [&] { return std::stoull(line.substr(colon + 1)) * 1024; };
    if (line.compare(0, colon, "Rss") == 0) r.resident_bytes += kib();
    if (line.compare(0, colon, "FilePmdMapped") == 0) r.huge_bytes += kib();
  }
  return r;
}

}  // namespace dsv4
