#include "model/weights.h"

#include <cstring>
#include <set>

#include "numerics/formats.h"
#include "util/error.h"
#include "util/function_ref.h"

namespace dsv4 {

namespace {

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Hands every expected tensor to `out` in table order, without keeping the table: a config
// naming millions of experts is then checked in bounded memory (validate_checkpoint stops early).
struct TableBuilder {
  FunctionRef<void(ExpectedTensor&&)> out;
  void add(const std::string& n, DType d, std::vector<int64_t> s) { out({n, d, std::move(s)}); }
  void fp8(const std::string& m, int64_t rows, int64_t cols) {
    add(m + ".weight", DType::kF8_E4M3, {rows, cols});
    add(m + ".scale", DType::kF8_E8M0, {cdiv(rows, 128), cdiv(cols, 128)});
  }
  void fp4(const std::string& m, int64_t rows, int64_t cols) {
    add(m + ".weight", DType::kI8, {rows, cols / 2});
    add(m + ".scale", DType::kF8_E8M0, {rows, cols / 32});
  }
  void compressor(const std::string& p, const ModelConfig& c, int ratio, int64_t d) {
    const int64_t width = (ratio == 4 ? 2 : 1) * d;
    add(p + ".wkv.weight", DType::kBF16, {width, c.dim});
    add(p + ".wgate.weight", DType::kBF16, {width, c.dim});
    add(p + ".ape", DType::kF32, {ratio, width});
    add(p + ".norm.weight", DType::kBF16, {d});
  }
  void block(const std::string& p, const ModelConfig& c, int ratio, bool hash) {
    const int64_t D = c.dim, hc = c.hc_mult, mix = (2 + hc) * hc;
    add(p + ".attn_norm.weight", DType::kBF16, {D});
    add(p + ".ffn_norm.weight", DType::kBF16, {D});
    for (const char* s : {"attn", "ffn"}) {
      add(p + ".hc_" + s + "_fn", DType::kF32, {mix, hc * D});
      add(p + ".hc_" + s + "_base", DType::kF32, {mix});
      add(p + ".hc_" + s + "_scale", DType::kF32, {3});
    }
    const std::string a = p + ".attn";
    add(a + ".attn_sink", DType::kF32, {c.n_heads});
    fp8(a + ".wq_a", c.q_lora_rank, D);
    add(a + ".q_norm.weight", DType::kBF16, {c.q_lora_rank});
    fp8(a + ".wq_b", int64_t{c.n_heads} * c.head_dim, c.q_lora_rank);
    fp8(a + ".wkv", c.head_dim, D);
    add(a + ".kv_norm.weight", DType::kBF16, {c.head_dim});
    fp8(a + ".wo_a", int64_t{c.o_groups} * c.o_lora_rank,
        int64_t{c.n_heads} * c.head_dim / c.o_groups);
    fp8(a + ".wo_b", D, int64_t{c.o_groups} * c.o_lora_rank);
    if (ratio) compressor(a + ".compressor", c, ratio, c.head_dim);
    if (ratio == 4) {
      fp8(a + ".indexer.wq_b", int64_t{c.index_n_heads} * c.index_head_dim, c.q_lora_rank);
      add(a + ".indexer.weights_proj.weight", DType::kBF16, {c.index_n_heads, D});
      compressor(a + ".indexer.compressor", c, 4, c.index_head_dim);
    }
    const std::string f = p + ".ffn";
    add(f + ".gate.weight", DType::kBF16, {c.n_routed_experts, D});
    if (hash) {
      add(f + ".gate.tid2eid", DType::kI64, {c.vocab_size, c.n_activated_experts});
    } else {
      add(f + ".gate.bias", DType::kF32, {c.n_routed_experts});
    }
    for (int e = 0; e < c.n_routed_experts; ++e) {
      const std::string x = f + ".experts." + std::to_string(e);
      fp4(x + ".w1", c.moe_inter_dim, D);
      fp4(x + ".w2", D, c.moe_inter_dim);
      fp4(x + ".w3", c.moe_inter_dim, D);
    }
    if (c.n_shared_experts) {
      const int64_t I = int64_t{c.moe_inter_dim} * c.n_shared_experts;
      fp8(f + ".shared_experts.w1", I, D);
      fp8(f + ".shared_experts.w2", D, I);
      fp8(f + ".shared_experts.w3", I, D);
    }
  }
};

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

}  // namespace

void for_each_expected_tensor(const ModelConfig& c, FunctionRef<void(ExpectedTensor&&)> out) {
  TableBuilder b{out};
  const int64_t D = c.dim, hc = c.hc_mult;
  b.add("embed.weight", DType::kBF16, {c.vocab_size, D});
  b.add("head.weight", DType::kBF16, {c.vocab_size, D});
  b.add("norm.weight", DType::kBF16, {D});
  b.add("hc_head_fn", DType::kF32, {hc, hc * D});
  b.add("hc_head_base", DType::kF32, {hc});
  b.add("hc_head_scale", DType::kF32, {1});
  for (int i = 0; i < c.n_layers; ++i) {
    b.block("layers." + std::to_string(i), c, c.ratio(i), c.is_hash_layer(i));
  }
  for (int m = 0; m < c.n_mtp_layers; ++m) {
    const std::string p = "mtp." + std::to_string(m);
    b.block(p, c, c.ratio(c.n_layers + m), false);
    b.fp8(p + ".e_proj", D, D);
    b.fp8(p + ".h_proj", D, D);
    for (const char* n : {".enorm.weight", ".hnorm.weight", ".norm.weight"})
      b.add(p + n, DType::kBF16, {D});
    b.add(p + ".hc_head_fn", DType::kF32, {hc, hc * D});
    b.add(p + ".hc_head_base", DType::kF32, {hc});
    b.add(p + ".hc_head_scale", DType::kF32, {1});
  }
}

std::vector<ExpectedTensor> expected_tensors(const ModelConfig& c) {
  std::vector<ExpectedTensor> all;
  for_each_expected_tensor(c, [&](ExpectedTensor&& e) { all.push_back(std::move(e)); });
  return all;
}

void validate_checkpoint(const Checkpoint& ck, const ModelConfig& cfg) {
  // The first kShown problems are listed; checking stops at kMaxProblems, so that a config whose
  // counts are far off (n_routed_experts = 10^6 asks for 10^8 tensors) fails in a moment instead of
  // listing every missing tensor.
  constexpr size_t kShown = 20, kMaxProblems = 10000;
  std::vector<std::string> shown;
  size_t count = 0;
  auto fail = [&](bool stopped) {
    std::string msg = "checkpoint does not match config.json (" + std::to_string(count) +
                      (stopped ? " problems, checking stopped there" : " problem") +
                      (!stopped && count > 1 ? "s" : "") + "):";
    for (const std::string& p : shown) msg += "\n  " + p;
    if (count > shown.size()) msg += "\n  …and " + std::to_string(count - shown.size()) + " more";
    throw Error(msg);
  };
  auto problem = [&](std::string text) {
    if (shown.size() < kShown) shown.push_back(std::move(text));
    if (++count == kMaxProblems) fail(true);
  };
  size_t found = 0;  // checkpoint tensors the config expects
  for_each_expected_tensor(cfg, [&](ExpectedTensor&& e) {
    const TensorInfo* t = ck.find(e.name);
    if (!t) {
      problem("missing tensor '" + e.name + "' (expected " + dtype_name(e.dtype) + " " +
              shape_str(e.shape) + ")");
      return;
    }
    ++found;
    if (t->dtype != e.dtype || t->shape != e.shape) {
      problem(t->file + ": tensor '" + e.name + "' is " + dtype_name(t->dtype) + " " +
              t->shape_str() + ", config expects " + dtype_name(e.dtype) + " " +
              shape_str(e.shape));
    }
  });
  if (found < ck.tensors().size()) {  // some checkpoint tensors are not in the table: name them
    std::set<std::string> expected_names;
    for_each_expected_tensor(cfg, [&](ExpectedTensor&& e) { expected_names.insert(e.name); });
    for (const auto& [name, t] : ck.tensors()) {
      if (!expected_names.count(name)) {
        problem(t.file + ": unexpected tensor '" + name + "' (" + dtype_name(t.dtype) + " " +
                t.shape_str() + ") not part of this config");
      }
    }
  }
  if (count) fail(false);
}

namespace {

struct Binder {
  const Checkpoint& ck;
  std::vector<std::vector<uint64_t>>* owned;  // aligned copies of misaligned small tensors
  std::vector<std::unique_ptr<Fp8CodeMap>>* maps;
  const TensorInfo& get(const std::string& n) const {
    const TensorInfo* t = ck.find(n);
    if (!t) throw Error("missing tensor '" + n + "'");
    return *t;
  }
  // safetensors does not align tensor data: an odd-sized FP8 scale can leave the next F32/I64
  // tensor misaligned. Those (small) tensors are read through typed pointers, so a misaligned
  // one is copied once into an aligned buffer; everything else is used in place.
  const void* aligned(const TensorInfo& t) const {
    const size_t align = dtype_size(t.dtype);
    if (align <= 1 || reinterpret_cast<uintptr_t>(t.data) % align == 0) return t.data;
    owned->emplace_back((t.nbytes + 7) / 8);
    std::memcpy(owned->back().data(), t.data, t.nbytes);
    return owned->back().data();
  }
  // A quantised matrix: `<m>.weight` codes plus `<m>.scale` E8M0 scales. FP4 packs two codes per
  // byte, so its logical width is twice the stored one.
  MatrixView quantized(const std::string& m, WeightFormat format) const {
    const TensorInfo& w = get(m + ".weight");
    const TensorInfo& s = get(m + ".scale");
    MatrixView v;
    v.format = format;
    v.rows = w.shape[0];
    v.cols = w.shape[1] * (format == WeightFormat::kFp4Block32 ? 2 : 1);
    v.data = w.data;
    v.scales = s.data;
    v.scale_stride = s.shape[1];
    return v;
  }
  MatrixView fp8(const std::string& m) const {
    MatrixView v = quantized(m, WeightFormat::kFp8Block128);
    maps->push_back(
        std::make_unique<Fp8CodeMap>(static_cast<const uint8_t*>(v.data), v.rows, v.cols));
    v.fp8_map = maps->back().get();
    return v;
  }
  MatrixView fp4(const std::string& m) const { return quantized(m, WeightFormat::kFp4Block32); }
  MatrixView plain(const std::string& n) const {
    const TensorInfo& t = get(n);
    MatrixView v;
    v.format = t.dtype == DType::kBF16 ? WeightFormat::kBF16 : WeightFormat::kF32;
    v.rows = t.shape[0];
    v.cols = t.shape.size() > 1 ? t.shape[1] : 1;
    // BF16 matrices (embedding, head, router, compressors) can be large: kernels load them
    // unaligned in place. F32 matrices (the small hc_* mixers) are copied if misaligned.
    v.data = t.dtype == DType::kF32 ? aligned(t) : t.data;
    return v;
  }
  const float* f32(const std::string& n) const {
    return static_cast<const float*>(aligned(get(n)));
  }
  std::vector<float> vec(const std::string& n) const {
    const TensorInfo& t = get(n);
    std::vector<float> out(t.numel());
    for (size_t i = 0; i < out.size(); ++i) {
      uint16_t b;
      std::memcpy(&b, t.data + 2 * i, 2);
      out[i] = bf16_to_f32(b);
    }
    return out;
  }
  HcParams hc(const std::string& p) const {
    return {plain(p + "_fn"), f32(p + "_base"), f32(p + "_scale")};
  }
  CompressorWeights compressor(const std::string& p) const {
    return {plain(p + ".wkv.weight"), plain(p + ".wgate.weight"), f32(p + ".ape"),
            vec(p + ".norm.weight")};
  }
  BlockWeights block(const std::string& p, const ModelConfig& c, int ratio, bool hash) const {
    BlockWeights b;
    b.ratio = ratio;
    b.hash = hash;
    b.attn_norm = vec(p + ".attn_norm.weight");
    b.ffn_norm = vec(p + ".ffn_norm.weight");
    b.hc_attn = hc(p + ".hc_attn");
    b.hc_ffn = hc(p + ".hc_ffn");
    AttentionWeights& a = b.attn;
    const std::string ap = p + ".attn";
    a.wq_a = fp8(ap + ".wq_a");
    a.wq_b = fp8(ap + ".wq_b");
    a.wkv = fp8(ap + ".wkv");
    a.wo_a = fp8(ap + ".wo_a");
    a.wo_b = fp8(ap + ".wo_b");
    a.q_norm = vec(ap + ".q_norm.weight");
    a.kv_norm = vec(ap + ".kv_norm.weight");
    a.attn_sink = f32(ap + ".attn_sink");
    if (ratio) a.compressor = compressor(ap + ".compressor");
    if (ratio == 4) {
      a.idx_wq_b = fp8(ap + ".indexer.wq_b");
      a.idx_weights_proj = plain(ap + ".indexer.weights_proj.weight");
      a.idx_compressor = compressor(ap + ".indexer.compressor");
    }
    MoeWeights& f = b.ffn;
    const std::string fp = p + ".ffn";
    f.gate = plain(fp + ".gate.weight");
    if (hash) {
      f.tid2eid = static_cast<const int64_t*>(aligned(get(fp + ".gate.tid2eid")));
    } else {
      f.bias = f32(fp + ".gate.bias");
    }
    for (int e = 0; e < c.n_routed_experts; ++e) {
      const std::string x = fp + ".experts." + std::to_string(e);
      f.experts.push_back({fp4(x + ".w1"), fp4(x + ".w2"), fp4(x + ".w3")});
    }
    f.has_shared = c.n_shared_experts > 0;
    if (f.has_shared) {
      const std::string s = fp + ".shared_experts";
      f.shared = {fp8(s + ".w1"), fp8(s + ".w2"), fp8(s + ".w3")};
    }
    return b;
  }
};

}  // namespace

ModelWeights ModelWeights::build(const Checkpoint& ck, const ModelConfig& c) {
  ModelWeights w;
  Binder b{ck, &w.owned, &w.fp8_maps};
  w.embed = b.plain("embed.weight");
  w.head = b.plain("head.weight");
  w.norm = b.vec("norm.weight");
  w.hc_head = {b.plain("hc_head_fn"), b.f32("hc_head_base"), b.f32("hc_head_scale")};
  for (int i = 0; i < c.n_layers; ++i) {
    w.layers.push_back(b.block("layers." + std::to_string(i), c, c.ratio(i), c.is_hash_layer(i)));
  }
  for (int m = 0; m < c.n_mtp_layers; ++m) {
    const std::string p = "mtp." + std::to_string(m);
    MtpWeights t;
    t.e_proj = b.fp8(p + ".e_proj");
    t.h_proj = b.fp8(p + ".h_proj");
    t.enorm = b.vec(p + ".enorm.weight");
    t.hnorm = b.vec(p + ".hnorm.weight");
    t.norm = b.vec(p + ".norm.weight");
    t.hc_head = {b.plain(p + ".hc_head_fn"), b.f32(p + ".hc_head_base"),
                 b.f32(p + ".hc_head_scale")};
    t.block = b.block(p, c, c.ratio(c.n_layers + m), false);
    w.mtp.push_back(std::move(t));
  }
  return w;
}

}  // namespace dsv4
