// The attention sub-layer of a block (spec §5.4, §6): low-rank queries with per-head RMS, one
// shared KV head with partial RoPE, the sliding window, the compressor and (CSA) the Lightning
// Indexer, attention with a sink, inverse RoPE and the grouped output projection.
#pragma once

#include <cstddef>

#include "model/forward_context.h"
#include "model/weights.h"

namespace dsv4 {

// x: normed sub-layer input [N, D]; out: [N, D]. Reads and extends each sequence's state of
// layer `layer` (index into SequenceState::layers).
void attention_forward(const ForwardContext& ctx, const BlockWeights& bw, int layer,
                       const float* x, float* out);

}  // namespace dsv4
