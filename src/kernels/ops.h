// Small vector kernels used by the forward pass (no model knowledge): norms, RoPE, Hadamard,
// dot products, softmax with a sink, the clamped SwiGLU. fp32 in and out.
#pragma once

#include <cstddef>

namespace dsv4 {

// y = w ⊙ x · rsqrt(mean(x²) + eps); w may be null (unweighted). y may alias x.
void rms_norm(const float* x, const float* w, size_t n, float eps, float* y);

// Σ x[i]² in double (x² exact; the order of the sum only matters at the 2^-53 level).
double sum_squares(const float* x, size_t n);

float dot(const float* a, const float* b, size_t n);
// y += a·x
void axpy(float a, const float* x, size_t n, float* y);

// Rotates interleaved pairs (v[2j], v[2j+1]) by angle_j: cos/sin given per pair (n_pairs each).
// inverse = true rotates by −angle_j.
void rope_apply(float* v, const float* cos, const float* sin, size_t n_pairs, bool inverse);

// S[h·lds + j] = Σ_c Q[h·ldq + c] · E[j·lde + c] for h < nq, j < n: every sum taken in order
// c = 0, 1, … with a rounded multiply then a rounded add, i.e. bit-identical to a scalar loop
// (the SIMD lanes run over entries j, not over c).
void dot_rows_seq(const float* Q, size_t ldq, size_t nq, const float* E, size_t lde, size_t n,
                  size_t dim, float* S, size_t lds);

// The same sums written transposed, S[j·lds + h] = Σ_c Q[h·ldq + c] · E[j·lde + c],
// bit-identical to dot_rows_seq. The SIMD lanes run over the queries h (Q, small, is transposed
// inside), so E is read row by row with no transposition: faster when nq is at least the vector
// width (all heads against many keys or entries).
void dot_rows_seq_t(const float* Q, size_t ldq, size_t nq, const float* E, size_t lde, size_t n,
                    size_t dim, float* S, size_t lds);

// Queries transposed once for many dot_rows_seq_t calls over parts of the entries (the threads'
// shares, the indexer's blocks): row c holds Q[h·ldq + c] for h < nq, then zeros up to `stride`.
struct TransposedQueries {
  const float* data = nullptr;
  size_t nq = 0, dim = 0, stride = 0;
};
// Floats of the buffer transpose_queries needs (rows padded to whole vectors, plus alignment).
size_t transposed_queries_floats(size_t nq, size_t dim);
// Writes Q transposed into buf (any float alignment; the rows start at the next 64 bytes).
TransposedQueries transpose_queries(const float* Q, size_t ldq, size_t nq, size_t dim, float* buf);
// dot_rows_seq_t with the queries already transposed: the same bits.
void dot_rows_seq_t(const TransposedQueries& Qt, const float* E, size_t lde, size_t n, float* S,
                    size_t lds);

// O[h·ldo + c] = Σ_j P[h·ldp + j] · E[j·lde + c] for h < nh, c < dim, summed in order j = 0, 1, …
// (multiply then add, like axpy: bit-identical to nh·n axpy calls). O is overwritten.
void weighted_rows_sum(const float* P, size_t ldp, size_t nh, const float* E, size_t lde, size_t n,
                       size_t dim, float* O, size_t ldo);

// In-place Walsh–Hadamard transform (Sylvester order) scaled by n^-½; n a power of two.
void hadamard_transform(float* v, size_t n);

// Attention's softmax with a sink, in place: z[j] ← e^(s_j − m) / (e^(sink − m) + Σ_j e^(s_j − m))
// with s_j = scale·z[j] and m = max_j s_j (the sink adds to the denominator only), summed in
// order j = 0, 1, … with std::exp (scalar: see ops.cc). A NaN score makes every output NaN.
void softmax_with_sink(float* z, size_t n, float scale, float sink);

// The experts' activation with V4's clamp, in place on g: g[k] ← silu(min(g[k], limit)) ·
// clamp(u[k], −limit, limit) · s, silu(x) = x / (1 + e^−x) with std::exp, multiplied in that
// order; limit ≤ 0: no clamp. NaN propagates.
void swiglu_clamp(float* g, const float* u, size_t n, float limit, float s);

}  // namespace dsv4
