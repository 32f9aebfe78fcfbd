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
      float den = 0.0f, num = 0.0f;
      for (int i = 0; i < 8; ++i) {
        const float e = std::exp(logit[i] - m);  // −inf rows (no previous window) weigh 0
        den += e;
        num += e * val[i];
      }
      pooled[ch] = num / den;
    }
    std::copy(s.kv.begin() + 4 * W, s.kv.begin() + 8 * W, s.kv.begin());
    std::copy(s.score.begin() + 4 * W, s.score.begin() + 8 * W, s.score.begin());
  } else {
    for (int ch = 0; ch < W; ++ch) {
      float m = s.score[ch];
      for (int i = 1; i < r; ++i) m = std::max(m, s.score[static_cast<size_t>(i) * W + ch]);
      float den = 0.0f, num = 0.0f;
      for (int i = 0; i < r; ++i) {
        const float e = std::exp(s.score[static_cast<size_t>(i) * W + ch] - m);
        den += e;
        num += e * s.kv[static_cast<size_t>(i) * W + ch];
      }
      pooled[ch] = num / den;
    }
  }
  return true;
}

}  // namespace dsv4
