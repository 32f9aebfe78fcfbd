// Typed views over the mapped checkpoint (no copies of matrices; only the small 1-D norm
// vectors are widened to fp32). Built once at load, after checking every tensor's name, dtype and
// shape against the config (spec §3.2).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "kernels/fp8_code_map.h"
#include "kernels/matmul.h"
#include "model/config.h"
#include "util/function_ref.h"

namespace dsv4 {

struct ExpectedTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
};

// Every tensor a checkpoint of this config must hold (main layers, MTP, top level).
std::vector<ExpectedTensor> expected_tensors(const ModelConfig& cfg);
// The same tensors, one at a time, in the same order.
void for_each_expected_tensor(const ModelConfig& cfg, FunctionRef<void(ExpectedTensor&&)> out);

// Checks a checkpoint against expected_tensors(): reports missing, unexpected and mismatched
// tensors (file, name, expected vs found) in one Error listing up to 20 problems.
void validate_checkpoint(const Checkpoint& ck, const ModelConfig& cfg);

struct ExpertWeights {
  MatrixView w1, w2, w3;  // gate [I,D], down [D,I], up [I,D]
};

struct HcParams {
  MatrixView fn;  // F32 [(2+hc)·hc, hc·D] (or [hc, hc·D] for a head)
  const float* base = nullptr;
  const float* scale = nullptr;
};

struct CompressorWeights {
  MatrixView wkv, wgate;       // BF16 [c·d, D]
  const float* ape = nullptr;  // [ratio, c·d]
  std::vector<float> norm;     // [d]
};

struct AttentionWeights {
  MatrixView wq_a, wq_b, wkv, wo_a, wo_b;
  std::vector<float> q_norm, kv_norm;
  const float* attn_sink = nullptr;  // [H]
  CompressorWeights compressor;      // CSA / HCA
  // Lightning indexer (CSA)
  MatrixView idx_wq_b, idx_weights_proj;
  CompressorWeights idx_compressor;
};

struct MoeWeights {
  MatrixView gate;                   // BF16 [E, D]
  const float* bias = nullptr;       // score layers
  const int64_t* tid2eid = nullptr;  // hash layers [V, k]
  std::vector<ExpertWeights> experts;
  ExpertWeights shared;
  bool has_shared = false;
};

struct BlockWeights {
  int ratio = 0;
  bool hash = false;
  std::vector<float> attn_norm, ffn_norm;
  HcParams hc_attn, hc_ffn;
  AttentionWeights attn;
  MoeWeights ffn;
};

struct MtpWeights {
  MatrixView e_proj, h_proj;
  std::vector<float> enorm, hnorm, norm;
  HcParams hc_head;
  BlockWeights block;
};

struct ModelWeights {
  MatrixView embed, head;  // BF16 [V, D]
  std::vector<float> norm;
  HcParams hc_head;
  std::vector<BlockWeights> layers;
  std::vector<MtpWeights> mtp;
  std::vector<std::vector<uint64_t>> owned;           // aligned copies of misaligned small tensors
  std::vector<std::unique_ptr<Fp8CodeMap>> fp8_maps;  // behind the FP8 views

  static ModelWeights build(const Checkpoint& ck, const ModelConfig& cfg);
};

}  // namespace dsv4
