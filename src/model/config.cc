#include "model/config.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "util/error.h"

namespace dsv4 {

using nlohmann::json;

ModelConfig ModelConfig::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open config.json");
  std::stringstream ss;
  ss << in.rdbuf();
  return from_json_text(ss.str(), path);
}

ModelConfig ModelConfig::from_json_text(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(origin + ": not valid JSON: " + printable(e.what()));
  }
  if (!j.is_object()) throw Error(origin + ": top level is not an object");
  std::set<std::string> used;
  auto field = [&](const json& obj, const std::string& key,
                   const std::string& path) -> const json& {
    used.insert(path);
    if (!obj.contains(key)) throw Error(origin + ": missing required key '" + path + "'");
    return obj.at(key);
  };
  auto get_int = [&](const std::string& key) -> int64_t {
    const json& v = field(j, key, key);
    if (!v.is_number_integer())
      throw Error(origin + ": key '" + key + "' must be an integer, got " + v.dump());
    return v.get<int64_t>();
  };
  // An integer in [min, 2^30]: min 1 for sizes, 0 for counts that may be none.
  auto get_at_least = [&](const std::string& key, int64_t min) -> int {
    int64_t v = get_int(key);
    if (v < min || v > (int64_t{1} << 30)) {
      throw Error(origin + ": key '" + key + "' must be " + (min ? "positive" : "0 or more") +
                  ", got " + std::to_string(v));
    }
    return static_cast<int>(v);
  };
  auto get_pos = [&](const std::string& key) { return get_at_least(key, 1); };
  auto get_count = [&](const std::string& key) { return get_at_least(key, 0); };
  // Numbers must be finite in fp32 and above `min` (or at least it, `min_ok`): a negative
  // epsilon, a rope_theta of 0 or 1e39 (inf in fp32) would give NaN or silently wrong logits.
  auto check_num = [&](const json& v, const std::string& path, float min, bool min_ok) -> float {
    if (!v.is_number())
      throw Error(origin + ": key '" + path + "' must be a number, got " + v.dump());
    const float f = v.get<float>();
    if (!std::isfinite(f) || f < min || (f == min && !min_ok)) {
      throw Error(origin + ": key '" + path + "' must be a finite number " +
                  (min_ok ? ">= " : "> ") + json(min).dump() + ", got " + v.dump());
    }
    return f;
  };
  auto get_num = [&](const json& obj, const std::string& key, const std::string& path, float min,
                     bool min_ok) -> float {
    return check_num(field(obj, key, path), path, min, min_ok);
  };
  auto opt_num = [&](const std::string& key, float dflt, float min, bool min_ok) -> float {
    used.insert(key);
    return j.contains(key) ? check_num(j[key], key, min, min_ok) : dflt;
  };
  // Keys whose value dsv4 does not read because V4 fixes it: another value is another model.
  auto require_value = [&](const json& obj, const std::string& key, const std::string& path,
                           const json& want) {
    used.insert(path);
    if (obj.contains(key) && obj[key] != want) {
      throw Error(origin + ": " + path + " " + obj[key].dump() +
                  " is not supported (DeepSeek-V4 has " + want.dump() + ")");
    }
  };

  ModelConfig c;
  c.vocab_size = get_pos("vocab_size");
  c.dim = get_pos("hidden_size");
  c.n_layers = get_pos("num_hidden_layers");
  used.insert("num_nextn_predict_layers");
  c.n_mtp_layers =
      j.contains("num_nextn_predict_layers") ? get_count("num_nextn_predict_layers") : 0;
  c.n_heads = get_pos("num_attention_heads");
  if (get_int("num_key_value_heads") != 1)
    throw Error(origin + ": num_key_value_heads must be 1 (V4 has one shared KV head)");
  c.head_dim = get_pos("head_dim");
  c.rope_dim = get_pos("qk_rope_head_dim");
  c.q_lora_rank = get_pos("q_lora_rank");
  c.o_groups = get_pos("o_groups");
  c.o_lora_rank = get_pos("o_lora_rank");
  c.window = get_pos("sliding_window");
  c.index_n_heads = get_pos("index_n_heads");
  c.index_head_dim = get_pos("index_head_dim");
  c.index_topk = get_pos("index_topk");
  c.n_routed_experts = get_pos("n_routed_experts");
  c.n_shared_experts = get_count("n_shared_experts");
  c.n_activated_experts = get_pos("num_experts_per_tok");
  c.moe_inter_dim = get_pos("moe_intermediate_size");
  c.n_hash_layers = get_count("num_hash_layers");
  c.route_scale = get_num(j, "routed_scaling_factor", "routed_scaling_factor", 0.0f, false);
  c.swiglu_limit = get_num(j, "swiglu_limit", "swiglu_limit", 0.0f, true);  // 0: no clamp
  c.hc_mult = get_pos("hc_mult");
  c.hc_sinkhorn_iters = get_pos("hc_sinkhorn_iters");
  c.hc_eps = opt_num("hc_eps", 1e-6f, 0.0f, true);
  c.norm_eps = opt_num("rms_norm_eps", 1e-6f, 0.0f, true);
  // θ ≤ 1 makes the frequencies grow with the dimension and YaRN's log(θ) zero or negative.
  c.rope_theta = get_num(j, "rope_theta", "rope_theta", 1.0f, false);
  c.compress_rope_theta = get_num(j, "compress_rope_theta", "compress_rope_theta", 1.0f, false);
  c.max_position_embeddings = get_pos("max_position_embeddings");
  used.insert("bos_token_id");
  used.insert("eos_token_id");
  for (auto [key, id] :
       {std::pair{"bos_token_id", &c.bos_token_id}, {"eos_token_id", &c.eos_token_id}}) {
    if (!j.contains(key) || j[key].is_null()) continue;
    const json& v = j[key];
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= c.vocab_size) {
      throw Error(origin + ": key '" + key + "' must be a token id in [0, vocab_size = " +
                  std::to_string(c.vocab_size) + "), got " + v.dump());
    }
    *id = v.get<int>();
  }

  const json& sf = field(j, "scoring_func", "scoring_func");
  if (!sf.is_string() || sf.get<std::string>() != "sqrtsoftplus") {
    throw Error(origin + ": scoring_func " + sf.dump() +
                " is not supported (expected \"sqrtsoftplus\")");
  }
  c.scoring_func = sf.get<std::string>();
  used.insert("expert_dtype");
  c.expert_dtype = "fp4";  // absent in the initial Flash config
  if (j.contains("expert_dtype") && j["expert_dtype"] != "fp4") {
    throw Error(origin + ": expert_dtype " + j["expert_dtype"].dump() +
                " is not supported (only \"fp4\" routed experts)");
  }

  const json& rs = field(j, "rope_scaling", "rope_scaling");
  if (!rs.is_object()) throw Error(origin + ": rope_scaling must be an object");
  require_value(rs, "type", "rope_scaling.type", "yarn");
  require_value(rs, "rope_type", "rope_scaling.rope_type", "yarn");  // newer configs' spelling
  c.rope_factor = get_num(rs, "factor", "rope_scaling.factor", 0.0f, false);
  const json& osl = field(rs, "original_max_position_embeddings",
                          "rope_scaling.original_max_position_embeddings");
  if (!osl.is_number_integer() || osl.get<int64_t>() <= 0) {
    throw Error(origin +
                ": rope_scaling.original_max_position_embeddings must be a positive integer, got " +
                osl.dump());
  }
  c.original_seq_len = osl.get<int64_t>();
  c.beta_fast = get_num(rs, "beta_fast", "rope_scaling.beta_fast", 0.0f, false);
  c.beta_slow = get_num(rs, "beta_slow", "rope_scaling.beta_slow", 0.0f, false);

  const json& q = field(j, "quantization_config", "quantization_config");
  if (!q.is_object()) throw Error(origin + ": quantization_config must be an object");
  const json& bs = field(q, "weight_block_size", "quantization_config.weight_block_size");
  if (bs != json::array({128, 128})) {
    throw Error(origin + ": quantization_config.weight_block_size " + bs.dump() +
                " is not supported (expected [128, 128])");
  }
  if (q.contains("fmt") && q["fmt"] != "e4m3")
    throw Error(origin + ": quantization_config.fmt must be \"e4m3\"");
  if (q.contains("scale_fmt") && q["scale_fmt"] != "ue8m0")
    throw Error(origin + ": quantization_config.scale_fmt must be \"ue8m0\"");
  require_value(q, "quant_method", "quantization_config.quant_method", "fp8");

  require_value(j, "attention_bias", "attention_bias", false);
  require_value(j, "hidden_act", "hidden_act", "silu");
  require_value(j, "norm_topk_prob", "norm_topk_prob", true);
  require_value(j, "topk_method", "topk_method", "noaux_tc");
  require_value(j, "tie_word_embeddings", "tie_word_embeddings", false);

  const json& cr = field(j, "compress_ratios", "compress_ratios");
  if (!cr.is_array()) throw Error(origin + ": compress_ratios must be an array");
  for (const json& r : cr) {
    if (!r.is_number_integer() || (r != 0 && r != 4 && r != 128)) {
      throw Error(origin + ": compress_ratios entry " + r.dump() + " is not 0, 4 or 128");
    }
    c.compress_ratios.push_back(r.get<int>());
  }
  if (static_cast<int>(c.compress_ratios.size()) < c.n_layers + c.n_mtp_layers) {
    throw Error(origin + ": compress_ratios has " + std::to_string(c.compress_ratios.size()) +
                " entries, need num_hidden_layers + num_nextn_predict_layers = " +
                std::to_string(c.n_layers + c.n_mtp_layers));
  }
  c.compress_ratios.resize(c.n_layers + c.n_mtp_layers);

  // Structural checks the forward pass relies on.
  auto require = [&](bool ok, const std::string& what) {
    if (!ok) throw Error(origin + ": inconsistent config: " + what);
  };
  require(c.rope_dim % 2 == 0 && c.rope_dim < c.head_dim,
          "qk_rope_head_dim must be even and < head_dim");
  require(c.nope_dim() % 64 == 0,
          "head_dim - qk_rope_head_dim must be a multiple of 64 (FP8 KV blocks)");
  require(c.n_heads % c.o_groups == 0, "num_attention_heads must be divisible by o_groups");
  require(c.index_head_dim % 32 == 0 && (c.index_head_dim & (c.index_head_dim - 1)) == 0,
          "index_head_dim must be a power of two (Hadamard) and a multiple of 32");
  require(c.index_head_dim > c.rope_dim, "index_head_dim must exceed qk_rope_head_dim");
  require(c.n_activated_experts <= c.n_routed_experts, "num_experts_per_tok > n_routed_experts");
  require(c.n_shared_experts <= 1, "at most one shared expert is supported");
  require(c.n_hash_layers <= c.n_layers, "num_hash_layers > num_hidden_layers");
  require(c.dim % 128 == 0 || c.dim < 128, "hidden_size must be a multiple of 128");
  require(c.moe_inter_dim % 32 == 0 && c.dim % 32 == 0, "FP4 experts need dims divisible by 32");
  require(c.o_lora_rank % 128 == 0, "o_lora_rank must be a multiple of 128 (FP8 blocks of wo_a)");

  // Keys we read or knowingly do not need; anything else is noted (future keys are ignored).
  static const char* known[] = {
      "architectures",        "attention_dropout", "initializer_range", "model_type", "torch_dtype",
      "transformers_version", "use_cache",         "pad_token_id",      "auto_map",   "dtype"};
  for (const char* k : known) used.insert(k);
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!used.count(it.key()))
      c.notes.push_back("config.json key '" + it.key() + "' is not used by dsv4 (ignored)");
  }
  return c;
}

}  // namespace dsv4
