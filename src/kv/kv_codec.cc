#include "kv/kv_codec.h"

#include <cstring>
#include <stdexcept>

#include "numerics/formats.h"

namespace dsv4 {

namespace {
constexpr int kKvBlock = 64;     // FP8 block of the KV non-RoPE dims
constexpr int kIndexBlock = 32;  // FP4 block of indexer keys
}  // namespace

KvCodec::KvCodec(Kind kind, KvStorage storage, int dim, int rope_dim)
    : kind_(kind), storage_(storage), dim_(dim), rope_(rope_dim) {
  if (storage == KvStorage::kExactF32) {
    bytes_ = static_cast<size_t>(dim) * 4;
  } else if (kind == Kind::kKvEntry) {
    const int nope = dim - rope_dim;
    if (nope % kKvBlock) throw std::invalid_argument("KV non-RoPE dims must be a multiple of 64");
    // e4m3 codes + E8M0 scales + bf16 RoPE dims, padded to 8 bytes (584 B for head_dim 512).
    bytes_ = (static_cast<size_t>(nope) + nope / kKvBlock + 2 * rope_dim + 7) / 8 * 8;
  } else {
    if (dim % kIndexBlock) throw std::invalid_argument("indexer key dims must be a multiple of 32");
    bytes_ = static_cast<size_t>(dim) / 2 + dim / kIndexBlock;  // 68 B for 128 dims
  }
}

void KvCodec::store(float* v, uint8_t* dst) const {
  if (storage_ == KvStorage::kExactF32) {
    std::memcpy(dst, v, static_cast<size_t>(dim_) * 4);
    return;
  }
  if (kind_ == Kind::kKvEntry) {
    const int nope = dim_ - rope_;
    uint8_t* codes = dst;
    uint8_t* scales = dst + nope;
    uint8_t* rope = scales + nope / kKvBlock;
    quantize_blocks(v, nope, kKvBlock, BlockFormat::kFp8E4M3, codes, scales);
    for (int i = 0; i < nope; ++i) v[i] = e4m3_to_f32(codes[i]) * e8m0_to_f32(scales[i / kKvBlock]);
    for (int i = 0; i < rope_; ++i) {
      const uint16_t b = f32_to_bf16(v[nope + i]);
      std::memcpy(rope + 2 * i, &b, 2);
      v[nope + i] = bf16_to_f32(b);
    }
    std::memset(rope + 2 * rope_, 0, bytes_ - (nope + nope / kKvBlock + 2 * rope_));
  } else {
    uint8_t codes[1024];
    if (dim_ > 1024) throw std::invalid_argument("indexer key too wide");
    uint8_t* packed = dst;
    uint8_t* scales = dst + dim_ / 2;
    quantize_blocks(v, dim_, kIndexBlock, BlockFormat::kFp4E2M1, codes, scales);
    for (int i = 0; i < dim_; i += 2) packed[i / 2] = pack_e2m1(codes[i], codes[i + 1]);
    for (int i = 0; i < dim_; ++i)
      v[i] = e2m1_to_f32(codes[i]) * e8m0_to_f32(scales[i / kIndexBlock]);
  }
}

void KvCodec::decode(const uint8_t* src, float* out) const {
  if (storage_ == KvStorage::kExactF32) {
    std::memcpy(out, src, static_cast<size_t>(dim_) * 4);
    return;
  }
  if (kind_ == Kind::kKvEntry) {
    const int nope = dim_ - rope_;
    const uint8_t* scales = src + nope;
    const uint8_t* rope = scales + nope / kKvBlock;
    for (int b = 0; b < nope / kKvBlock; ++b) {
      const float s = e8m0_to_f32(scales[b]);
      for (int i = b * kKvBlock; i < (b + 1) * kKvBlock; ++i) out[i] = e4m3_to_f32(src[i]) * s;
    }
    for (int i = 0; i < rope_; ++i) {
      uint16_t b;
      std::memcpy(&b, rope + 2 * i, 2);
      out[nope + i] = bf16_to_f32(b);
    }
  } else {
    const uint8_t* scales = src + dim_ / 2;
    for (int b = 0; b < dim_ / kIndexBlock; ++b) {
      const float s = e8m0_to_f32(scales[b]);
      for (int i = b * kIndexBlock; i < (b + 1) * kIndexBlock; i += 2) {
        out[i] = e2m1_to_f32(src[i / 2] & 15) * s;
        out[i + 1] = e2m1_to_f32(src[i / 2] >> 4) * s;
      }
    }
  }
}

}  // namespace dsv4
