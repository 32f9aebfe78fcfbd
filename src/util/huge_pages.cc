#include "util/huge_pages.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include "util/error.h"

namespace dsv4 {

void* map_aligned(size_t bytes, int fd, Pages pages) {
  if (bytes == 0) {
    errno = EINVAL;
    return nullptr;
  }
  // Reserve enough address space to place an aligned start inside it, map over that start, and
  // give back the unused ends.
  const size_t span = bytes + kHugePageBytes;
  void* r = ::mmap(nullptr, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (r == MAP_FAILED) return nullptr;
  const uintptr_t base = reinterpret_cast<uintptr_t>(r);
  const uintptr_t start = (base + kHugePageBytes - 1) & ~(uintptr_t{kHugePageBytes} - 1);
  void* p = fd >= 0 ? ::mmap(reinterpret_cast<void*>(start), bytes, PROT_READ,
                             MAP_SHARED | MAP_FIXED, fd, 0)
                    : ::mmap(reinterpret_cast<void*>(start), bytes, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  if (p == MAP_FAILED) {
    const int e = errno;
    ::munmap(r, span);
    errno = e;
    return nullptr;
  }
  static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t end = (start + bytes + page - 1) & ~(page - 1);
  if (start > base) ::munmap(r, start - base);
  if (base + span > end) ::munmap(reinterpret_cast<void*>(end), base + span - end);
  // Advice only: no THP support is not an error.
  ::madvise(p, bytes, pages == Pages::kHuge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  return p;
}

void unmap_pages(const void* p, size_t bytes) {
  if (p != nullptr) ::munmap(const_cast<void*>(p), bytes);
}

MappedBuffer::MappedBuffer(size_t bytes, Pages pages)
    : p_(map_aligned(bytes, -1, pages)), bytes_(bytes) {
  if (p_ == nullptr) {
    throw Error("cannot map " + std::to_string(bytes) +
                " bytes of memory: " + std::strerror(errno));
  }
}

}  // namespace dsv4
