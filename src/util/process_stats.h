// Resident memory of this process (benchmarks and the mapping-not-copying checks).
#pragma once

#include <cstddef>
#include <string>

namespace dsv4 {

// VmRSS from /proc/self/status in bytes (0 where unavailable). Mapped checkpoint pages count once
// they have been touched.
size_t resident_set_bytes();

// RssAnon from /proc/self/status in bytes (0 where unavailable): memory the process allocated,
// which a copy of the weights would be, as opposed to pages of mapped files. With 2 MiB pages,
// touching one tensor of a mapped checkpoint can make its whole 2 MiB resident as file pages.
size_t anonymous_resident_bytes();

// The resident part of this process's file mappings under directory `dir` (an absolute,
// symlink-free path, e.g. from std::filesystem::canonical) and how much of it is mapped by 2 MiB
// pages (FilePmdMapped), from /proc/self/smaps; zeros where unavailable.
struct MappedResidency {
  size_t resident_bytes = 0;
  size_t huge_bytes = 0;
};
MappedResidency file_mapping_residency(const std::string& dir);

// The VmFlags line of the mapping holding address `p` in /proc/self/smaps (e.g. " rd mr mw me hg",
// with "hg" for MADV_HUGEPAGE and "nh" for MADV_NOHUGEPAGE), each flag preceded by a space; empty
// if `p` is not mapped or the file is unavailable.
std::string mapping_vm_flags(const void* p);

}  // namespace dsv4
