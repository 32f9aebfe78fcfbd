// SIMD matmul kernels vs the scalar reference: every weight format, odd shapes, strides,
// row slices, n ∈ {1,2,3,5,17,64}, every SIMD target Highway compiled, and the invariance of each
// output row to the thread count and to n (GEMV and GEMM paths agree bit for bit).

#include "kernels/matmul.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "hwy/targets.h"
#include "kernels/matmul_internal.h"
#include "numerics/formats.h"
#include "util/thread_pool.h"

namespace dsv4 {
namespace {

// Owns the bytes of a random weight matrix with valid encodings.
struct TestMatrix {
  std::vector<uint8_t> data, scales;
  MatrixView view;
};

// Scale exponents around 2^0 (e8m0 127) so that products stay in a normal range; `big_scales`
// uses exponents above 2^119 (with FP8 codes below 2, so that products stay finite), which take
// the FP8 kernel's two-multiply path (its factor 2^(e-119) would overflow).
TestMatrix make_matrix(WeightFormat fmt, size_t rows, size_t cols, uint32_t seed,
                       bool big_scales = false, int exp_lo = 118, int exp_hi = 130) {
  std::mt19937 rng(seed);
  TestMatrix m;
  m.view.format = fmt;
  m.view.rows = rows;
  m.view.cols = cols;
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<int> exp(big_scales ? 247 : exp_lo, big_scales ? 248 : exp_hi);
  switch (fmt) {
    case WeightFormat::kF32: {
      m.data.resize(rows * cols * 4);
      std::normal_distribution<float> nd(0.0f, 1.0f);
      for (size_t i = 0; i < rows * cols; ++i) {
        const float v = nd(rng);
        std::memcpy(&m.data[i * 4], &v, 4);
      }
      break;
    }
    case WeightFormat::kBF16: {
      m.data.resize(rows * cols * 2);
      std::normal_distribution<float> nd(0.0f, 1.0f);
      for (size_t i = 0; i < rows * cols; ++i) {
        const uint16_t v = f32_to_bf16(nd(rng));
        std::memcpy(&m.data[i * 2], &v, 2);
      }
      break;
    }
    case WeightFormat::kFp8Block128: {
      m.data.resize(rows * cols);
      for (auto& b : m.data) {
        do b = static_cast<uint8_t>(byte(rng) & (big_scales ? 0xbf : 0xff));
        while ((b & 0x7f) == 0x7f);  // NaN codes are not valid weights
      }
      const size_t rb = (rows + 127) / 128, cb = (cols + 127) / 128;
      m.view.scale_stride = cb + 3;  // padded stride
      m.scales.assign(rb * m.view.scale_stride, 0xee);
      for (size_t i = 0; i < rb; ++i)
        for (size_t j = 0; j < cb; ++j)
          m.scales[i * m.view.scale_stride + j] = static_cast<uint8_t>(exp(rng));
      break;
    }
    case WeightFormat::kFp4Block32: {
      m.data.resize(rows * cols / 2);
      for (auto& b : m.data) b = static_cast<uint8_t>(byte(rng));
      m.view.scale_stride = (cols + 31) / 32;
      m.scales.resize(rows * m.view.scale_stride);
      for (auto& s : m.scales) s = static_cast<uint8_t>(exp(rng));
      break;
    }
  }
  m.view.data = m.data.data();
  m.view.scales = m.scales.empty() ? nullptr : m.scales.data();
  return m;
}

std::vector<float> random_x(size_t n, size_t ldx, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(n * ldx, std::numeric_limits<float>::quiet_NaN());  // NaN in the gaps
  for (auto& v : x) v = nd(rng);
  // Poison the stride gap: the kernels must not read it.
  return x;
}

constexpr float kSentinel = -12345.0f;

// Checks matmul (or the forced GEMM path) against the reference within fp32 rounding noise:
// |y - ref| ≤ 1e-5 · Σ_i |x_i · w_i| (+ a tiny absolute floor).
void check_against_reference(const MatrixView& w, size_t n, ThreadPool* pool, uint32_t seed,
                             bool force_gemm, const std::string& what) {
  const size_t ldx = w.cols + 3, ldy = w.rows + 2;
  std::vector<float> x = random_x(n, ldx, seed);
  for (size_t t = 0; t < n; ++t)
    for (size_t i = w.cols; i < ldx; ++i) x[t * ldx + i] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> y(n * ldy, kSentinel), ref(n * ldy, kSentinel);
  matmul_simd(w, x.data(), ldx, n, y.data(), ldy, pool, force_gemm);
  matmul_reference(w, x.data(), ldx, n, ref.data(), ldy);
  std::vector<float> row(w.cols);
  int bad = 0;
  for (size_t o = 0; o < w.rows; ++o) {
    dequantize_row(w, o, row.data());
    for (size_t t = 0; t < n; ++t) {
      double mag = 0;
      for (size_t i = 0; i < w.cols; ++i) mag += std::fabs(double(row[i]) * x[t * ldx + i]);
      const float got = y[t * ldy + o], want = ref[t * ldy + o];
      const double tol = 1e-5 * mag + 1e-30;
      if (!(std::fabs(double(got) - want) <= tol) && bad++ < 5)
        ADD_FAILURE() << what << " row " << o << " token " << t << ": got " << got << " want "
                      << want << " tol " << tol;
    }
  }
  for (size_t t = 0; t < n; ++t)
    for (size_t o = w.rows; o < ldy; ++o)
      ASSERT_EQ(y[t * ldy + o], kSentinel) << what << ": wrote past rows";
}

std::string label(WeightFormat f, size_t rows, size_t cols, size_t n) {
  return std::string(weight_format_name(f)) + " " + std::to_string(rows) + "x" +
         std::to_string(cols) + " n=" + std::to_string(n);
}

struct Shape {
  size_t rows, cols;
};

std::vector<Shape> shapes_for(WeightFormat f) {
  if (f == WeightFormat::kFp4Block32)  // cols even; 34 and 290 use a partial last scale block
    return {{1, 32}, {3, 64}, {17, 96}, {33, 34}, {130, 160}, {7, 290}, {65, 352}};
  return {{1, 1}, {3, 5}, {17, 33}, {5, 130}, {130, 17}, {33, 257}, {129, 300}};
}

const WeightFormat kFormats[] = {WeightFormat::kF32, WeightFormat::kBF16,
                                 WeightFormat::kFp8Block128, WeightFormat::kFp4Block32};
const size_t kTokens[] = {1, 2, 3, 5, 17, 64};

TEST(Matmul, AllFormatsOddShapesMatchReference) {
  ThreadPool pool(3);
  uint32_t seed = 1;
  for (WeightFormat f : kFormats)
    for (const Shape& s : shapes_for(f)) {
      TestMatrix m = make_matrix(f, s.rows, s.cols, seed++);
      for (size_t n : kTokens) {
        check_against_reference(m.view, n, &pool, seed++, false, label(f, s.rows, s.cols, n));
        check_against_reference(m.view, n, nullptr, seed++, false,
                                label(f, s.rows, s.cols, n) + " 1 thread");
      }
    }
}

TEST(Matmul, PublicEntryPointMatchesReference) {
  ThreadPool pool(2);
  for (WeightFormat f : kFormats) {
    const size_t cols = f == WeightFormat::kFp4Block32 ? 352 : 300;
    TestMatrix m = make_matrix(f, 200, cols, 77);
    for (size_t n : {size_t{1}, size_t{20}}) {
      std::vector<float> x = random_x(n, cols, 5), y(n * 200), ref(n * 200);
      matmul(m.view, x.data(), n, y.data(), &pool);
      matmul_reference(m.view, x.data(), cols, n, ref.data(), 200);
      for (size_t i = 0; i < y.size(); ++i)
        ASSERT_NEAR(y[i], ref[i], 1e-4 * (1 + std::fabs(ref[i]))) << weight_format_name(f);
    }
  }
}

TEST(Matmul, Fp8LargeScalesUseTwoMultiplyPath) {
  TestMatrix m = make_matrix(WeightFormat::kFp8Block128, 130, 260, 9, /*big_scales=*/true);
  for (size_t n : {size_t{1}, size_t{17}})
    check_against_reference(m.view, n, nullptr, 10, false, "fp8 big scales");
}

// FP8 GEMV on AVX2/AVX3 moves the block scale onto x when that is exact; tiny scales (and x
// values that would overflow) take the per-weight-multiply path instead. Both must match the
// reference and the GEMM path bit for bit.
TEST(Matmul, Fp8ScaleOnXFallbacks) {
  TestMatrix tiny = make_matrix(WeightFormat::kFp8Block128, 130, 260, 12, false, 3, 12);
  TestMatrix mid = make_matrix(WeightFormat::kFp8Block128, 130, 260, 13);
  for (TestMatrix* m : {&tiny, &mid}) {
    std::vector<float> x = random_x(17, 260, 14);
    x[3] = 3e37f;  // x·scale·2^8 overflows for the mid scales: fallback path
    std::vector<float> big(17 * 130), one(17 * 130);
    matmul_simd(m->view, x.data(), 260, 17, big.data(), 130, nullptr, false);  // GEMM
    for (size_t t = 0; t < 17; ++t)
      matmul_simd(m->view, x.data() + t * 260, 260, 1, one.data() + t * 130, 130, nullptr, false);
    ASSERT_EQ(0, std::memcmp(big.data(), one.data(), big.size() * 4));
    check_against_reference(m->view, 1, nullptr, 15, false, "fp8 fallback");
  }
}

// NaN codes anywhere in a row (first chunk, a chunk checked with its neighbour, a lone last chunk,
// the partial tail) and NaN scales make the row's outputs NaN on every target, also in token
// blocks after the first (K = 4096: blocks of 24 tokens; the FP8 GEMV checks the codes in the
// first block only and reuses its findings), and leave the other rows bit-identical to n = 1.
TEST(Matmul, Fp8NaNCodesAndScalesPropagate) {
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    for (size_t cols : {size_t{200}, size_t{224}, size_t{4096}}) {
      TestMatrix m = make_matrix(WeightFormat::kFp8Block128, 260, cols, 11);
      m.data[5 * cols + 7] = 0x7f;                   // NaN weight in row 5
      m.data[9 * cols + cols * 3 / 4] = 0xff;        // -NaN weight in row 9
      m.data[70 * cols + cols - 1] = 0x7f;           // in row 70's last element
      m.data[131 * cols + cols - 40] = 0xff;         // in row 131's last 40
      m.scales[2 * m.view.scale_stride + 1] = 0xff;  // NaN scale for rows 256.., cols 128..
      const std::vector<size_t> ns =
          cols == 4096 ? std::vector<size_t>{1, 25, 30} : std::vector<size_t>{1, 17};
      for (size_t n : ns) {
        std::vector<float> x = random_x(n, cols, 3), y(n * 260), one(260);
        matmul_simd(m.view, x.data(), cols, n, y.data(), 260, nullptr, false);
        for (size_t t = 0; t < n; ++t) {
          matmul_simd(m.view, x.data() + t * cols, cols, 1, one.data(), 260, nullptr, false);
          for (size_t o = 0; o < 260; ++o) {
            const bool want_nan = o == 5 || o == 9 || o == 70 || o == 131 || o >= 256;
            ASSERT_EQ(std::isnan(y[t * 260 + o]), want_nan)
                << hwy::TargetName(target) << " row " << o << " token " << t << " n " << n
                << " cols " << cols;
            if (!want_nan) {
              ASSERT_EQ(y[t * 260 + o], one[o]) << "row " << o << " token " << t;
            }
          }
        }
      }
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

TEST(Matmul, RowSlicesInsideTheMatrix) {
  ThreadPool pool(2);
  TestMatrix f8 = make_matrix(WeightFormat::kFp8Block128, 300, 200, 21);
  check_against_reference(f8.view.row_slice(128, 172), 3, &pool, 1, false, "fp8 slice 128+172");
  check_against_reference(f8.view.row_slice(256, 44), 17, &pool, 2, false, "fp8 slice 256+44");
  TestMatrix f4 = make_matrix(WeightFormat::kFp4Block32, 90, 96, 22);
  check_against_reference(f4.view.row_slice(7, 50), 5, &pool, 3, false, "fp4 slice 7+50");
  check_against_reference(f4.view.row_slice(7, 50), 17, &pool, 3, false, "fp4 slice 7+50");
  TestMatrix b16 = make_matrix(WeightFormat::kBF16, 90, 75, 23);
  check_against_reference(b16.view.row_slice(13, 61), 2, &pool, 4, false, "bf16 slice");
  TestMatrix f32 = make_matrix(WeightFormat::kF32, 90, 75, 24);
  check_against_reference(f32.view.row_slice(1, 88), 64, &pool, 5, false, "f32 slice");
  // A slice gives the same rows as the whole matrix, bit for bit.
  std::vector<float> x = random_x(2, 200, 6), yall(2 * 300), ys(2 * 172);
  matmul_simd(f8.view, x.data(), 200, 2, yall.data(), 300, &pool, false);
  matmul_simd(f8.view.row_slice(128, 172), x.data(), 200, 2, ys.data(), 172, &pool, false);
  for (size_t t = 0; t < 2; ++t)
    for (size_t o = 0; o < 172; ++o) ASSERT_EQ(ys[t * 172 + o], yall[t * 300 + 128 + o]);
}

// Each output row is bit-identical whatever the thread count, the token count n and the path
// (GEMM, GEMV, and the single-token GEMV's narrow register blocks).
TEST(Matmul, RowsIndependentOfThreadsAndTokenCount) {
  ThreadPool p1(1), p2(2), p3(3);
  // FP4 at a width with a zero-padded last chunk and at one of whole 32-element chunks.
  for (auto [f, cols] : {std::pair{WeightFormat::kF32, size_t{301}},
                         {WeightFormat::kBF16, 301},
                         {WeightFormat::kFp8Block128, 301},
                         {WeightFormat::kFp4Block32, 290},
                         {WeightFormat::kFp4Block32, 288}}) {
    const size_t rows = 517, n = 64;
    TestMatrix m = make_matrix(f, rows, cols, 31);
    std::vector<float> x = random_x(n, cols, 32);
    std::vector<float> base(n * rows);
    matmul_simd(m.view, x.data(), cols, n, base.data(), rows, nullptr, false);  // GEMM path
    for (ThreadPool* pool : {&p1, &p2, &p3}) {
      std::vector<float> y(n * rows);
      matmul_simd(m.view, x.data(), cols, n, y.data(), rows, pool, false);
      ASSERT_EQ(0, std::memcmp(y.data(), base.data(), y.size() * 4))
          << weight_format_name(f) << " threads " << pool->size();
      matmul_simd(m.view, x.data(), cols, n, y.data(), rows, pool, true);
      ASSERT_EQ(0, std::memcmp(y.data(), base.data(), y.size() * 4)) << weight_format_name(f);
    }
    // Token t alone (GEMV) and in small batches gives the same row values as in the big batch.
    for (size_t nn : {size_t{1}, size_t{3}, size_t{7}, size_t{17}}) {
      for (size_t t0 : {size_t{0}, size_t{40}}) {
        std::vector<float> y(nn * rows);
        matmul_simd(m.view, x.data() + t0 * cols, cols, nn, y.data(), rows, &p2, false);
        ASSERT_EQ(0, std::memcmp(y.data(), base.data() + t0 * rows, y.size() * 4))
            << weight_format_name(f) << " n=" << nn << " t0=" << t0;
        if (nn == 1) {  // the single-token GEMV with 4 rows per register block instead of 8
          std::fill(y.begin(), y.end(), 0.0f);
          matmul_simd(m.view, x.data() + t0 * cols, cols, 1, y.data(), rows, &p2, false,
                      /*narrow_gemv=*/true);
          ASSERT_EQ(0, std::memcmp(y.data(), base.data() + t0 * rows, y.size() * 4))
              << weight_format_name(f) << " narrow, t0=" << t0;
        }
      }
    }
  }
}

// Products with few rows (mHC's mix: 24 rows) give each thread one share of whole register blocks,
// for a single token as for several: the rows come out the same bits on any thread count as in a
// big batch (row counts that split into 8 + 4, 4 + 4 + …, and a lone tail row).
TEST(Matmul, FewRowsSameBitsOnAnyThreadCount) {
  ThreadPool p1(1), p2(2), p3(3);
  for (WeightFormat f : {WeightFormat::kF32, WeightFormat::kBF16, WeightFormat::kFp4Block32}) {
    for (size_t rows : {size_t{24}, size_t{13}, size_t{40}}) {
      const size_t cols = 16384, n = 8;  // mHC's width; 24·16384 clears the parallel threshold
      TestMatrix m = make_matrix(f, rows, cols, 41);
      std::vector<float> x = random_x(n, cols, 42);
      std::vector<float> base(n * rows);
      matmul_simd(m.view, x.data(), cols, n, base.data(), rows, nullptr, false);
      for (ThreadPool* pool : {&p1, &p2, &p3}) {
        for (size_t t : {size_t{0}, size_t{5}}) {
          std::vector<float> y(rows);
          matmul_simd(m.view, x.data() + t * cols, cols, 1, y.data(), rows, pool, false);
          ASSERT_EQ(0, std::memcmp(y.data(), base.data() + t * rows, rows * 4))
              << weight_format_name(f) << " rows " << rows << " threads " << pool->size();
        }
      }
    }
  }
}

// Long rows (several K blocks of the GEMM below AVX-512; on AVX-512, chains of ~270 steps in one
// micro-kernel call), a token count past one token block and not a multiple of the micro-kernel's,
// and a row count not a multiple of the GEMM's row panel: the GEMM gives bit for bit the row values
// of the GEMV.
TEST(Matmul, GemmMatchesGemvOnLongRowsAndOddBatches) {
  ThreadPool p2(2);
  for (auto [f, cols] : {std::pair{WeightFormat::kF32, size_t{4301}},
                         {WeightFormat::kBF16, 4301},
                         {WeightFormat::kFp8Block128, 4301},
                         {WeightFormat::kFp4Block32, 4322},
                         {WeightFormat::kFp4Block32, 4096}}) {
    const size_t rows = 70, n = 101;
    TestMatrix m = make_matrix(f, rows, cols, 41);
    std::vector<float> x = random_x(n, cols, 42);
    std::vector<float> all(n * rows);
    matmul_simd(m.view, x.data(), cols, n, all.data(), rows, &p2, true);
    for (size_t t0 : {size_t{0}, size_t{47}, size_t{100}}) {
      std::vector<float> one(rows);
      matmul_simd(m.view, x.data() + t0 * cols, cols, 1, one.data(), rows, &p2, false);
      ASSERT_EQ(0, std::memcmp(one.data(), all.data() + t0 * rows, rows * 4))
          << weight_format_name(f) << " token " << t0;
    }
  }
}

// Few rows and many tokens (the mHC mix: 24 rows) take the GEMV, each thread on its own share of
// rows, and x whose rows are already whole chunks is read in place. Every variant gives the bits of
// the GEMM and of the same x at another stride (copied, then packed).
TEST(Matmul, FewRowsManyTokensAndUnpackedX) {
  ThreadPool p2(2);
  uint32_t seed = 51;
  for (WeightFormat f : kFormats) {
    const size_t cols = 512, n = 70;  // whole chunks in every format; n past the GEMM threshold
    for (size_t rows : {size_t{24}, size_t{100}, size_t{200}}) {  // GEMV, GEMV, GEMM
      TestMatrix m = make_matrix(f, rows, cols, seed++);
      std::vector<float> x = random_x(n, cols, seed++), xs(n * (cols + 5));
      for (size_t t = 0; t < n; ++t)
        std::copy(x.begin() + t * cols, x.begin() + (t + 1) * cols, xs.begin() + t * (cols + 5));
      std::vector<float> in_place(n * rows), strided(n * rows), gemm(n * rows);
      matmul_simd(m.view, x.data(), cols, n, in_place.data(), rows, &p2, false);
      matmul_simd(m.view, xs.data(), cols + 5, n, strided.data(), rows, &p2, false);
      matmul_simd(m.view, x.data(), cols, n, gemm.data(), rows, &p2, true);
      const std::string what = label(f, rows, cols, n);
      ASSERT_EQ(0, std::memcmp(in_place.data(), strided.data(), in_place.size() * 4)) << what;
      ASSERT_EQ(0, std::memcmp(in_place.data(), gemm.data(), in_place.size() * 4)) << what;
      check_against_reference(m.view, n, &p2, seed++, false, what);
    }
  }
}

// Every SIMD target Highway compiled into this binary (EMU128/SSSE3/SSE4/AVX2/AVX3 as far as
// this CPU supports them) against the scalar reference, so the fallbacks used elsewhere run here.
// A single token over FP4 rows of V4's expert widths takes a GEMV with the row length fixed at
// compile time: on every target, wide and narrow register blocks, from a row inside the matrix, it
// gives the reference's values and the GEMM's bits.
TEST(Matmul, Fp4ExpertWidthsGemvMatchesGemmOnEveryTarget) {
  ThreadPool pool(2);
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    uint32_t seed = 300;
    for (size_t cols : {size_t{2048}, size_t{3072}, size_t{4096}, size_t{7168}}) {
      const size_t rows = 2 * 8 + 4 + 3 + 5;  // blocks of 8 and 4 rows, single rows; a slice at 5
      TestMatrix m = make_matrix(WeightFormat::kFp4Block32, rows, cols, seed++);
      const MatrixView v = m.view.row_slice(5, rows - 5);
      const std::string name =
          std::string(hwy::TargetName(target)) + " fp4 K=" + std::to_string(cols);
      check_against_reference(v, 1, &pool, seed++, false, name);
      std::vector<float> x = random_x(1, cols, seed++), gemm(v.rows), gemv(v.rows);
      matmul_simd(v, x.data(), cols, 1, gemm.data(), v.rows, nullptr, true);
      for (bool narrow : {false, true})
        for (ThreadPool* p : {&pool, static_cast<ThreadPool*>(nullptr)}) {
          std::fill(gemv.begin(), gemv.end(), 0.0f);
          matmul_simd(v, x.data(), cols, 1, gemv.data(), v.rows, p, false, narrow);
          ASSERT_EQ(0, std::memcmp(gemv.data(), gemm.data(), gemv.size() * 4))
              << name << (narrow ? " narrow" : " wide") << (p ? " 2 threads" : " 1 thread");
        }
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

TEST(Matmul, EverySimdTargetMatchesReference) {
  const std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  ASSERT_FALSE(targets.empty());
  std::string seen;
  for (int64_t target : targets) {
    hwy::SetSupportedTargetsForTest(target);
    const std::string name = matmul_target_name();
    EXPECT_EQ(name, hwy::TargetName(target));
    seen += name + " ";
    ThreadPool pool(2);
    uint32_t seed = 100;
    for (WeightFormat f : kFormats) {
      const Shape shapes[] = {{37, f == WeightFormat::kFp4Block32 ? 290u : 301u},
                              {5, f == WeightFormat::kFp4Block32 ? 34u : 7u}};
      for (const Shape& s : shapes) {
        TestMatrix m = make_matrix(f, s.rows, s.cols, seed++);
        for (size_t n : {size_t{1}, size_t{3}, size_t{17}}) {
          check_against_reference(m.view, n, &pool, seed++, false,
                                  name + " " + label(f, s.rows, s.cols, n));
          check_against_reference(m.view, n, nullptr, seed++, true,
                                  name + " gemm " + label(f, s.rows, s.cols, n));
        }
      }
      TestMatrix big = make_matrix(WeightFormat::kFp8Block128, 9, 140, seed++, true);
      check_against_reference(big.view, 2, nullptr, seed++, false, name + " fp8 big scales");
    }
  }
  hwy::SetSupportedTargetsForTest(0);
  std::printf("matmul targets tested: %s\n", seen.c_str());
}

}  // namespace
}  // namespace dsv4
