#include "model/compressor.h"

#include <algorithm>
#include <cmath>

namespace dsv4 {

bool compressor_push(CompressorState& s, const float* k, const float* z, const float* ape,
                     int64_t pos, float* pooled) {
  const int r = s.ratio, W = s.width;
  const int in_window = static_cast<int>(pos % r);
  const int row = r == 4 ? 4 + in_window : in_window;
  float* kv_row = s.kv.data() + static_cast<size_t>(row) * W;
  float* sc_row = s.score.data() + static_cast<size_t>(row) * W;
  const float* ape_row = ape + static_cast<size_t>(in_window) * W;
  for (int c = 0; c < W; ++c) {
    kv_row[c] = k[c];
    sc_row[c] = z[c] + ape_row[c];
  }
  if (in_window != r - 1) return false;

  if (r == 4) {
    // Entry pools the A-halves (channels [0,d)) of the previous window, rows 0..3, and the
    // B-halves (channels [d,2d)) of this window, rows 4..7, under one softmax per channel.
    const int d = W / 2;
    for (int ch = 0; ch < d; ++ch) {
      float logit[8], val[8];
      for (int i = 0; i < 4; ++i) {
        logit[i] = s.score[i * W + ch];
        val[i] = s.kv[i * W + ch];
        logit[4 + i] = s.score[(4 + i) * W + d + ch];
        val[4 + i] = s.kv[(4 + i) * W + d + ch];
      }
      float m = logit[0];
      for (int i = 1; i < 8; ++i) m = std::max(m, logit[i]);
      // Softmax weights as the reference forms them (p = e / Σe), the weighted sum in double:
      // pooled entries are FP8/bf16-rounded when stored, so their fp32 value should be as close
      // to the exact one as cheaply possible.
      float e[8], den = 0.0f;
      for (int i = 0; i < 8; ++i) den += (e[i] = std::exp(logit[i] - m));  // −inf rows weigh 0
      double acc = 0.0;
      for (int i = 0; i < 8; ++i) acc += static_cast<double>(e[i] / den) * val[i];
      pooled[ch] = static_cast<float>(acc);
    }
    std::copy(s.kv.begin() + 4 * W, s.kv.begin() + 8 * W, s.kv.begin());
    std::copy(s.score.begin() + 4 * W, s.score.begin() + 8 * W, s.score.begin());
  } else {
    for (int ch = 0; ch < W; ++ch) {
      float m = s.score[ch];
      for (int i = 1; i < r; ++i) m = std::max(m, s.score[static_cast<size_t>(i) * W + ch]);
      double den = 0.0, acc = 0.0;
      for (int i = 0; i < r; ++i) den += std::exp(s.score[static_cast<size_t>(i) * W + ch] - m);
      const float fden = static_cast<float>(den);
      for (int i = 0; i < r; ++i) {
        const float p = std::exp(s.score[static_cast<size_t>(i) * W + ch] - m) / fden;
        acc += static_cast<double>(p) * s.kv[static_cast<size_t>(i) * W + ch];
      }
      pooled[ch] = static_cast<float>(acc);
    }
  }
  return true;
}

}  // namespace dsv4
