#include "runtime/safetensors_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/huge_pages.h"

namespace dsv4 {

size_t SafetensorsWriter::nbytes(DType d, const std::vector<int64_t>& shape) {
  size_t n = dtype_size(d);
  for (int64_t s : shape) n *= static_cast<size_t>(s);
  return n;
}

SafetensorsWriter::SafetensorsWriter(const std::string& path, std::vector<Entry> entries,
                                     const std::map<std::string, std::string>& metadata)
    : path_(path) {
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    size_t sa = dtype_size(a.dtype), sb = dtype_size(b.dtype);
    if (sa != sb) return sa > sb;
    return a.name < b.name;
  });
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = m;
  }
  size_t off = 0;
  for (const Entry& e : entries) {
    if (slots_.count(e.name)) throw Error(path + ": duplicate tensor name '" + e.name + "'");
    size_t n = nbytes(e.dtype, e.shape);
    slots_[e.name] = Slot{off, n};
    header[e.name] = {
        {"dtype", dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  data_bytes_ = off;
  std::string text = header.dump();
  while ((8 + text.size()) % 8) text.push_back(' ');
  header_bytes_ = 8 + text.size();

  fd_ = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error("cannot create " + path + ": " + std::strerror(errno));
  uint8_t len[8];
  uint64_t hl = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(hl >> (8 * i));
  std::string head(reinterpret_cast<char*>(len), 8);
  head += text;
  if (::ftruncate(fd_, static_cast<off_t>(header_bytes_ + data_bytes_)) != 0) {
    throw Error("cannot size " + path + " to " + std::to_string(header_bytes_ + data_bytes_) +
                " bytes: " + std::strerror(errno));
  }
  stage(0, reinterpret_cast<const uint8_t*>(head.data()), head.size());
}

SafetensorsWriter::~SafetensorsWriter() {
  try {
    close();
  } catch (const Error&) {
    // Destructors must not throw; a caller that needs the error calls close() itself.
  }
}

size_t SafetensorsWriter::tensor_bytes(const std::string& name) const {
  auto it = slots_.find(name);
  if (it == slots_.end()) throw Error(path_ + ": no tensor '" + name + "' in this file");
  return it->second.size;
}

void SafetensorsWriter::write(const std::string& name, size_t offset, const void* data, size_t n) {
  auto it = slots_.find(name);
  if (it == slots_.end()) throw Error(path_ + ": no tensor '" + name + "' in this file");
  if (offset + n > it->second.size) {
    throw Error(path_ + ": write past the end of tensor '" + name + "'");
  }
  stage(header_bytes_ + it->second.begin + offset, static_cast<const uint8_t*>(data), n);
}

void SafetensorsWriter::stage(size_t pos, const uint8_t* p, size_t n) {
  while (n) {
    const size_t index = pos / kHugePageBytes, within = pos % kHugePageBytes;
    const size_t len = std::min(kHugePageBytes, file_bytes() - index * kHugePageBytes);
    const size_t take = std::min(n, len - within);
    std::vector<uint8_t> full;
    {
      std::lock_guard<std::mutex> lock(mu_);
      Block& b = blocks_[index];
      if (b.bytes.empty()) b.bytes.assign(len, 0);
      std::memcpy(b.bytes.data() + within, p, take);
      b.filled += take;
      if (b.filled > len)
        throw Error(path_ + ": bytes written twice near offset " + std::to_string(pos));
      if (b.filled == len) {
        full = std::move(b.bytes);
        blocks_.erase(index);
      }
    }
    if (!full.empty()) write_at(index * kHugePageBytes, full.data(), full.size());
    p += take;
    pos += take;
    n -= take;
  }
}

void SafetensorsWriter::write_at(size_t pos, const uint8_t* p, size_t n) {
  while (n) {
    ssize_t w = ::pwrite(fd_, p, n, static_cast<off_t>(pos));
    if (w < 0) {
      if (errno == EINTR) continue;
      throw Error("cannot write " + path_ + ": " + std::strerror(errno));
    }
    p += w;
    pos += static_cast<size_t>(w);
    n -= static_cast<size_t>(w);
  }
}

void SafetensorsWriter::close() {
  if (fd_ < 0) return;
  // Blocks with bytes never written (none when every tensor was written in full).
  for (auto& [index, b] : blocks_) write_at(index * kHugePageBytes, b.bytes.data(), b.bytes.size());
  blocks_.clear();
  int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) throw Error("cannot close " + path_ + ": " + std::strerror(errno));
}

}  // namespace dsv4
