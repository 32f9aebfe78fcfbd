#include "runtime/synth.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>

#include "io/safetensors.h"
#include "model/config.h"
#include "model/weights.h"
#include "numerics/formats.h"
#include "runtime/safetensors_writer.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace dsv4 {

namespace {

// ---- Presets --------------------------------------------------------------------------------

struct Preset {
  const char* name;
  int dim, n_layers, heads, head_dim, q_lora, o_groups, o_lora, window;
  int index_heads, index_dim, index_topk;
  int experts, active, inter, hash_layers;
  double route_scale;
  int vocab;
  int64_t max_pos;
  std::vector<int> ratios;  // n_layers + 1 (MTP)
  size_t shard_bytes;       // 0 = single model.safetensors
};

const std::vector<Preset>& presets() {
  static const std::vector<Preset> p = {
      // Like ../shared/golden/tiny (Flash's layer pattern at dim 256) with the full V4 vocabulary
      // so
      // the real tokenizer works; embed/head dominate its ~150 MB.
      {"tiny", 256, 7,  8, 128, 128, 2,   128,    32,   16,
       128,    8,   16, 6, 128, 3,   1.5, 129280, 8192, {0, 0, 4, 128, 4, 128, 4, 0},
       0},
      // Exact V4-Flash dimensions, 4 layers, 32 routed experts (top-6) + 1 shared, ~4.5 GB.
      {"flash-4l",
       4096,
       4,
       64,
       512,
       1024,
       8,
       1024,
       128,
       64,
       128,
       512,
       32,
       6,
       2048,
       1,
       1.5,
       129280,
       1048576,
       {0, 4, 128, 4, 0},
       size_t{2} << 30},
      // Exact V4-Pro dimensions, one CSA layer (compressor + indexer at Pro shapes, hash-routed) +
      // MTP, 8 routed experts (top-6) + 1 shared, ~5 GB.
      {"pro-1l", 7168, 1, 128, 512,    1536,    16,     1024,           128, 64, 128, 1024, 8,
       6,        3072, 1, 2.5, 129280, 1048576, {4, 0}, size_t{2} << 30},
  };
  return p;
}

const Preset& find_preset(const std::string& name) {
  for (const Preset& p : presets())
    if (name == p.name) return p;
  std::string all;
  for (const Preset& p : presets()) all += std::string(all.empty() ? "" : ", ") + p.name;
  throw Error("unknown preset '" + name + "' (available: " + all + ")");
}

// ---- Deterministic random numbers -----------------------------------------------------------

inline uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t hash_name(const std::string& s, uint64_t seed) {
  uint64_t h = 1469598103934665603ull ^ (seed * 0x9e3779b97f4a7c15ull);
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  uint64_t st = h;
  return splitmix64(st);
}

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() { return splitmix64(s); }
  // Uniform in [0, 1).
  float uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }
  // Irwin–Hall(12) − 6: mean 0, variance 1.
  float normal() {
    uint32_t acc = 0;
    for (int k = 0; k < 3; ++k) {
      uint64_t r = next();
      acc += static_cast<uint32_t>(r & 0xffff) + static_cast<uint32_t>((r >> 16) & 0xffff) +
             static_cast<uint32_t>((r >> 32) & 0xffff) + static_cast<uint32_t>(r >> 48);
    }
    return static_cast<float>(acc) * (1.0f / 65536.0f) - 6.0f;
  }
};

// ---- What to put in each tensor --------------------------------------------------------------

enum class Kind { kFp8, kFp4, kNormalBf16, kNormBf16, kNormalF32, kHcBase, kUniformF32, kTid2eid };

struct Plan {
  ExpectedTensor t;        // the weight (or value) tensor
  std::string scale_name;  // FP8/FP4: its .scale tensor
  Kind kind = Kind::kNormalF32;
  float mean = 0.0f, stddev = 1.0f;  // normal kinds; uniform: [mean, stddev)
  int hc = 4, n_experts = 0;
};

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}
bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

