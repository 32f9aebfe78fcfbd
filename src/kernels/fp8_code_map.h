// Which 32-byte groups of an FP8 matrix hold e4m3 codes that the fast single-token decode cannot
// take: subnormals and NaNs.
//
// The FP8 GEMV decodes a code fastest by placing its bits straight into an fp32 (value·2^-120:
// sign extend, shift, mask; no f16 → fp32 conversion and no NaN scan; 34 % faster in L2 on a
// Xeon, matmul_hwy.cc's PlaceE4m3). That is exact for every code, but a subnormal code becomes an
// fp32 subnormal, and Intel cores take a ~100-cycle microcode assist for each multiply with such
// an operand; NaN codes come out finite. So groups holding either go through the f16 decode with
// its NaN check. Checkpoints have ~10^-4 subnormal codes (synth flash-4l ~1.5·10^-4; a
// bell-shaped block scaled to e4m3's 448 puts ~1.3·10^-4 of its values below 2^-6): nearly every
// 128×128 scale block has some, but ~99.5 % of 32-byte groups have none, hence a bit per group.
//
// The map is built on first use (one pass over the matrix, split over the pool's threads), not at
// load: loading stays a mapping, and the first product reads those weights anyway.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace dsv4 {

class ThreadPool;

class Fp8CodeMap {
 public:
  static constexpr size_t kGroupBytes = 32;

  // The rows × cols codes at data (row-major, no padding) must stay mapped while this lives.
  Fp8CodeMap(const uint8_t* data, size_t rows, size_t cols);

  size_t words_per_row() const { return words_per_row_; }

  // Bit g % 64 of word g / 64 of a row (words_per_row() words per row, rows back to back) is set
  // when the row's group g (bytes [32g, 32g + 32)) holds a subnormal or NaN code; a partial last
  // group is always set. Builds the map on the first call (thread-safe); pool may be null.
  const uint64_t* bits(ThreadPool* pool) const;

 private:
  const uint8_t* data_;
  size_t rows_, cols_, words_per_row_;
  mutable std::once_flag built_;
  mutable std::vector<uint64_t> bits_;
};

// Whether any of the `bytes` (≤ kGroupBytes) e4m3 codes at p is subnormal (exponent 0, mantissa
// not 0) or NaN (0x7f, 0xff).
bool fp8_group_needs_slow_decode(const uint8_t* p, size_t bytes);

}  // namespace dsv4
