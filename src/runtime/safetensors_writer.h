// Streaming safetensors writer: the header (8-byte little-endian length + JSON, padded with spaces
// to a multiple of 8) is laid out from the tensor list up front, the file is sized, and tensor
// bytes are then written at their offsets in any order and from several threads, so a
// multi-gigabyte checkpoint never has to be held in memory.
//
// Writes reach the file in whole 2 MiB-aligned blocks, each gathered in memory until all its bytes
// have been written: the page cache then holds the new file in 2 MiB folios, which decode reads
// markedly faster than small pages (util/huge_pages.h), whereas pwrites of row-sized chunks leave
// it in 4 KiB pages until evicted. Only the blocks being filled are held, not the file.
//
// Layout follows the Rust `safetensors` serializer: tensors packed without holes, ordered by dtype
// size (largest first) then name, so every tensor is naturally aligned relative to the 8-aligned
// data start.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
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

  // Writes `n` bytes at `offset` bytes into tensor `name`'s data. Thread-safe. Each byte of the
  // file is written at most once (bytes never written stay zero).
  void write(const std::string& name, size_t offset, const void* data, size_t n);
  // Flushes and closes; throws on I/O error. Called by the destructor if not called.
  void close();

  size_t tensor_bytes(const std::string& name) const;
  size_t data_bytes() const { return data_bytes_; }  // sum of tensor sizes
  size_t file_bytes() const { return header_bytes_ + data_bytes_; }
  const std::string& path() const { return path_; }

  // Bytes of one tensor of this dtype and shape.
  static size_t nbytes(DType d, const std::vector<int64_t>& shape);

 private:
  struct Slot {
    size_t begin = 0, size = 0;  // relative to the data start
  };
  struct Block {
    std::vector<uint8_t> bytes;
    size_t filled = 0;
  };
  void stage(size_t pos, const uint8_t* p, size_t n);
  void write_at(size_t pos, const uint8_t* p, size_t n);
  std::mutex mu_;
  std::unordered_map<size_t, Block> blocks_;  // by index of the 2 MiB block in the file
  std::string path_;
  int fd_ = -1;
  size_t header_bytes_ = 0, data_bytes_ = 0;
  std::map<std::string, Slot> slots_;
};

}  // namespace dsv4
