// Load + the forward pass of DeepSeek-V4, readable top to bottom: embed → blocks (hc_pre →
// attention → hc_post → hc_pre → MoE → hc_post) → hc_head → final norm → LM head.
#include "model/model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>

#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "model/attention.h"
#include "model/mhc.h"
#include "model/moe.h"
#include "model/weights.h"
#include "model/workspace.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace dsv4 {

namespace fs = std::filesystem;

Model::~Model() = default;

std::unique_ptr<Model> Model::load(const std::string& dir, const ModelOptions& opts) {
  if (!fs::is_directory(dir)) throw Error(dir + ": model directory not found");
  const fs::path cfg_path = fs::path(dir) / "config.json";
  if (!fs::exists(cfg_path)) throw Error(dir + ": no config.json in the model directory");
  std::unique_ptr<Model> m(new Model());
  m->opts_ = opts;
  m->cfg_ = ModelConfig::from_file(cfg_path.string());
  m->ckpt_ = Checkpoint::open(dir);
  validate_checkpoint(*m->ckpt_, m->cfg_);
  m->w_ = std::make_unique<ModelWeights>(ModelWeights::build(*m->ckpt_, m->cfg_));
  m->rope_plain_ = RopeTable(m->cfg_, false);
  m->rope_comp_ = RopeTable(m->cfg_, true);
  // Hash-routing tables index the expert array directly: reject out-of-range ids now.
  const ModelConfig& c = m->cfg_;
  for (int i = 0; i < c.n_layers; ++i) {
    const int64_t* t = m->w_->layers[i].ffn.tid2eid;
    if (!t) continue;
    const size_t n = static_cast<size_t>(c.vocab_size) * c.n_activated_experts;
    for (size_t k = 0; k < n; ++k) {
      if (t[k] < 0 || t[k] >= c.n_routed_experts) {
        throw Error("tensor 'layers." + std::to_string(i) + ".ffn.gate.tid2eid': element " +
                    std::to_string(k) + " = " + std::to_string(t[k]) + " is not an expert id < " +
                    std::to_string(c.n_routed_experts));
      }
    }
  }
  using EP = ModelOptions::ExpertPrefetch;
  m->prefetch_experts_ = opts.expert_prefetch == EP::kOn ||
                         (opts.expert_prefetch == EP::kAuto &&
                          m->ckpt_->total_bytes() / 3 > physical_memory_bytes() / 4);
  if (opts.progress) opts.progress(m->ckpt_->total_bytes(), m->ckpt_->total_bytes());
  return m;
}

const char* forward_part_name(ForwardPart p) {
  switch (p) {
    case ForwardPart::kMhc:
      return "mHC";
    case ForwardPart::kAttention:
      return "attention";
    case ForwardPart::kMoe:
      return "MoE";
    case ForwardPart::kHead:
      return "LM head";
    case ForwardPart::kCount:
      break;
  }
  return "?";
}

void Model::for_each_token_matrix(FunctionRef<void(const MatrixView&, ForwardPart)> fn) const {
  using P = ForwardPart;
  fn(w_->head, P::kHead);
  fn(w_->hc_head.fn, P::kHead);
  for (int i = 0; i < cfg_.n_layers; ++i) {
    const BlockWeights& b = w_->layers[i];
    const AttentionWeights& a = b.attn;
    fn(b.hc_attn.fn, P::kMhc);
    fn(b.hc_ffn.fn, P::kMhc);
    for (const MatrixView* m : {&a.wq_a, &a.wq_b, &a.wkv, &a.wo_a, &a.wo_b}) fn(*m, P::kAttention);
    if (b.ratio) {
      fn(a.compressor.wkv, P::kAttention);
      fn(a.compressor.wgate, P::kAttention);
    }
    if (b.ratio == 4) {
      for (const MatrixView* m :
           {&a.idx_wq_b, &a.idx_weights_proj, &a.idx_compressor.wkv, &a.idx_compressor.wgate})
        fn(*m, P::kAttention);
    }
    fn(b.ffn.gate, P::kMoe);
    auto expert = [&](const ExpertWeights& e) {
      for (const MatrixView* m : {&e.w1, &e.w2, &e.w3}) fn(*m, P::kMoe);
    };
    if (b.ffn.has_shared) expert(b.ffn.shared);
    // Routed experts all have the same shapes: the first k stand for whichever the router picks.
    for (int e = 0; e < cfg_.n_activated_experts; ++e) expert(b.ffn.experts[e]);
  }
}

