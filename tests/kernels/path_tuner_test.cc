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

TEST(PathTuner, TimesBothPathsThenKeepsTheFaster) {
  PathTuner t;
  std::vector<int> tried;
  for (int i = 0; i < 2 * PathTuner::kTrials; ++i) {
    const PathTuner::Choice c = t.choose(7);
    ASSERT_TRUE(c.timed);
    tried.push_back(c.path);
    t.report(7, c.path, c.path == 1 ? 1.0 : 2.0 + i);  // path 1 cheaper
  }
  EXPECT_EQ(tried, (std::vector<int>{0, 1, 0, 1}));
  for (int i = 0; i < 3; ++i) {
    const PathTuner::Choice c = t.choose(7);
    EXPECT_EQ(c.path, 1);
    EXPECT_FALSE(c.timed);
  }
  // Another key is tuned on its own; its best (not last) time decides.
  t.report(9, 0, 5.0);
  t.report(9, 1, 3.0);
  t.report(9, 0, 1.0);
  t.report(9, 1, 4.0);
  EXPECT_EQ(t.choose(9).path, 0);
  EXPECT_FALSE(t.choose(9).timed);
  EXPECT_TRUE(t.choose(8).timed);
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
