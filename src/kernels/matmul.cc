#include "kernels/matmul.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "kernels/matmul_internal.h"
#include "kernels/path_tuner.h"
#include "numerics/formats.h"
#include "util/thread_pool.h"

namespace dsv4 {

const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::kF32:
      return "F32";
    case WeightFormat::kBF16:
      return "BF16";
    case WeightFormat::kFp8Block128:
      return "FP8-e4m3+E8M0/128x128";
    case WeightFormat::kFp4Block32:
      return "FP4-e2m1+E8M0/32";
  }
  return "?";
}

MatrixView MatrixView::row_slice(size_t r0, size_t n) const {
  if (r0 + n > rows) throw std::out_of_range("MatrixView::row_slice past the end");
  MatrixView v = *this;
  v.rows = n;
  const auto* base = static_cast<const uint8_t*>(data);
  switch (format) {
    case WeightFormat::kF32:
      v.data = base + r0 * cols * 4;
      break;
    case WeightFormat::kBF16:
      v.data = base + r0 * cols * 2;
      break;
    case WeightFormat::kFp8Block128:
      if (r0 % 128) throw std::invalid_argument("FP8 row slice must start on a 128-row block");
      v.data = base + r0 * cols;
      v.scales = scales + (r0 / 128) * scale_stride;
      v.fp8_map_row0 = fp8_map_row0 + r0;
      break;
    case WeightFormat::kFp4Block32:
      v.data = base + r0 * cols / 2;
      v.scales = scales + r0 * scale_stride;
      break;
  }
  return v;
}

size_t MatrixView::bytes() const {
  // The scales themselves, without the stride padding scale_span_bytes() covers.
  switch (format) {
    case WeightFormat::kFp8Block128:
      return data_bytes() + ((rows + 127) / 128) * ((cols + 127) / 128);
    case WeightFormat::kFp4Block32:
      return data_bytes() + rows * (cols / 32);
    default:
      return data_bytes();
  }
}

size_t MatrixView::data_bytes() const {
  switch (format) {
    case WeightFormat::kF32:
      return rows * cols * 4;
    case WeightFormat::kBF16:
      return rows * cols * 2;
    case WeightFormat::kFp8Block128:
      return rows * cols;
    case WeightFormat::kFp4Block32:
      return rows * cols / 2;
  }
  return 0;
}

size_t MatrixView::scale_span_bytes() const {
  switch (format) {
    case WeightFormat::kFp8Block128:
      return (rows + 127) / 128 * scale_stride;
    case WeightFormat::kFp4Block32:
      return rows * scale_stride;
    default:
      return 0;
  }
}

void dequantize_row(const MatrixView& w, size_t r, float* out) {
  const size_t k = w.cols;
  switch (w.format) {
    // Byte copies: safetensors does not align tensor data (a header not padded to 8 bytes, or an
    // odd-sized tensor before this one, leaves F32/BF16 matrices at odd addresses), and these
    // are read in place.
    case WeightFormat::kF32: {
      std::memcpy(out, static_cast<const uint8_t*>(w.data) + r * k * 4, k * 4);
      break;
    }
    case WeightFormat::kBF16: {
      const uint8_t* src = static_cast<const uint8_t*>(w.data) + r * k * 2;
      for (size_t i = 0; i < k; ++i) {
        uint16_t v;
        std::memcpy(&v, src + 2 * i, 2);
        out[i] = bf16_to_f32(v);
      }
      break;
    }
    case WeightFormat::kFp8Block128: {
      const uint8_t* src = static_cast<const uint8_t*>(w.data) + r * k;
      const uint8_t* srow = w.scales + (r / 128) * w.scale_stride;
      for (size_t i = 0; i < k; ++i) out[i] = e4m3_to_f32(src[i]) * e8m0_to_f32(srow[i / 128]);
      break;
    }
    case WeightFormat::kFp4Block32: {
      const uint8_t* src = static_cast<const uint8_t*>(w.data) + r * (k / 2);
      const uint8_t* srow = w.scales + r * w.scale_stride;
      for (size_t j = 0; j < k / 2; ++j) {
        const float s = e8m0_to_f32(srow[(2 * j) / 32]);
        out[2 * j] = e2m1_to_f32(src[j] & 15) * s;
        out[2 * j + 1] = e2m1_to_f32(src[j] >> 4) * s;
      }
      break;
    }
  }
}

