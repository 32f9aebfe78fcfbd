#include "io/safetensors.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "util/error.h"

namespace dsv4 {

namespace fs = std::filesystem;
using nlohmann::json;

const char* dtype_name(DType d) {
  switch (d) {
    case DType::kF8_E4M3:
      return "F8_E4M3";
    case DType::kF8_E8M0:
      return "F8_E8M0";
    case DType::kI8:
      return "I8";
    case DType::kU8:
      return "U8";
    case DType::kBF16:
      return "BF16";
    case DType::kF32:
      return "F32";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
  }
  return "?";
}

size_t dtype_size(DType d) {
  switch (d) {
    case DType::kF8_E4M3:
    case DType::kF8_E8M0:
    case DType::kI8:
    case DType::kU8:
      return 1;
    case DType::kBF16:
      return 2;
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kI64:
      return 8;
  }
  return 0;
}

static bool parse_dtype(const std::string& s, DType* out) {
  static const std::pair<const char*, DType> table[] = {
      {"F8_E4M3", DType::kF8_E4M3}, {"F8_E8M0", DType::kF8_E8M0}, {"I8", DType::kI8},
      {"U8", DType::kU8},           {"BF16", DType::kBF16},       {"F32", DType::kF32},
      {"I32", DType::kI32},         {"I64", DType::kI64}};
  for (const auto& [n, d] : table) {
    if (s == n) {
      *out = d;
      return true;
    }
  }
  return false;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorInfo::shape_str() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void Checkpoint::add_file(const std::string& path) {
  MappedFile mf(path);
  const size_t size = mf.size();
  if (size < 8) {
    throw Error(path + ": truncated safetensors file (" + std::to_string(size) +
                " bytes; the 8-byte header length is missing)");
  }
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | mf.data()[i];
  if (hlen > size - 8) {
    throw Error(path + ": header length " + std::to_string(hlen) +
                " at byte 0 runs past the end of the file (" + std::to_string(size) + " bytes)");
  }
  if (hlen > (100u << 20))
    throw Error(path + ": header length " + std::to_string(hlen) + " exceeds 100 MiB");
  const size_t data_start = 8 + hlen;
  json header;
  try {
    header = json::parse(mf.data() + 8, mf.data() + 8 + hlen);
  } catch (const json::parse_error& e) {
    throw Error(path + ": header is not valid JSON (header bytes 8.." + std::to_string(data_start) +
                "): " + printable(e.what()));
  }
  if (!header.is_object()) throw Error(path + ": header JSON is not an object");

  struct Range {
    size_t b, e;
    std::string name;
  };
  std::vector<Range> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") continue;
    const json& t = it.value();
    const std::string where = path + ": tensor '" + name + "'";
    if (!t.is_object() || !t.contains("dtype") || !t.contains("shape") ||
        !t.contains("data_offsets")) {
      throw Error(where + ": header entry needs dtype, shape and data_offsets");
    }
    TensorInfo info;
    info.name = name;
    info.file = path;
    if (!t["dtype"].is_string() || !parse_dtype(t["dtype"].get<std::string>(), &info.dtype)) {
      throw Error(where + ": unsupported dtype " + t["dtype"].dump() +
                  " (expected one of F8_E4M3 F8_E8M0 I8 U8 BF16 F32 I32 I64)");
    }
    if (!t["shape"].is_array()) throw Error(where + ": shape is not an array");
    uint64_t numel = 1;
    for (const json& d : t["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0)
        throw Error(where + ": bad shape " + t["shape"].dump());
      const uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > (uint64_t{1} << 50) / dim)
        throw Error(where + ": shape too large " + t["shape"].dump());
      numel *= dim;
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    const json& off = t["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned()) {
      throw Error(where + ": data_offsets must be two non-negative integers, got " + off.dump());
    }
    const uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    if (b > e) throw Error(where + ": data_offsets " + off.dump() + " begin after they end");
    if (e > size - data_start) {
      throw Error(where + ": data_offsets " + off.dump() + " (absolute bytes " +
                  std::to_string(data_start + b) + ".." + std::to_string(data_start + e) +
                  ") lie outside the file (" + std::to_string(size) + " bytes)");
    }
    const uint64_t expect = numel * dtype_size(info.dtype);
    if (e - b != expect) {
      throw Error(where + ": " + std::to_string(e - b) + " data bytes but dtype " +
                  dtype_name(info.dtype) + " shape " + info.shape_str() + " needs " +
                  std::to_string(expect));
    }
    info.file_offset = data_start + b;
    info.nbytes = e - b;
    ranges.push_back({static_cast<size_t>(b), static_cast<size_t>(e), name});
    if (tensors_.count(name)) {
      throw Error(where + ": tensor also present in " + tensors_[name].file);
    }
    tensors_[name] = std::move(info);
  }
  std::sort(ranges.begin(), ranges.end(), [](const Range& x, const Range& y) { return x.b < y.b; });
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].b < ranges[i - 1].e) {
      throw Error(path + ": tensors '" + ranges[i - 1].name + "' and '" + ranges[i].name +
                  "' overlap (data bytes " + std::to_string(ranges[i].b + data_start) + ".." +
                  std::to_string(ranges[i - 1].e + data_start) + ")");
    }
  }
  // Only now, with every header entry checked, point the views into the mapping.
  for (const Range& r : ranges) tensors_[r.name].data = mf.data() + tensors_[r.name].file_offset;
  files_.push_back(std::move(mf));
}

