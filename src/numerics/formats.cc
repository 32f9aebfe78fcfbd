#include "numerics/formats.h"

#include <algorithm>
#include <array>
#include <stdexcept>

namespace dsv4 {
namespace {

constexpr float kNaN = __builtin_nanf("");

constexpr float e4m3_value(unsigned code) {
  const unsigned sign = code >> 7, exp = (code >> 3) & 15, man = code & 7;
  if (exp == 15 && man == 7) return kNaN;
  float mag;
  if (exp == 0) {
    mag = static_cast<float>(man) / 8.0f / 64.0f;  // subnormal: m/8 · 2^-6
  } else {
    float p = 1.0f;
    int e = static_cast<int>(exp) - 7;
    for (int i = 0; i < e; ++i) p *= 2.0f;
    for (int i = 0; i > e; --i) p /= 2.0f;
    mag = (1.0f + static_cast<float>(man) / 8.0f) * p;
  }
  return sign ? -mag : mag;
}

constexpr std::array<float, 256> make_e4m3_table() {
  std::array<float, 256> t{};
  for (unsigned i = 0; i < 256; ++i) t[i] = e4m3_value(i);
  return t;
}

constexpr auto kE4M3Table = make_e4m3_table();

}  // namespace

const float kE4M3ToF32[256] = {
#define X(i) kE4M3Table[i]
#define X8(i) X(i), X(i + 1), X(i + 2), X(i + 3), X(i + 4), X(i + 5), X(i + 6), X(i + 7)
#define X64(i) \
  X8(i), X8(i + 8), X8(i + 16), X8(i + 24), X8(i + 32), X8(i + 40), X8(i + 48), X8(i + 56)
    X64(0), X64(64), X64(128), X64(192)
#undef X64
#undef X8
#undef X
};

const float kE2M1ToF32[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                              -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

uint8_t ue8m0_block_scale(float amax, BlockFormat fmt) {
  const bool fp8 = fmt == BlockFormat::kFp8E4M3;
  const float floor = fp8 ? 1e-4f : 6.0f * std::ldexp(1.0f, -126);
  const float c = fp8 ? 1.0f / 448.0f : 1.0f / 6.0f;
  const float v = std::max(amax, floor) * c;
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  const int exp = static_cast<int>((bits >> 23) & 0xff);  // biased; v is normal and positive
  const int ceil_log2 = exp - 127 + ((bits & 0x7fffffu) != 0 ? 1 : 0);
  return static_cast<uint8_t>(std::clamp(ceil_log2 + 127, 0, 254));
}

// Both encoders take no library call (frexp, ldexp and nearbyint were ~20 ns per value): they run
// for every stored KV entry (448 values) and every indexer query element (64 heads × 128 per
// token and CSA layer). flash-4l decode on Zen 5: storing a KV entry 6.5 → 1.8 µs, the 64 query
// heads' RoPE, Hadamard and FP4 round trip 0.144 → 0.072 ms per CSA layer.

uint8_t e4m3_encode(float v) {
  if (std::isnan(v)) return 0x7f;
  const uint8_t sign = std::signbit(v) ? 0x80 : 0;
  const float av = std::min(std::fabs(v), 448.0f);
  if (av < 0.015625f) {
    // Subnormal codes m·2^-9, m < 8 (m = 8 rounds up to code 8, 2^-6, the smallest normal):
    // av·2^9 < 8 is exact, and adding 2^23 rounds it to an integer, ties to even (the default
    // rounding mode, as nearbyint would).
    const float m = (av * 512.0f + 8388608.0f) - 8388608.0f;
    return static_cast<uint8_t>(sign | static_cast<uint8_t>(m));
  }
  // Normal: round the fp32 mantissa to 3 bits, ties to even (a carry moves to the next binade);
  // av ≤ 448 = 1.75·2^8 stays ≤ 448.
  uint32_t bits;
  std::memcpy(&bits, &av, 4);
  bits += 0x7ffffu + ((bits >> 20) & 1u);
  const uint32_t exp = (bits >> 23) - 127 + 7, man = (bits >> 20) & 7u;
  return static_cast<uint8_t>(sign | (exp << 3) | man);
}

// The magnitude code counts the rounding boundaries at or below |v|: each is the midpoint of two
// neighbours of the grid {0, .5, 1, 1.5, 2, 3, 4, 6}, and a tie goes to the even code (0.25 → 0,
// 0.75 → 1.0 (code 2), 1.25 → 1.0, 1.75 → 2, 2.5 → 2, 3.5 → 4, 5 → 4), hence > after an even code
// and ≥ after an odd one. Beyond 6 (inf too) it is 7.
uint8_t e2m1_encode(float v) {
  if (std::isnan(v)) return 0;
  const uint8_t sign = std::signbit(v) ? 8 : 0;
  const float av = std::fabs(v);
  const int code = (av > 0.25f) + (av >= 0.75f) + (av > 1.25f) + (av >= 1.75f) + (av > 2.5f) +
                   (av >= 3.5f) + (av > 5.0f);
  return static_cast<uint8_t>(sign | code);
}

void quantize_blocks(const float* x, size_t n, size_t block, BlockFormat fmt, uint8_t* codes,
                     uint8_t* scales) {
  const bool fp8 = fmt == BlockFormat::kFp8E4M3;
  for (size_t b = 0; b < n / block; ++b) {
    const float* xb = x + b * block;
    float amax = 0.0f;
    for (size_t i = 0; i < block; ++i) amax = std::max(amax, std::fabs(xb[i]));
    const uint8_t sexp = ue8m0_block_scale(amax, fmt);
    scales[b] = sexp;
    const float inv = std::ldexp(1.0f, 127 - static_cast<int>(sexp));  // exact 1/s
    for (size_t i = 0; i < block; ++i) {
      const float v = xb[i] * inv;
      codes[b * block + i] = fp8 ? e4m3_encode(v) : e2m1_encode(v);
    }
  }
}

void roundtrip_blocks(float* x, size_t n, size_t block, BlockFormat fmt) {
  const bool fp8 = fmt == BlockFormat::kFp8E4M3;
  uint8_t codes[256];  // blocks are 32 or 64 elements
  uint8_t scale;
  if (block > sizeof(codes)) throw std::invalid_argument("roundtrip_blocks: block too large");
  for (size_t b = 0; b < n / block; ++b) {
    float* xb = x + b * block;
    quantize_blocks(xb, block, block, fmt, codes, &scale);
    const float s = e8m0_to_f32(scale);
    for (size_t i = 0; i < block; ++i) {
      xb[i] = (fp8 ? e4m3_to_f32(codes[i]) : e2m1_to_f32(codes[i])) * s;
    }
  }
}

}  // namespace dsv4
