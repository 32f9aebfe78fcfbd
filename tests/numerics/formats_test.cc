#include "numerics/formats.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace dsv4 {
namespace {

TEST(Formats, E4M3TableMatchesDefinition) {
  EXPECT_EQ(e4m3_to_f32(0x00), 0.0f);
  EXPECT_EQ(e4m3_to_f32(0x7e), 448.0f);
  EXPECT_EQ(e4m3_to_f32(0xfe), -448.0f);
  EXPECT_TRUE(std::isnan(e4m3_to_f32(0x7f)));
  EXPECT_EQ(e4m3_to_f32(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(e4m3_to_f32(0x08), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(e4m3_to_f32(0x38), 1.0f);
  EXPECT_EQ(e4m3_to_f32(0x3c), 1.5f);
}

TEST(Formats, E4M3EncodeRoundTripsEveryCodeAndRoundsToNearestEven) {
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;
    const float v = e4m3_to_f32(static_cast<uint8_t>(c));
    if (v == 0.0f) continue;
    EXPECT_EQ(e4m3_encode(v), c) << c;
  }
  EXPECT_EQ(e4m3_to_f32(e4m3_encode(1.0625f)), 1.0f);    // tie between 1 and 1.125 → even (1)
  EXPECT_EQ(e4m3_to_f32(e4m3_encode(1.1875f)), 1.25f);   // tie between 1.125 and 1.25 → even
  EXPECT_EQ(e4m3_to_f32(e4m3_encode(1000.0f)), 448.0f);  // clamp
  EXPECT_EQ(e4m3_to_f32(e4m3_encode(-1000.0f)), -448.0f);
  EXPECT_EQ(e4m3_to_f32(e4m3_encode(464.0f)), 448.0f);
}

TEST(Formats, E2M1RoundsToNearestEven) {
  const float in[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, 7.0f, -0.75f, -5.0f};
  const float out[] = {0.0f, 1.0f, 1.0f, 2.0f, 2.0f, 4.0f, 4.0f, 6.0f, -1.0f, -4.0f};
  for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); ++i) {
    EXPECT_EQ(e2m1_to_f32(e2m1_encode(in[i])), out[i]) << in[i];
  }
  for (int c = 0; c < 16; ++c) {
    if (c == 8) continue;  // −0
    EXPECT_EQ(e2m1_encode(e2m1_to_f32(static_cast<uint8_t>(c))), c);
  }
}

// The encoders against the rounding definition (RNE to a multiple of the format's quantum at |v|,
// by nearbyint, then clamped), over a spread of every float's bit patterns and the floats next to
// every grid point and every midpoint (the ties). The engine's encoders take no library call; a
// one-off program compared them with this definition on all 2^32 bit patterns.
uint8_t e4m3_by_definition(float v) {
  if (std::isnan(v)) return 0x7f;
  const uint8_t sign = std::signbit(v) ? 0x80 : 0;
  const float av = std::min(std::fabs(v), 448.0f);
  int e = 0;
  std::frexp(av, &e);
  const float q = av < 0.015625f ? 0.001953125f : std::ldexp(1.0f, e - 4);
  const float r = std::min(std::nearbyint(av / q) * q, 448.0f);
  for (int c = 0; c < 0x7f; ++c)
    if (e4m3_to_f32(static_cast<uint8_t>(c)) == r) return static_cast<uint8_t>(sign | c);
  return 0xff;  // not on the grid: a failure
}

uint8_t e2m1_by_definition(float v) {
  if (std::isnan(v)) return 0;
  const uint8_t sign = std::signbit(v) ? 8 : 0;
  const float av = std::min(std::fabs(v), 6.0f);
  const float q = av < 2.0f ? 0.5f : (av < 4.0f ? 1.0f : 2.0f);
  const float r = std::min(std::nearbyint(av / q) * q, 6.0f);
  for (int c = 0; c < 8; ++c)
    if (e2m1_to_f32(static_cast<uint8_t>(c)) == r) return static_cast<uint8_t>(sign | c);
  return 0xff;
}

TEST(Formats, EncodersMatchTheRoundingDefinition) {
  std::vector<float> vals;
  for (uint64_t b = 0; b < (1ull << 32); b += 4093) {
    const uint32_t bits = static_cast<uint32_t>(b);
    float f;
    std::memcpy(&f, &bits, 4);
    vals.push_back(f);
  }
  std::vector<float> points;  // grid values and the midpoints between neighbours
  for (int c = 0; c < 0x7e; ++c) {
    const float a = e4m3_to_f32(static_cast<uint8_t>(c)), b = e4m3_to_f32(c + 1);
    points.push_back(a);
    points.push_back((a + b) / 2);  // exact: neighbours share a binade or the step doubles
  }
  for (int c = 0; c < 7; ++c) {
    const float a = e2m1_to_f32(static_cast<uint8_t>(c)), b = e2m1_to_f32(c + 1);
    points.push_back(a);
    points.push_back((a + b) / 2);
  }
  for (float p : {448.0f, 464.0f, 6.0f, std::numeric_limits<float>::infinity()})
    points.push_back(p);
  for (float p : points)
    for (float s : {1.0f, -1.0f}) {
      float f = s * p;
      vals.push_back(f);
      for (int k = 0; k < 2; ++k) vals.push_back(f = std::nextafter(f, 1e30f));
      f = s * p;
      for (int k = 0; k < 2; ++k) vals.push_back(f = std::nextafter(f, -1e30f));
    }
  int bad = 0;
  for (float v : vals) {
    if (e4m3_encode(v) != e4m3_by_definition(v) && bad++ < 5)
      ADD_FAILURE() << "e4m3_encode(" << v << ") = " << int(e4m3_encode(v)) << ", want "
                    << int(e4m3_by_definition(v));
    if (e2m1_encode(v) != e2m1_by_definition(v) && bad++ < 5)
      ADD_FAILURE() << "e2m1_encode(" << v << ") = " << int(e2m1_encode(v)) << ", want "
                    << int(e2m1_by_definition(v));
  }
  EXPECT_GT(vals.size(), 1000000u);
}

TEST(Formats, E8m0DecodesEveryByteToItsPowerOfTwo) {
  for (int b = 0; b < 255; ++b)
    EXPECT_EQ(e8m0_to_f32(static_cast<uint8_t>(b)), std::ldexp(1.0f, b - 127)) << "byte " << b;
  EXPECT_TRUE(std::isnan(e8m0_to_f32(0xff)));
}

TEST(Formats, Ue8m0ScaleIsCeilPowerOfTwo) {
  EXPECT_EQ(e8m0_to_f32(ue8m0_block_scale(448.0f, BlockFormat::kFp8E4M3)), 1.0f);
  EXPECT_EQ(e8m0_to_f32(ue8m0_block_scale(449.0f, BlockFormat::kFp8E4M3)), 2.0f);
  EXPECT_EQ(e8m0_to_f32(ue8m0_block_scale(6.0f, BlockFormat::kFp4E2M1)), 1.0f);
  EXPECT_EQ(e8m0_to_f32(ue8m0_block_scale(6.5f, BlockFormat::kFp4E2M1)), 2.0f);
  EXPECT_EQ(e8m0_to_f32(ue8m0_block_scale(0.0f, BlockFormat::kFp8E4M3)),
            std::ldexp(1.0f, -22));  // 1e-4 floor
}

TEST(Formats, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  uint32_t bits = 0x3f808000;  // exactly halfway between 0x3f80 and 0x3f81 → even
  float f;
  std::memcpy(&f, &bits, 4);
  EXPECT_EQ(f32_to_bf16(f), 0x3f80);
  bits = 0x3f818000;  // halfway between 0x3f81 and 0x3f82 → even (0x3f82)
  std::memcpy(&f, &bits, 4);
  EXPECT_EQ(f32_to_bf16(f), 0x3f82);
}

TEST(Formats, BlockRoundTripKeepsValuesOnTheGrid) {
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::vector<float> x(128);
  for (auto& v : x) v = nd(rng);
  std::vector<float> y = x;
  roundtrip_blocks(y.data(), y.size(), 64, BlockFormat::kFp8E4M3);
  std::vector<float> z = y;
  roundtrip_blocks(z.data(), z.size(), 64, BlockFormat::kFp8E4M3);
  EXPECT_EQ(y, z);  // idempotent
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(y[i], x[i], std::fabs(x[i]) * 0.07f + 1e-3f);
}

}  // namespace
}  // namespace dsv4
