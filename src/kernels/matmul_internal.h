// Internal entry points of the matmul kernels (not part of the forward pass's interface).
#pragma once

#include <cstddef>

#include "kernels/matmul.h"

namespace dsv4 {

// The Highway-dispatched implementation behind matmul(). `force_gemm` selects the blocked
// prefill path even for small n (tests use it to check that both paths agree bit for bit);
// `narrow_gemv` makes the single-token GEMV decode 4 rows per register block instead of 8. Every
// choice gives the same bits.
void matmul_simd(const MatrixView& w, const float* x, size_t ldx, size_t n, float* y, size_t ldy,
                 ThreadPool* pool, bool force_gemm, bool narrow_gemv = false);

// Name of the SIMD target matmul() dispatches to on this machine right now (e.g. "AVX3").
const char* matmul_target_name();

// Token count from which matmul() uses the tile-converting prefill GEMM for BF16, F32 and FP4
// (for FP8 it times that against its GEMV with the scale on x: kernels/path_tuner.h). Below it the
// register-decoding GEMV with token blocks is faster (n = 16 on Zen 5: 220-270 vs 175-240 GFLOP/s);
// at n = 512 the GEMM is. Matrices with fewer than 64 rows per thread keep the GEMV at any n.
constexpr size_t kMatmulGemmMinTokens = 64;

}  // namespace dsv4
