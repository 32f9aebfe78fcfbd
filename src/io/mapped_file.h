// Read-only memory mapping of a whole file. Weights are used in place from these mappings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace dsv4 {

class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::string& path);  // throws dsv4::Error naming the file
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Asks the kernel to start reading the pages of [p, p+bytes) (a range inside a mapping) in the
// background: madvise(MADV_WILLNEED) over the whole pages it touches. Best effort, no error.
void advise_willneed(const void* p, size_t bytes);

// Physical memory of this machine in bytes (0 if unknown).
size_t physical_memory_bytes();

}  // namespace dsv4
