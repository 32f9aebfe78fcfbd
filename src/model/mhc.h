// Manifold-constrained hyper-connections (spec §5.3, §5.6): the residual is hc_mult parallel
// streams; each sub-layer reads a weighted mix of them (hc_pre) and writes back through a
// Sinkhorn-normalised mixing matrix (hc_post).
#pragma once

#include <cstddef>

#include "model/config.h"
#include "model/weights.h"

namespace dsv4 {

class ThreadPool;

// For N tokens of streams h [N, hc, D]: sub-layer input x [N, D], post [N, hc],
// comb [N, hc, hc] (row j = source stream, column k = destination).
void hc_pre(const ModelConfig& cfg, const HcParams& p, const float* h, size_t N, float* x,
            float* post, float* comb, ThreadPool& pool);

// h[t,k] = post[t,k]·o[t] + Σ_j comb[t,j,k]·h[t,j]   (in place on h)
void hc_post(const ModelConfig& cfg, const float* o, const float* post, const float* comb, size_t N,
             float* h, ThreadPool& pool);

// Final reduction of the streams to one vector per token: y [N, D].
void hc_head(const ModelConfig& cfg, const HcParams& p, const float* h, size_t N, float* y,
             ThreadPool& pool);

}  // namespace dsv4
