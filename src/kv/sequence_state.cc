#include "kv/sequence_state.h"

#include <algorithm>
#include <limits>

namespace dsv4 {

void CompressorState::reset() {
  std::fill(kv.begin(), kv.end(), 0.0f);
  std::fill(score.begin(), score.end(), -std::numeric_limits<float>::infinity());
}

static CompressorState make_compressor(int ratio, int d) {
  CompressorState c;
  c.ratio = ratio;
  c.width = ratio == 4 ? 2 * d : d;
  c.rows = ratio == 4 ? 8 : ratio;
  c.kv.assign(static_cast<size_t>(c.rows) * c.width, 0.0f);
  c.score.assign(c.kv.size(), -std::numeric_limits<float>::infinity());
  return c;
}

SequenceState::SequenceState(const std::vector<int>& ratios, int window, KvCodec kv,
                             KvCodec index_keys, int head_dim, int index_head_dim)
    : kv_(kv), idx_(index_keys), window_(window) {
  layers.resize(ratios.size());
  for (size_t i = 0; i < ratios.size(); ++i) {
    LayerState& L = layers[i];
    L.ratio = ratios[i];
    L.window.assign(static_cast<size_t>(window) * kv_.entry_bytes(), 0);
    if (L.ratio) L.compressor = make_compressor(L.ratio, head_dim);
    if (L.ratio == 4) L.index_compressor = make_compressor(4, index_head_dim);
  }
}

void SequenceState::reset() {
  n_past = 0;
  mtp_n_past = 0;
  for (LayerState& L : layers) {
    std::fill(L.window.begin(), L.window.end(), 0);
    L.compressed.clear();
    L.index_keys.clear();
    L.n_compressed = 0;
    L.compressor.reset();
    L.index_compressor.reset();
  }
}

size_t SequenceState::bytes() const {
  size_t n = 0;
  for (const LayerState& L : layers) {
    n += L.window.size() + L.compressed.size() + L.index_keys.size();
    n += (L.compressor.kv.size() + L.compressor.score.size()) * sizeof(float);
    n += (L.index_compressor.kv.size() + L.index_compressor.score.size()) * sizeof(float);
  }
  return n;
}

void SequenceState::reserve(int64_t max_tokens) {
  for (LayerState& L : layers) {
    if (!L.ratio) continue;
    L.compressed.reserve(static_cast<size_t>(max_tokens / L.ratio + 1) * kv_.entry_bytes());
    if (L.ratio == 4) L.index_keys.reserve(static_cast<size_t>(max_tokens / 4 + 1) * idx_.entry_bytes());
  }
}

}  // namespace dsv4
