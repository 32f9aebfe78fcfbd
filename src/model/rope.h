// RoPE frequencies of a layer (spec §4): plain θ=rope_theta on sliding-window-only layers, YaRN
// with θ=compress_rope_theta on compressed (CSA/HCA) layers — for everything in that layer.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"

namespace dsv4 {

class RopeTable {
 public:
  RopeTable() = default;
  RopeTable(const ModelConfig& cfg, bool compressed_layer);

  int n_pairs() const { return static_cast<int>(freqs_.size()); }
  // cos/sin of angle_j = fp32(pos)·fp32(f_j) (the demo's fp32 product), n_pairs each.
  void angles(int64_t pos, float* cos, float* sin) const;

 private:
  std::vector<float> freqs_;
};

}  // namespace dsv4
