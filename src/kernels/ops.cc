#include "kernels/ops.h"

#include <cmath>

namespace dsv4 {

void rms_norm(const float* x, const float* w, size_t n, float eps, float* y) {
  // Sum of squares in double: the result is then (almost always) the correctly rounded fp32
  // mean, independent of summation order, so stored values (which FP8/bf16 rounding amplifies)
  // stay as close as possible to the reference's.
  double ss = 0.0;
  for (size_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float mean = static_cast<float>(ss / static_cast<double>(n));
  const float r = 1.0f / std::sqrt(mean + eps);
  if (w) {
    for (size_t i = 0; i < n; ++i) y[i] = w[i] * (x[i] * r);
  } else {
    for (size_t i = 0; i < n; ++i) y[i] = x[i] * r;
  }
}

float dot(const float* a, const float* b, size_t n) {
  float s = 0.0f;
  for (size_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy(float a, const float* x, size_t n, float* y) {
  for (size_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void rope_apply(float* v, const float* cos, const float* sin, size_t n_pairs, bool inverse) {
  for (size_t j = 0; j < n_pairs; ++j) {
    const float c = cos[j], s = inverse ? -sin[j] : sin[j];
    const float a = v[2 * j], b = v[2 * j + 1];
    v[2 * j] = a * c - b * s;
    v[2 * j + 1] = a * s + b * c;
  }
}

void hadamard_transform(float* v, size_t n) {
  for (size_t h = 1; h < n; h *= 2) {
    for (size_t i = 0; i < n; i += 2 * h) {
      for (size_t j = i; j < i + h; ++j) {
        const float a = v[j], b = v[j + h];
        v[j] = a + b;
        v[j + h] = a - b;
      }
    }
  }
  const float s = 1.0f / std::sqrt(static_cast<float>(n));
  for (size_t i = 0; i < n; ++i) v[i] *= s;
}

}  // namespace dsv4
