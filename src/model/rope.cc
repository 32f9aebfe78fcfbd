#include "model/rope.h"

#include <algorithm>
#include <cmath>

namespace dsv4 {

RopeTable::RopeTable(const ModelConfig& cfg, bool compressed_layer) {
  const int dim = cfg.rope_dim;
  const float theta = compressed_layer ? cfg.compress_rope_theta : cfg.rope_theta;
  freqs_.resize(dim / 2);
  for (int j = 0; j < dim / 2; ++j) {
    // fp32 like torch: 1 / θ^(arange(0, dim, 2) / dim)
    const float e = static_cast<float>(2 * j) / static_cast<float>(dim);
    freqs_[j] = 1.0f / std::pow(theta, e);
  }
  if (!compressed_layer || cfg.rope_factor <= 1.0f) return;
  // YaRN frequency interpolation; no attention (mscale) factor anywhere in V4.
  const double two_pi = 2.0 * M_PI;
  auto corr = [&](double rot) {
    return dim * std::log(static_cast<double>(cfg.original_seq_len) / (rot * two_pi)) /
           (2.0 * std::log(static_cast<double>(theta)));
  };
  double low = std::max(std::floor(corr(cfg.beta_fast)), 0.0);
  double high = std::min(std::ceil(corr(cfg.beta_slow)), static_cast<double>(dim - 1));
  if (low == high) high += 0.001;
  for (int j = 0; j < dim / 2; ++j) {
    const float ramp = std::clamp(static_cast<float>((j - low) / (high - low)), 0.0f, 1.0f);
    const float smooth = 1.0f - ramp;
    freqs_[j] = freqs_[j] / cfg.rope_factor * (1.0f - smooth) + freqs_[j] * smooth;
  }
}

void RopeTable::angles(int64_t pos, float* cos, float* sin) const {
  const float p = static_cast<float>(pos);
  for (size_t j = 0; j < freqs_.size(); ++j) {
    // The angle is the demo's fp32 product; cos/sin are then taken in double and rounded once,
    // i.e. correctly rounded. RoPE dims are bf16-rounded when stored, so an ulp here decides
    // flips that cascade; the exactly rounded value is the closest we can be to any reference.
    const float a = p * freqs_[j];
    cos[j] = static_cast<float>(std::cos(static_cast<double>(a)));
    sin[j] = static_cast<float>(std::sin(static_cast<double>(a)));
  }
}

}  // namespace dsv4
