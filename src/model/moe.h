// Mixture of experts (spec §5.5): sqrt-softplus router (hash routing via tid2eid on the first
// layers, biased top-k elsewhere), routed FP4 experts and the FP8 shared expert, both SwiGLU with
// the clamp.
#pragma once

#include "model/forward_context.h"
#include "model/weights.h"

namespace dsv4 {

// x: normed input [N, D]; out: [N, D]. If ids_out/weights_out are given they receive the routed
// expert ids and weights [N, k] (debug / golden comparison).
void moe_forward(const ForwardContext& ctx, const BlockWeights& bw, const float* x, float* out,
                 int32_t* ids_out = nullptr, float* weights_out = nullptr);

}  // namespace dsv4