// Gains relative to 1/sqrt(fan_in), measured from the golden tiny checkpoint.
float linear_gain(const std::string& n) {
  if (contains(n, "experts.") || contains(n, "shared_experts.")) {
    if (contains(n, ".w2.")) return 0.0625f;
    return 3.5f;  // w1 (gate) / w3 (up)
  }
  if (contains(n, ".wo_b.")) return 0.5f;
  if (n == "head.weight") return 4.0f;
  if (ends_with(n, ".gate.weight")) return 3.0f;
  if (ends_with(n, ".wgate.weight")) return 2.0f;
  return 1.0f;  // wq_a, wq_b, wkv, wo_a, e_proj, h_proj, indexer wq_b, compressor wkv, weights_proj
}

std::vector<Plan> make_plans(const ModelConfig& cfg) {
  std::vector<ExpectedTensor> all = expected_tensors(cfg);
  std::vector<Plan> plans;
  plans.reserve(all.size());
  for (const ExpectedTensor& e : all) {
    const std::string& n = e.name;
    if (ends_with(n, ".scale")) continue;  // written together with its weight
    Plan p;
    p.t = e;
    p.hc = cfg.hc_mult;
    p.n_experts = cfg.n_routed_experts;
    const int64_t cols = e.shape.size() > 1 ? e.shape[1] : 1;
    switch (e.dtype) {
      case DType::kF8_E4M3:
        p.kind = Kind::kFp8;
        p.scale_name = n.substr(0, n.size() - 7) + ".scale";
        p.stddev = linear_gain(n) / std::sqrt(static_cast<float>(cols));
        break;
      case DType::kI8:
        p.kind = Kind::kFp4;
        p.scale_name = n.substr(0, n.size() - 7) + ".scale";
        p.stddev = linear_gain(n) / std::sqrt(static_cast<float>(cols * 2));
        break;
      case DType::kBF16:
        if (e.shape.size() == 1) {
          p.kind = Kind::kNormBf16;  // RMSNorm weights
          p.mean = 1.0f;
          p.stddev = 0.1f;
        } else {
          p.kind = Kind::kNormalBf16;
          p.stddev =
              n == "embed.weight" ? 1.0f : linear_gain(n) / std::sqrt(static_cast<float>(cols));
        }
        break;
      case DType::kF32:
        if (contains(n, "hc_") && ends_with(n, "_fn")) {
          p.kind = Kind::kNormalF32;
          p.stddev = 1.0f / std::sqrt(static_cast<float>(cols));
        } else if (contains(n, "hc_") && ends_with(n, "_base")) {
          p.kind = Kind::kHcBase;
        } else if (contains(n, "hc_") && ends_with(n, "_scale")) {
          p.kind = Kind::kUniformF32;
          p.mean = 0.5f;
          p.stddev = 1.5f;
        } else if (ends_with(n, ".attn_sink")) {
          p.kind = Kind::kNormalF32;
          p.mean = 0.5f;
          p.stddev = 0.8f;
        } else if (ends_with(n, ".ape")) {
          p.kind = Kind::kNormalF32;
          p.stddev = 0.5f;
        } else if (ends_with(n, ".gate.bias")) {
          p.kind = Kind::kNormalF32;
          p.stddev = 0.05f;
        } else {
          throw Error("synth: no initialisation rule for F32 tensor '" + n + "'");
        }
        break;
      case DType::kI64:
        if (!ends_with(n, ".tid2eid")) throw Error("synth: no rule for I64 tensor '" + n + "'");
        p.kind = Kind::kTid2eid;
        break;
      default:
        throw Error("synth: no initialisation rule for tensor '" + n + "' (" + dtype_name(e.dtype) +
                    ")");
    }
    plans.push_back(std::move(p));
  }
  return plans;
}

std::vector<int64_t> scale_shape(const Plan& p) {
  const int64_t rows = p.t.shape[0], cols = p.t.shape[1];
  if (p.kind == Kind::kFp8) return {(rows + 127) / 128, (cols + 127) / 128};
  return {rows, cols * 2 / 32};
}

size_t plan_bytes(const Plan& p) {
  size_t n = SafetensorsWriter::nbytes(p.t.dtype, p.t.shape);
  if (!p.scale_name.empty()) n += SafetensorsWriter::nbytes(DType::kF8_E8M0, scale_shape(p));
  return n;
}