std::unique_ptr<Checkpoint> Checkpoint::open_file(const std::string& path) {
  auto ck = std::unique_ptr<Checkpoint>(new Checkpoint());
  ck->add_file(path);
  return ck;
}

std::unique_ptr<Checkpoint> Checkpoint::open(const std::string& dir) {
  if (!fs::is_directory(dir)) throw Error(dir + ": model directory not found");
  auto ck = std::unique_ptr<Checkpoint>(new Checkpoint());
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(index_path)) {
    json index;
    try {
      std::ifstream in(index_path);
      index = json::parse(in);
    } catch (const json::exception& e) {
      throw Error(index_path.string() + ": not valid JSON: " + printable(e.what()));
    }
    if (!index.contains("weight_map") || !index["weight_map"].is_object()) {
      throw Error(index_path.string() + ": missing object field 'weight_map'");
    }
    std::vector<std::string> shards;
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      if (!it.value().is_string())
        throw Error(index_path.string() + ": weight_map['" + it.key() + "'] is not a file name");
      const std::string f = it.value().get<std::string>();
      if (std::find(shards.begin(), shards.end(), f) == shards.end()) shards.push_back(f);
    }
    for (const auto& f : shards) {
      const fs::path p = fs::path(dir) / f;
      if (!fs::exists(p)) {
        throw Error(index_path.string() + ": names shard '" + f + "', which is missing from " +
                    dir);
      }
      ck->add_file(p.string());
    }
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      const TensorInfo* t = ck->find(it.key());
      const std::string want = (fs::path(dir) / it.value().get<std::string>()).string();
      if (!t)
        throw Error(index_path.string() + ": tensor '" + it.key() + "' is listed in shard '" +
                    it.value().get<std::string>() + "' but not found there");
      if (t->file != want)
        throw Error(index_path.string() + ": tensor '" + it.key() + "' is listed in '" + want +
                    "' but stored in '" + t->file + "'");
    }
  } else {
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().extension() == ".safetensors") files.push_back(e.path().string());
    }
    std::sort(files.begin(), files.end());
    if (files.empty())
      throw Error(dir + ": no model.safetensors (nor model.safetensors.index.json) found");
    for (const auto& f : files) ck->add_file(f);
  }
  return ck;
}

const TensorInfo* Checkpoint::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

size_t Checkpoint::total_bytes() const {
  size_t n = 0;
  for (const auto& f : files_) n += f.size();
  return n;
}

}  // namespace dsv4
