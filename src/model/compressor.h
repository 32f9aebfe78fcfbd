// The Compressor (spec §6.1): gated pooling of every `ratio` consecutive tokens into one
// compressed entry; ratio 4 pools overlapping windows of 8 tokens (two channel series).
#pragma once

#include <cstdint>

#include "kv/sequence_state.h"

namespace dsv4 {

// Feeds token `pos` (its projections k = wkv·x and z = wgate·x, `state.width` values each).
// Returns true when the token closes window w = pos / ratio; then `pooled` [d] holds the
// pooled (pre-norm) entry. ape is the [ratio, width] position bias.
bool compressor_push(CompressorState& state, const float* k, const float* z, const float* ape,
                     int64_t pos, float* pooled);

}  // namespace dsv4
