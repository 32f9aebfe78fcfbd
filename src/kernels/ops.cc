// Small vector kernels (see ops.h), Highway code dispatched at run time like the matmul kernels.
//
// Numerics: rms_norm's sum of squares is accumulated in double (x² is exact in double, so the sum
// is order-independent up to 2^-53 and the fp32 mean is almost always the correctly rounded one;
// stored KV values depend on it) and its scaling is elementwise in the scalar order
// w·(x·r), so it is bit-identical on every target. axpy, rope_apply and hadamard_transform are
// elementwise with the same operations as the scalar code (no fused multiply-add), also
// bit-identical. dot splits the sum over lanes and several accumulators (its rounding differs
// from a sequential sum at the ulp level, identically for every call on one target).
// softmax_with_sink and swiglu_clamp are plain scalar code (see there).

#include "kernels/ops.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/ops.cc"
// foreach_target.h re-includes this file once per target and highway.h must follow it.
// clang-format off
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/aligned_allocator.h"
// clang-format on

HWY_BEFORE_NAMESPACE();
namespace dsv4 {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

double SumSquaresImpl(const float* HWY_RESTRICT x, size_t n) {
  double ss = 0.0;
  size_t i = 0;
#if HWY_HAVE_FLOAT64
  {
    const hn::ScalableTag<double> dd;
    const hn::Rebind<float, decltype(dd)> df;
    const size_t N = hn::Lanes(dd);
    auto a0 = hn::Zero(dd), a1 = hn::Zero(dd);
    for (; i + 2 * N <= n; i += 2 * N) {
      const auto v0 = hn::PromoteTo(dd, hn::LoadU(df, x + i));
      const auto v1 = hn::PromoteTo(dd, hn::LoadU(df, x + i + N));
      a0 = hn::MulAdd(v0, v0, a0);
      a1 = hn::MulAdd(v1, v1, a1);
    }
    ss = hn::GetLane(hn::SumOfLanes(dd, hn::Add(a0, a1)));
  }
#endif
  for (; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  return ss;
}

void RmsNormImpl(const float* x, const float* HWY_RESTRICT w, size_t n, float eps, float* y) {
  const double ss = SumSquaresImpl(x, n);
  const float mean = static_cast<float>(ss / static_cast<double>(n));
  const float r = 1.0f / std::sqrt(mean + eps);
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  const auto vr = hn::Set(d, r);
  size_t j = 0;
  if (w) {
    for (; j + N <= n; j += N)
      hn::StoreU(hn::Mul(hn::LoadU(d, w + j), hn::Mul(hn::LoadU(d, x + j), vr)), d, y + j);
    for (; j < n; ++j) y[j] = w[j] * (x[j] * r);
  } else {
    for (; j + N <= n; j += N) hn::StoreU(hn::Mul(hn::LoadU(d, x + j), vr), d, y + j);
    for (; j < n; ++j) y[j] = x[j] * r;
  }
}

float DotImpl(const float* HWY_RESTRICT a, const float* HWY_RESTRICT b, size_t n) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  auto s0 = hn::Zero(d), s1 = hn::Zero(d), s2 = hn::Zero(d), s3 = hn::Zero(d);
  size_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    s0 = hn::MulAdd(hn::LoadU(d, a + i), hn::LoadU(d, b + i), s0);
    s1 = hn::MulAdd(hn::LoadU(d, a + i + N), hn::LoadU(d, b + i + N), s1);
    s2 = hn::MulAdd(hn::LoadU(d, a + i + 2 * N), hn::LoadU(d, b + i + 2 * N), s2);
    s3 = hn::MulAdd(hn::LoadU(d, a + i + 3 * N), hn::LoadU(d, b + i + 3 * N), s3);
  }
  for (; i + N <= n; i += N) s0 = hn::MulAdd(hn::LoadU(d, a + i), hn::LoadU(d, b + i), s0);
  float s = hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(s0, s1), hn::Add(s2, s3))));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

void AxpyImpl(float a, const float* HWY_RESTRICT x, size_t n, float* HWY_RESTRICT y) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  const auto va = hn::Set(d, a);
  size_t i = 0;
  for (; i + N <= n; i += N)
    hn::StoreU(hn::Add(hn::LoadU(d, y + i), hn::Mul(va, hn::LoadU(d, x + i))), d, y + i);
  for (; i < n; ++i) y[i] += a * x[i];
}