// Rows per independently seeded chunk.
constexpr int64_t kChunkRows = 128;

// Generates rows [r0, r1) of `p` and writes them (and their scales).
void gen_chunk(const Plan& p, uint64_t tensor_seed, int64_t chunk, SafetensorsWriter& w) {
  const int64_t rows = p.t.shape[0];
  const int64_t r0 = chunk * kChunkRows, r1 = std::min(rows, r0 + kChunkRows);
  const int64_t nr = r1 - r0;
  uint64_t cs = tensor_seed ^ (static_cast<uint64_t>(chunk) * 0xd1b54a32d192ed03ull);
  Rng rng(splitmix64(cs));
  const std::string& name = p.t.name;

  switch (p.kind) {
    case Kind::kFp8: {
      const int64_t cols = p.t.shape[1];
      const int64_t nbc = (cols + 127) / 128;
      std::vector<float> x(static_cast<size_t>(nr * cols));
      for (float& v : x) v = rng.normal() * p.stddev;
      std::vector<uint8_t> codes(x.size());
      std::vector<uint8_t> scales(static_cast<size_t>(nbc));
      for (int64_t b = 0; b < nbc; ++b) {
        const int64_t c0 = b * 128, c1 = std::min(cols, c0 + 128);
        float amax = 0.0f;
        for (int64_t r = 0; r < nr; ++r)
          for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(x[r * cols + c]));
        uint8_t sb = ue8m0_block_scale(amax, BlockFormat::kFp8E4M3);
        scales[b] = sb;
        const float inv = std::ldexp(1.0f, 127 - static_cast<int>(sb));
        for (int64_t r = 0; r < nr; ++r)
          for (int64_t c = c0; c < c1; ++c)
            codes[r * cols + c] = e4m3_encode(x[r * cols + c] * inv);
      }
      w.write(name, static_cast<size_t>(r0 * cols), codes.data(), codes.size());
      w.write(p.scale_name, static_cast<size_t>(chunk * nbc), scales.data(), scales.size());
      break;
    }
    case Kind::kFp4: {
      const int64_t cols = p.t.shape[1] * 2;  // logical
      const int64_t nb = cols / 32;
      std::vector<uint8_t> packed(static_cast<size_t>(nr * cols / 2));
      std::vector<uint8_t> scales(static_cast<size_t>(nr * nb));
      float x[32];
      uint8_t c4[32];
      for (int64_t r = 0; r < nr; ++r) {
        for (int64_t b = 0; b < nb; ++b) {
          float amax = 0.0f;
          for (int k = 0; k < 32; ++k) {
            x[k] = rng.normal() * p.stddev;
            amax = std::max(amax, std::fabs(x[k]));
          }
          uint8_t sb = ue8m0_block_scale(amax, BlockFormat::kFp4E2M1);
          scales[r * nb + b] = sb;
          const float inv = std::ldexp(1.0f, 127 - static_cast<int>(sb));
          for (int k = 0; k < 32; ++k) c4[k] = e2m1_encode(x[k] * inv);
          for (int k = 0; k < 16; ++k)
            packed[r * (cols / 2) + b * 16 + k] = pack_e2m1(c4[2 * k], c4[2 * k + 1]);
        }
      }
      w.write(name, static_cast<size_t>(r0 * cols / 2), packed.data(), packed.size());
      w.write(p.scale_name, static_cast<size_t>(r0 * nb), scales.data(), scales.size());
      break;
    }
    case Kind::kNormalBf16:
    case Kind::kNormBf16: {
      const int64_t cols = p.t.shape.size() > 1 ? p.t.shape[1] : 1;
      std::vector<uint16_t> v(static_cast<size_t>(nr * cols));
      for (uint16_t& b : v) b = f32_to_bf16(p.mean + rng.normal() * p.stddev);
      w.write(name, static_cast<size_t>(r0 * cols * 2), v.data(), v.size() * 2);
      break;
    }
    case Kind::kNormalF32:
    case Kind::kUniformF32: {
      const int64_t cols = p.t.shape.size() > 1 ? p.t.shape[1] : 1;
      std::vector<float> v(static_cast<size_t>(nr * cols));
      for (float& f : v) {
        f = p.kind == Kind::kNormalF32 ? p.mean + rng.normal() * p.stddev
                                       : p.mean + rng.uniform() * (p.stddev - p.mean);
      }
      w.write(name, static_cast<size_t>(r0 * cols * 4), v.data(), v.size() * 4);
      break;
    }
    case Kind::kHcBase: {
      std::vector<float> v(static_cast<size_t>(nr));
      for (int64_t i = 0; i < nr; ++i) {
        const int64_t idx = r0 + i;
        float f = 0.3f * rng.normal();
        // [pre hc | post hc | comb hc×hc]: comb starts near the identity (+2 on its diagonal).
        if (rows == static_cast<int64_t>((2 + p.hc) * p.hc) && idx >= 2 * p.hc) {
          const int64_t k = idx - 2 * p.hc;
          if (k / p.hc == k % p.hc) f += 2.0f;
        }
        v[i] = f;
      }
      w.write(name, static_cast<size_t>(r0 * 4), v.data(), v.size() * 4);
      break;
    }
    case Kind::kTid2eid: {
      const int64_t k = p.t.shape[1];
      std::vector<int64_t> v(static_cast<size_t>(nr * k));
      std::vector<int64_t> perm(static_cast<size_t>(p.n_experts));
      for (int64_t r = 0; r < nr; ++r) {
        for (int e = 0; e < p.n_experts; ++e) perm[e] = e;
        for (int64_t j = 0; j < k; ++j) {  // partial Fisher–Yates: k distinct experts
          int64_t pick =
              j + static_cast<int64_t>(rng.next() % static_cast<uint64_t>(p.n_experts - j));
          std::swap(perm[j], perm[pick]);
          v[r * k + j] = perm[j];
        }
      }
      w.write(name, static_cast<size_t>(r0 * k * 8), v.data(), v.size() * 8);
      break;
    }
  }
}