Model::TokenCost Model::token_cost(const SequenceState& seq) const {
  const ModelConfig& c = cfg_;
  TokenCost tc;
  for_each_token_matrix([&](const MatrixView& m, ForwardPart p) {
    tc.weight_bytes += m.bytes();
    tc.part_bytes[static_cast<int>(p)] += m.bytes();
    tc.weight_macs += static_cast<double>(m.rows) * m.cols;
  });
  for (const MatrixView* m : {&w_->head, &w_->hc_head.fn})
    tc.output_macs += static_cast<double>(m->rows) * m->cols;
  tc.weight_bytes += static_cast<size_t>(c.dim) * 2;  // one embedding row
  const int64_t pos = seq.n_past;                     // position of the next token
  const size_t kvb = seq.kv_codec().entry_bytes(), ixb = seq.index_codec().entry_bytes();
  for (int i = 0; i < c.n_layers; ++i) {
    const int ratio = w_->layers[i].ratio;
    // Attention operands: the window, then the compressed entries this token may see.
    const int64_t n_win = std::min<int64_t>(pos + 1, c.window);
    int64_t n_cmp = 0;
    if (ratio == 128) n_cmp = (pos + 1) / 128;
    if (ratio == 4) {
      const int64_t n_keys = (pos + 1) / 4;
      n_cmp = std::min<int64_t>(n_keys, c.index_topk);
      tc.kv_bytes += static_cast<size_t>(n_keys) * ixb;
      tc.attention_macs += static_cast<double>(n_keys) * c.index_n_heads * c.index_head_dim;
    }
    tc.kv_bytes += static_cast<size_t>(n_win + n_cmp) * kvb;
    tc.attention_macs += 2.0 * c.n_heads * c.head_dim * static_cast<double>(n_win + n_cmp);
  }
  tc.part_bytes[static_cast<int>(ForwardPart::kAttention)] += tc.kv_bytes;  // all KV is attention's
  return tc;
}

std::vector<std::span<const uint8_t>> Model::token_weight_ranges(
    std::optional<ForwardPart> part) const {
  std::vector<std::span<const uint8_t>> r;
  for_each_token_matrix([&](const MatrixView& m, ForwardPart p) {
    if (part && p != *part) return;
    r.emplace_back(static_cast<const uint8_t*>(m.data), m.data_bytes());
    if (m.scales) r.emplace_back(m.scales, m.scale_span_bytes());
  });
  return r;
}

SequenceState Model::new_sequence() const {
  const KvStorage st = opts_.exact_kv ? KvStorage::kExactF32 : KvStorage::kNative;
  return SequenceState(cfg_.compress_ratios, cfg_.window,
                       KvCodec(KvCodec::Kind::kKvEntry, st, cfg_.head_dim, cfg_.rope_dim),
                       KvCodec(KvCodec::Kind::kIndexKey, st, cfg_.index_head_dim, cfg_.rope_dim),
                       cfg_.head_dim, cfg_.index_head_dim);
}

namespace {

using Clock = std::chrono::steady_clock;

// Adds the wall time of its scope to one part of `times`, if there is one.
class PartTimer {
 public:
  PartTimer(ForwardTimes* times, ForwardPart part) : times_(times), part_(part) {
    if (times_) t0_ = Clock::now();
  }
  ~PartTimer() {
    if (times_)
      times_->seconds[static_cast<int>(part_)] +=
          std::chrono::duration<double>(Clock::now() - t0_).count();
  }
  PartTimer(const PartTimer&) = delete;
  PartTimer& operator=(const PartTimer&) = delete;