template <size_t H>
HWY_INLINE void DotSeqBlock(const float* Q, size_t ldq, const float* T, size_t dim, float* S,
                            size_t lds, size_t nj) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  hn::Vec<decltype(d)> acc[H];
  for (size_t h = 0; h < H; ++h) acc[h] = hn::Zero(d);
  for (size_t c = 0; c < dim; ++c) {
    const auto e = hn::Load(d, T + c * N);
    for (size_t h = 0; h < H; ++h) acc[h] = hn::Add(acc[h], hn::Mul(hn::Set(d, Q[h * ldq + c]), e));
  }
  if (nj == N) {
    for (size_t h = 0; h < H; ++h) hn::StoreU(acc[h], d, S + h * lds);
  } else {
    HWY_ALIGN float tmp[hn::MaxLanes(d)];
    for (size_t h = 0; h < H; ++h) {
      hn::Store(acc[h], d, tmp);
      std::copy(tmp, tmp + nj, S + h * lds);
    }
  }
}

void DotRowsSeqImpl(const float* Q, size_t ldq, size_t nq, const float* E, size_t lde, size_t n,
                    size_t dim, float* S, size_t lds) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  static thread_local hwy::AlignedFreeUniquePtr<float[]> tbuf;
  static thread_local size_t tcap = 0;
  if (tcap < dim * N) {
    tbuf = hwy::AllocateAligned<float>(dim * N);
    tcap = dim * N;
  }
  float* T = tbuf.get();
  for (size_t j0 = 0; j0 < n; j0 += N) {
    const size_t nj = std::min(N, n - j0);
    // Transpose entries [j0, j0+nj) into T[c][lane] (zero lanes past the end).
    for (size_t l = 0; l < N; ++l) {
      if (l < nj) {
        const float* src = E + (j0 + l) * lde;
        for (size_t c = 0; c < dim; ++c) T[c * N + l] = src[c];
      } else {
        for (size_t c = 0; c < dim; ++c) T[c * N + l] = 0.0f;
      }
    }
    size_t h = 0;
    for (; h + 8 <= nq; h += 8) DotSeqBlock<8>(Q + h * ldq, ldq, T, dim, S + h * lds + j0, lds, nj);
    for (; h < nq; ++h) DotSeqBlock<1>(Q + h * ldq, ldq, T, dim, S + h * lds + j0, lds, nj);
  }
}

// J entries × V vectors of queries; Qt rows are ldq floats apart (a multiple of the lane count,
// aligned), the J × V·N sums go to out (rows ldo apart).
template <size_t J, size_t V>
HWY_NOINLINE void DotSeqTBlock(const float* Qt, size_t ldq, const float* E, size_t lde, size_t dim,
                               float* out, size_t ldo) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  hn::Vec<decltype(d)> acc[J][V];
  for (size_t j = 0; j < J; ++j)
    for (size_t v = 0; v < V; ++v) acc[j][v] = hn::Zero(d);
  for (size_t c = 0; c < dim; ++c) {
    hn::Vec<decltype(d)> q[V];
    for (size_t v = 0; v < V; ++v) q[v] = hn::Load(d, Qt + c * ldq + v * N);
    for (size_t j = 0; j < J; ++j) {
      const auto e = hn::Set(d, E[j * lde + c]);
      for (size_t v = 0; v < V; ++v) acc[j][v] = hn::Add(acc[j][v], hn::Mul(q[v], e));
    }
  }
  for (size_t j = 0; j < J; ++j)
    for (size_t v = 0; v < V; ++v) hn::StoreU(acc[j][v], d, out + j * ldo + v * N);
}

template <size_t J, size_t V = 4>
HWY_INLINE void DotSeqTDispatch(size_t nv, const float* Qt, size_t ldq, const float* E, size_t lde,
                                size_t dim, float* out, size_t ldo) {
  if (nv == V) return DotSeqTBlock<J, V>(Qt, ldq, E, lde, dim, out, ldo);
  if constexpr (V > 1) DotSeqTDispatch<J, V - 1>(nv, Qt, ldq, E, lde, dim, out, ldo);
}

