// Number formats of the V4 checkpoints and KV cache: BF16, FP8 e4m3fn, FP4 e2m1, E8M0 scales,
// the UE8M0 power-of-two block scale rule and round-to-nearest-even encoders (spec §3.1, §4).
// Everything here is exact: decoders are bit-exact tables, encoders round like CUDA's cvt.rn.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

namespace dsv4 {

// ---- BF16 -----------------------------------------------------------------------------------
inline float bf16_to_f32(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round-to-nearest-even (NaN stays NaN).
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline float round_to_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

// ---- Decoding tables ------------------------------------------------------------------------
// e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities, 0x7f/0xff = NaN, max 448.
extern const float kE4M3ToF32[256];
// e2m1: codes 0..7 = 0, .5, 1, 1.5, 2, 3, 4, 6; bit 3 = sign.
extern const float kE2M1ToF32[16];

inline float e4m3_to_f32(uint8_t code) { return kE4M3ToF32[code]; }
inline float e2m1_to_f32(uint8_t code) { return kE2M1ToF32[code & 15]; }

// E8M0 (UE8M0): value 2^(byte-127); 0xff = NaN.
// Built from the bits (the exponent field is the byte itself; 0 is the subnormal 2^-127): the
// KV decode calls this once per block in hot loops, where ldexp's library call was ~5 % of a
// long-context decode step.
inline float e8m0_to_f32(uint8_t byte) {
  if (byte == 0xff) return std::numeric_limits<float>::quiet_NaN();
  const uint32_t bits = byte == 0 ? 0x00400000u : static_cast<uint32_t>(byte) << 23;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// ---- Encoding (KV cache and indexer storage, spec §4 "Power-of-two scale") ------------------
enum class BlockFormat { kFp8E4M3, kFp4E2M1 };

// Biased E8M0 exponent of the UE8M0 block scale for a block with max |x| = amax:
// s = 2^ceil(log2(a·c)), a = max(amax, floor), c = fp32(1/448) (FP8) or fp32(1/6) (FP4),
// floor = 1e-4 (FP8) or 6·2^-126 (FP4). ceil_log2 is taken from the fp32 bits as in the demo.
uint8_t ue8m0_block_scale(float amax, BlockFormat fmt);

// RNE encoders of an already scaled value (x / s); values beyond the format's max are clamped.
uint8_t e4m3_encode(float v);
uint8_t e2m1_encode(float v);

// Quantises x[0..n) in blocks of `block` elements (n % block == 0): codes (one byte each, e2m1
// codes in the low nibble) and one E8M0 exponent byte per block.
void quantize_blocks(const float* x, size_t n, size_t block, BlockFormat fmt, uint8_t* codes,
                     uint8_t* scales);
// In-place quantise→dequantise round trip (the demo's "simulation" mode), fp32 in and out.
void roundtrip_blocks(float* x, size_t n, size_t block, BlockFormat fmt);

// Packs two e2m1 codes per byte: element 2j in the low nibble (checkpoint layout).
inline uint8_t pack_e2m1(uint8_t even, uint8_t odd) {
  return static_cast<uint8_t>((even & 15) | ((odd & 15) << 4));
}

}  // namespace dsv4