 private:
  ForwardTimes* times_;
  ForwardPart part_;
  Clock::time_point t0_;
};

// One block: h [N, hc, D] is updated in place.
void run_block(const ForwardContext& ctx, const BlockWeights& bw, int layer, float* h,
               ForwardTimes* times) {
  const ModelConfig& cfg = ctx.cfg;
  const size_t N = ctx.n_rows, D = cfg.dim;
  const int hc = cfg.hc_mult;
  struct XTag;
  struct YTag;
  float* x = workspace<XTag>(N * D);
  float* y = workspace<YTag>(N * D);
  float* post = workspace<struct HcPostTag>(N * hc);
  float* comb = workspace<struct HcCombTag>(N * hc * hc);

  using P = ForwardPart;
  {
    PartTimer pt(times, P::kMhc);
    hc_pre(cfg, bw.hc_attn, h, N, x, post, comb, ctx.pool);
    for (size_t t = 0; t < N; ++t)
      rms_norm(&x[t * D], bw.attn_norm.data(), D, cfg.norm_eps, &x[t * D]);
  }
  {
    PartTimer pt(times, P::kAttention);
    attention_forward(ctx, bw, layer, x, y);
  }
  {
    PartTimer pt(times, P::kMhc);
    hc_post(cfg, y, post, comb, N, h, ctx.pool);
    hc_pre(cfg, bw.hc_ffn, h, N, x, post, comb, ctx.pool);
    for (size_t t = 0; t < N; ++t)
      rms_norm(&x[t * D], bw.ffn_norm.data(), D, cfg.norm_eps, &x[t * D]);
  }
  {
    PartTimer pt(times, P::kMoe);
    moe_forward(ctx, bw, x, y);
  }
  PartTimer pt(times, P::kMhc);
  hc_post(cfg, y, post, comb, N, h, ctx.pool);
}

float stream_rms(const float* v, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; ++i) s += static_cast<double>(v[i]) * v[i];
  return static_cast<float>(std::sqrt(s / static_cast<double>(n)));
}

// hc_head → RMSNorm(norm) → fp32 LM head, for the listed rows of h.
void lm_head(const ModelConfig& cfg, const HcParams& hc, const std::vector<float>& norm,
             const MatrixView& head, const float* h, const std::vector<size_t>& rows,
             ThreadPool& pool, float* logits) {
  if (rows.empty()) return;
  const size_t D = cfg.dim, W = static_cast<size_t>(cfg.hc_mult) * D;
  float* hs = workspace<struct HeadStreamsTag>(rows.size() * W);
  float* y = workspace<struct HeadInTag>(rows.size() * D);
  for (size_t i = 0; i < rows.size(); ++i)
    std::copy(h + rows[i] * W, h + (rows[i] + 1) * W, &hs[i * W]);
  hc_head(cfg, hc, hs, rows.size(), y, pool);
  for (size_t i = 0; i < rows.size(); ++i)
    rms_norm(&y[i * D], norm.data(), D, cfg.norm_eps, &y[i * D]);
  matmul(head, y, rows.size(), logits, &pool);
}

}  // namespace

void Model::forward(std::span<const BatchItem> batch, ThreadPool& pool, ForwardResult& out,
                    const ForwardOptions& fopts) const {
  const ModelConfig& c = cfg_;
  const size_t D = c.dim, W = static_cast<size_t>(c.hc_mult) * D;
  const auto t_start = Clock::now();
  // Per-thread buffers kept from step to step (model/workspace.h): a decode step allocates
  // nothing once they have grown.
  auto& spans = workspace_vector<struct SpansTag, SeqSpan>();
  auto& ids = workspace_vector<struct IdsTag, int32_t>();
  spans.clear();
  ids.clear();
  for (const BatchItem& it : batch) {
    if (!it.seq) throw Error("forward: batch item without a sequence");
    for (const SeqSpan& sp : spans)
      if (sp.seq == it.seq) throw Error("forward: the same sequence appears twice in one batch");
    if (it.seq->layers.size() != c.compress_ratios.size())
      throw Error("forward: sequence state belongs to another model");
    for (int32_t id : it.tokens) {
      if (id < 0 || id >= c.vocab_size) {
        throw Error("forward: token id " + std::to_string(id) + " outside the vocabulary [0, " +
                    std::to_string(c.vocab_size) + ")");
      }
    }
    spans.push_back({it.seq, ids.size(), ids.size() + it.tokens.size(), it.seq->n_past});
    ids.insert(ids.end(), it.tokens.begin(), it.tokens.end());
  }
  const size_t N = ids.size();

  // Embedding, copied into every stream.
  float* h = workspace<struct StreamsTag>(N * W);
  for (size_t t = 0; t < N; ++t) {
    dequantize_row(w_->embed, ids[t], &h[t * W]);
    for (int k = 1; k < c.hc_mult; ++k) std::copy(&h[t * W], &h[t * W + D], &h[t * W + k * D]);
  }

  ForwardContext ctx{c, pool, spans, ids.data(), N, rope_plain_, rope_comp_, prefetch_experts_};
  out.layer_rms.clear();
  for (int i = 0; i < c.n_layers; ++i) {
    run_block(ctx, w_->layers[i], i, h, fopts.times);
    if (fopts.record_layer_rms) {
      out.layer_rms.emplace_back(N);
      for (size_t t = 0; t < N; ++t) out.layer_rms.back()[t] = stream_rms(&h[t * W], W);
    }
  }

  // Outputs.
  auto& rows = workspace_vector<struct HeadRowsTag, size_t>();
  rows.clear();
  out.first_row.assign(batch.size(), 0);
  out.first_hidden.assign(batch.size(), 0);
  size_t n_hidden = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const BatchItem& it = batch[i];
    const SeqSpan& sp = spans[i];
    out.first_row[i] = rows.size();
    if (!it.no_logits && sp.end > sp.begin) {
      for (size_t t = it.all_logits ? sp.begin : sp.end - 1; t < sp.end; ++t) rows.push_back(t);
    }
    out.first_hidden[i] = n_hidden;
    if (it.want_hidden) n_hidden += sp.end - sp.begin;
  }
  out.logits.resize(rows.size() * c.vocab_size);
  {
    PartTimer pt(fopts.times, ForwardPart::kHead);
    lm_head(c, w_->hc_head, w_->norm, w_->head, h, rows, pool, out.logits.data());
  }
  out.hidden.resize(n_hidden * W);
  for (size_t i = 0; i < batch.size(); ++i) {
    if (!batch[i].want_hidden) continue;
    std::copy(h + spans[i].begin * W, h + spans[i].end * W,
              out.hidden.begin() + out.first_hidden[i] * W);
  }
  for (const BatchItem& it : batch) it.seq->n_past += static_cast<int64_t>(it.tokens.size());
  if (fopts.times)
    fopts.times->total += std::chrono::duration<double>(Clock::now() - t_start).count();
}

