// Per-sequence decode state (spec §7): for every layer the window ring, the compressor running
// state, and the compressed KV / indexer-key caches, stored natively in the formats the model was
// trained with. A SequenceState is a plain value: copying it is a snapshot, assigning it back a
// restore (speculative decoding and prefix caching build on that).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kv/kv_codec.h"

namespace dsv4 {

struct CompressorState {
  int ratio = 0;            // 4 (overlapping, 2 series) or 128
  int width = 0;            // channels per row (2·d for ratio 4, d for 128)
  int rows = 0;             // 8 for ratio 4 (previous + current window), 128 for ratio 128
  std::vector<float> kv;    // [rows, width], fp32 as in the demo
  std::vector<float> score; // [rows, width], −inf when empty
  void reset();
};

struct LayerState {
  int ratio = 0;                     // 0 = SWA, 4 = CSA, 128 = HCA
  std::vector<uint8_t> window;       // ring of `window` KV entries, slot = T mod window
  std::vector<uint8_t> compressed;   // compressed KV entries, entry w at w·entry_bytes
  size_t n_compressed = 0;
  std::vector<uint8_t> index_keys;   // CSA: indexer keys, entry w at w·index_entry_bytes
  CompressorState compressor;        // CSA/HCA
  CompressorState index_compressor;  // CSA
};

class SequenceState {
 public:
  SequenceState() = default;
  SequenceState(const std::vector<int>& ratios, int window, KvCodec kv, KvCodec index_keys,
                int head_dim, int index_head_dim);

  int64_t n_past = 0;      // main-model tokens processed (next position)
  int64_t mtp_n_past = 0;  // tokens processed by the MTP block(s)
  std::vector<LayerState> layers;  // main layers then MTP layers

  const KvCodec& kv_codec() const { return kv_; }
  const KvCodec& index_codec() const { return idx_; }
  int window() const { return window_; }

  // Clears every state (tokens, rings, caches, compressor states) but keeps capacity.
  void reset();
  // Bytes held by this sequence's caches (what grows with context).
  size_t bytes() const;
  // Reserve compressed-cache capacity for `max_tokens` positions (avoids growth in decode).
  void reserve(int64_t max_tokens);

 private:
  KvCodec kv_, idx_;
  int window_ = 0;
};

}  // namespace dsv4
