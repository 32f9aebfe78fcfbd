// The per-shape choice between two bit-identical kernel paths (kernels/path_tuner.h), and
// matmul()'s FP8 prefill through it: every call, timed trial or not, gives the same bits.
#include "kernels/path_tuner.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

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

TEST(PathTuner, Fp8PrefillGivesTheSameBitsOnEveryCall) {
  const size_t rows = 200, cols = 300, n = kMatmulGemmMinTokens + 5;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<uint8_t> data(rows * cols), scales(2 * 3);
  for (auto& b : data) b = e4m3_encode(nd(rng) * 64.0f);  // subnormal codes included
  for (auto& e : scales) e = static_cast<uint8_t>(118 + rng() % 6);
  MatrixView w;
  w.format = WeightFormat::kFp8Block128;
  w.rows = rows;
  w.cols = cols;
  w.data = data.data();
  w.scales = scales.data();
  w.scale_stride = 3;
  std::vector<float> x(n * cols);
  for (auto& v : x) v = nd(rng);
  ThreadPool pool(2);
  std::vector<float> want(n * rows), got(n * rows);
  matmul_simd(w, x.data(), cols, n, want.data(), rows, &pool, /*force_gemm=*/true);
  for (int call = 0; call < 2 * PathTuner::kTrials + 2; ++call) {
    std::fill(got.begin(), got.end(), -1.0f);
    matmul(w, x.data(), cols, n, got.data(), rows, &pool);
    ASSERT_EQ(0, std::memcmp(want.data(), got.data(), got.size() * sizeof(float)))
        << "call " << call;
  }
}

}  // namespace
}  // namespace dsv4
