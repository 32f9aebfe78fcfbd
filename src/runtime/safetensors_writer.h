// Streaming safetensors writer: the header (8-byte little-endian length + JSON, padded with spaces
// to a multiple of 8) is laid out from the tensor list up front, the file is sized, and tensor
// bytes are then written at their offsets in any order and from several threads (pwrite), so a
// multi-gigabyte checkpoint never has to be held in memory.
//
// Layout follows the Rust `safetensors` serializer: tensors packed without holes, ordered by dtype
// size (largest first) then name, so every tensor is naturally aligned relative to the 8-aligned
// data start.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace dsv4 {

class SafetensorsWriter {
 public:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
  };

  // Creates (truncates) `path`, writes the header and sizes the file. Throws dsv4::Error.
  SafetensorsWriter(const std::string& path, std::vector<Entry> entries,
                    const std::map<std::string, std::string>& metadata = {{"format", "pt"}});
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Writes `n` bytes at `offset` bytes into tensor `name`'s data. Thread-safe.
  void write(const std::string& name, size_t offset, const void* data, size_t n);
  // Flushes and closes; throws on I/O error. Called by the destructor if not called.
  void close();

  size_t tensor_bytes(const std::string& name) const;
  size_t data_bytes() const { return data_bytes_; }   // sum of tensor sizes
  size_t file_bytes() const { return header_bytes_ + data_bytes_; }
  const std::string& path() const { return path_; }

  // Bytes of one tensor of this dtype and shape.
  static size_t nbytes(DType d, const std::vector<int64_t>& shape);

 private:
  struct Slot {
    size_t begin = 0, size = 0;  // relative to the data start
  };
  std::string path_;
  int fd_ = -1;
  size_t header_bytes_ = 0, data_bytes_ = 0;
  std::map<std::string, Slot> slots_;
};

}  // namespace dsv4
