#include "model/mhc.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "model/workspace.h"
#include "util/thread_pool.h"

namespace dsv4 {

namespace {

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// out = Σ_j pre[j]·h[j] over the hc streams h[j] = h + j·D, summed in order j = 0, 1, …
// (vectorised over d).
void weigh_streams(const float* pre, const float* h, int hc, size_t D, float* out) {
  for (size_t d = 0; d < D; ++d) out[d] = pre[0] * h[d];
  for (int j = 1; j < hc; ++j) axpy(pre[j], h + j * D, D, out);
}

// mix[t, :] = (fn · h_t) · rsqrt(mean(h_t²) + eps) over the flattened streams.
void mix_logits(const ModelConfig& cfg, const HcParams& p, const float* h, size_t N, float* mix,
                ThreadPool& pool) {
  const size_t width = static_cast<size_t>(cfg.hc_mult) * cfg.dim;
  matmul(p.fn, h, N, mix, &pool);
  for (size_t t = 0; t < N; ++t) {
    const float* ht = h + t * width;
    const double ss = sum_squares(ht, width);  // double: order-independent, see rms_norm
    const float r =
        1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(width)) + cfg.norm_eps);
    for (size_t m = 0; m < p.fn.rows; ++m) mix[t * p.fn.rows + m] *= r;
  }
}

// Sinkhorn in the reference order: row softmax + eps, column normalise, then (iters−1)×(row, col).
void sinkhorn(float* c, int n, int iters, float eps) {
  for (int j = 0; j < n; ++j) {
    float* row = c + j * n;
    float m = row[0];
    for (int k = 1; k < n; ++k) m = std::max(m, row[k]);
    float s = 0.0f;
    for (int k = 0; k < n; ++k) s += (row[k] = std::exp(row[k] - m));
    for (int k = 0; k < n; ++k) row[k] = row[k] / s + eps;
  }
  auto col_norm = [&] {
    for (int k = 0; k < n; ++k) {
      float s = 0.0f;
      for (int j = 0; j < n; ++j) s += c[j * n + k];
      for (int j = 0; j < n; ++j) c[j * n + k] /= (s + eps);
    }
  };
  col_norm();
  for (int it = 1; it < iters; ++it) {
    for (int j = 0; j < n; ++j) {
      float s = 0.0f;
      for (int k = 0; k < n; ++k) s += c[j * n + k];
      for (int k = 0; k < n; ++k) c[j * n + k] /= (s + eps);
    }
    col_norm();
  }
}

}  // namespace

void hc_pre(const ModelConfig& cfg, const HcParams& p, const float* h, size_t N, float* x,
            float* post, float* comb, ThreadPool& pool) {
  const int hc = cfg.hc_mult;
  const size_t D = cfg.dim, M = p.fn.rows;  // M = (2 + hc)·hc
  float* mix = workspace<struct HcMixTag>(N * M);
  mix_logits(cfg, p, h, N, mix, pool);
  auto body = [&](size_t t0, size_t t1, int) {
    for (size_t t = t0; t < t1; ++t) {
      const float* mt = mix + t * M;
      float pre[16];
      for (int j = 0; j < hc; ++j) pre[j] = sigmoid(mt[j] * p.scale[0] + p.base[j]) + cfg.hc_eps;
      for (int j = 0; j < hc; ++j) {
        post[t * hc + j] = 2.0f * sigmoid(mt[hc + j] * p.scale[1] + p.base[hc + j]);
      }
      float* ct = comb + t * hc * hc;
      for (int i = 0; i < hc * hc; ++i) ct[i] = mt[2 * hc + i] * p.scale[2] + p.base[2 * hc + i];
      sinkhorn(ct, hc, cfg.hc_sinkhorn_iters, cfg.hc_eps);
      weigh_streams(pre, h + t * hc * D, hc, D, x + t * D);
    }
  };
  pool.parallel_for_dynamic(N, body, 8);
}

void hc_post(const ModelConfig& cfg, const float* o, const float* post, const float* comb, size_t N,
             float* h, ThreadPool& pool) {
  const int hc = cfg.hc_mult;
  const size_t D = cfg.dim;
  const PerThread<float> outs = per_thread_workspace<struct HcPostOutTag>(pool.size(), hc * D);
  auto body = [&](size_t t0, size_t t1, int th) {
    float* out = outs[th];
    for (size_t t = t0; t < t1; ++t) {
      float* ht = h + t * hc * D;
      const float* ot = o + t * D;
      const float* ct = comb + t * hc * hc;
      // out[k] = post[k]·o + Σ_j comb[j,k]·h[j], summed in order j = 0, 1, … (axpy: SIMD, and
      // multiply then add like the scalar loop it replaced, so the same bits).
      for (int k = 0; k < hc; ++k) {
        const float pk = post[t * hc + k];
        float* dst = out + k * D;
        for (size_t d = 0; d < D; ++d) dst[d] = pk * ot[d];
        for (int j = 0; j < hc; ++j) axpy(ct[j * hc + k], ht + j * D, D, dst);
      }
      std::copy(out, out + hc * D, ht);
    }
  };
  pool.parallel_for_dynamic(N, body, 8);
}

void hc_head(const ModelConfig& cfg, const HcParams& p, const float* h, size_t N, float* y,
             ThreadPool& pool) {
  const int hc = cfg.hc_mult;
  const size_t D = cfg.dim;
  float* mix = workspace<struct HcHeadMixTag>(N * hc);
  mix_logits(cfg, p, h, N, mix, pool);
  for (size_t t = 0; t < N; ++t) {
    float pre[16];
    for (int j = 0; j < hc; ++j)
      pre[j] = sigmoid(mix[t * hc + j] * p.scale[0] + p.base[j]) + cfg.hc_eps;
    weigh_streams(pre, h + t * hc * D, hc, D, y + t * D);
  }
}

}  // namespace dsv4
