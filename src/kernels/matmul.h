// Matrix products straight from the checkpoint's weight formats (no dequantised copies).
// A MatrixView is a typed view over mapped bytes; y = x · Wᵀ with fp32 activations and fp32
// accumulation (the reference's mode B/D numerics: exact weights, fp32 maths).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace dsv4 {

class ThreadPool;
class Fp8CodeMap;

enum class WeightFormat {
  kF32,
  kBF16,
  kFp8Block128,  // e4m3fn bytes [rows, cols] + E8M0 scales [ceil(rows/128), ceil(cols/128)]
  kFp4Block32,   // packed e2m1 [rows, cols/2] (even element in low nibble) + E8M0 [rows, cols/32]
};

const char* weight_format_name(WeightFormat f);

struct MatrixView {
  WeightFormat format = WeightFormat::kF32;
  size_t rows = 0, cols = 0;        // logical [out_features, in_features]
  const void* data = nullptr;       // first element of row 0 of this view
  const uint8_t* scales = nullptr;  // scale row of this view's row 0 (FP8: its 128-row block)
  size_t scale_stride = 0;          // bytes between consecutive scale rows
  // FP8, optional: the whole matrix's Fp8CodeMap and this view's row 0 in it. With a map the
  // FP8 GEMV decodes most codes the faster way (kernels/fp8_code_map.h), with the same results.
  const Fp8CodeMap* fp8_map = nullptr;
  size_t fp8_map_row0 = 0;

  bool empty() const { return data == nullptr; }
  // Rows [r0, r0+n). For FP8, r0 must be a multiple of 128 (scale blocks are not split).
  MatrixView row_slice(size_t r0, size_t n) const;
  // Bytes of weights + scales this view covers (what a full product reads).
  size_t bytes() const;
  // The address ranges behind it: [data, data + data_bytes()) and
  // [scales, scales + scale_span_bytes()) (scale rows including their stride padding).
  size_t data_bytes() const;
  size_t scale_span_bytes() const;
};

// Writes row r of W as fp32 (exact) into out[0..cols).
void dequantize_row(const MatrixView& w, size_t r, float* out);

// y[t*ldy + o] = Σ_i x[t*ldx + i] · W[o, i] for t < n, o < rows. ldx ≥ cols, ldy ≥ rows.
// pool may be null (single thread). Each row's result is independent of n and of the threads.
void matmul(const MatrixView& w, const float* x, size_t ldx, size_t n, float* y, size_t ldy,
            ThreadPool* pool);
inline void matmul(const MatrixView& w, const float* x, size_t n, float* y, ThreadPool* pool) {
  matmul(w, x, w.cols, n, y, w.rows, pool);
}

// Scalar reference: dequantise, multiply in fp64-free plain fp32 loops. Used by kernel tests.
void matmul_reference(const MatrixView& w, const float* x, size_t ldx, size_t n, float* y,
                      size_t ldy);

}  // namespace dsv4
