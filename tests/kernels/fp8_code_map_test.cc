// Fp8CodeMap: which 32-byte groups hold subnormal or NaN e4m3 codes, and the FP8 GEMV's fast
// decode of the other groups (PlaceE4m3), which must give the bits of the code-by-code f16 decode
// on every SIMD target, for one token and several, whole and sliced matrices.

#include "kernels/fp8_code_map.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "hwy/targets.h"
#include "kernels/fp8_test_view.h"
#include "kernels/matmul.h"
#include "kernels/matmul_internal.h"
#include "util/thread_pool.h"

namespace dsv4 {
namespace {

bool slow_code(uint8_t b) {
  const int m = b & 0x7f;
  return (m >= 1 && m <= 7) || m == 0x7f;
}

// Normal codes (what most of a checkpoint holds), with a subnormal or zero code at about one
// position in `rare` each, and NaN codes only where a test puts them.
std::vector<uint8_t> checkpoint_like_codes(size_t count, uint32_t seed, int rare) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> c(count);
  for (auto& b : c) {
    const int r = static_cast<int>(rng() % (2 * 14 * 8));  // sign, exponent 1..14, mantissa
    b = static_cast<uint8_t>(((r % 2) << 7) | ((1 + (r / 2) / 8) << 3) | ((r / 2) % 8));
    if (rng() % rare == 0) b = static_cast<uint8_t>((b & 0x80) | (rng() % 8));  // e = 0
  }
  return c;
}

TEST(Fp8CodeMap, FlagsSubnormalAndNaNCodesOnly) {
  for (int code = 0; code < 256; ++code) {
    const uint8_t b = static_cast<uint8_t>(code);
    EXPECT_EQ(fp8_group_needs_slow_decode(&b, 1), slow_code(b)) << "code " << code;
    // At every position of a group of normal codes.
    for (size_t at = 0; at < Fp8CodeMap::kGroupBytes; at += 7) {
      uint8_t g[Fp8CodeMap::kGroupBytes];
      std::memset(g, 0x38, sizeof(g));  // 1.0
      g[at] = b;
      EXPECT_EQ(fp8_group_needs_slow_decode(g, sizeof(g)), slow_code(b))
          << "code " << code << " at " << at;
    }
  }
}

TEST(Fp8CodeMap, BitsMarkTheGroupsPerRow) {
  ThreadPool pool(2);
  for (size_t cols : {size_t{1}, size_t{31}, size_t{32}, size_t{33}, size_t{100}, size_t{4133}}) {
    const size_t rows = 5;
    std::vector<uint8_t> codes = checkpoint_like_codes(rows * cols, 7, 300);
    codes[2 * cols + cols / 2] = 0x7f;
    codes[4 * cols + cols - 1] = 0xff;
    const size_t groups = (cols + 31) / 32;
    for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
      Fp8CodeMap map(codes.data(), rows, cols);
      ASSERT_EQ(map.words_per_row(), (groups + 63) / 64);
      const uint64_t* bits = map.bits(p);
      for (size_t r = 0; r < rows; ++r)
        for (size_t g = 0; g < groups; ++g) {
          bool want = 32 * g + 32 > cols;  // a partial last group is always flagged
          for (size_t i = 32 * g; i < std::min(cols, 32 * g + 32); ++i)
            want |= slow_code(codes[r * cols + i]);
          const uint64_t word = bits[r * map.words_per_row() + g / 64];
          ASSERT_EQ(((word >> (g % 64)) & 1) != 0, want)
              << "cols " << cols << " row " << r << " group " << g;
        }
    }
  }
}

struct Fp8Case {
  std::vector<uint8_t> codes, scales;
  MatrixView view;
};

