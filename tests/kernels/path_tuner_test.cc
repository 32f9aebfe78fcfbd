// The per-shape choice between two bit-identical kernel paths (kernels/path_tuner.h), and
// matmul()'s FP8 prefill through it: every call, timed trial or not, gives the same bits.
#include "kernels/path_tuner.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "kernels/fp8_test_view.h"
#include "kernels/matmul.h"
#include "kernels/matmul_internal.h"
#include "numerics/formats.h"
#include "util/thread_pool.h"

namespace dsv4 {
namespace {

TEST(PathTuner, TimesBothPathsThenKeepsTheFasterAndRetriesTheOtherRarely) {
  PathTuner t;
  std::vector<int> paths;
  for (int i = 0; i < 2 * PathTuner::kTrials; ++i) {
    paths.push_back(t.choose(7));
    t.report(7, paths.back(), paths.back() == 1 ? 1.0 : 2.0 + i);  // path 1 cheaper
  }
  EXPECT_EQ(paths, (std::vector<int>{0, 1, 0, 1}));
  std::vector<int> retried;  // calls after the trials that took path 0
  for (int c = 1; c <= 40; ++c) {
    const int p = t.choose(7);
    if (p == 0) retried.push_back(c);
    t.report(7, p, p == 1 ? 1.0 : 3.0);
  }
  EXPECT_EQ(retried, (std::vector<int>{4, 8, 16, 32}));
  // A retry that beats the kept path's best (the first trials were slowed) switches.
  t.report(7, 0, 0.5);
  EXPECT_EQ(t.choose(7), 0);  // call 41
  // Another key is tuned on its own; each path's best (not last) time decides.
  t.report(9, 0, 5.0);
  t.report(9, 1, 3.0);
  t.report(9, 0, 1.0);
  t.report(9, 1, 4.0);
  EXPECT_EQ(t.choose(9), 0);
  EXPECT_EQ(t.choose(8), 0);  // untried key: trials start with path 0
}

TEST(PathTuner, FirstUseIsReportedOncePerMatrix) {
  PathTuner t;
  int a = 0, b = 0;
  EXPECT_TRUE(t.first_use(&a));
  EXPECT_FALSE(t.first_use(&a));
  EXPECT_TRUE(t.first_use(&b));
  EXPECT_FALSE(t.first_use(&a));
  EXPECT_FALSE(t.first_use(&b));
}

// A random FP8 matrix (subnormal codes included) and n tokens of x.
struct Fp8Case {
  std::vector<uint8_t> data, scales;
  std::vector<float> x;
  MatrixView w;
};

Fp8Case make_fp8_case(size_t rows, size_t cols, size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  Fp8Case c;
  const size_t rb = (rows + 127) / 128, cb = (cols + 127) / 128;
  c.data.resize(rows * cols);
  c.scales.resize(rb * cb);
  for (auto& b : c.data) b = e4m3_encode(nd(rng) * 64.0f);
  for (auto& e : c.scales) e = static_cast<uint8_t>(118 + rng() % 6);
  c.w = fp8_test_view(c.data, c.scales, rows, cols);
  c.x.resize(n * cols);
  for (auto& v : c.x) v = nd(rng);
  return c;
}

// matmul() over enough calls to run both of the tuner's paths (trials, then the faster and a
// retry of the other) gives the bits of the untuned path on every call.
void expect_same_bits_on_every_call(const Fp8Case& c, size_t n, bool want_gemm) {
  ThreadPool pool(2);
  const size_t rows = c.w.rows, cols = c.w.cols;
  std::vector<float> want(n * rows), got(n * rows);
  matmul_simd(c.w, c.x.data(), cols, n, want.data(), rows, &pool, want_gemm);
  for (int call = 0; call < 2 * PathTuner::kTrials + 4; ++call) {
    std::fill(got.begin(), got.end(), -1.0f);
    matmul(c.w, c.x.data(), cols, n, got.data(), rows, &pool);
    ASSERT_EQ(0, std::memcmp(want.data(), got.data(), got.size() * sizeof(float)))
        << "call " << call;
  }
}

TEST(PathTuner, Fp8PrefillGivesTheSameBitsOnEveryCall) {
  const size_t n = kMatmulGemmMinTokens + 5;
  expect_same_bits_on_every_call(make_fp8_case(200, 300, n, 3), n, /*want_gemm=*/true);
}

// Single tokens of a matrix big enough to be tuned (≥ 2^20 weights; 1030 rows leave tails for
// both the 8-row and the 4-row register blocks).
TEST(PathTuner, DecodeGivesTheSameBitsOnEveryCall) {
  expect_same_bits_on_every_call(make_fp8_case(1030, 1024, 1, 5), 1, /*want_gemm=*/false);
}

}  // namespace
}  // namespace dsv4
