// Resident memory of this process (benchmarks and the mapping-not-copying checks).
#pragma once

#include <cstddef>

namespace dsv4 {

// VmRSS from /proc/self/status in bytes (0 where unavailable). Mapped checkpoint pages count once
// they have been touched.
size_t resident_set_bytes();

}  // namespace dsv4