// rows × cols codes as checkpoint_like_codes, NaN codes in rows 5 and 131, scales 2^-3..2^3
// and a NaN scale for rows 384.., cols 128.. when there are such rows.
Fp8Case make_case(size_t rows, size_t cols, uint32_t seed) {
  Fp8Case c;
  c.codes = checkpoint_like_codes(rows * cols, seed, 500);
  c.codes[5 * cols + cols / 3] = 0x7f;
  if (rows > 131) c.codes[131 * cols + cols - 1] = 0xff;
  const size_t rb = (rows + 127) / 128, cb = (cols + 127) / 128;
  c.scales.resize(rb * cb);
  std::mt19937 rng(seed + 1);
  for (auto& s : c.scales) s = static_cast<uint8_t>(124 + rng() % 7);
  if (rows > 384 && cb > 1) c.scales[3 * cb + 1] = 0xff;
  c.view = fp8_test_view(c.codes, c.scales, rows, cols);
  return c;
}

std::vector<float> random_x(size_t count, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> x(count);
  for (auto& v : x) v = nd(rng);
  return x;
}

// Outputs equal bit for bit, or both NaN.
void expect_same(const std::vector<float>& got, const std::vector<float>& want,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(want[i])) {
      ASSERT_TRUE(std::isnan(got[i])) << what << " output " << i;
    } else {
      ASSERT_EQ(0, std::memcmp(&got[i], &want[i], 4))
          << what << " output " << i << ": " << got[i] << " vs " << want[i];
    }
  }
}

// With a map, most chunks decode by PlaceE4m3 (with x'·2^112), the flagged ones through f16;
// every output must be what the map-less GEMV gives, which the matmul tests tie to the
// reference and to the GEMM. x of magnitude ~1000 leaves x'·2^112 out of fp32's range for the
// largest scales: the map is then not used, with the same results.
TEST(Fp8CodeMap, FastDecodeGivesTheBitsOfTheF16Decode) {
  ThreadPool pool(2);
  std::string seen;
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    seen += std::string(matmul_target_name()) + " ";
    for (auto [rows, cols] :
         {std::pair<size_t, size_t>{517, 4096}, {300, 4301}, {141, 1030}, {40, 200}}) {
      Fp8Case c = make_case(rows, cols, static_cast<uint32_t>(rows + cols));
      Fp8CodeMap map(c.codes.data(), rows, cols);
      MatrixView mapped = c.view;
      mapped.fp8_map = &map;
      for (float xscale : {1.0f, 1000.0f}) {
        for (size_t n : {size_t{1}, size_t{3}, size_t{30}}) {
          const std::vector<float> x = random_x(n * cols, static_cast<uint32_t>(n), xscale);
          const std::string what = std::string(matmul_target_name()) + " " + std::to_string(rows) +
                                   "x" + std::to_string(cols) + " n=" + std::to_string(n) +
                                   " |x|~" + std::to_string(xscale);
          std::vector<float> want(n * rows), got(n * rows);
          matmul_simd(c.view, x.data(), cols, n, want.data(), rows, nullptr, false);
          for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
            matmul_simd(mapped, x.data(), cols, n, got.data(), rows, p, false);
            expect_same(got, want, what);
            if (n == 1) {
              matmul_simd(mapped, x.data(), cols, n, got.data(), rows, p, false,
                          /*narrow_gemv=*/true);
              expect_same(got, want, what + " narrow");
            }
          }
          for (size_t o : {size_t{5}, size_t{131}})  // the NaN codes' rows
            if (o < rows) {
              ASSERT_TRUE(std::isnan(got[o])) << what << " row " << o;
            }
          if (rows > 128) {  // a slice starts at its own row of the map
            MatrixView s = mapped.row_slice(128, rows - 128),
                       s0 = c.view.row_slice(128, rows - 128);
            std::vector<float> ys(n * (rows - 128)), ys0(n * (rows - 128));
            matmul_simd(s, x.data(), cols, n, ys.data(), rows - 128, &pool, false);
            matmul_simd(s0, x.data(), cols, n, ys0.data(), rows - 128, &pool, false);
            expect_same(ys, ys0, what + " slice");
          }
        }
      }
    }
  }
  hwy::SetSupportedTargetsForTest(0);
  std::printf("fp8 code map targets tested: %s\n", seen.c_str());
}

}  // namespace
}  // namespace dsv4
