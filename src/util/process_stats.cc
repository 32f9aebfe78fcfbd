#include "util/process_stats.h"

#include <cstdint>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>

namespace dsv4 {

namespace {

// In /proc/self/smaps a mapping starts with "start-end perms offset dev inode [path]" (addresses
// in hex); the field lines that follow ("Rss:   12 kB") have no space before their colon. True for
// a mapping line, with its range and path (empty for anonymous memory).
bool mapping_line(const std::string& line, uintptr_t& begin, uintptr_t& end,
                  std::string_view& path) {
  const size_t colon = line.find(':'), space = line.find(' '), dash = line.find('-');
  if (colon != std::string::npos && (space == std::string::npos || colon < space)) return false;
  if (dash == std::string::npos || space == std::string::npos || dash > space) return false;
  begin = std::stoull(line.substr(0, dash), nullptr, 16);
  end = std::stoull(line.substr(dash + 1, space - dash - 1), nullptr, 16);
  const size_t slash = line.find('/');
  path = slash == std::string::npos ? std::string_view() : std::string_view(line).substr(slash);
  return true;
}

// The value of a field line "Name:   value" if it is `name`, else nullopt.
std::optional<std::string> field(const std::string& line, std::string_view name) {
  if (line.size() <= name.size() || line.compare(0, name.size(), name) != 0 ||
      line[name.size()] != ':')
    return std::nullopt;
  return line.substr(name.size() + 1);
}

}  // namespace

size_t resident_set_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (auto v = field(line, "VmRSS")) return std::stoull(*v) * 1024;
  return 0;
}

MappedResidency file_mapping_residency(const std::string& dir) {
  MappedResidency r;
  std::ifstream in("/proc/self/smaps");
  const std::string prefix = dir.empty() || dir.back() == '/' ? dir : dir + "/";
  std::string line;
  bool inside = false;
  uintptr_t b = 0, e = 0;
  std::string_view path;
  while (std::getline(in, line)) {
    if (mapping_line(line, b, e, path)) {
      inside = path.substr(0, prefix.size()) == prefix;
    } else if (inside) {
      if (auto v = field(line, "Rss")) r.resident_bytes += std::stoull(*v) * 1024;
      if (auto v = field(line, "FilePmdMapped")) r.huge_bytes += std::stoull(*v) * 1024;
    }
  }
  return r;
}

std::string mapping_vm_flags(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  std::ifstream in("/proc/self/smaps");
  std::string line;
  bool inside = false;
  uintptr_t b = 0, e = 0;
  std::string_view path;
  while (std::getline(in, line)) {
    if (mapping_line(line, b, e, path)) {
      inside = a >= b && a < e;
    } else if (inside) {
      if (auto v = field(line, "VmFlags")) return *v;
    }
  }
  return "";
}

}  // namespace dsv4
