// The MatrixView of an FP8 test matrix held in vectors: row-major codes and unpadded
// [ceil(rows/128), ceil(cols/128)] scales.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/matmul.h"

namespace dsv4 {

inline MatrixView fp8_test_view(const std::vector<uint8_t>& codes,
                                const std::vector<uint8_t>& scales, size_t rows, size_t cols) {
  MatrixView v;
  v.format = WeightFormat::kFp8Block128;
  v.rows = rows;
  v.cols = cols;
  v.data = codes.data();
  v.scales = scales.data();
  v.scale_stride = (cols + 127) / 128;
  return v;
}

}  // namespace dsv4