template <size_t J>
HWY_INLINE void DotSeqTRows(size_t nj, size_t nv, const float* Qt, size_t ldq, const float* E,
                            size_t lde, size_t dim, float* out, size_t ldo) {
  if (nj == J) return DotSeqTDispatch<J>(nv, Qt, ldq, E, lde, dim, out, ldo);
  if constexpr (J > 1) DotSeqTRows<J - 1>(nj, nv, Qt, ldq, E, lde, dim, out, ldo);
}

// Qt: transpose_queries' rows (64-byte aligned, ldqt a multiple of every target's lane count).
void DotRowsSeqTImpl(const float* Qt, size_t ldqt, size_t nq, const float* E, size_t lde, size_t n,
                     size_t dim, float* S, size_t lds) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  if (n == 0 || nq == 0) return;
  const size_t nqp = (nq + N - 1) / N * N;
  // A row buffer for outputs when the padded lanes must not reach S.
  constexpr size_t kJ = 4;
  static thread_local hwy::AlignedFreeUniquePtr<float[]> obuf;
  static thread_local size_t ocap = 0;
  if (ocap < kJ * nqp) {
    obuf = hwy::AllocateAligned<float>(kJ * nqp);
    ocap = kJ * nqp;
  }
  const bool direct = nqp == nq;
  for (size_t j0 = 0; j0 < n; j0 += kJ) {
    const size_t nj = std::min(kJ, n - j0);
    float* out = direct ? S + j0 * lds : obuf.get();
    const size_t ldo = direct ? lds : nqp;
    for (size_t v0 = 0; v0 < nqp / N; v0 += 4) {
      const size_t nv = std::min<size_t>(4, nqp / N - v0);
      const float* qv = Qt + v0 * N;
      const float* e = E + j0 * lde;
      float* o = out + v0 * N;
      DotSeqTRows<kJ>(nj, nv, qv, ldqt, e, lde, dim, o, ldo);
    }
    if (!direct)
      for (size_t j = 0; j < nj; ++j)
        std::copy(out + j * nqp, out + j * nqp + nq, S + (j0 + j) * lds);
  }
}

// resume: the sums continue from the values in O (an earlier block of entries) instead of 0.
template <size_t H, size_t V>
HWY_INLINE void WeightedBlock(const float* P, size_t ldp, const float* E, size_t lde, size_t n,
                              size_t c0, float* O, size_t ldo, bool resume) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  hn::Vec<decltype(d)> acc[H][V];
  for (size_t h = 0; h < H; ++h)
    for (size_t v = 0; v < V; ++v)
      acc[h][v] = resume ? hn::LoadU(d, O + h * ldo + c0 + v * N) : hn::Zero(d);
  for (size_t j = 0; j < n; ++j) {
    hn::Vec<decltype(d)> e[V];
    for (size_t v = 0; v < V; ++v) e[v] = hn::LoadU(d, E + j * lde + c0 + v * N);
    for (size_t h = 0; h < H; ++h) {
      const auto p = hn::Set(d, P[h * ldp + j]);
      for (size_t v = 0; v < V; ++v) acc[h][v] = hn::Add(acc[h][v], hn::Mul(p, e[v]));
    }
  }
  for (size_t h = 0; h < H; ++h)
    for (size_t v = 0; v < V; ++v) hn::StoreU(acc[h][v], d, O + h * ldo + c0 + v * N);
}

template <size_t H>
HWY_INLINE void WeightedHeads(const float* P, size_t ldp, const float* E, size_t lde, size_t n,
                              size_t dim, float* O, size_t ldo, bool resume) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  size_t c = 0;
  for (; c + 4 * N <= dim; c += 4 * N) WeightedBlock<H, 4>(P, ldp, E, lde, n, c, O, ldo, resume);
  for (; c + N <= dim; c += N) WeightedBlock<H, 1>(P, ldp, E, lde, n, c, O, ldo, resume);
  for (; c < dim; ++c) {
    for (size_t h = 0; h < H; ++h) {
      float s = resume ? O[h * ldo + c] : 0.0f;
      for (size_t j = 0; j < n; ++j) s += P[h * ldp + j] * E[j * lde + c];
      O[h * ldo + c] = s;
    }
  }
}