// GPT-2 byte-level alphabet: byte → unicode code point.
std::string byte_level_char(int b) {
  static int table[256];
  static bool init = false;
  if (!init) {
    int n = 0;
    for (int i = 0; i < 256; ++i) {
      bool keep = (i >= 33 && i <= 126) || (i >= 161 && i <= 172) || (i >= 174 && i <= 255);
      table[i] = keep ? i : 256 + n++;
    }
    init = true;
  }
  int cp = table[b];
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else {
    s.push_back(static_cast<char>(0xc0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
  return s;
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  if (!f) throw Error("cannot create " + p.string());
  f << text;
  if (!f) throw Error("cannot write " + p.string());
}

}  // namespace

std::vector<std::string> synth_presets() {
  std::vector<std::string> out;
  for (const Preset& p : presets()) out.push_back(p.name);
  return out;
}

ojson synth_config(const std::string& name) {
  const Preset& p = find_preset(name);
  ojson j;
  j["architectures"] = {"DeepseekV4ForCausalLM"};
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["bos_token_id"] = 0;
  j["eos_token_id"] = 1;
  j["hc_eps"] = 1e-6;
  j["hc_mult"] = 4;
  j["hc_sinkhorn_iters"] = 20;
  j["head_dim"] = p.head_dim;
  j["hidden_act"] = "silu";
  j["hidden_size"] = p.dim;
  j["index_head_dim"] = p.index_dim;
  j["index_n_heads"] = p.index_heads;
  j["index_topk"] = p.index_topk;
  j["initializer_range"] = 0.02;
  j["max_position_embeddings"] = p.max_pos;
  j["model_type"] = "deepseek_v4";
  j["moe_intermediate_size"] = p.inter;
  j["n_routed_experts"] = p.experts;
  j["n_shared_experts"] = 1;
  j["norm_topk_prob"] = true;
  j["num_attention_heads"] = p.heads;
  j["num_experts_per_tok"] = p.active;
  j["num_hidden_layers"] = p.n_layers;
  j["num_hash_layers"] = p.hash_layers;
  j["num_key_value_heads"] = 1;
  j["num_nextn_predict_layers"] = 1;
  j["o_groups"] = p.o_groups;
  j["o_lora_rank"] = p.o_lora;
  j["q_lora_rank"] = p.q_lora;
  j["qk_rope_head_dim"] = 64;
  j["quantization_config"] = {{"activation_scheme", "dynamic"},
                              {"fmt", "e4m3"},
                              {"quant_method", "fp8"},
                              {"scale_fmt", "ue8m0"},
                              {"weight_block_size", {128, 128}}};
  j["rms_norm_eps"] = 1e-6;
  j["rope_scaling"] = {{"beta_fast", 32},
                       {"beta_slow", 1},
                       {"factor", 16.0},
                       {"original_max_position_embeddings", 65536},
                       {"type", "yarn"}};
  j["rope_theta"] = 10000.0;
  j["routed_scaling_factor"] = p.route_scale;
  j["scoring_func"] = "sqrtsoftplus";
  j["sliding_window"] = p.window;
  j["swiglu_limit"] = 10.0;
  j["tie_word_embeddings"] = false;
  j["topk_method"] = "noaux_tc";
  j["torch_dtype"] = "bfloat16";
  j["transformers_version"] = "4.57.1";
  j["use_cache"] = true;
  j["vocab_size"] = p.vocab;
  j["compress_rope_theta"] = 160000.0;
  j["compress_ratios"] = p.ratios;
  j["expert_dtype"] = "fp4";
  return j;
}

std::string minimal_tokenizer_json() {
  nlohmann::json vocab = nlohmann::json::object();
  nlohmann::json added = nlohmann::json::array();
  const char* kSpecial3[3] = {"<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"};
  for (int i = 0; i < 3; ++i) vocab[kSpecial3[i]] = i;
  for (int b = 0; b < 256; ++b) vocab[byte_level_char(b)] = 3 + b;
  for (int id = 259; id < 128000; ++id) vocab["<x" + std::to_string(id) + ">"] = id;
  auto add = [&](int id, const std::string& content, bool special) {
    added.push_back({{"id", id},
                     {"content", content},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", !special},
                     {"special", special}});
  };
  for (int i = 0; i < 3; ++i) add(i, kSpecial3[i], true);
  for (int id = 128000; id < 128800; ++id)
    add(id, "<｜place▁holder▁no▁" + std::to_string(id - 128000) + "｜>", true);
  const char* named[] = {"<｜fim▁hole｜>",
                         "<｜fim▁begin｜>",
                         "<｜fim▁end｜>",
                         "<｜User｜>",
                         "<｜Assistant｜>",
                         "<|EOT|>",
                         "<｜tool▁calls▁begin｜>",
                         "<｜tool▁calls▁end｜>",
                         "<｜tool▁call▁begin｜>",
                         "<｜tool▁call▁end｜>",
                         "<｜tool▁outputs▁begin｜>",
                         "<｜tool▁outputs▁end｜>",
                         "<｜tool▁output▁begin｜>",
                         "<｜tool▁output▁end｜>",
                         "<｜tool▁sep｜>",
                         "<｜begin▁of▁repo▁name｜>",
                         "<｜end▁of▁repo▁name｜>",
                         "<｜begin▁of▁file▁name｜>",
                         "<｜end▁of▁file▁name｜>",
                         "<｜begin▁of▁file｜>",
                         "<｜end▁of▁file｜>",
                         "<think>",
                         "</think>",
                         "<｜place▁holder▁for▁copy｜>",
                         "<｜place▁holder▁for▁pointer▁replace｜>",
                         "｜DSML｜",
                         "<｜begin▁sys｜>",
                         "<｜end▁sys｜>",
                         "<｜latest_reminder｜>",
                         "<｜action｜>",
                         "<｜query｜>",
                         "<｜authority｜>",
                         "<｜domain｜>",
                         "<｜task｜>",
                         "<｜political｜>",
                         "<｜entity｜>",
                         "<｜title｜>",
                         "<｜safety｜>",
                         "<｜answer｜>",
                         "<｜search｜>",
                         "<dsml:",
                         "</dsml:",
                         "<｜search▁begin｜>",
                         "<｜search▁end｜>",
                         "<｜extracted_url｜>",
                         "<｜read_url｜>",
                         "<｜end_of_query｜>"};
  int id = 128800;
  for (const char* s : named) {
    add(id, s, id == 128805);  // V3 flags: only <|EOT|> of the named tokens is special
    ++id;
  }
  for (; id <= 129261; ++id) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "<|place_holder_mm_span_%04d|>", id - 128847 + 21);
    add(id, buf, true);
  }
  const char* vision[] = {"<｜rl_image_pad｜>", "<｜rl_image_start｜>",
                          "<｜image2｜>",       "<｜/table>｜",
                          "<｜table｜>",        "<｜/td｜>",
                          "<｜td｜>",           "<｜/tr｜>",
                          "<｜tr｜>",           "<｜/polygon｜>",
                          "<｜polygon｜>",      "<｜/point｜>",
                          "<｜point｜>",        "<｜/box｜>",
                          "<｜box｜>",          "<｜/ref｜>",
                          "<｜ref｜>",          "<｜image｜>"};
  for (const char* s : vision) add(id++, s, true);

  nlohmann::json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "ByteLevel"},
                           {"add_prefix_space", false},
                           {"trim_offsets", false},
                           {"use_regex", false}}}}};
  j["post_processor"] = {{"type", "ByteLevel"},
                         {"add_prefix_space", true},
                         {"trim_offsets", false},
                         {"use_regex", true}};
  j["decoder"] = {{"type", "ByteLevel"},
                  {"add_prefix_space", true},
                  {"trim_offsets", true},
                  {"use_regex", true}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"vocab", vocab},
                {"merges", nlohmann::json::array()}};
  return j.dump(1);
}

