// Memory mapped in 2 MiB pages where the kernel allows it.
//
// Decode streams gigabytes of weights per token. Measured here (2 threads, 1 GiB sum, alternated
// runs): 43–50 GB/s from 4 KiB pages against 50–59 GB/s from 2 MiB pages, and `dsv4 bench` decode
// on flash-4l (same binary) went from 12–14.5 to 17.5–20 tok/s once the checkpoint's page cache
// held 2 MiB folios. Linux gives a file mapping 2 MiB pages only when the mapping is
// 2 MiB aligned, asked for with MADV_HUGEPAGE (transparent_hugepage=madvise is the usual default),
// and the page cache holds the file in 2 MiB folios: files first read through such a mapping get
// them (xfs, and ext4 on recent kernels such as 6.18); files already cached in small pages keep
// those until they are evicted.
#pragma once

#include <cstddef>

namespace dsv4 {

inline constexpr size_t kHugePageBytes = size_t{2} << 20;

// Maps `bytes` at a kHugePageBytes-aligned address and asks for huge pages (MADV_HUGEPAGE; a
// kernel without THP just ignores the advice). fd >= 0: the file, read-only and shared, from
// offset 0; fd < 0: anonymous zeroed read-write memory. Returns nullptr with errno set on failure.
// Release with unmap_pages(p, bytes).
void* map_huge_aligned(size_t bytes, int fd);
void unmap_pages(const void* p, size_t bytes);

// An anonymous buffer from map_huge_aligned (the bandwidth measurements' counterpart of weights
// mapped by map_huge_aligned, so both run on the same page size).
class HugeBuffer {
 public:
  explicit HugeBuffer(size_t bytes);  // throws dsv4::Error when the memory cannot be mapped
  ~HugeBuffer() { unmap_pages(p_, bytes_); }
  HugeBuffer(const HugeBuffer&) = delete;
  HugeBuffer& operator=(const HugeBuffer&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_;
  size_t bytes_;
};

}  // namespace dsv4
