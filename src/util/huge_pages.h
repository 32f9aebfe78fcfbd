// Memory mapped in 2 MiB pages where the kernel allows it.
//
// Decode streams gigabytes of weights per token. Measured here (bench/matmul_bench
// --benchmark_filter=read_pages: a 1 GiB read-only sum, 2 threads, page sizes alternated):
// 54–55 GB/s from 4 KiB pages against 66–71 GB/s from 2 MiB pages, and `dsv4 bench` decode on
// flash-4l (same binary) went from 12–14.5 to 17.5–20 tok/s once the checkpoint's page cache
// held 2 MiB folios. Linux gives a file mapping 2 MiB pages only when the mapping is
// 2 MiB aligned, asked for with MADV_HUGEPAGE (transparent_hugepage=madvise is the usual default),
// and the page cache holds the file in 2 MiB folios: files first read through such a mapping get
// them (xfs, and ext4 on recent kernels such as 6.18); files already cached in small pages keep
// those until they are evicted.
#pragma once

#include <cstddef>

namespace dsv4 {

inline constexpr size_t kHugePageBytes = size_t{2} << 20;

// kHuge: MADV_HUGEPAGE (a kernel without THP just ignores the advice). kSmall: MADV_NOHUGEPAGE,
// 4 KiB pages even where THP is "always": only for measuring what the huge ones gain.
enum class Pages { kHuge, kSmall };

// Maps `bytes` at a kHugePageBytes-aligned address with the given page advice. fd >= 0: the
// file, read-only and shared, from offset 0; fd < 0: anonymous zeroed read-write memory. Returns
// nullptr with errno set on failure. Release with unmap_pages(p, bytes).
void* map_aligned(size_t bytes, int fd, Pages pages = Pages::kHuge);
void unmap_pages(const void* p, size_t bytes);

// An anonymous buffer from map_aligned: the bandwidth measurements' counterpart of the weights,
// which are mapped in huge pages, so both run on the same page size.
class MappedBuffer {
 public:
  // Throws dsv4::Error when the memory cannot be mapped.
  explicit MappedBuffer(size_t bytes, Pages pages = Pages::kHuge);
  ~MappedBuffer() { unmap_pages(p_, bytes_); }
  MappedBuffer(const MappedBuffer&) = delete;
  MappedBuffer& operator=(const MappedBuffer&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_;
  size_t bytes_;
};

}  // namespace dsv4
