// Shared plumbing of one forward call: which tokens belong to which sequence, at which position.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kv/sequence_state.h"
#include "model/config.h"
#include "model/rope.h"

namespace dsv4 {

class ThreadPool;

// A run of consecutive rows [begin, end) of the flattened batch, all of one sequence, at
// positions pos0, pos0+1, …
struct SeqSpan {
  SequenceState* seq;
  size_t begin, end;
  int64_t pos0;
};

struct ForwardContext {
  const ModelConfig& cfg;
  ThreadPool& pool;
  const std::vector<SeqSpan>& spans;
  const int32_t* ids;  // token id of every row (hash routing)
  size_t n_rows;
  const RopeTable& rope_plain;
  const RopeTable& rope_compressed;
  bool prefetch_experts = false;  // ModelOptions::expert_prefetch, resolved
};

}  // namespace dsv4
