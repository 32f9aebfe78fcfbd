// Small vector kernels (kernels/ops.h) vs plain scalar references written here: axpy, dot,
// sum_squares, rms_norm, rope_apply, hadamard_transform, dot_rows_seq, weighted_rows_sum,
// softmax_with_sink and swiglu_clamp on
// odd sizes, unaligned pointers, padded strides (gaps poisoned with NaN on input, checked
// untouched on output) and every SIMD target Highway compiled. Where ops.h promises results
// bit-identical to a scalar loop (axpy, dot_rows_seq, weighted_rows_sum) the comparison is bit for
// bit; elsewhere it is within a stated fp32 rounding bound, plus the cases that are exact.

#include "kernels/ops.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "hwy/targets.h"

namespace dsv4 {
namespace {

constexpr double kU = 0x1p-24;   // unit roundoff of fp32, round to nearest
constexpr double kUd = 0x1p-53;  // unit roundoff of fp64
constexpr float kSentinel = -12345.0f;
const float kNaN = std::numeric_limits<float>::quiet_NaN();

// γ_k = k·u / (1 − k·u): bound on the relative effect of k chained fp32 roundings (Higham §3.1).
double gamma32(size_t k) { return k * kU / (1 - k * kU); }

uint32_t bits(float f) { return std::bit_cast<uint32_t>(f); }

// a·b rounded to fp32 on its own: the volatile store keeps the compiler from contracting the
// following add into a fused multiply-add (whatever -ffp-contract this file is built with).
float mul_rounded(float a, float b) {
  volatile float p = a * b;
  return p;
}

// n floats starting `off` floats past a 64-byte aligned allocation of exactly off + n floats
// (aligned operator new[]: ASan flags any access past the last element). All start as `fill`.
class Buf {
 public:
  explicit Buf(size_t n, size_t off = 0, float fill = kNaN) : n_(n), off_(off) {
    base_ = static_cast<float*>(::operator new[]((off + n) * sizeof(float), kAlign));
    std::fill(base_, base_ + off + n, fill);
  }
  ~Buf() { ::operator delete[](base_, kAlign); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;

  float* data() { return base_ + off_; }
  float& operator[](size_t i) { return base_[off_ + i]; }
  size_t size() const { return n_; }
  // The `off` floats before data() still hold `fill` (nothing wrote before the array).
  bool prefix_is(float fill) const {
    for (size_t i = 0; i < off_; ++i)
      if (bits(base_[i]) != bits(fill)) return false;
    return true;
  }

 private:
  static constexpr std::align_val_t kAlign{64};
  size_t n_, off_;
  float* base_;
};

// Size of a strided matrix of `rows` rows of `cols` floats, `ld` apart: the last row is not
// padded, so that ASan catches a read past its last column.
size_t strided_size(size_t rows, size_t cols, size_t ld) {
  return rows ? (rows - 1) * ld + cols : 0;
}

// Mixed magnitude and sign: ±m·2^e, m uniform in [1, 2) with a full 23-bit fraction, e in
// [-6, 6]; an exact 0 now and then.
float mixed(std::mt19937& rng) {
  const uint32_t r = rng(), f = rng();
  if (r % 32 == 0) return 0.0f;
  const float m = 1.0f + static_cast<float>(f & 0x7fffff) * 0x1p-23f;
  const int e = static_cast<int>((r >> 5) % 13) - 6;
  return std::ldexp((r & 0x80000000u) ? -m : m, e);
}

void fill_mixed(float* p, size_t n, std::mt19937& rng) {
  for (size_t i = 0; i < n; ++i) p[i] = mixed(rng);
}

// Odd sizes around every vector width (4, 8, 16 lanes) and the 4-vector unrolls.
const size_t kSizes[] = {0,  1,  2,  3,  4,  5,  7,   8,   9,   15,  16,  17,  31,
                         32, 33, 47, 63, 64, 65, 127, 128, 129, 255, 257, 300, 1000};

std::string at(const std::string& what, size_t n) { return what + " n=" + std::to_string(n); }

// ---------------------------------------------------------------------------------------------
// axpy: y[i] = y[i] + a·x[i], a rounded multiply then a rounded add: bit for bit.

void check_axpy(const std::string& what) {
  std::mt19937 rng(11);
  int bad = 0;
  size_t k = 0;
  for (size_t n : kSizes) {
    const float as[] = {mixed(rng), -1.0f, 0.0f, 0.3f};
    for (float a : as) {
      const size_t ox = k % 4, oy = (k / 4 + 1) % 4;
      ++k;
      Buf x(n, ox), y(n, oy);
      fill_mixed(x.data(), n, rng);
      fill_mixed(y.data(), n, rng);
      std::vector<float> want(n);
      for (size_t i = 0; i < n; ++i) want[i] = y[i] + mul_rounded(a, x[i]);
      axpy(a, x.data(), n, y.data());
      for (size_t i = 0; i < n; ++i)
        if (bits(y[i]) != bits(want[i]) && bad++ < 5)
          ADD_FAILURE() << at(what, n) << " a=" << a << " i=" << i << ": got " << y[i] << " want "
                        << want[i];
      EXPECT_TRUE(y.prefix_is(kNaN)) << at(what, n) << ": axpy wrote before y";
    }
  }
}

// ---------------------------------------------------------------------------------------------
// dot: the kernel splits the sum over lanes and accumulators (and may fuse multiply-adds), so it
// is compared with the exact value Σ a·b. Any evaluation order of an n-term dot product with fp32
// roundings (fused or not) satisfies |got − Σab| ≤ γ_n · Σ|a·b| (Higham, eq. 3.5): that bound is
// the tolerance, plus the fp64 reference's own error n·2^-53·Σ|a·b|.

void check_dot(const std::string& what) {
  std::mt19937 rng(12);
  int bad = 0;
  size_t k = 0;
  for (size_t n : kSizes) {
    for (int rep = 0; rep < 3; ++rep, ++k) {
      Buf a(n, k % 4), b(n, (k + 2) % 4);
      fill_mixed(a.data(), n, rng);
      fill_mixed(b.data(), n, rng);
      double exact = 0, mag = 0;
      for (size_t i = 0; i < n; ++i) {
        exact += double(a[i]) * b[i];
        mag += std::fabs(double(a[i]) * b[i]);
      }
      const float got = dot(a.data(), b.data(), n);
      const double tol = (gamma32(n) + n * kUd) * mag;
      if (!(std::fabs(got - exact) <= tol) && bad++ < 5)
        ADD_FAILURE() << at(what, n) << ": dot got " << got << " want " << exact << " tol " << tol;
    }
    // Small integers: every partial sum is an integer below 2^24, so any order is exact.
    Buf a(n, 3), b(n, 1);
    std::uniform_int_distribution<int> small(-8, 8);
    int64_t exact = 0;
    for (size_t i = 0; i < n; ++i) {
      a[i] = static_cast<float>(small(rng));
      b[i] = static_cast<float>(small(rng));
      exact += static_cast<int64_t>(a[i]) * static_cast<int64_t>(b[i]);
    }
    EXPECT_EQ(dot(a.data(), b.data(), n), static_cast<float>(exact)) << at(what, n) << " integers";
    // a·a: Σ a² (the kernel takes restrict pointers, but reading one array twice is allowed).
    double sq = 0;
    for (size_t i = 0; i < n; ++i) sq += double(a[i]) * a[i];
    EXPECT_EQ(dot(a.data(), a.data(), n), static_cast<float>(sq)) << at(what, n) << " a·a";
  }
}

// ---------------------------------------------------------------------------------------------
// sum_squares in double: x² is exact in fp64, so the only error is the fp64 sum's, ≤ γ_(n−1)
// relative (all terms ≥ 0) for the kernel and for the sequential reference alike:
// |got − ref| ≤ 2·n·2^-53·ref.

void check_sum_squares(const std::string& what) {
  std::mt19937 rng(13);
  int bad = 0;
  size_t k = 0;
  for (size_t n : kSizes) {
    for (int rep = 0; rep < 2; ++rep, ++k) {
      Buf x(n, k % 4);
      fill_mixed(x.data(), n, rng);
      double ref = 0;
      for (size_t i = 0; i < n; ++i) ref += double(x[i]) * double(x[i]);
      const double got = sum_squares(x.data(), n);
      const double tol = 2.0 * n * kUd * ref;
      if (!(std::fabs(got - ref) <= tol) && bad++ < 5)
        ADD_FAILURE() << at(what, n) << ": sum_squares got " << got << " want " << ref;
    }
    // Integers up to 2^12: squares up to 2^24, sums below 2^53: exact in any order.
    Buf x(n, 2);
    std::uniform_int_distribution<int> ints(-4096, 4096);
    int64_t exact = 0;
    for (size_t i = 0; i < n; ++i) {
      const int v = ints(rng);
      x[i] = static_cast<float>(v);
      exact += int64_t{v} * v;
    }
    EXPECT_EQ(sum_squares(x.data(), n), static_cast<double>(exact)) << at(what, n) << " integers";
  }
  // Squares beyond fp32's range stay finite in double: 2·(3e38)² + (1e-30)² + 1.
  {
    Buf x(3, 1);
    x[0] = 3e38f;
    x[1] = -3e38f;
    x[2] = 1e-30f;
    const double want = 2.0 * double(3e38f) * double(3e38f);
    const double got = sum_squares(x.data(), 3);
    EXPECT_NEAR(got, want, 4 * kUd * want) << what << " huge";
  }
  // Tiny values whose fp32 squares would underflow to 0 keep their value in double.
  {
    Buf x(17, 3);
    for (size_t i = 0; i < 17; ++i) x[i] = 1e-30f;
    const double want = 17.0 * double(1e-30f) * double(1e-30f);
    EXPECT_NEAR(sum_squares(x.data(), 17), want, 40 * kUd * want) << what << " tiny";
  }
}

// ---------------------------------------------------------------------------------------------
// rms_norm vs the exact value w·x / sqrt(Σx²/n + eps) computed in double. The kernel's roundings:
// the fp32 mean (u; its fp64 sum adds ~n·2^-53), + eps (u, both terms ≥ 0), sqrt (halves the
// 2u so far, adds u/2), 1/· (u), x·r (u), w·(x·r) (u): 4.5u to first order, so the tolerance is
// 5u·|want| (an approximate reciprocal square root would not pass).

void check_rms_norm(const std::string& what) {
  std::mt19937 rng(14);
  int bad = 0;
  size_t k = 0;
  const float eps = 1e-6f;
  for (size_t n : kSizes) {
    if (n == 0) continue;                // mean of nothing: not defined
    for (float scale : {1.0f, 1e-4f}) {  // 1e-4: eps is a sizeable part of mean(x²) + eps
      for (int weighted = 0; weighted < 2; ++weighted, ++k) {
        Buf x(n, k % 4), w(n, (k + 1) % 4), y(n, (k + 3) % 4);
        fill_mixed(x.data(), n, rng);
        fill_mixed(w.data(), n, rng);
        for (size_t i = 0; i < n; ++i) x[i] *= scale;
        double ss = 0;
        for (size_t i = 0; i < n; ++i) ss += double(x[i]) * x[i];
        const double r = 1.0 / std::sqrt(ss / double(n) + double(eps));
        rms_norm(x.data(), weighted ? w.data() : nullptr, n, eps, y.data());
        for (size_t i = 0; i < n; ++i) {
          const double want = (weighted ? double(w[i]) : 1.0) * x[i] * r;
          if (!(std::fabs(y[i] - want) <= 5 * kU * std::fabs(want)) && bad++ < 5)
            ADD_FAILURE() << at(what, n) << " scale " << scale << " weighted " << weighted
                          << " i=" << i << ": got " << y[i] << " want " << want;
        }
        EXPECT_TRUE(y.prefix_is(kNaN)) << at(what, n) << ": rms_norm wrote before y";

        // Exact: w = null is bit-identical to w = ones.
        if (!weighted) {
          Buf ones(n, (k + 2) % 4, 1.0f), y1(n, k % 3);
          rms_norm(x.data(), ones.data(), n, eps, y1.data());
          for (size_t i = 0; i < n; ++i)
            if (bits(y1[i]) != bits(y[i]) && bad++ < 5)
              ADD_FAILURE() << at(what, n) << " i=" << i << ": w=ones " << y1[i] << " w=null "
                            << y[i];
        }
        // Exact: in place (y = x) is bit-identical to out of place.
        rms_norm(x.data(), weighted ? w.data() : nullptr, n, eps, x.data());
        for (size_t i = 0; i < n; ++i)
          if (bits(x[i]) != bits(y[i]) && bad++ < 5)
            ADD_FAILURE() << at(what, n) << " i=" << i << ": in place " << x[i] << " out of place "
                          << y[i];
      }
    }
  }
  // All zeros: y = 0·rsqrt(eps) = 0.
  Buf z(33, 1, 0.0f), y(33, 2);
  rms_norm(z.data(), nullptr, 33, eps, y.data());
  for (size_t i = 0; i < 33; ++i) EXPECT_EQ(y[i], 0.0f) << what << " zeros";
}

// ---------------------------------------------------------------------------------------------
// rope_apply vs the rotation in double. Each output is fl(fl(a·c) ∓ fl(b·s)): with fp32 roundings
// e1, e2, e3 its error is ≤ (2u + u²)(|a·c| + |b·s|) ≤ γ_2 (|a·c| + |b·s|) (ops.cc builds with
// -ffp-contract=off; a fused product would only be more accurate). The fp64 reference has exact
// products and one 2^-53 rounding.

void check_rope(const std::string& what) {
  std::mt19937 rng(15);
  std::uniform_real_distribution<float> angle(-4.0f, 4.0f);
  int bad = 0;
  size_t k = 0;
  for (size_t np : kSizes) {
    const size_t ov = k % 4, oc = (k + 1) % 4, os = (k + 2) % 4;
    ++k;
    Buf cs(np, oc), sn(np, os), v0(2 * np, 3);
    for (size_t j = 0; j < np; ++j) {
      const float th = angle(rng) * (j % 3 == 0 ? 100.0f : 1.0f);
      cs[j] = std::cos(th);
      sn[j] = std::sin(th);
    }
    fill_mixed(v0.data(), 2 * np, rng);
    for (int inverse = 0; inverse < 2; ++inverse) {
      Buf v(2 * np, ov);
      std::copy(v0.data(), v0.data() + 2 * np, v.data());
      rope_apply(v.data(), cs.data(), sn.data(), np, inverse);
      for (size_t j = 0; j < np; ++j) {
        const double a = v0[2 * j], b = v0[2 * j + 1], c = cs[j], s = inverse ? -sn[j] : sn[j];
        const double want0 = a * c - b * s, want1 = a * s + b * c;
        const double g = gamma32(2) + kUd;
        const double tol0 = g * (std::fabs(a * c) + std::fabs(b * s)),
                     tol1 = g * (std::fabs(a * s) + std::fabs(b * c));
        if (!(std::fabs(v[2 * j] - want0) <= tol0 && std::fabs(v[2 * j + 1] - want1) <= tol1) &&
            bad++ < 5)
          ADD_FAILURE() << at(what, np) << " inverse " << inverse << " pair " << j << ": got ("
                        << v[2 * j] << ", " << v[2 * j + 1] << ") want (" << want0 << ", " << want1
                        << ")";
      }
      EXPECT_TRUE(v.prefix_is(kNaN)) << at(what, np) << ": rope wrote before v";
    }

    // inverse = true is exactly the forward rotation by −sin.
    Buf neg(np, os), vi(2 * np, ov), vf(2 * np, (ov + 1) % 4);
    for (size_t j = 0; j < np; ++j) neg[j] = -sn[j];
    std::copy(v0.data(), v0.data() + 2 * np, vi.data());
    std::copy(v0.data(), v0.data() + 2 * np, vf.data());
    rope_apply(vi.data(), cs.data(), sn.data(), np, true);
    rope_apply(vf.data(), cs.data(), neg.data(), np, false);
    for (size_t i = 0; i < 2 * np; ++i)
      if (bits(vi[i]) != bits(vf[i]) && bad++ < 5)
        ADD_FAILURE() << at(what, np) << " i=" << i << ": inverse " << vi[i] << " vs −sin "
                      << vf[i];

    // Forward then inverse returns v. R(−θ)·R(θ) = (c² + s²)·I exactly, and c² + s² of the
    // rounded cos/sin is 1 within 4u (each within 1 ulp); each rotation errs by ≤ γ_2(|a| + |b|)
    // per output, the first one's error carried through the second (× |c| + |s| ≤ √2), the second
    // one's ≤ γ_2·√2(|a| + |b|): ≈ (4 + 2√2 + 2√2)u ≈ 9.7u; tolerance 12u·(|a| + |b|).
    Buf vr(2 * np, ov);
    std::copy(v0.data(), v0.data() + 2 * np, vr.data());
    rope_apply(vr.data(), cs.data(), sn.data(), np, false);
    rope_apply(vr.data(), cs.data(), sn.data(), np, true);
    for (size_t j = 0; j < np; ++j) {
      const double a = v0[2 * j], b = v0[2 * j + 1];
      const double tol = 12 * kU * (std::fabs(a) + std::fabs(b));
      if (!(std::fabs(vr[2 * j] - a) <= tol && std::fabs(vr[2 * j + 1] - b) <= tol) && bad++ < 5)
        ADD_FAILURE() << at(what, np) << " pair " << j << ": round trip (" << vr[2 * j] << ", "
                      << vr[2 * j + 1] << ") want (" << a << ", " << b << ")";
    }

    // Angle 0 (cos 1, sin 0) is the identity and angle π/2 (cos 0, sin 1) maps (a, b) to (−b, a),
    // both exactly, forward and inverse.
    Buf one(np, oc, 1.0f), zero(np, os, 0.0f);
    for (int inverse = 0; inverse < 2; ++inverse) {
      Buf v(2 * np, ov);
      std::copy(v0.data(), v0.data() + 2 * np, v.data());
      rope_apply(v.data(), one.data(), zero.data(), np, inverse);
      for (size_t i = 0; i < 2 * np; ++i)
        if (v[i] != v0[i] && bad++ < 5)
          ADD_FAILURE() << at(what, np) << " angle 0 i=" << i << ": " << v[i] << " != " << v0[i];
      std::copy(v0.data(), v0.data() + 2 * np, v.data());
      rope_apply(v.data(), zero.data(), one.data(), np, inverse);
      const float sgn = inverse ? -1.0f : 1.0f;
      for (size_t j = 0; j < np; ++j)
        if ((v[2 * j] != -sgn * v0[2 * j + 1] || v[2 * j + 1] != sgn * v0[2 * j]) && bad++ < 5)
          ADD_FAILURE() << at(what, np) << " angle π/2 inverse " << inverse << " pair " << j;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// hadamard_transform vs the definition y_i = n^-½ Σ_j (−1)^popcount(i & j) x_j in double. The fast
// transform passes every term through L = log2 n rounded adds/subtracts (|err| ≤ γ_L Σ|x_j|), then
// multiplies by fl(1/fl(√n)) (within 1.5u of n^-½) with one more rounding: the tolerance is
// (L + 3)·u·n^-½·Σ|x_j| (first order (L + 2.5)u).

size_t log2_exact(size_t n) {
  size_t l = 0;
  while ((size_t{1} << l) < n) ++l;
  return l;
}

void check_hadamard(const std::string& what) {
  std::mt19937 rng(16);
  int bad = 0;
  size_t k = 0;
  for (size_t n = 1; n <= 2048; n *= 2, ++k) {
    const size_t L = log2_exact(n);
    const double inv_sqrt_n = 1.0 / std::sqrt(double(n));
    Buf v(n, k % 4);
    fill_mixed(v.data(), n, rng);
    std::vector<float> x(v.data(), v.data() + n);
    double mag = 0;
    for (float e : x) mag += std::fabs(e);
    hadamard_transform(v.data(), n);
    const double tol = (L + 3) * kU * inv_sqrt_n * mag;
    for (size_t i = 0; i < n; ++i) {
      double want = 0;
      for (size_t j = 0; j < n; ++j) want += (std::popcount(i & j) & 1) ? -x[j] : x[j];
      want *= inv_sqrt_n;
      if (!(std::fabs(v[i] - want) <= tol) && bad++ < 5)
        ADD_FAILURE() << at(what, n) << " i=" << i << ": got " << v[i] << " want " << want
                      << " tol " << tol;
    }
    EXPECT_TRUE(v.prefix_is(kNaN)) << at(what, n) << ": hadamard wrote before v";

    // Applied twice it is the identity (H orthogonal, symmetric): in the 2-norm each butterfly
    // stage adds ≤ u relative and the scaling 2.5u, so ‖H(Hx) − x‖ ≤ (2L + 5)u‖x‖ to first order;
    // tolerance (2L + 8)u‖x‖.
    hadamard_transform(v.data(), n);
    double err2 = 0, norm2 = 0;
    for (size_t i = 0; i < n; ++i) {
      err2 += (double(v[i]) - x[i]) * (double(v[i]) - x[i]);
      norm2 += double(x[i]) * x[i];
    }
    EXPECT_LE(std::sqrt(err2), (2 * L + 8) * kU * std::sqrt(norm2)) << at(what, n) << " H·H";

    // Basis vector e_b: every sum is exact, so y_i = ±m with the same m for every i, the sign
    // (−1)^popcount(i & b) exactly, and m = n^-½ exactly when n is a power of 4 (else within 2u).
    const size_t bs[] = {0, n - 1, n / 3, rng() % n};
    for (size_t b : bs) {
      Buf e(n, (k + 1) % 4, 0.0f);
      e[b] = 1.0f;
      hadamard_transform(e.data(), n);
      const float m = std::fabs(e[0]);
      if (L % 2 == 0)
        EXPECT_EQ(m, std::ldexp(1.0f, -static_cast<int>(L / 2))) << at(what, n) << " e_" << b;
      else
        EXPECT_NEAR(m, inv_sqrt_n, 2 * kU * inv_sqrt_n) << at(what, n) << " e_" << b;
      for (size_t i = 0; i < n; ++i) {
        const float want = (std::popcount(i & b) & 1) ? -m : m;
        if (bits(e[i]) != bits(want) && bad++ < 5)
          ADD_FAILURE() << at(what, n) << " e_" << b << " i=" << i << ": got " << e[i] << " want "
                        << want;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// dot_rows_seq: S[h][j] = Σ_c Q[h][c]·E[j][c], a rounded multiply then a rounded add in order
// c = 0, 1, …: bit for bit. nq around the 8-head block, n around the vector width, stride gaps
// of Q and E poisoned with NaN (a read would show), gaps of S checked untouched.

void check_dot_rows_seq(const std::string& what) {
  std::mt19937 rng(17);
  int bad = 0;
  size_t k = 0;
  const size_t nqs[] = {0, 1, 3, 7, 8, 9, 16, 17, 23};
  const size_t ns[] = {0, 1, 3, 4, 5, 8, 15, 16, 17, 31, 33, 40};
  const size_t dims[] = {0, 1, 3, 16, 17, 64, 129};
  for (size_t nq : nqs)
    for (size_t n : ns)
      for (size_t dim : dims) {
        const size_t ldq = dim + 1 + k % 3, lde = dim + 2 + k % 5, lds = n + 1 + k % 4;
        Buf Q(strided_size(nq, dim, ldq), k % 4), E(strided_size(n, dim, lde), (k + 1) % 4),
            S(strided_size(nq, n, lds), (k + 2) % 4, kSentinel);
        ++k;
        for (size_t h = 0; h < nq; ++h) fill_mixed(&Q[h * ldq], dim, rng);
        for (size_t j = 0; j < n; ++j) fill_mixed(&E[j * lde], dim, rng);
        dot_rows_seq(Q.data(), ldq, nq, E.data(), lde, n, dim, S.data(), lds);
        const std::string where = what + " nq=" + std::to_string(nq) + " n=" + std::to_string(n) +
                                  " dim=" + std::to_string(dim);
        for (size_t h = 0; h < nq; ++h) {
          for (size_t j = 0; j < n; ++j) {
            float want = 0.0f;
            for (size_t c = 0; c < dim; ++c)
              want = want + mul_rounded(Q[h * ldq + c], E[j * lde + c]);
            const float got = S[h * lds + j];
            if (bits(got) != bits(want) && bad++ < 5)
              ADD_FAILURE() << where << " h=" << h << " j=" << j << ": got " << got << " want "
                            << want;
          }
          if (h + 1 < nq)
            for (size_t j = n; j < lds; ++j)
              if (S[h * lds + j] != kSentinel && bad++ < 5)
                ADD_FAILURE() << where << " h=" << h << ": wrote the stride gap at " << j;
        }
        EXPECT_TRUE(S.prefix_is(kSentinel)) << where << ": wrote before S";
      }
}

// dot_rows_seq_t: the same sums written transposed, S[j][h] = Σ_c Q[h][c]·E[j][c], lanes over
// the queries h: nq around the vector width and its multiples (padded query vectors), n around
// the 4-entry block.

void check_dot_rows_seq_t(const std::string& what) {
  std::mt19937 rng(21);
  int bad = 0;
  size_t k = 0;
  const size_t nqs[] = {0, 1, 3, 15, 16, 17, 33, 64, 65};
  const size_t ns[] = {0, 1, 3, 4, 5, 9, 17};
  const size_t dims[] = {0, 1, 3, 17, 128};
  for (size_t nq : nqs)
    for (size_t n : ns)
      for (size_t dim : dims) {
        const size_t ldq = dim + 1 + k % 3, lde = dim + 2 + k % 5, lds = nq + 1 + k % 4;
        Buf Q(strided_size(nq, dim, ldq), k % 4), E(strided_size(n, dim, lde), (k + 1) % 4),
            S(strided_size(n, nq, lds), (k + 2) % 4, kSentinel);
        ++k;
        for (size_t h = 0; h < nq; ++h) fill_mixed(&Q[h * ldq], dim, rng);
        for (size_t j = 0; j < n; ++j) fill_mixed(&E[j * lde], dim, rng);
        dot_rows_seq_t(Q.data(), ldq, nq, E.data(), lde, n, dim, S.data(), lds);
        const std::string where = what + " nq=" + std::to_string(nq) + " n=" + std::to_string(n) +
                                  " dim=" + std::to_string(dim);
        for (size_t j = 0; j < n; ++j) {
          for (size_t h = 0; h < nq; ++h) {
            float want = 0.0f;
            for (size_t c = 0; c < dim; ++c)
              want = want + mul_rounded(Q[h * ldq + c], E[j * lde + c]);
            const float got = S[j * lds + h];
            if (bits(got) != bits(want) && bad++ < 5)
              ADD_FAILURE() << where << " j=" << j << " h=" << h << ": got " << got << " want "
                            << want;
          }
          if (j + 1 < n)
            for (size_t h = nq; h < lds; ++h)
              if (S[j * lds + h] != kSentinel && bad++ < 5)
                ADD_FAILURE() << where << " j=" << j << ": wrote the stride gap at " << h;
        }
        EXPECT_TRUE(S.prefix_is(kSentinel)) << where << ": wrote before S";
        // The queries transposed once into a buffer starting off a 64-byte boundary, then the
        // entries in two calls (as threads share them): the same bits.
        std::vector<float> tbuf(transposed_queries_floats(nq, dim) + 1, kSentinel);
        const TransposedQueries qt = transpose_queries(Q.data(), ldq, nq, dim, tbuf.data() + 1);
        EXPECT_EQ(reinterpret_cast<uintptr_t>(qt.data) % 64, 0u) << where;
        EXPECT_GE(qt.data, tbuf.data() + 1) << where;
        EXPECT_LE(qt.data + dim * qt.stride, tbuf.data() + tbuf.size()) << where;
        std::vector<float> S2(n * lds, kSentinel);
        const size_t half = n / 2;
        dot_rows_seq_t(qt, E.data(), lde, half, S2.data(), lds);
        dot_rows_seq_t(qt, E.data() + half * lde, lde, n - half, S2.data() + half * lds, lds);
        for (size_t j = 0; j < n; ++j)
          for (size_t h = 0; h < nq; ++h)
            if (bits(S2[j * lds + h]) != bits(S[j * lds + h]) && bad++ < 5)
              ADD_FAILURE() << where << " transposed once, j=" << j << " h=" << h << ": got "
                            << S2[j * lds + h] << " want " << S[j * lds + h];
      }
}

// ---------------------------------------------------------------------------------------------
// weighted_rows_sum: O[h][c] = Σ_j P[h][j]·E[j][c] in order j = 0, 1, …, multiply then add:
// bit for bit with the scalar loop and with nh·n axpy calls. nh around the 4-head block, dim
// around 4·lanes and lanes (tails), O pre-filled with garbage (it is overwritten).

void check_weighted_rows_sum(const std::string& what) {
  std::mt19937 rng(18);
  int bad = 0;
  size_t k = 0;
  const size_t nhs[] = {0, 1, 3, 4, 5, 8, 9};
  const size_t ns[] = {0, 1, 2, 3, 17, 33};
  const size_t dims[] = {1, 3, 4, 7, 15, 16, 17, 31, 33, 63, 64, 65, 127, 128, 129, 200};
  struct Case {
    size_t nh, n, dim;
  };
  std::vector<Case> cases;
  for (size_t nh : nhs)
    for (size_t n : ns)
      for (size_t dim : dims) cases.push_back({nh, n, dim});
  // Long enough that the entries are walked in several L2-sized blocks (sums resumed from O).
  cases.push_back({9, 300, 512});
  cases.push_back({5, 1100, 129});
  for (const auto& [nh, n, dim] : cases) {
    const size_t ldp = n + 1 + k % 3, lde = dim + 1 + k % 4, ldo = dim + 2 + k % 3;
    Buf P(strided_size(nh, n, ldp), k % 4), E(strided_size(n, dim, lde), (k + 1) % 4),
        O(strided_size(nh, dim, ldo), (k + 2) % 4, kSentinel);
    ++k;
    for (size_t h = 0; h < nh; ++h) fill_mixed(&P[h * ldp], n, rng);
    for (size_t j = 0; j < n; ++j) fill_mixed(&E[j * lde], dim, rng);
    for (size_t h = 0; h < nh; ++h)
      for (size_t c = 0; c < dim; ++c) O[h * ldo + c] = 777.0f;  // must be overwritten
    weighted_rows_sum(P.data(), ldp, nh, E.data(), lde, n, dim, O.data(), ldo);
    const std::string where = what + " nh=" + std::to_string(nh) + " n=" + std::to_string(n) +
                              " dim=" + std::to_string(dim);
    std::vector<float> row(dim);
    for (size_t h = 0; h < nh; ++h) {
      // The same row from n axpy calls on a zeroed row.
      std::fill(row.begin(), row.end(), 0.0f);
      for (size_t j = 0; j < n; ++j) axpy(P[h * ldp + j], &E[j * lde], dim, row.data());
      for (size_t c = 0; c < dim; ++c) {
        float want = 0.0f;
        for (size_t j = 0; j < n; ++j) want = want + mul_rounded(P[h * ldp + j], E[j * lde + c]);
        const float got = O[h * ldo + c];
        if ((bits(got) != bits(want) || bits(row[c]) != bits(want)) && bad++ < 5)
          ADD_FAILURE() << where << " h=" << h << " c=" << c << ": got " << got << " want " << want
                        << " (axpy calls " << row[c] << ")";
      }
      if (h + 1 < nh)
        for (size_t c = dim; c < ldo; ++c)
          if (O[h * ldo + c] != kSentinel && bad++ < 5)
            ADD_FAILURE() << where << " h=" << h << ": wrote the stride gap at " << c;
    }
    EXPECT_TRUE(O.prefix_is(kSentinel)) << where << ": wrote before O";
  }
}

// Outputs that ops.cc promises bit-identical on every target (rms_norm: fp64 sum, scalar-order
// scaling; hadamard and rope: the scalar code's operations), on fixed inputs.
std::vector<float> target_invariant_outputs() {
  std::mt19937 rng(19);
  std::vector<float> out;
  for (size_t n : {size_t{7}, size_t{64}, size_t{129}, size_t{1000}}) {
    std::vector<float> x(n), w(n), y(n);
    fill_mixed(x.data(), n, rng);
    fill_mixed(w.data(), n, rng);
    rms_norm(x.data(), w.data(), n, 1e-6f, y.data());
    out.insert(out.end(), y.begin(), y.end());
    rms_norm(x.data(), nullptr, n, 1e-6f, y.data());
    out.insert(out.end(), y.begin(), y.end());
    std::vector<float> c(n / 2), s(n / 2);
    for (size_t j = 0; j < n / 2; ++j) {
      c[j] = std::cos(0.37f * j);
      s[j] = std::sin(0.37f * j);
    }
    rope_apply(x.data(), c.data(), s.data(), n / 2, false);
    out.insert(out.end(), x.begin(), x.end());
  }
  for (size_t n : {size_t{2}, size_t{8}, size_t{64}, size_t{1024}}) {
    std::vector<float> v(n);
    fill_mixed(v.data(), n, rng);
    hadamard_transform(v.data(), n);
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

// Against the formula in double from the same rounded scores s_j = fp32(scale·z_j): each output
// within (|s_j − m| + 8)·u relative (the fp32 subtraction, std::exp, the division) plus the
// sum's γ_n; the outputs and the sink's share add up to 1; a −∞ score gives
// exactly 0, a NaN score NaN everywhere.
void check_softmax_with_sink(const std::string& what) {
  std::mt19937 rng(31);
  std::uniform_real_distribution<float> uz(-300.0f, 300.0f), usink(-3.0f, 3.0f);
  int bad = 0;
  size_t k = 0;
  for (size_t n : {0, 1, 2, 3, 7, 15, 16, 17, 31, 33, 64, 100, 640, 1001}) {
    const float scale = 0.0441941738f, sink = usink(rng);  // 1/sqrt(512)
    Buf z(n, k++ % 4);
    for (size_t j = 0; j < n; ++j) z[j] = uz(rng);
    if (n > 5) z[n / 3] = -std::numeric_limits<float>::infinity();
    std::vector<double> sj(n);
    double m = -INFINITY;
    for (size_t j = 0; j < n; ++j) m = std::max(m, sj[j] = double(z[j] * scale));
    double den = std::exp(double(sink) - m);
    for (size_t j = 0; j < n; ++j) den += std::exp(sj[j] - m);
    softmax_with_sink(z.data(), n, scale, sink);
    double total = std::exp(double(sink) - m) / den;
    for (size_t j = 0; j < n; ++j) {
      total += z[j];
      if (std::isinf(sj[j])) continue;  // the −∞ score: checked below
      const double want = std::exp(sj[j] - m) / den;
      const double tol = want * ((std::fabs(sj[j] - m) + 8) * kU + gamma32(n + 1));
      if (!(std::fabs(z[j] - want) <= tol) && bad++ < 5)
        ADD_FAILURE() << at(what, n) << " j=" << j << ": got " << z[j] << " want " << want;
    }
    if (n > 5) {
      EXPECT_EQ(bits(z[n / 3]), 0u) << at(what, n) << ": e^-inf";
    }
    if (n > 0) {
      EXPECT_NEAR(total, 1.0, 4 * gamma32(n + 2)) << at(what, n);
    }
    EXPECT_TRUE(z.prefix_is(kNaN)) << at(what, n) << ": softmax wrote before z";
    if (n > 0) {  // a NaN score anywhere (vector body or scalar tail)
      for (size_t at_j : {size_t{0}, n - 1, n / 2}) {
        std::vector<float> v(n, 1.0f);
        v[at_j] = kNaN;
        softmax_with_sink(v.data(), n, scale, sink);
        for (size_t j = 0; j < n; ++j)
          ASSERT_TRUE(std::isnan(v[j])) << at(what, n) << " NaN at " << at_j << ", j=" << j;
      }
    }
  }
}

// Against silu(min(g, L))·clamp(u, −L, L)·s in double: within 8u relative plus 1e-34 absolute
// (below g ≈ −88.7, e^−g overflows fp32 to ∞, in std::exp as in the kernel, and silu becomes ±0
// where the exact value is under 1e-36·|u|); NaN in g or u gives NaN. limit 0: no clamp.
void check_swiglu_clamp(const std::string& what) {
  std::mt19937 rng(32);
  std::uniform_real_distribution<float> ug(-25.0f, 25.0f), uu(-15.0f, 15.0f);
  const float specials[] = {-1000.0f, -200.0f, -104.5f, -100.0f, -88.8f, -87.0f, -0.0f,
                            0.0f,     7.0f,    10.0f,   10.5f,   1e30f,  -1e30f};
  int bad = 0;
  size_t k = 0;
  for (float limit : {10.0f, 0.0f})
    for (size_t n : {1, 3, 8, 15, 16, 17, 33, 100, 2048, 2051}) {
      const float s = k % 2 ? 0.37f : 1.0f;
      Buf g(n, k % 4), u(n, (k + 1) % 4);
      ++k;
      for (size_t i = 0; i < n; ++i) {
        g[i] = i < std::size(specials) && n > 20 ? specials[i] : ug(rng);
        u[i] = uu(rng);
      }
      const std::vector<float> g0(g.data(), g.data() + n);
      swiglu_clamp(g.data(), u.data(), n, limit, s);
      for (size_t i = 0; i < n; ++i) {
        double gv = g0[i], uv = u[i];
        if (limit > 0) {
          gv = std::min(gv, double(limit));
          uv = std::clamp(uv, -double(limit), double(limit));
        }
        const double want = gv / (1.0 + std::exp(-gv)) * uv * s;
        const double tol = 8 * kU * std::fabs(want) + 1e-34;
        if (!(std::fabs(g[i] - want) <= tol) && bad++ < 5)
          ADD_FAILURE() << at(what, n) << " limit " << limit << " i=" << i << ": g " << g0[i]
                        << " u " << u[i] << " got " << g[i] << " want " << want;
      }
      EXPECT_TRUE(g.prefix_is(kNaN)) << at(what, n) << ": swiglu wrote before g";
    }
  for (size_t n : {size_t{5}, size_t{40}}) {  // NaN in g or in u, in the body and the tail
    for (int in_u = 0; in_u < 2; ++in_u) {
      std::vector<float> g(n, 0.5f), u(n, 2.0f);
      (in_u ? u : g)[n - 1] = kNaN;
      (in_u ? u : g)[0] = kNaN;
      swiglu_clamp(g.data(), u.data(), n, 10.0f, 1.0f);
      EXPECT_TRUE(std::isnan(g[0]) && std::isnan(g[n - 1])) << at(what, n) << " in_u " << in_u;
      EXPECT_FALSE(std::isnan(g[1])) << at(what, n);
    }
  }
}

void check_all(const std::string& what) {
  check_axpy(what);
  check_dot(what);
  check_sum_squares(what);
  check_rms_norm(what);
  check_rope(what);
  check_hadamard(what);
  check_dot_rows_seq(what);
  check_dot_rows_seq_t(what);
  check_weighted_rows_sum(what);
  check_softmax_with_sink(what);
  check_swiglu_clamp(what);
}

TEST(OpsAxpy, BitIdenticalToScalarLoop) { check_axpy("best"); }
TEST(OpsDot, WithinSummationBoundAndExactOnIntegers) { check_dot("best"); }
TEST(OpsSumSquares, DoubleAccumulation) { check_sum_squares("best"); }
TEST(OpsRmsNorm, MatchesReferenceAndExactCases) { check_rms_norm("best"); }
TEST(OpsRope, MatchesRotationInverseAndExactAngles) { check_rope("best"); }
TEST(OpsHadamard, MatchesSylvesterDefinition) { check_hadamard("best"); }
TEST(OpsDotRowsSeq, BitIdenticalToScalarLoop) { check_dot_rows_seq("best"); }
TEST(OpsDotRowsSeqT, BitIdenticalToScalarLoop) { check_dot_rows_seq_t("best"); }
TEST(OpsWeightedRowsSum, BitIdenticalToScalarLoopAndAxpy) { check_weighted_rows_sum("best"); }
TEST(OpsSoftmaxWithSink, MatchesFormulaAndPropagatesNaN) { check_softmax_with_sink("best"); }
TEST(OpsSwigluClamp, MatchesFormulaAndPropagatesNaN) { check_swiglu_clamp("best"); }

// Every SIMD target Highway compiled into this binary (as far as this CPU supports them) against
// the scalar references, and rms_norm / rope / hadamard bit-identical across targets.
TEST(OpsTargets, EverySimdTargetMatchesReference) {
  const std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  ASSERT_FALSE(targets.empty());
  std::string seen;
  std::vector<float> first;
  std::string first_name;
  for (int64_t target : targets) {
    hwy::SetSupportedTargetsForTest(target);
    const std::string name = hwy::TargetName(target);
    seen += name + " ";
    check_all(name);
    const std::vector<float> inv = target_invariant_outputs();
    if (first.empty()) {
      first = inv;
      first_name = name;
    } else {
      ASSERT_EQ(inv.size(), first.size());
      size_t diff = 0;
      for (size_t i = 0; i < inv.size(); ++i) diff += bits(inv[i]) != bits(first[i]);
      EXPECT_EQ(diff, 0u) << name << " vs " << first_name << ": " << diff << " of " << inv.size()
                          << " rms_norm/rope/hadamard outputs differ";
    }
  }
  hwy::SetSupportedTargetsForTest(0);
  std::printf("ops targets tested: %s\n", seen.c_str());
}

}  // namespace
}  // namespace dsv4