void Model::forward_mtp(SequenceState& seq, const float* hidden, std::span<const int32_t> next_ids,
                        ThreadPool& pool, std::vector<float>& logits) const {
  const ModelConfig& c = cfg_;
  if (w_->mtp.empty())
    throw Error("forward_mtp: this checkpoint has no MTP block (num_nextn_predict_layers = 0)");
  const MtpWeights& m = w_->mtp[0];
  const size_t N = next_ids.size(), D = c.dim, W = static_cast<size_t>(c.hc_mult) * D;
  const int hc = c.hc_mult;
  for (int32_t id : next_ids) {
    if (id < 0 || id >= c.vocab_size)
      throw Error("forward_mtp: token id " + std::to_string(id) + " outside the vocabulary");
  }
  // x[t, k] = e_proj(RMSNorm(embed[next])) + h_proj(RMSNorm(h_last[t, k]))
  float* e = workspace<struct MtpEmbedTag>(N * D);
  float* ep = workspace<struct MtpEmbedProjTag>(N * D);
  float* hh = workspace<struct MtpHiddenTag>(N * W);
  float* hp = workspace<struct MtpHiddenProjTag>(N * W);
  float* h = workspace<struct MtpStreamsTag>(N * W);
  for (size_t t = 0; t < N; ++t) {
    dequantize_row(w_->embed, next_ids[t], &e[t * D]);
    rms_norm(&e[t * D], m.enorm.data(), D, c.norm_eps, &e[t * D]);
  }
  matmul(m.e_proj, e, N, ep, &pool);
  for (size_t r = 0; r < N * hc; ++r)
    rms_norm(hidden + r * D, m.hnorm.data(), D, c.norm_eps, &hh[r * D]);
  matmul(m.h_proj, hh, N * hc, hp, &pool);
  for (size_t t = 0; t < N; ++t) {
    for (int k = 0; k < hc; ++k) {
      for (size_t d = 0; d < D; ++d)
        h[t * W + k * D + d] = ep[t * D + d] + hp[(t * hc + k) * D + d];
    }
  }
  auto& spans = workspace_vector<struct MtpSpansTag, SeqSpan>();
  auto& rows = workspace_vector<struct MtpRowsTag, size_t>();
  spans.assign(1, SeqSpan{&seq, 0, N, seq.mtp_n_past});
  ForwardContext ctx{c, pool,        spans,      next_ids.data(),
                     N, rope_plain_, rope_comp_, prefetch_experts_};
  run_block(ctx, m.block, c.n_layers, h, nullptr);
  rows.resize(N);
  for (size_t t = 0; t < N; ++t) rows[t] = t;
  logits.resize(N * c.vocab_size);
  lm_head(c, m.hc_head, m.norm, w_->head, h, rows, pool, logits.data());
  seq.mtp_n_past += static_cast<int64_t>(N);
}

}  // namespace dsv4