SynthReport synth_checkpoint(const SynthOptions& opts) {
  if (opts.out_dir.empty()) throw Error("synth: no output directory given");
  const Preset& preset = find_preset(opts.preset);
  const ojson cfg_json = synth_config(opts.preset);
  const std::string cfg_text = cfg_json.dump(2) + "\n";
  const ModelConfig cfg =
      ModelConfig::from_json_text(cfg_text, "synth config (" + opts.preset + ")");
  std::vector<Plan> plans = make_plans(cfg);

  std::error_code ec;
  fs::create_directories(opts.out_dir, ec);
  if (ec) throw Error("cannot create directory " + opts.out_dir + ": " + ec.message());
  const fs::path dir(opts.out_dir);
  SynthReport rep;

  // Shards: tensors in table order (top level, layers, MTP), a new shard when the current one
  // would exceed the limit.
  const size_t limit = opts.max_shard_bytes ? opts.max_shard_bytes : preset.shard_bytes;
  std::vector<std::vector<size_t>> shards(1);
  size_t cur = 0, total = 0;
  for (size_t i = 0; i < plans.size(); ++i) {
    size_t b = plan_bytes(plans[i]);
    if (limit && cur > 0 && cur + b > limit) {
      shards.emplace_back();
      cur = 0;
    }
    shards.back().push_back(i);
    cur += b;
    total += b;
  }
  const int n_shards = static_cast<int>(shards.size());
  auto shard_name = [&](int s) {
    if (n_shards == 1) return std::string("model.safetensors");
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
    return std::string(buf);
  };
  // Stale files of another layout would confuse the loader (index vs single file).
  fs::remove(dir / "model.safetensors.index.json", ec);
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string fn = entry.path().filename().string();
    if (ends_with(fn, ".safetensors")) fs::remove(entry.path(), ec);
  }

  ThreadPool pool(opts.threads);
  std::atomic<size_t> done{0};
  std::mutex progress_mu;
  ojson weight_map = ojson::object();
  for (int s = 0; s < n_shards; ++s) {
    std::vector<SafetensorsWriter::Entry> entries;
    for (size_t i : shards[s]) {
      const Plan& p = plans[i];
      entries.push_back({p.t.name, p.t.dtype, p.t.shape});
      weight_map[p.t.name] = shard_name(s);
      if (!p.scale_name.empty()) {
        entries.push_back({p.scale_name, DType::kF8_E8M0, scale_shape(p)});
        weight_map[p.scale_name] = shard_name(s);
      }
    }
    rep.n_tensors += entries.size();
    SafetensorsWriter w((dir / shard_name(s)).string(), std::move(entries));
    for (size_t i : shards[s]) {
      const Plan& p = plans[i];
      const uint64_t tseed = hash_name(p.t.name, opts.seed);
      const int64_t chunks = (p.t.shape[0] + kChunkRows - 1) / kChunkRows;
      const size_t bytes = plan_bytes(p);
      pool.parallel_for(static_cast<size_t>(chunks), [&](size_t b, size_t e, int) {
        for (size_t c = b; c < e; ++c) gen_chunk(p, tseed, static_cast<int64_t>(c), w);
      });
      size_t d = done += bytes;
      if (opts.progress) {
        std::lock_guard<std::mutex> lk(progress_mu);
        opts.progress(d, total);
      }
    }
    w.close();
    rep.files.push_back(shard_name(s));
  }
  rep.tensor_bytes = total;
  rep.n_shards = n_shards;
  if (n_shards > 1) {
    ojson idx;
    idx["metadata"] = {{"total_size", total}};
    idx["weight_map"] = weight_map;  // insertion order = table order
    write_text(dir / "model.safetensors.index.json", idx.dump(2) + "\n");
    rep.files.push_back("model.safetensors.index.json");
  }
  write_text(dir / "config.json", cfg_text);
  rep.files.push_back("config.json");
  ojson gen;
  gen["_from_model_config"] = true;
  gen["bos_token_id"] = 0;
  gen["eos_token_id"] = 1;
  gen["do_sample"] = true;
  gen["temperature"] = 1.0;
  gen["top_p"] = 1.0;
  write_text(dir / "generation_config.json", gen.dump(2) + "\n");
  rep.files.push_back("generation_config.json");

  // Tokenizer: the real files when available, else the minimal byte-level fallback.
  const fs::path tj = fs::path(opts.tokenizer_dir) / "tokenizer.json";
  if (!opts.tokenizer_dir.empty() && fs::exists(tj)) {
    for (const char* n : {"tokenizer.json", "tokenizer_config.json"}) fs::remove(dir / n, ec);
    fs::copy_file(tj, dir / "tokenizer.json", fs::copy_options::overwrite_existing, ec);
    if (ec) throw Error("cannot copy " + tj.string() + ": " + ec.message());
    const fs::path tc = fs::path(opts.tokenizer_dir) / "tokenizer_config.json";
    if (fs::exists(tc)) {
      fs::copy_file(tc, dir / "tokenizer_config.json", fs::copy_options::overwrite_existing, ec);
      if (ec) throw Error("cannot copy " + tc.string() + ": " + ec.message());
    }
    for (const char* n : {"tokenizer.json", "tokenizer_config.json"}) {
      if (fs::exists(dir / n))
        fs::permissions(dir / n, fs::perms::owner_write, fs::perm_options::add, ec);
    }
    rep.real_tokenizer = true;
  } else {
    if (!opts.tokenizer_dir.empty()) {
      throw Error("no tokenizer.json in --tokenizer-dir " + opts.tokenizer_dir);
    }
    write_text(dir / "tokenizer.json", minimal_tokenizer_json() + "\n");
    rep.real_tokenizer = false;
  }
  if (!rep.real_tokenizer || !fs::exists(dir / "tokenizer_config.json")) {
    ojson tc;
    tc["add_bos_token"] = false;
    tc["add_eos_token"] = false;
    tc["bos_token"] = "<｜begin▁of▁sentence｜>";
    tc["eos_token"] = "<｜end▁of▁sentence｜>";
    tc["pad_token"] = "<｜end▁of▁sentence｜>";
    tc["clean_up_tokenization_spaces"] = false;
    tc["legacy"] = true;
    tc["model_max_length"] = 1048576;
    tc["tokenizer_class"] = "PreTrainedTokenizerFast";
    write_text(dir / "tokenizer_config.json", tc.dump(2) + "\n");
  }
  rep.files.push_back("tokenizer.json");
  rep.files.push_back("tokenizer_config.json");
  return rep;
}

}  // namespace dsv4