void WeightedRowsSumImpl(const float* P, size_t ldp, size_t nh, const float* E, size_t lde,
                         size_t n, size_t dim, float* O, size_t ldo) {
  // Entries in blocks that stay in L2 while every group of heads walks them (each group re-reads
  // the block); the partial sums wait in O between blocks, so every sum still runs over j in
  // order. Without blocks, a long context streamed all entries from memory once per head group.
  const size_t jb = std::max<size_t>(1, (256 * 1024) / (std::max<size_t>(dim, 1) * sizeof(float)));
  if (n == 0) {
    for (size_t h = 0; h < nh; ++h) std::fill(O + h * ldo, O + h * ldo + dim, 0.0f);
    return;
  }
  for (size_t j0 = 0; j0 < n; j0 += jb) {
    const size_t nj = std::min(jb, n - j0);
    const bool resume = j0 > 0;
    size_t h = 0;
    for (; h + 4 <= nh; h += 4)
      WeightedHeads<4>(P + h * ldp + j0, ldp, E + j0 * lde, lde, nj, dim, O + h * ldo, ldo, resume);
    for (; h < nh; ++h)
      WeightedHeads<1>(P + h * ldp + j0, ldp, E + j0 * lde, lde, nj, dim, O + h * ldo, ldo, resume);
  }
}

