// Small vector kernels used by the forward pass (no model knowledge): norms, RoPE, Hadamard,
// dot products. fp32 in and out.
#pragma once

#include <cstddef>

namespace dsv4 {

// y = w ⊙ x · rsqrt(mean(x²) + eps); w may be null (unweighted). y may alias x.
void rms_norm(const float* x, const float* w, size_t n, float eps, float* y);

float dot(const float* a, const float* b, size_t n);
// y += a·x
void axpy(float a, const float* x, size_t n, float* y);

// Rotates interleaved pairs (v[2j], v[2j+1]) by angle_j: cos/sin given per pair (n_pairs each).
// inverse = true rotates by −angle_j.
void rope_apply(float* v, const float* cos, const float* sin, size_t n_pairs, bool inverse);

// In-place Walsh–Hadamard transform (Sylvester order) scaled by n^-½; n a power of two.
void hadamard_transform(float* v, size_t n);

}  // namespace dsv4