namespace {

// Scalar reference. Rows [r0, r1): each weight row is decoded once into fp32 and reused for all
// n tokens. The fast path is in matmul_hwy.cc.
void matmul_rows(const MatrixView& w, const float* x, size_t ldx, size_t n, float* y, size_t ldy,
                 size_t r0, size_t r1) {
  std::vector<float> row(w.cols);
  for (size_t r = r0; r < r1; ++r) {
    dequantize_row(w, r, row.data());
    for (size_t t = 0; t < n; ++t) {
      const float* xt = x + t * ldx;
      float acc = 0.0f;
      for (size_t i = 0; i < w.cols; ++i) acc += xt[i] * row[i];
      y[t * ldy + r] = acc;
    }
  }
}

}  // namespace

void matmul_reference(const MatrixView& w, const float* x, size_t ldx, size_t n, float* y,
                      size_t ldy) {
  matmul_rows(w, x, ldx, n, y, ldy, 0, w.rows);
}

void matmul(const MatrixView& w, const float* x, size_t ldx, size_t n, float* y, size_t ldy,
            ThreadPool* pool) {
  // Two choices between bit-identical paths, each made per shape and thread count by timing real
  // calls on this machine (kernels/path_tuner.h; every tuned call costs two clock reads and three
  // lookups in the tuner's locked tables; a matrix's first call is not timed):
  // - FP8 prompts: the GEMV with the scale on x (path 0) or the tile GEMM (path 1);
  // - a single token (decode): 8 rows per register block (path 0) or 4 (path 1). 8 was chosen on
  //   Zen 5; on a Xeon, 4 measured faster for most shapes (bench/matmul_bench, 2 threads, FP4
  //   expert 19.5-19.9 → 20.0-21.6 GB/s, FP8 4096×4096 19.6-21.6 → 22.2-22.5) but not all (in a
  //   flash-4l decode there it kept 8 for wq_b, wo_b and the FP4 down projection).
  // Matrices under 2^20 weights are not worth the bookkeeping and keep path 0.
  const bool fp8_prompt = w.format == WeightFormat::kFp8Block128 && n >= kMatmulGemmMinTokens;
  const bool decode = n == 1 && w.rows * w.cols >= (size_t{1} << 20);
  if (fp8_prompt || decode) {
    static PathTuner prompt_tuner, decode_tuner;
    PathTuner& tuner = fp8_prompt ? prompt_tuner : decode_tuner;
    // Keyed by shape and thread count: a shape can run on the whole pool in one place and on one
    // thread in another (wq_a, and the wo_a groups that threads take whole), and timings of the
    // two must not decide for each other.
    const uint64_t threads = pool ? static_cast<uint64_t>(pool->size()) : 1;
    const uint64_t key = (static_cast<uint64_t>(w.rows) << 32) ^
                         (static_cast<uint64_t>(w.cols) << 3) ^ static_cast<uint64_t>(w.format) ^
                         (threads << 56);
    if (tuner.first_use(w.data)) {
      matmul_simd(w, x, ldx, n, y, ldy, pool, /*force_gemm=*/false);
      return;
    }
    const int path = tuner.choose(key);
    const auto t0 = std::chrono::steady_clock::now();
    matmul_simd(w, x, ldx, n, y, ldy, pool, /*force_gemm=*/fp8_prompt && path == 1,
                /*narrow_gemv=*/decode && path == 1);
    const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
    tuner.report(key, path, dt.count() / static_cast<double>(n));
    return;
  }
  matmul_simd(w, x, ldx, n, y, ldy, pool, /*force_gemm=*/false);
}

}  // namespace dsv4
