// safetensors reader: a model directory's single `model.safetensors` or the shards listed in
// `model.safetensors.index.json`, memory-mapped. Every header is validated before any tensor
// data is touched: header length, JSON, dtype, shape, byte size, offsets inside the file,
// no overlaps. Errors name the file, the tensor and the byte offset.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/mapped_file.h"

namespace dsv4 {

enum class DType { kF8_E4M3, kF8_E8M0, kI8, kU8, kBF16, kF32, kI32, kI64 };

const char* dtype_name(DType d);
size_t dtype_size(DType d);

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // inside the mapping
  size_t nbytes = 0;
  size_t file_offset = 0;         // absolute byte offset in the file
  std::string file;               // path of the shard holding it

  int64_t numel() const;
  std::string shape_str() const;
};

class Checkpoint {
 public:
  // Opens `dir`: model.safetensors.index.json if present (all shards it names must exist),
  // else every *.safetensors file in the directory (normally model.safetensors).
  static std::unique_ptr<Checkpoint> open(const std::string& dir);
  // Opens one safetensors file on its own (tests, tools).
  static std::unique_ptr<Checkpoint> open_file(const std::string& path);

  const TensorInfo* find(const std::string& name) const;
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  size_t total_bytes() const;  // bytes of all mapped files
  const std::vector<MappedFile>& files() const { return files_; }

 private:
  void add_file(const std::string& path);
  std::vector<MappedFile> files_;
  std::map<std::string, TensorInfo> tensors_;
};

}  // namespace dsv4