void HadamardImpl(float* HWY_RESTRICT v, size_t n) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  for (size_t h = 1; h < n; h *= 2) {
    if (h >= N) {
      for (size_t i = 0; i < n; i += 2 * h) {
        for (size_t j = i; j < i + h; j += N) {
          const auto a = hn::LoadU(d, v + j), b = hn::LoadU(d, v + j + h);
          hn::StoreU(hn::Add(a, b), d, v + j);
          hn::StoreU(hn::Sub(a, b), d, v + j + h);
        }
      }
    } else {
      for (size_t i = 0; i < n; i += 2 * h) {
        for (size_t j = i; j < i + h; ++j) {
          const float a = v[j], b = v[j + h];
          v[j] = a + b;
          v[j + h] = a - b;
        }
      }
    }
  }
  const float s = 1.0f / std::sqrt(static_cast<float>(n));
  const auto vs = hn::Set(d, s);
  size_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::Mul(hn::LoadU(d, v + i), vs), d, v + i);
  for (; i < n; ++i) v[i] *= s;
}

}  // namespace HWY_NAMESPACE
}  // namespace dsv4
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsv4 {

HWY_EXPORT(RmsNormImpl);
HWY_EXPORT(SumSquaresImpl);
HWY_EXPORT(DotImpl);
HWY_EXPORT(AxpyImpl);
HWY_EXPORT(HadamardImpl);
HWY_EXPORT(WeightedRowsSumImpl);
HWY_EXPORT(DotRowsSeqImpl);
HWY_EXPORT(DotRowsSeqTImpl);

void dot_rows_seq(const float* Q, size_t ldq, size_t nq, const float* E, size_t lde, size_t n,
                  size_t dim, float* S, size_t lds) {
  HWY_DYNAMIC_DISPATCH(DotRowsSeqImpl)(Q, ldq, nq, E, lde, n, dim, S, lds);
}

namespace {
// Transposed query rows are padded to this many floats: whole vectors on every target (AVX-512's
// 16 lanes and its divisors), 64 bytes apart.
constexpr size_t kQueryRowAlign = 16;
size_t query_row_stride(size_t nq) {
  return (nq + kQueryRowAlign - 1) / kQueryRowAlign * kQueryRowAlign;
}
}  // namespace

size_t transposed_queries_floats(size_t nq, size_t dim) {
  return dim * query_row_stride(nq) + kQueryRowAlign;  // + the shift to a 64-byte boundary
}

TransposedQueries transpose_queries(const float* Q, size_t ldq, size_t nq, size_t dim, float* buf) {
  const size_t stride = query_row_stride(nq);
  const size_t skip = (64 - reinterpret_cast<uintptr_t>(buf) % 64) % 64 / sizeof(float);
  float* q = buf + skip;  // float buffers are 4-byte aligned, so 64 bytes is ≤ 15 floats away
  // Eight query rows at a time, each read in order, instead of a column of all the rows per
  // output row: 64 × 512 floats in 5.9 instead of 34-39 µs (Zen 5, Release build, one program
  // timing both), once per token and attention layer.
  constexpr size_t kRows = 8;
  size_t h0 = 0;
  for (; h0 + kRows <= nq; h0 += kRows)
    for (size_t c = 0; c < dim; ++c)
      for (size_t h = 0; h < kRows; ++h) q[c * stride + h0 + h] = Q[(h0 + h) * ldq + c];
  for (; h0 < nq; ++h0)
    for (size_t c = 0; c < dim; ++c) q[c * stride + h0] = Q[h0 * ldq + c];
  for (size_t c = 0; c < dim; ++c) std::fill(q + c * stride + nq, q + (c + 1) * stride, 0.0f);
  return {q, nq, dim, stride};
}

void dot_rows_seq_t(const TransposedQueries& Qt, const float* E, size_t lde, size_t n, float* S,
                    size_t lds) {
  HWY_DYNAMIC_DISPATCH(DotRowsSeqTImpl)(Qt.data, Qt.stride, Qt.nq, E, lde, n, Qt.dim, S, lds);
}

void dot_rows_seq_t(const float* Q, size_t ldq, size_t nq, const float* E, size_t lde, size_t n,
                    size_t dim, float* S, size_t lds) {
  static thread_local std::vector<float> buf;
  const size_t need = transposed_queries_floats(nq, dim);
  if (buf.size() < need) buf.resize(need);
  dot_rows_seq_t(transpose_queries(Q, ldq, nq, dim, buf.data()), E, lde, n, S, lds);
}

void weighted_rows_sum(const float* P, size_t ldp, size_t nh, const float* E, size_t lde, size_t n,
                       size_t dim, float* O, size_t ldo) {
  HWY_DYNAMIC_DISPATCH(WeightedRowsSumImpl)(P, ldp, nh, E, lde, n, dim, O, ldo);
}

void rms_norm(const float* x, const float* w, size_t n, float eps, float* y) {
  HWY_DYNAMIC_DISPATCH(RmsNormImpl)(x, w, n, eps, y);
}

double sum_squares(const float* x, size_t n) { return HWY_DYNAMIC_DISPATCH(SumSquaresImpl)(x, n); }

float dot(const float* a, const float* b, size_t n) {
  return HWY_DYNAMIC_DISPATCH(DotImpl)(a, b, n);
}

void axpy(float a, const float* x, size_t n, float* y) {
  HWY_DYNAMIC_DISPATCH(AxpyImpl)(a, x, n, y);
}

void rope_apply(float* v, const float* cos, const float* sin, size_t n_pairs, bool inverse) {
  for (size_t j = 0; j < n_pairs; ++j) {
    const float c = cos[j], s = inverse ? -sin[j] : sin[j];
    const float a = v[2 * j], b = v[2 * j + 1];
    v[2 * j] = a * c - b * s;
    v[2 * j + 1] = a * s + b * c;
  }
}

void hadamard_transform(float* v, size_t n) { HWY_DYNAMIC_DISPATCH(HadamardImpl)(v, n); }

// Scalar on purpose, in the order of the formula: the golden run most sensitive to rounding
// (tiny/long, mode D: indexer top-k near ties cascade) moved from rms-rel 0.017 with 3 top-1
// differences to 0.024 with 9, one of them at a reference margin of 1.12 (the test allows 0.75),
// when the exponentials of these two functions came from Highway's vector Exp (1 ulp) instead
// of std::exp. Their cost is in bench/model_ops_bench.
void softmax_with_sink(float* z, size_t n, float scale, float sink) {
  // A NaN score is passed over by the maximum, then makes den, and so every output, NaN.
  float m = -std::numeric_limits<float>::infinity();
  for (size_t j = 0; j < n; ++j) m = std::max(m, z[j] *= scale);
  float den = std::exp(sink - m);
  for (size_t j = 0; j < n; ++j) den += (z[j] = std::exp(z[j] - m));
  for (size_t j = 0; j < n; ++j) z[j] /= den;
}

void swiglu_clamp(float* g, const float* u, size_t n, float limit, float s) {
  for (size_t k = 0; k < n; ++k) {
    float gv = g[k], uv = u[k];
    if (limit > 0.0f) {
      gv = std::min(gv, limit);
      uv = std::clamp(uv, -limit, limit);
    }
    g[k] = gv / (1.0f + std::exp(-gv)) * uv * s;
  }
}

}  // namespace dsv4
#endif  // HWY_ONCE
