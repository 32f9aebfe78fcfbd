// DeepSeek-V4 hyperparameters, read from a Hugging Face config.json (spec §1–2).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dsv4 {

enum class AttnKind { kSWA = 0, kCSA = 4, kHCA = 128 };

struct ModelConfig {
  int vocab_size = 0;
  int dim = 0;                 // hidden_size
  int n_layers = 0;            // num_hidden_layers (main blocks)
  int n_mtp_layers = 0;        // num_nextn_predict_layers
  int n_heads = 0;
  int head_dim = 0;
  int rope_dim = 0;            // qk_rope_head_dim (last dims of each head)
  int q_lora_rank = 0;
  int o_groups = 0;
  int o_lora_rank = 0;
  int window = 0;              // sliding_window
  std::vector<int> compress_ratios;  // n_layers + n_mtp_layers entries (0, 4 or 128)
  int index_n_heads = 0;
  int index_head_dim = 0;
  int index_topk = 0;
  int n_routed_experts = 0;
  int n_shared_experts = 0;
  int n_activated_experts = 0;
  int moe_inter_dim = 0;
  int n_hash_layers = 0;
  float route_scale = 1.0f;
  float swiglu_limit = 0.0f;
  int hc_mult = 0;
  int hc_sinkhorn_iters = 0;
  float hc_eps = 1e-6f;
  float norm_eps = 1e-6f;
  float rope_theta = 10000.0f;
  float compress_rope_theta = 160000.0f;
  float rope_factor = 1.0f;
  int64_t original_seq_len = 0;
  float beta_fast = 32.0f, beta_slow = 1.0f;
  int64_t max_position_embeddings = 0;
  int bos_token_id = 0, eos_token_id = 1;
  std::string scoring_func;    // "sqrtsoftplus"
  std::string expert_dtype;    // "fp4" (absent in the first Flash release: treated as fp4)
  std::vector<std::string> notes;  // keys present in config.json that this engine ignores

  int ratio(int layer) const { return compress_ratios.at(layer); }
  int nope_dim() const { return head_dim - rope_dim; }
  bool is_hash_layer(int layer) const { return layer < n_hash_layers; }

  // Parses and validates; errors name the file and the field.
  static ModelConfig from_file(const std::string& path);
  static ModelConfig from_json_text(const std::string& text, const std::string& origin);
};

}  // namespace dsv4
