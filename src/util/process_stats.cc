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

// A "Name:   123 kB" line of /proc/self/status in bytes (0 where unavailable).
size_t status_bytes(std::string_view name) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (auto v = field(line, name)) return std::stoull(*v) * 1024;
  return 0;
}

}  // namespace

size_t resident_set_bytes() { return status_bytes("VmRSS"); }

size_t anonymous_resident_bytes() { return status_bytes("RssAnon"); }

// Walks /proc/self/smaps: on_mapping(begin, end, path) for each mapping, then on_field(line) for
// each of its field lines while on_mapping's last answer was true. on_field returning true ends
// the walk.
template <class OnMapping, class OnField>
void walk_smaps(const OnMapping& on_mapping, const OnField& on_field) {
  std::ifstream in("/proc/self/smaps");
  std::string line;
  bool inside = false;
  uintptr_t b = 0, e = 0;
  std::string_view path;
  while (std::getline(in, line)) {
    if (mapping_line(line, b, e, path))
      inside = on_mapping(b, e, path);
    else if (inside && on_field(line))
      return;
  }
}

MappedResidency file_mapping_residency(const std::string& dir) {
  MappedResidency r;
  const std::string prefix = dir.empty() || dir.back() == '/' ? dir : dir + "/";
  walk_smaps([&](uintptr_t, uintptr_t,
                 std::string_view path) { return path.substr(0, prefix.size()) == prefix; },
             [&](const std::string& line) {
               if (auto v = field(line, "Rss")) r.resident_bytes += std::stoull(*v) * 1024;
               if (auto v = field(line, "FilePmdMapped")) r.huge_bytes += std::stoull(*v) * 1024;
               return false;
             });
  return r;
}

std::string mapping_vm_flags(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  std::string flags;
  walk_smaps([&](uintptr_t b, uintptr_t e, std::string_view) { return a >= b && a < e; },
             [&](const std::string& line) {
               auto v = field(line, "VmFlags");
               if (v) flags = *v;
               return v.has_value();
             });
  return flags;
}

}  // namespace dsv4
